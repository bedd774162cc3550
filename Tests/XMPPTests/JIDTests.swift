import Testing
import XMPP

@Suite struct JIDTests {
    @Test func parsesAllParts() throws {
        let jid = try JID("Broker@Cloud1.Test/node-1")
        #expect(jid.localpart == "broker")
        #expect(jid.domainpart == "cloud1.test")
        #expect(jid.resourcepart == "node-1")
        #expect(jid.bare.description == "broker@cloud1.test")
        #expect(jid.description == "broker@cloud1.test/node-1")
    }

    @Test func resourceMayContainSlashesAndAt() throws {
        let jid = try JID("room@conference.cloud1.test/a/b@c")
        #expect(jid.resourcepart == "a/b@c")
    }

    @Test(arguments: ["", "@cloud1.test", "broker@", "broker@cloud1.test/", "bro ker@cloud1.test", "a@b@c", "x@exa mple", "x@<evil>"])
    func rejectsInvalid(_ string: String) {
        #expect(throws: JID.ParseError.self) { try JID(string) }
    }

    @Test func rejectsOverlongParts() {
        #expect(throws: JID.ParseError.tooLong("localpart")) { try JID(String(repeating: "a", count: 1024) + "@cloud1.test") }
    }

    @Test func domainOnlyAndTrailingDot() throws {
        #expect(try JID("cloud1.test.").description == "cloud1.test")
    }

    /// ASCII JIDs are split on bytes, others on Characters: both must read a JID the same way.
    @Test func nonASCIIJIDsSplitLikeASCIIOnes() throws {
        let jid = try JID("Brøker@Clöud1.test./réseau/x@y")
        #expect(jid.localpart == "brøker")
        #expect(jid.domainpart == "clöud1.test")
        #expect(jid.resourcepart == "réseau/x@y")
        let ascii = try JID("BROKER@CLOUD1.TEST./a/x@y")
        #expect(ascii.localpart == "broker")
        #expect(ascii.domainpart == "cloud1.test")
        #expect(ascii.resourcepart == "a/x@y")
        #expect(throws: JID.ParseError.emptyPart("resourcepart")) { try JID("é@cloud1.test/") }
        #expect(throws: JID.ParseError.emptyPart("localpart")) { try JID("@clöud1.test") }
        #expect(throws: JID.ParseError.emptyPart("domainpart")) { try JID("a@.") }
        #expect(throws: JID.ParseError.forbiddenCharacter("\r", part: "localpart")) { try JID("a\r\nb@cloud1.test") }
    }
}

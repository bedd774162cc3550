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
}

import Testing
import XMPP
import XMLModel

@Suite struct XMLElementTests {
    @Test func serializesWithNamespacesOnlyWhereTheyChange() {
        var query = XMLElement("query", namespace: "urn:a")
        query.append(XMLElement("item", namespace: "urn:a", attributes: [("name", "x")]))
        query.append(XMLElement("other", namespace: "urn:b", text: "t"))
        #expect(query.serialized() == "<query xmlns='urn:a'><item name='x'/><other xmlns='urn:b'>t</other></query>")
    }

    @Test func escapesTextAndAttributes() {
        let element = XMLElement("a", attributes: [("v", "'<&>\"")], text: "<script>&")
        #expect(element.serialized() == "<a v='&apos;&lt;&amp;&gt;&quot;'>&lt;script&gt;&amp;</a>")
    }

    @Test func errorReplyAddressesSenderAndDropsPayload() throws {
        let request = Stanza(XMLElement("iq", attributes: [("type", "get"), ("id", "7"), ("from", "a@cloud1.test/r")], children: [
            .element(XMLElement("query", namespace: "urn:x", text: "secret")),
        ]))
        let reply = request.errorReply(.badRequest("nope"))
        #expect(reply.type == "error")
        #expect(reply.id == "7")
        #expect(reply.toString == "a@cloud1.test/r")
        #expect(reply.stanzaError == .badRequest("nope"))
        #expect(!reply.description.contains("secret"))
    }
}

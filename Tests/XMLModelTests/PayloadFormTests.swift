import Testing
import XMLModel

/// An element received from the XMPP layer, in payload form, must be exactly what writing it as
/// XML and parsing that text gives, or decline (then the caller parses the text).
@Suite struct PayloadFormTests {
    static let envelope = "urn:intercloud:envelope:0"

    static let samples: [XMLElement] = [
        // An envelope as it arrives (attributes in wire order, base64 text).
        XMLElement(
            "signed", namespace: envelope,
            attributes: [("ns", "urn:intercloud:catalog:0"), ("ts", "1780315200123"), ("nonce", "fuGQZjJxOu7w1si11VPlfA=="),
                         ("sig", "MEYCIQCSQeH40GIwTcjNWPtI6qE3AGBqpv31tT2ySPjXt6GvzwIhAJGrS1kGa/o+4nWTBRQyGJ+o2zqkm6H35WeIf/xe1cj4"),
                         ("re", "AAECAwQFBgc=")],
            text: "PHF1ZXJ5IHhtbG5zPSd1cm46aW50ZXJjbG91ZDpjYXRhbG9nOjAnLz4="),
        // Escapes in text and attributes, non-ASCII, surrounding whitespace that parsing trims.
        XMLElement("note", namespace: "urn:x:0", attributes: [("title", "a<b & 'c' \"d\" é")], text: "  \n x < y & z — ü \t"),
        // Children: inherited namespace, the same one declared again, another one, none at the root.
        XMLElement("root", namespace: nil, attributes: [], children: [
            .element(XMLElement("a", namespace: nil, attributes: [("k", "v")], children: [.text("one")])),
        ]),
        XMLElement("root", namespace: "urn:x:0", attributes: [], children: [
            .text(" lead "),
            .element(XMLElement("same", namespace: "urn:x:0", attributes: [], children: [])),
            .element(XMLElement("inherit", namespace: nil, attributes: [], children: [
                .element(XMLElement("deep", namespace: "urn:y:0", attributes: [("n", "1")], children: [
                    .element(XMLElement("deeper", namespace: nil, attributes: [], children: [.text("leaf")])),
                ])),
            ])),
            .text(" tail"),
            .element(XMLElement("empty", namespace: "", attributes: [], children: [])),
        ]),
        XMLElement("spaces", namespace: "urn:x:0", attributes: [], children: [.text(" \r\n\t ")]),
        // Whitespace a parser would change if it were written as it is (CR; tab and LF in attributes).
        XMLElement("lines", namespace: "urn:x:0", attributes: [("v", "a\tb\nc\r\nd")], text: "one\r\ntwo\rthree"),
    ]

    @Test(arguments: samples)
    func directConversionEqualsParsingTheText(_ element: XMLElement) throws {
        let direct = try #require(element.payloadForm)
        #expect(direct == (try XMLElement.parse(element.serialized())))
    }

    /// Where the payload form cannot be sure of the parser's answer (prefixed or repeated names,
    /// deep nesting), it is nil: the caller then goes through the text and the parser decides.
    @Test func declinesWhereTheParserDecides() {
        let prefixed = XMLElement("x", namespace: "urn:x:0", attributes: [("xml:lang", "en")], text: "t")
        #expect(prefixed.payloadForm == nil)
        let repeated = XMLElement("x", namespace: "urn:x:0", attributes: [("a", "1"), ("a", "2")], text: "t")
        #expect(repeated.payloadForm == nil)
        var deep = XMLElement("level", namespace: "urn:x:0", attributes: [], text: "bottom")
        for _ in 0..<16 { deep = XMLElement("level", namespace: nil, attributes: [], children: [.element(deep)]) }
        #expect(deep.payloadForm == nil)
    }
}

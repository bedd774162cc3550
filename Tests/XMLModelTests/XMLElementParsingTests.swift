import Foundation
import Testing

@testable import XMLModel

/// The fast payload parser must agree with Foundation's XMLParser on everything it accepts, and
/// decline (so XMLParser decides) everything outside its subset.
@Suite struct XMLElementParsingTests {
    @Test(arguments: [
        "<ok xmlns='urn:intercloud:trust:0' session='AAAA'/>",
        "<?xml version='1.0'?>\n<a xmlns=\"urn:x\" k=\"v&amp;w\"> <b>t&lt;1&#65;&#x42;</b><c xmlns='urn:y'/> tail </a>",
        "<signed xmlns='urn:intercloud:envelope:0' ns='urn:intercloud:catalog:0' ts='1' nonce='AAAAAAAAAAA=' sig='AQ=='>QUJD</signed>",
        "<a><b><c>deep</c></b><b/></a>",
        "<a x='1'   y = '2'/>".replacingOccurrences(of: " = ", with: "="),
    ])
    func agreesWithXMLParser(_ xml: String) throws {
        let fast = try #require(PayloadParser.parse(xml))
        // Foundation hands attributes over as a dictionary: compared in name order.
        #expect(Self.attributesInNameOrder(fast) == (try XMLElement.parseWithXMLParser(xml)))
    }

    static func attributesInNameOrder(_ element: XMLElement) -> XMLElement {
        var sorted = element
        sorted.attributes.sort { $0.name < $1.name }
        sorted.children = element.children.map { node in
            if case .element(let child) = node { .element(attributesInNameOrder(child)) } else { node }
        }
        return sorted
    }

    @Test(arguments: [
        "<a><!-- comment --></a>",
        "<a><![CDATA[x]]></a>",
        "<p:a xmlns:p='urn:x'/>",
        "<a>&nbsp;</a>",
        "<a></b>",
        "<a x='1' x='2'/>",
        "<a>",
        "<a/><b/>",
        "<!DOCTYPE a [<!ENTITY e 'x'>]><a>&e;</a>",
    ])
    func declinesOutsideItsSubset(_ xml: String) {
        #expect(PayloadParser.parse(xml) == nil)
    }

    /// "&" or "<" followed by a combining mark is one Character but still markup: it is escaped,
    /// and what is written parses back to the same text.
    @Test func markupFollowedByCombiningMarksIsEscaped() throws {
        let element = XMLElement("g", namespace: "urn:t", attributes: ["v": "&\u{301}<\u{301}"], text: "&\u{301}<\u{308}x")
        #expect(element.serialized() == "<g xmlns='urn:t' v='&amp;\u{301}&lt;\u{301}'>&amp;\u{301}&lt;\u{308}x</g>")
        #expect(try XMLElement.parse(element.serialized()) == element)
    }

    @Test func fallbackStillParsesValidXML() throws {
        let element = try XMLElement.parse("<a xmlns='urn:x'><!-- note --><b>1</b></a>")
        #expect(element.namespace == "urn:x" && element.child(named: "b")?.text == "1")
        let prefixed = try XMLElement.parse("<p:a xmlns:p='urn:x' k='v'/>")
        #expect(prefixed.name == "a" && prefixed.namespace == "urn:x")
        #expect(throws: (any Error).self) { try XMLElement.parse("<a></b>") }
        #expect(throws: (any Error).self) { try XMLElement.parse("<a/><b/>") }
    }
}

/// Found by the fuzzer: Foundation's XML parser dereferenced NULL on a processing instruction
/// without data, so a trusted peer's payload could crash the broker. Refused before parsing now.
@Suite struct PayloadProcessingInstructionTests {
    @Test func processingInstructionsAndDTDsAreRefusedNotFatal() {
        for xml in [
            "<hello xmlns='urn:intercloud:trust:0'><?xmlnn?></hello>",
            "<negotiation xmlns='urn:intercloud:negotiation:0'><?pi?>{}</negotiation>",
            "<!DOCTYPE x [<!ENTITY a 'b'>]><x xmlns='y'>&a;</x>",
        ] {
            #expect(throws: (any Error).self, "\(xml)") { _ = try XMLElement.parse(xml) }
        }
        // The XML declaration at the start is still fine.
        #expect((try? XMLElement.parse("<?xml version='1.0'?><x xmlns='y'>z</x>"))?.text == "z")
    }
}

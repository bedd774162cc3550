import Foundation
import Testing

@testable import XMLModel

#if canImport(FoundationXML)
import class FoundationXML.XMLParser
import protocol FoundationXML.XMLParserDelegate
#endif

/// Our parser against libxml2 (through Foundation's XMLParser, which the project no longer links
/// but which remains the reference here): on every valid document both build the same tree, and
/// every document libxml2 refuses is refused.
@Suite struct XMLElementParsingTests {
    @Test(arguments: [
        "<ok xmlns='urn:intercloud:trust:0' session='AAAA'/>",
        "<?xml version='1.0'?>\n<a xmlns=\"urn:x\" k=\"v&amp;w\"> <b>t&lt;1&#65;&#x42;</b><c xmlns='urn:y'/> tail </a>",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a/>",
        "<signed xmlns='urn:intercloud:envelope:0' ns='urn:intercloud:catalog:0' ts='1' nonce='AAAAAAAAAAA=' sig='AQ=='>QUJD</signed>",
        "<a><b><c>deep</c></b><b/></a>",
        "<a x='1'   y='2'/>",
        "<a x = '1'/>",
        "<a>&#x1F600;&#233;&gt;&apos;&quot;</a>",
        "<a><!-- comment --></a>",
        "<!-- before --><a>x</a><!-- after -->\n",
        "<a>one<![CDATA[<two> & ]]>three</a>",
        "<p:a xmlns:p='urn:x' k='v'/>",
        "<p:a xmlns:p='urn:x' xmlns:q='urn:y'><q:b q:k='1' k='2'/><c/></p:a>",
        "<a xmlns='urn:x'><b xmlns=''><c/></b></a>",
        "<a xml:lang='en'/>",
        "<a>line\r\nnext\rlast</a>",
        "<a k='tab\there\nline\r\nend'/>",
        "<a k='&#10;&#9;'/>",
        "<größe einheit='€'>ü</größe>",
        "<a></a >",
        "<a>x <b/> y <c/> z</a>",
        "<a>]]</a>",
    ])
    func agreesWithLibxml2(_ xml: String) throws {
        let ours = try XMLElement.parse(xml)
        // Foundation hands attributes over as a dictionary: compared in name order.
        #expect(Self.attributesInNameOrder(ours) == (try Reference.parse(xml)))
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
        "<a></b>",
        "<a>",
        "",
        "text",
        "text<a/>",
        "<a x='1' x='2'/>",
        "<a xmlns='u' xmlns='v'/>",
        "<a>&nbsp;</a>",
        "<a>&#0;</a>",
        "<a>&#xD800;</a>",
        "<a>& b</a>",
        "<a>\u{1}</a>",
        "<a k='\u{1}'/>",
        "<a x=1/>",
        "<a x='<'/>",
        "<a x='1'y='2'/>",
        "<a><!-- a -- b --></a>",
        "<a><!-- open</a>",
        "<a><![CDATA[open</a>",
        "<a>]]></a>",
        "<1a/>",
        "<a><b></a></b>",
    ])
    func refusesWhatLibxml2Refuses(_ xml: String) {
        #expect(throws: (any Error).self, "libxml2 accepts \(xml.debugDescription)") { try Reference.parse(xml) }
        #expect(throws: XMLElement.ParseError.self, "we accept \(xml.debugDescription)") { try XMLElement.parse(xml) }
    }

    /// libxml2 reads the first root element and stops, and reports namespace errors without
    /// failing: documents XML 1.0 and Namespaces in XML forbid, which we refuse.
    @Test(arguments: [
        "<a/><b/>",
        "<a/>text",
        "<p:a/>",
        "<a p:k='1'/>",
        "<a xmlns:p='u' xmlns:q='u' p:k='1' q:k='2'/>",
        "<a xmlns:p=''/>",
        "<a:b:c xmlns:a='u'/>",
    ])
    func refusesWhatLibxml2LetsThrough(_ xml: String) {
        #expect(throws: XMLElement.ParseError.self) { try XMLElement.parse(xml) }
    }

    /// "&" or "<" followed by a combining mark is one Character but still markup: it is escaped,
    /// and what is written parses back to the same text.
    @Test func markupFollowedByCombiningMarksIsEscaped() throws {
        let element = XMLElement("g", namespace: "urn:t", attributes: ["v": "&\u{301}<\u{301}"], text: "&\u{301}<\u{308}x")
        #expect(element.serialized() == "<g xmlns='urn:t' v='&amp;\u{301}&lt;\u{301}'>&amp;\u{301}&lt;\u{308}x</g>")
        #expect(try XMLElement.parse(element.serialized()) == element)
    }

    /// CR (anywhere) and tab and LF (in attribute values) would not read back as themselves: they
    /// are written as character references, and both serializers agree.
    @Test func whitespaceAParserWouldChangeIsEscaped() throws {
        let element = XMLElement("w", namespace: "urn:t", attributes: ["v": "a\tb\nc\rd\r\ne"], text: "x\ty\nz\rw\r\nv")
        #expect(element.serialized() == "<w xmlns='urn:t' v='a&#9;b&#10;c&#13;d&#13;&#10;e'>x\ty\nz&#13;w&#13;\nv</w>")
        var wire: [UInt8] = []
        element.appendWireBytes(to: &wire, parentNamespace: nil)
        #expect(String(decoding: wire, as: UTF8.self) == element.serialized())
        #expect(try XMLElement.parse(element.serialized()) == element)
        #expect(try Reference.parse(element.serialized()) == element)
    }

    @Test func nestingIsBounded() throws {
        func nested(_ levels: Int) -> String { String(repeating: "<a>", count: levels) + String(repeating: "</a>", count: levels) }
        _ = try XMLElement.parse(nested(16))
        #expect(throws: XMLElement.ParseError.self) { try XMLElement.parse(nested(17)) }
        _ = try XMLElement.parseDocument(Array(nested(40).utf8), maxDepth: 40)
        #expect(throws: XMLElement.ParseError.self) { try XMLElement.parseDocument(Array(nested(41).utf8), maxDepth: 40) }
    }

    @Test func sizeIsBoundedBeforeParsing() {
        #expect(throws: XMLElement.ParseError.self) { try XMLElement.parse("<a>" + String(repeating: "x", count: 100) + "</a>", maxBytes: 64) }
        #expect(throws: XMLElement.ParseError.self) { try XMLElement.parseDocument(Array(repeating: UInt8(ascii: " "), count: 65) , maxBytes: 64) }
    }

    /// Prefix declarations are bounded (they are looked up by scanning): 64 in scope parse, one
    /// more is refused.
    @Test func prefixDeclarationsAreBounded() throws {
        func declaring(_ count: Int) -> String {
            "<a " + (0..<count).map { "xmlns:p\($0)='urn:\($0)'" }.joined(separator: " ") + "><p0:b/></a>"
        }
        #expect(try XMLElement.parse(declaring(XMLReader.maxPrefixesInScope)).child(named: "b")?.namespace == "urn:0")
        #expect(throws: XMLElement.ParseError.self) { try XMLElement.parse(declaring(XMLReader.maxPrefixesInScope + 1)) }
    }

    /// Thousands of attributes on one element (a hostile peer's) are refused as repeated or
    /// accepted, without the quadratic scan a short list uses.
    @Test func manyAttributesStayCheap() throws {
        let attributes = (0..<5000).map { "k\($0)='v'" }.joined(separator: " ")
        let element = try XMLElement.parse("<a \(attributes)/>")
        #expect(element.attributes.count == 5000)
        #expect(throws: XMLElement.ParseError.self) { try XMLElement.parse("<a \(attributes) k4999='w'/>") }
    }
}

/// The document shape, which provider responses (EC2, S3, libvirt) are read in.
@Suite struct XMLDocumentParsingTests {
    @Test func textStaysWhereItIs() throws {
        let document = try XMLElement.parseDocument(Array("<?xml version='1.0'?>\n<a> x <b>1</b>\r\n<![CDATA[<c>]]><!-- no --> y </a>".utf8))
        #expect(document.children == [.text(" x "), .element(XMLElement("b", text: "1")), .text("\n<c> y ")])
    }

    @Test func namesAreLocalWithTheirNamespace() throws {
        let domain = try XMLElement.parseDocument(Array(
            "<domain><metadata><ic:instance xmlns:ic='urn:intercloud:libvirt:0' ic:id='7'>i</ic:instance></metadata></domain>".utf8))
        let instance = try #require(domain.child(named: "metadata")?.child(named: "instance"))
        #expect(instance.namespace == "urn:intercloud:libvirt:0" && instance[attribute: "ic:id"] == "7" && instance.text == "i")
    }

    @Test func aByteOrderMarkIsSkippedAndBadUTF8Refused() throws {
        #expect(try XMLElement.parseDocument([0xEF, 0xBB, 0xBF] + Array("<a/>".utf8)).name == "a")
        #expect(throws: XMLElement.ParseError.self) { try XMLElement.parseDocument(Array("<a>".utf8) + [0xC3] + Array("</a>".utf8)) }
    }
}

/// Found by the fuzzer: Foundation's XML parser dereferenced NULL on a processing instruction
/// without data, so a trusted peer's payload could crash the broker. Processing instructions and
/// document type declarations are refused (libxml2 accepts them: we go further on purpose).
@Suite struct PayloadProcessingInstructionTests {
    @Test func processingInstructionsAndDTDsAreRefusedNotFatal() {
        for xml in [
            "<hello xmlns='urn:intercloud:trust:0'><?xmlnn?></hello>",
            "<negotiation xmlns='urn:intercloud:negotiation:0'><?pi?>{}</negotiation>",
            "<!DOCTYPE x [<!ENTITY a 'b'>]><x xmlns='y'>&a;</x>",
            "<!DOCTYPE x><x/>",
            "<?pi?><x/>",
            "<x/><?pi?>",
            "<a><!ELEMENT a ANY></a>",
        ] {
            #expect(throws: XMLElement.ParseError.self, "\(xml)") { _ = try XMLElement.parse(xml) }
        }
        // The XML declaration at the start is still fine.
        #expect((try? XMLElement.parse("<?xml version='1.0'?><x xmlns='y'>z</x>"))?.text == "z")
    }
}

/// libxml2 through Foundation's XMLParser, in the payload shape: text trimmed before the child
/// elements, namespaces resolved, `xmlns` declarations left out of the attributes.
enum Reference {
    struct Refused: Error { var reason: String }

    static func parse(_ xml: String) throws -> XMLElement {
        let builder = Builder()
        let parser = XMLParser(data: Data(xml.utf8))
        parser.shouldProcessNamespaces = true
        parser.shouldResolveExternalEntities = false
        parser.delegate = builder
        guard parser.parse(), let root = builder.root else { throw Refused(reason: parser.parserError.map { "\($0)" } ?? "no element") }
        return root
    }

    /// Lives for one `parse` call on one thread.
    private final class Builder: NSObject, XMLParserDelegate {
        struct Open {
            var element: XMLElement
            var text = ""
            var elements: [XMLNode] = []
        }
        var stack: [Open] = []
        var root: XMLElement?

        func parser(
            _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
            qualifiedName: String?, attributes: [String: String] = [:]
        ) {
            let namespace = namespaceURI.flatMap { $0.isEmpty ? nil : $0 }
            stack.append(Open(element: XMLElement(elementName, namespace: namespace, attributes: attributes.keys.sorted().map { ($0, attributes[$0]!) })))
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) {
            guard !stack.isEmpty else { return }
            stack[stack.count - 1].text += string
        }

        func parser(_ parser: XMLParser, foundCDATA CDATABlock: Data) {
            guard !stack.isEmpty else { return }
            stack[stack.count - 1].text += String(decoding: CDATABlock, as: UTF8.self)
        }

        func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
            guard let open = stack.popLast() else { return }
            var element = open.element
            let text = open.text.trimmingXMLWhitespace()
            element.children = (text.isEmpty ? [] : [.text(text)]) + open.elements
            if stack.isEmpty { root = element } else { stack[stack.count - 1].elements.append(.element(element)) }
        }
    }
}

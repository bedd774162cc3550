import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// A minimal XML element for the payloads of this module (`<hello/>`, `<signed/>`, ...).
///
/// Trust must not depend on the XMPP module, so payloads cross the boundary as XML strings: the
/// broker puts the string inside an IQ and hands us the inner payload back. Only what our own
/// formats use is supported: one default namespace, attributes, child elements, text. Parsing goes
/// through Foundation's XMLParser (libxml2), which rejects malformed input and, since the DTD and
/// external entities are not resolved (`shouldResolveExternalEntities` is false), is not exposed to
/// entity expansion tricks from a peer.
public struct PayloadElement: Sendable, Hashable {
    public var name: String
    public var namespace: String?
    public var attributes: [String: String]
    public var children: [PayloadElement]
    public var text: String

    public init(
        name: String, namespace: String? = nil, attributes: [String: String] = [:],
        children: [PayloadElement] = [], text: String = ""
    ) {
        self.name = name
        self.namespace = namespace
        self.attributes = attributes
        self.children = children
        self.text = text
    }

    /// An element's text as the parser keeps it (XML whitespace off both ends), for code that
    /// builds elements from another XML model.
    public static func elementText(_ text: String) -> String { text.trimmingWhitespace() }

    public func child(named name: String) -> PayloadElement? { children.first { $0.name == name } }
    public func children(named name: String) -> [PayloadElement] { children.filter { $0.name == name } }

    /// Serialisation with attributes in sorted order (stable output for tests and logs).
    public var xml: String {
        var out = "<" + name
        if let namespace { out += " xmlns='\(Self.escape(namespace))'" }
        for key in attributes.keys.sorted() { out += " \(key)='\(Self.escape(attributes[key]!))'" }
        if children.isEmpty && text.isEmpty { return out + "/>" }
        out += ">" + Self.escape(text)
        for child in children { out += child.xml }
        return out + "</\(name)>"
    }

    static func escape(_ string: String) -> String {
        // Fast path: base64 and most attribute values need no escaping.
        let needsEscaping = string.utf8.contains { byte in
            switch byte {
            case UInt8(ascii: "&"), UInt8(ascii: "<"), UInt8(ascii: ">"), UInt8(ascii: "'"), UInt8(ascii: "\""): true
            default: false
            }
        }
        if !needsEscaping { return string }
        var out = ""
        out.reserveCapacity(string.utf8.count)
        // By Unicode scalar: "&" followed by a combining mark is one Character, equal to none of these.
        for scalar in string.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "'": out += "&apos;"
            case "\"": out += "&quot;"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Parses one element (the payload's root). Inputs above `maxBytes` are refused before parsing.
    public static func parse(_ xml: String, maxBytes: Int = 1 << 20) throws -> PayloadElement {
        guard xml.utf8.count <= maxBytes else { throw ParseError(description: "payload larger than \(maxBytes) bytes") }
        if let element = PayloadParser.parse(xml) { return element }
        return try parseWithXMLParser(xml)
    }

    /// Foundation's parser: the reference for everything `PayloadParser` declines.
    static func parseWithXMLParser(_ xml: String) throws -> PayloadElement {
        // libxml2 stops quietly after the first root element, so trailing content would pass
        // unnoticed. Wrapping the document in an element of our own makes everything inside count:
        // exactly one child element and no text are then required. A leading XML declaration has
        // to go first (it is only legal at the very start).
        var body = Substring(xml).drop(while: { $0.isWhitespace })
        if body.hasPrefix("<?xml") {
            guard let end = body.range(of: "?>") else { throw ParseError(description: "unterminated XML declaration") }
            body = body[end.upperBound...]
        }
        // No protocol payload has a processing instruction or a DTD, and Foundation's parser
        // crashes on some (a processing instruction without data dereferences NULL in its
        // callback: found by the fuzzer). They are refused before the parser sees them.
        if body.contains("<?") || body.contains("<!DOCTYPE") || body.contains("<!ENTITY") {
            throw ParseError(description: "processing instructions and document type declarations are not allowed in a payload")
        }
        let builder = Builder()
        let parser = XMLParser(data: Data(("<payload-wrapper>" + body + "</payload-wrapper>").utf8))
        parser.shouldProcessNamespaces = true
        parser.shouldResolveExternalEntities = false
        parser.delegate = builder
        guard parser.parse(), builder.error == nil, let wrapper = builder.root else {
            throw ParseError(description: parser.parserError.map { "\($0)" } ?? builder.error ?? "no element")
        }
        guard wrapper.children.count == 1, wrapper.text.isEmpty else {
            throw ParseError(description: "expected exactly one root element")
        }
        return wrapper.children[0]
    }

    /// XMLParser delegate building the tree; lives only for one `parse` call on one thread.
    private final class Builder: NSObject, XMLParserDelegate {
        var stack: [PayloadElement] = []
        var root: PayloadElement?
        var error: String?

        func parser(
            _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
            qualifiedName: String?, attributes: [String: String] = [:]
        ) {
            guard stack.count < 17 else { error = "nesting too deep"; parser.abortParsing(); return }
            let namespace = namespaceURI.flatMap { $0.isEmpty ? nil : $0 }
            stack.append(PayloadElement(name: elementName, namespace: namespace, attributes: attributes))
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) {
            guard !stack.isEmpty else { return }
            stack[stack.count - 1].text += string
        }

        func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
            guard var element = stack.popLast() else { return }
            element.text = element.text.trimmingCharacters(in: .whitespacesAndNewlines)
            // Children inherit the default namespace; keep the field only where it is declared.
            if let parent = stack.last, parent.namespace == element.namespace { element.namespace = nil }
            if stack.isEmpty { root = element } else { stack[stack.count - 1].children.append(element) }
        }
    }
}

import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// A minimal element tree for EC2 and S3 responses: small documents, read once, so a tree is simpler
/// than a streaming state machine and the mapping code reads like the API reference.
struct XMLElement: Sendable {
    /// Local name (namespace prefix dropped: libvirt keeps our metadata prefix, EC2 uses none).
    var name: String
    var attributes: [String: String] = [:]
    var text: String
    var children: [XMLElement]

    /// The first direct child named `name`.
    func child(_ name: String) -> XMLElement? { children.first { $0.name == name } }

    /// Follows a path of direct children.
    func at(_ path: String...) -> XMLElement? {
        var current: XMLElement? = self
        for name in path { current = current?.child(name) }
        return current
    }

    /// Text of the child at `path`, nil if absent or empty.
    func string(_ path: String...) -> String? {
        var current: XMLElement? = self
        for name in path { current = current?.child(name) }
        guard let text = current?.text.trimmingCharacters(in: .whitespacesAndNewlines), !text.isEmpty else { return nil }
        return text
    }

    /// `<set><item>…</item>…</set>` lists, EC2 style.
    func items(_ name: String) -> [XMLElement] { child(name)?.children.filter { $0.name == "item" } ?? [] }

    /// Every descendant named `name`, depth first.
    func descendants(_ name: String) -> [XMLElement] {
        var found: [XMLElement] = []
        for child in children {
            if child.name == name { found.append(child) }
            found += child.descendants(name)
        }
        return found
    }

    static func parse(_ data: Data) throws -> XMLElement {
        // Foundation's parser dereferences NULL on a processing instruction without data; only the
        // XML declaration at the very start is let through (libvirt and EC2 write nothing else).
        let body = data.starts(with: Array("<?xml".utf8)) ? data.drop { $0 != UInt8(ascii: ">") } : data[...]
        if body.range(of: Data("<?".utf8)) != nil || body.range(of: Data("<!DOCTYPE".utf8)) != nil {
            throw XMLTreeError(message: "processing instructions and document type declarations are not accepted",
                               snippet: String(decoding: data.prefix(200), as: UTF8.self))
        }
        let delegate = TreeBuilder()
        let parser = XMLParser(data: data)
        parser.delegate = delegate
        guard parser.parse(), let root = delegate.root else {
            throw XMLTreeError(message: parser.parserError.map(String.init(describing:)) ?? "no root element",
                               snippet: String(decoding: data.prefix(200), as: UTF8.self))
        }
        return root
    }
}

struct XMLTreeError: Error, CustomStringConvertible {
    var message: String
    var snippet: String
    var description: String { "unparsable XML (\(message)): \(snippet)" }
}

private final class TreeBuilder: NSObject, XMLParserDelegate {
    var stack: [XMLElement] = []
    var root: XMLElement?

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        let local = name.split(separator: ":").last.map(String.init) ?? name
        stack.append(XMLElement(name: local, attributes: attributes, text: "", children: []))
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        guard !stack.isEmpty else { return }
        stack[stack.count - 1].text += string
    }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        guard let element = stack.popLast() else { return }
        if stack.isEmpty { root = element } else { stack[stack.count - 1].children.append(element) }
    }
}

import Foundation
import XMLModel

/// A minimal element tree for EC2, S3 and libvirt documents: small documents, read once, so a tree is simpler
/// than a streaming state machine and the mapping code reads like the API reference.
struct XMLTree: Sendable {
    /// Local name (namespace prefix dropped: libvirt keeps our metadata prefix, EC2 uses none).
    var name: String
    var attributes: [String: String] = [:]
    var text: String
    var children: [XMLTree]

    /// The first direct child named `name`.
    func child(_ name: String) -> XMLTree? { children.first { $0.name == name } }

    /// Follows a path of direct children.
    func at(_ path: String...) -> XMLTree? {
        var current: XMLTree? = self
        for name in path { current = current?.child(name) }
        return current
    }

    /// Text of the child at `path`, nil if absent or empty.
    func string(_ path: String...) -> String? {
        var current: XMLTree? = self
        for name in path { current = current?.child(name) }
        guard let text = current?.text.trimmingCharacters(in: .whitespacesAndNewlines), !text.isEmpty else { return nil }
        return text
    }

    /// `<set><item>…</item>…</set>` lists, EC2 style.
    func items(_ name: String) -> [XMLTree] { child(name)?.children.filter { $0.name == "item" } ?? [] }

    /// Every descendant named `name`, depth first.
    func descendants(_ name: String) -> [XMLTree] {
        var found: [XMLTree] = []
        for child in children {
            if child.name == name { found.append(child) }
            found += child.descendants(name)
        }
        return found
    }

    /// Parses with the project's one XML parser (`XMLModel`), which refuses document type
    /// declarations and processing instructions (libvirt and EC2 write neither).
    static func parse(_ data: Data) throws -> XMLTree {
        do {
            return XMLTree(try XMLModel.XMLElement.parseDocument(data))
        } catch {
            throw XMLTreeError(message: "\(error)", snippet: String(decoding: data.prefix(200), as: UTF8.self))
        }
    }

    private init(_ element: XMLModel.XMLElement) {
        name = element.name
        attributes = Dictionary(element.attributes.map { ($0.name, $0.value) }, uniquingKeysWith: { first, _ in first })
        text = element.text
        children = element.elements.map(XMLTree.init)
    }
}

struct XMLTreeError: Error, CustomStringConvertible {
    var message: String
    var snippet: String
    var description: String { "unparsable XML (\(message)): \(snippet)" }
}

/// An XML element as a plain value: what every stanza, payload and XEP type is built from.
///
/// Kept independent of libstrophe so protocol code (and its tests) never touches C. Attribute order
/// is preserved because some peers (and our own signatures over canonical forms) care about it.
public struct XMLElement: Sendable, Hashable {
    public var name: String
    /// The element's namespace (`xmlns`), when it declares one.
    public var namespace: String?
    public var attributes: [(name: String, value: String)]
    public var children: [XMLNode]

    public init(
        _ name: String,
        namespace: String? = nil,
        attributes: [(String, String)] = [],
        children: [XMLNode] = []
    ) {
        self.name = name
        self.namespace = namespace
        self.attributes = attributes.map { (name: $0.0, value: $0.1) }
        self.children = children
    }

    /// An element with text only (none if `text` is empty: `<name/>`).
    public init(_ name: String, namespace: String? = nil, attributes: [(String, String)] = [], text: String) {
        self.init(name, namespace: namespace, attributes: attributes, children: text.isEmpty ? [] : [.text(text)])
    }

    /// A protocol payload's element, in the form `parse` gives: attributes in name order (so its
    /// text is the same whatever order the code lists them in: payload bytes are signed), its
    /// text (if any) before its child elements, children without a namespace of their own in this
    /// one's.
    public init(_ name: String, namespace: String? = nil, attributes: [String: String], elements: [XMLElement] = [], text: String = "") {
        self.init(
            name, namespace: namespace, attributes: attributes.keys.sorted().map { ($0, attributes[$0]!) },
            children: (text.isEmpty ? [] : [.text(text)]) + elements.map { .element($0.inheriting(namespace)) })
    }

    /// This element with `namespace` wherever it (or a descendant, through it) has none.
    func inheriting(_ inherited: String?) -> XMLElement {
        guard namespace == nil, let inherited else { return self }
        var copy = self
        copy.namespace = inherited
        copy.children = children.map { node in
            if case .element(let element) = node { .element(element.inheriting(inherited)) } else { node }
        }
        return copy
    }

    public subscript(attribute name: String) -> String? {
        get { attributes.first { $0.name == name }?.value }
        set {
            attributes.removeAll { $0.name == name }
            if let newValue { attributes.append((name: name, value: newValue)) }
        }
    }

    /// Child elements, in document order, ignoring text nodes.
    public var elements: [XMLElement] {
        children.compactMap { if case .element(let element) = $0 { element } else { nil } }
    }

    public func child(named name: String, namespace: String? = nil) -> XMLElement? {
        elements.first { $0.name == name && (namespace == nil || $0.namespace == namespace) }
    }

    public func children(named name: String) -> [XMLElement] {
        elements.filter { $0.name == name }
    }

    /// The concatenated text content of this element's direct text children.
    public var text: String {
        children.reduce(into: "") { result, node in
            if case .text(let text) = node { result += text }
        }
    }

    public mutating func append(_ element: XMLElement) { children.append(.element(element)) }

    public static func == (lhs: XMLElement, rhs: XMLElement) -> Bool {
        lhs.name == rhs.name && lhs.namespace == rhs.namespace
            && lhs.attributes.elementsEqual(rhs.attributes) { $0.name == $1.name && $0.value == $1.value }
            && lhs.children == rhs.children
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(name)
        hasher.combine(namespace)
        for attribute in attributes {
            hasher.combine(attribute.name)
            hasher.combine(attribute.value)
        }
        hasher.combine(children)
    }
}

public enum XMLNode: Sendable, Hashable {
    case element(XMLElement)
    case text(String)
}

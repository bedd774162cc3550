import Trust
import XMPP

/// Trust speaks XML payload strings (it must not depend on XMPP); the XMPP client speaks
/// `XMLElement`. These two conversions are the whole boundary.
enum PayloadBridge {
    /// The payload string Trust expects for an inbound IQ child. The root carries its `xmlns`
    /// (no parent namespace is assumed), so Trust's parser sees the namespace the peer used.
    static func string(_ element: XMLElement) -> String {
        element.serialized()
    }

    /// An XML payload string produced by Trust, as an element to put in an IQ. Trust's own output
    /// (handshake messages, envelopes) always parses; anything else is a programming error the
    /// caller reports as `internal-server-error`.
    static func element(_ xml: String) throws -> XMLElement {
        element(try PayloadElement.parse(xml))
    }

    /// An inbound IQ child as Trust's element, converted directly: the same element
    /// `PayloadElement.parse(string(element))` gives, without writing and reading XML text. Nil
    /// where Trust's own parser would decline the text (prefixed or repeated attribute names,
    /// more than 16 levels): use `string` and let Trust's parser decide.
    static func payload(_ element: XMLElement) -> PayloadElement? {
        payload(element, inherited: nil, depth: 1)
    }

    private static func payload(_ element: XMLElement, inherited: String?, depth: Int) -> PayloadElement? {
        guard depth <= 16, !element.name.contains(":") else { return nil }
        var attributes: [String: String] = [:]
        attributes.reserveCapacity(element.attributes.count)
        for attribute in element.attributes where attribute.name != "xmlns" {
            guard !attribute.name.contains(":"), attributes.updateValue(attribute.value, forKey: attribute.name) == nil else { return nil }
        }
        // As written on the wire: a namespace is declared where it differs from the parent's, and
        // Trust records only declared ones (an empty declaration records none).
        let effective = element.namespace ?? inherited
        let declared = element.namespace.flatMap { $0 == inherited || $0.isEmpty ? nil : $0 }
        var children: [PayloadElement] = []
        var text = ""
        for node in element.children {
            switch node {
            case .text(let chunk): text += chunk
            case .element(let child):
                guard let converted = payload(child, inherited: effective, depth: depth + 1) else { return nil }
                children.append(converted)
            }
        }
        return PayloadElement(
            name: element.name, namespace: declared, attributes: attributes, children: children, text: PayloadElement.elementText(text))
    }

    static func element(_ payload: PayloadElement, inherited: String? = nil) -> XMLElement {
        // PayloadElement keeps a namespace only where it is declared; children inherit it.
        let namespace = payload.namespace ?? inherited
        var children: [XMLNode] = []
        // Trust's formats never mix text and child elements, so text-then-children loses nothing.
        if !payload.text.isEmpty { children.append(.text(payload.text)) }
        for child in payload.children {
            children.append(.element(element(child, inherited: namespace)))
        }
        return XMLElement(
            payload.name, namespace: namespace,
            attributes: payload.attributes.keys.sorted().map { ($0, payload.attributes[$0]!) },
            children: children)
    }
}

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

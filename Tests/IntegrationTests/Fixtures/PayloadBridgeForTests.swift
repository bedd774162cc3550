import Trust
import XMPP

/// Test access to the payload conversion the broker uses (internal to Broker).
enum PayloadBridgeForTests {
    static func element(_ xml: String) throws -> XMLElement {
        convert(try PayloadElement.parse(xml), inherited: nil)
    }

    private static func convert(_ payload: PayloadElement, inherited: String?) -> XMLElement {
        let namespace = payload.namespace ?? inherited
        var children: [XMLNode] = payload.text.isEmpty ? [] : [.text(payload.text)]
        children += payload.children.map { .element(convert($0, inherited: namespace)) }
        return XMLElement(
            payload.name, namespace: namespace,
            attributes: payload.attributes.keys.sorted().map { ($0, payload.attributes[$0]!) }, children: children)
    }
}

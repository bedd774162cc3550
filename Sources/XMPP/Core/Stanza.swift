import XMLModel

/// One of the three XMPP stanza kinds, as a value.
///
/// A `Stanza` is an `XMLElement` plus typed access to the routing attributes. Parsing (`from`, `to`)
/// is lazy and throwing, because those attributes come from the network.
public struct Stanza: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable { case iq, message, presence }

    public var element: XMLElement

    public init(_ element: XMLElement) { self.element = element }

    public var kind: Kind? { Kind(rawValue: element.name) }
    public var type: String? { element[attribute: "type"] }
    public var id: String? { element[attribute: "id"] }
    public var fromString: String? { element[attribute: "from"] }
    public var toString: String? { element[attribute: "to"] }
    public var from: JID? { fromString.flatMap { try? JID($0) } }
    public var to: JID? { toString.flatMap { try? JID($0) } }

    /// The first child element: an IQ's payload.
    public var payload: XMLElement? { element.elements.first }

    public var description: String { element.serialized(parentNamespace: "jabber:client") }

    // MARK: Builders

    public enum IQType: String, Sendable { case get, set, result, error }

    public static func iq(_ type: IQType, id: String, to: JID?, from: JID? = nil, payload: XMLElement?) -> Stanza {
        var attributes: [(String, String)] = [("type", type.rawValue), ("id", id)]
        if let to { attributes.append(("to", to.description)) }
        if let from { attributes.append(("from", from.description)) }
        return Stanza(XMLElement("iq", attributes: attributes, children: payload.map { [.element($0)] } ?? []))
    }

    /// The result for an IQ get/set, addressed back to its sender with the same id (RFC 6120 §8.2.3).
    public func result(payload: XMLElement? = nil) -> Stanza {
        var attributes: [(String, String)] = [("type", "result"), ("id", id ?? "")]
        if let fromString { attributes.append(("to", fromString)) }
        return Stanza(XMLElement("iq", attributes: attributes, children: payload.map { [.element($0)] } ?? []))
    }

    /// The error reply for a stanza (RFC 6120 §8.3): same id, addressed back, the original payload
    /// is not echoed (it may be the oversized or hostile part).
    public func errorReply(_ error: StanzaError) -> Stanza {
        var attributes: [(String, String)] = [("type", "error")]
        if let id { attributes.append(("id", id)) }
        if let fromString { attributes.append(("to", fromString)) }
        return Stanza(XMLElement(element.name, attributes: attributes, children: [.element(error.element)]))
    }

    public static func presence(type: String? = nil, to: JID? = nil, children: [XMLElement] = []) -> Stanza {
        var attributes: [(String, String)] = []
        if let type { attributes.append(("type", type)) }
        if let to { attributes.append(("to", to.description)) }
        return Stanza(XMLElement("presence", attributes: attributes, children: children.map { .element($0) }))
    }

    /// The stanza error carried by an `type='error'` stanza, if any.
    public var stanzaError: StanzaError? {
        guard type == "error", let error = element.child(named: "error") else { return nil }
        return StanzaError(parsing: error)
    }
}

/// A stanza error (RFC 6120 §8.3): a defined condition, its type, and optional text.
public struct StanzaError: Error, Sendable, Hashable, CustomStringConvertible {
    public static let namespace = "urn:ietf:params:xml:ns:xmpp-stanzas"

    public enum ErrorType: String, Sendable { case auth, cancel, `continue`, modify, wait }

    public var condition: String
    public var type: ErrorType
    public var text: String?
    /// An application-specific condition element (e.g. `<reason xmlns='urn:intercloud:trust:0'>`).
    public var applicationCondition: XMLElement?

    public init(condition: String, type: ErrorType, text: String? = nil, applicationCondition: XMLElement? = nil) {
        self.condition = condition
        self.type = type
        self.text = text
        self.applicationCondition = applicationCondition
    }

    public static func badRequest(_ text: String? = nil) -> StanzaError { .init(condition: "bad-request", type: .modify, text: text) }
    public static func serviceUnavailable(_ text: String? = nil) -> StanzaError { .init(condition: "service-unavailable", type: .cancel, text: text) }
    public static func featureNotImplemented(_ text: String? = nil) -> StanzaError { .init(condition: "feature-not-implemented", type: .cancel, text: text) }
    public static func notAuthorized(_ text: String? = nil) -> StanzaError { .init(condition: "not-authorized", type: .auth, text: text) }
    public static func forbidden(_ text: String? = nil) -> StanzaError { .init(condition: "forbidden", type: .auth, text: text) }
    public static func policyViolation(_ text: String? = nil) -> StanzaError { .init(condition: "policy-violation", type: .modify, text: text) }
    public static func internalServerError(_ text: String? = nil) -> StanzaError { .init(condition: "internal-server-error", type: .cancel, text: text) }
    public static func itemNotFound(_ text: String? = nil) -> StanzaError { .init(condition: "item-not-found", type: .cancel, text: text) }
    public static func notAcceptable(_ text: String? = nil) -> StanzaError { .init(condition: "not-acceptable", type: .modify, text: text) }
    /// The answer to a stanza over our size limit. RFC 6120's `policy-violation` would fit, but
    /// libraries built on RFC 3920's condition list (slixmpp 1.17 among them) fail to parse it, so
    /// we use `not-acceptable` (§8.3.3.9) and say the limit in the text.
    public static func oversized(limit: Int) -> StanzaError {
        .init(condition: "not-acceptable", type: .modify, text: "stanza larger than \(limit) bytes")
    }
    public static func resourceConstraint(_ text: String? = nil) -> StanzaError { .init(condition: "resource-constraint", type: .wait, text: text) }
    public static func conflict(_ text: String? = nil) -> StanzaError { .init(condition: "conflict", type: .cancel, text: text) }
    public static func jidMalformed(_ text: String? = nil) -> StanzaError { .init(condition: "jid-malformed", type: .modify, text: text) }

    public var element: XMLElement {
        var error = XMLElement("error", attributes: [("type", type.rawValue)])
        error.append(XMLElement(condition, namespace: StanzaError.namespace))
        if let text { error.append(XMLElement("text", namespace: StanzaError.namespace, text: text)) }
        if let applicationCondition { error.append(applicationCondition) }
        return error
    }

    init?(parsing error: XMLElement) {
        guard let condition = error.elements.first(where: { $0.namespace == StanzaError.namespace && $0.name != "text" }) else {
            return nil
        }
        self.condition = condition.name
        self.type = ErrorType(rawValue: error[attribute: "type"] ?? "") ?? .cancel
        self.text = error.elements.first { $0.name == "text" && $0.namespace == StanzaError.namespace }?.text
        self.applicationCondition = error.elements.first { $0.namespace != StanzaError.namespace }
    }

    public var description: String {
        "\(condition) (\(type.rawValue))" + (text.map { ": \($0)" } ?? "")
    }
}

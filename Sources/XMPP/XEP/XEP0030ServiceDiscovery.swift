import XMLModel

/// XEP-0030: Service Discovery. What an entity is (identities) and what it speaks (features).
public struct DiscoInfo: Sendable, Hashable {
    public static let infoNamespace = "http://jabber.org/protocol/disco#info"
    public static let itemsNamespace = "http://jabber.org/protocol/disco#items"

    public struct Identity: Sendable, Hashable {
        public var category: String
        public var type: String
        public var name: String?
        public var lang: String?
        public init(category: String, type: String, name: String? = nil, lang: String? = nil) {
            self.category = category
            self.type = type
            self.name = name
            self.lang = lang
        }
    }

    public var identities: [Identity]
    public var features: [String]
    public var node: String?

    public init(identities: [Identity], features: [String], node: String? = nil) {
        self.identities = identities
        self.features = features
        self.node = node
    }

    public var element: XMLElement {
        var query = XMLElement("query", namespace: DiscoInfo.infoNamespace)
        if let node { query[attribute: "node"] = node }
        for identity in identities {
            var attributes = [("category", identity.category), ("type", identity.type)]
            if let name = identity.name { attributes.append(("name", name)) }
            if let lang = identity.lang { attributes.append(("xml:lang", lang)) }
            query.append(XMLElement("identity", attributes: attributes))
        }
        for feature in features { query.append(XMLElement("feature", attributes: [("var", feature)])) }
        return query
    }

    public init(parsing query: XMLElement) throws(StanzaError) {
        guard query.name == "query", query.namespace == DiscoInfo.infoNamespace else {
            throw .badRequest("expected a disco#info query")
        }
        identities = query.children(named: "identity").compactMap { element in
            guard let category = element[attribute: "category"], let type = element[attribute: "type"] else { return nil }
            return Identity(category: category, type: type, name: element[attribute: "name"], lang: element[attribute: "xml:lang"])
        }
        features = query.children(named: "feature").compactMap { $0[attribute: "var"] }
        node = query[attribute: "node"]
    }
}

extension XMPPClient {
    /// Answers disco#info (for our own node and the caps node) and disco#items (empty: a broker has
    /// no sub-entities) on the hot path.
    public func serveServiceDiscovery(_ info: @escaping @Sendable () -> DiscoInfo, capsNode: String? = nil) {
        setIQHandler(namespace: DiscoInfo.infoNamespace, maxPayloadBytes: 4096, .immediate { request throws(StanzaError) in
            guard request.type == "get", let query = request.payload else { throw .badRequest("disco#info is a get") }
            guard query.elements.isEmpty else { throw .badRequest("disco#info query must be empty") }
            var answer = info()
            if let node = query[attribute: "node"] {
                guard let capsNode, node.hasPrefix(capsNode + "#") else { throw .itemNotFound("unknown node \(node)") }
                answer.node = node
            }
            return answer.element
        })
        setIQHandler(namespace: DiscoInfo.itemsNamespace, maxPayloadBytes: 4096, .immediate { request throws(StanzaError) in
            guard request.type == "get" else { throw .badRequest("disco#items is a get") }
            return XMLElement("query", namespace: DiscoInfo.itemsNamespace)
        })
    }

    /// Asks an entity what it supports.
    public func discoverInfo(of jid: JID, timeout: Duration = .seconds(5)) async throws -> DiscoInfo {
        let result = try await iq(.get, to: jid, payload: XMLElement("query", namespace: DiscoInfo.infoNamespace), timeout: timeout)
        guard let query = result.payload else { throw XMPPError.stanza(.badRequest("empty disco#info result")) }
        do { return try DiscoInfo(parsing: query) } catch { throw XMPPError.stanza(error) }
    }
}

import XMLModel

/// XEP-0045: Multi-User Chat, the part a broker needs: join and leave rooms that act as
/// Intercloud exchanges, and read occupants' presence.
public enum MultiUserChat {
    public static let namespace = "http://jabber.org/protocol/muc"
    public static let userNamespace = "http://jabber.org/protocol/muc#user"

    /// The presence that joins `room` under `nickname`, carrying `extensions` (caps, announcement).
    /// History is not requested: a broker wants occupants, not chat logs.
    public static func joinPresence(room: JID, nickname: String, extensions: [XMLElement]) throws(JID.ParseError) -> Stanza {
        let occupant = try room.bare.with(resource: nickname)
        var x = XMLElement("x", namespace: namespace)
        x.append(XMLElement("history", attributes: [("maxstanzas", "0")]))
        return Stanza.presence(to: occupant, children: [x] + extensions)
    }

    public static func leavePresence(room: JID, nickname: String) throws(JID.ParseError) -> Stanza {
        Stanza.presence(type: "unavailable", to: try room.bare.with(resource: nickname))
    }

    /// An occupant's presence as seen in a room.
    public struct OccupantPresence: Sendable, Hashable {
        public var room: JID
        public var nickname: String
        /// The occupant's real JID, visible when the room is non-anonymous (or to moderators).
        public var realJID: JID?
        public var available: Bool
        /// Status code 110: this presence is about ourselves.
        public var isSelf: Bool
        public var role: String?
        public var statusCodes: [String]
        /// Status code 201: we just created this room and must configure it before others can join.
        public var createdRoom: Bool { isSelf && statusCodes.contains("201") }
    }

    public static let ownerNamespace = "http://jabber.org/protocol/muc#owner"

    /// The owner form that unlocks a room we created (XEP-0045 §10.1.2) and makes occupants' real
    /// JIDs visible to everyone: an exchange is for brokers that want to be found.
    public static func exchangeRoomConfiguration() -> XMLElement {
        func field(_ name: String, _ value: String) -> XMLElement {
            XMLElement("field", attributes: [("var", name)], children: [.element(XMLElement("value", text: value))])
        }
        var form = XMLElement("x", namespace: "jabber:x:data", attributes: [("type", "submit")])
        form.append(field("FORM_TYPE", "http://jabber.org/protocol/muc#roomconfig"))
        form.append(field("muc#roomconfig_whois", "anyone"))
        return XMLElement("query", namespace: ownerNamespace, children: [.element(form)])
    }

    /// Parses a presence if it comes from a MUC occupant (carries `muc#user`).
    public static func occupantPresence(_ presence: Stanza) -> OccupantPresence? {
        guard presence.kind == .presence, let from = presence.from, let nickname = from.resourcepart,
            let x = presence.element.child(named: "x", namespace: userNamespace)
        else { return nil }
        let item = x.child(named: "item")
        let statusCodes = x.children(named: "status").compactMap { $0[attribute: "code"] }
        return OccupantPresence(
            room: from.bare, nickname: nickname,
            realJID: item?[attribute: "jid"].flatMap { try? JID($0) },
            available: presence.type != "unavailable",
            isSelf: statusCodes.contains("110"),
            role: item?[attribute: "role"],
            statusCodes: statusCodes)
    }
}

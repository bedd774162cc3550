import XMPP

/// A peer broker as a protocol service sees it: where it was last seen, and whether it is trusted.
public struct KnownPeer: Sendable, Hashable {
    /// The peer's bare JID.
    public var jid: String
    /// The full JID its presence last came from.
    public var fullJID: JID?
    /// The cloud it announced.
    public var cloud: String?
    public var online: Bool
    /// Its pin is trusted now (handshake done, certificate valid, not revoked).
    public var trusted: Bool

    public init(jid: String, fullJID: JID?, cloud: String?, online: Bool, trusted: Bool) {
        self.jid = jid
        self.fullJID = fullJID
        self.cloud = cloud
        self.online = online
        self.trusted = trusted
    }
}

/// The peers discovery found, for services that fan out to them (catalog queries). Broker's peer
/// registry provides it.
public protocol PeerDirectory: Sendable {
    /// Every peer discovery knows.
    func knownPeers() throws -> [KnownPeer]
    /// The peer with this bare JID (a full JID's bare part), if known.
    func knownPeer(_ jid: JID) throws -> KnownPeer?
}

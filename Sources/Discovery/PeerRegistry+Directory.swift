import Peering
import XMPP

/// The registry is the directory of peers the protocol services fan out to.
extension PeerRegistry: PeerDirectory {
    public func knownPeers() throws -> [KnownPeer] {
        try all().map { try known($0) }
    }

    public func knownPeer(_ jid: JID) throws -> KnownPeer? {
        try peer(jid).map(known)
    }

    private func known(_ record: PeerRecord) throws -> KnownPeer {
        KnownPeer(
            jid: record.jid, fullJID: record.fullJID.flatMap { try? JID($0) }, cloud: record.cloud, online: record.online,
            trusted: try trustStatus(of: record) == .trusted)
    }
}

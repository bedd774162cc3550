import Foundation

/// Where this broker's hypervisor may be told to send a running guest, per peer.
///
/// In a live migration the destination answers with its hypervisor URI, and the source's libvirt
/// connects there and streams the guest's memory and disk to it. A peer that chose the URI freely
/// could point our hypervisor at any host it likes, including this one (`qemu:///system`), with
/// disk paths of its choosing, or read the guest's memory off the wire. So the URI must match the
/// operator's own list for that peer (`[migration.live_peers]`): equal to a listed URI, or with a
/// listed URI's scheme and host and no query parameters (parameters such as `socket=` or
/// `no_verify=` change where and how libvirt connects). And the stream is encrypted (`qemu+tls`,
/// with libvirt's `VIR_MIGRATE_TLS`) unless the operator allowed plaintext for that peer, which a
/// private network or a test between local daemons may justify.
public struct LivePeerPolicy: Sendable, Hashable {
    public struct Entry: Sendable, Hashable {
        /// Hypervisor URIs this peer's brokers may offer (e.g. `qemu+tls://hv1.cloud2.example/system`).
        public var uris: [String]
        /// Accept URIs whose migration stream is not TLS (`qemu+tcp`, `qemu+ssh`, `qemu+unix`, `qemu`).
        public var allowsPlaintext: Bool

        public init(uris: [String], allowsPlaintext: Bool = false) {
            self.uris = uris
            self.allowsPlaintext = allowsPlaintext
        }
    }

    /// Bare JID of the peer → what it may offer.
    public var peers: [String: Entry]

    public init(peers: [String: Entry] = [:]) { self.peers = peers }

    /// What the source's hypervisor is asked to do with an accepted URI.
    public struct Decision: Sendable, Hashable {
        public var uri: String
        /// Encrypt the migration stream (`VIR_MIGRATE_TLS`): always for `qemu+tls`.
        public var tls: Bool
    }

    /// The decision for `uri` offered by `peer`, or a refusal that says which setting allows it.
    public func check(uri: String, peer: String) throws(MigrationMessageError) -> Decision {
        try MigrationMessage.checkLiveURI(uri)
        guard let entry = peers[peer.lowercased()] else {
            throw MigrationMessageError(
                "live migration to \(peer) is not configured: list its hypervisor URIs under [migration.live_peers] \"\(peer)\"")
        }
        guard let offered = Self.parts(uri) else { throw MigrationMessageError("live target \"\(uri.prefix(80))\" is not a URI") }
        let matches = entry.uris.contains { listed in
            if listed == uri { return true }
            guard let allowed = Self.parts(listed) else { return false }
            return offered.query == nil && offered.scheme == allowed.scheme && offered.host == allowed.host
        }
        guard matches else {
            throw MigrationMessageError(
                "live target \(uri.prefix(80)) is not among the URIs allowed for \(peer) (\(entry.uris.joined(separator: ", ")))")
        }
        let tls = offered.scheme == "qemu+tls"
        guard tls || entry.allowsPlaintext else {
            throw MigrationMessageError(
                "live target \(uri.prefix(80)) would carry the guest's memory in clear: use qemu+tls, or set allow_plaintext for \(peer)")
        }
        return Decision(uri: uri, tls: tls)
    }

    /// Scheme, host (lowercased, "" for none) and query of a libvirt URI.
    static func parts(_ uri: String) -> (scheme: String, host: String, query: String?)? {
        guard let components = URLComponents(string: uri), let scheme = components.scheme?.lowercased() else { return nil }
        return (scheme, components.host?.lowercased() ?? "", components.percentEncodedQuery)
    }
}

import Foundation
import GRDB
import Trust

/// What `intercloud peers` shows in its TRUST column, derived from the trust store and the audit
/// log (no table of its own, so it can never disagree with what envelope checks use):
/// - `trusted`: a trusted pin whose fingerprint is the one the peer announces;
/// - `refused:<reason>`: the operator revoked (`pinRevoked`) or distrusts (`distrusted`) the peer,
///   or the latest handshake or revalidation about it was refused (`unknownCA`, `peerRefused`, …);
/// - `untrusted`: none of these yet (no handshake, the peer announces no fingerprint, or it
///   announces a new key that has not been handshaken yet).
public enum PeerTrustStatus: Sendable, Hashable, CustomStringConvertible {
    case trusted
    case untrusted
    case refused(reason: String)

    public var description: String {
        switch self {
        case .trusted: "trusted"
        case .untrusted: "untrusted"
        case .refused(let reason): "refused:\(reason)"
        }
    }

    /// The status of `jid`, given the fingerprint the peer last announced (nil or "" if none).
    public static func of(_ jid: String, announcedFingerprint: String?, database: DatabasePool) throws -> PeerTrustStatus {
        let pin = try TrustStore(database: database).pin(for: jid)
        switch pin?.state {
        case .revoked?: return .refused(reason: TrustRefusalReason.pinRevoked.rawValue)
        case .distrusted?: return .refused(reason: TrustRefusalReason.distrusted.rawValue)
        case .lapsed?: break  // the revalidation's audit record says why
        case .trusted?:
            let announced = (announcedFingerprint ?? "").lowercased()
            let expired = pin?.notAfter.map { Date() > $0 } ?? false
            if !expired, announced.isEmpty || announced == pin?.fingerprint { return .trusted }
        case nil: break
        }
        // Latest decision about this peer's key: a handshake (either role) or a revalidation.
        let recent = try AuditLog(database: database).events(matching: AuditQuery(peer: jid, kind: "trust.", limit: 20))
        let decision = recent.first { $0.kind == "trust.handshake" || $0.kind == "trust.revalidate" }
        if let decision, decision.outcome == .refused { return .refused(reason: decision.reason) }
        return .untrusted
    }
}

extension PeerRegistry {
    /// The TRUST column for a registry row (see `PeerTrustStatus`). The database must have been
    /// opened with `BrokerNode.schema` (which includes the trust and audit tables).
    public func trustStatus(of peer: PeerRecord) throws -> PeerTrustStatus {
        try PeerTrustStatus.of(peer.jid, announcedFingerprint: peer.fingerprint, database: database)
    }
}

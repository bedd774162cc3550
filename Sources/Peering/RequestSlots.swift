/// Slots for federation requests being checked or handled at once: a global bound, so a flood
/// cannot queue unbounded signature checks and database writes, and a per-peer bound under it, so
/// one peer (or one stranger) cannot take every slot and starve the others.
///
/// A value type; `SignedRequests` keeps it behind a lock. Keys are bare JIDs; the table holds only
/// peers with a request in progress, so it is bounded by `global`.
public struct RequestSlots: Sendable, Equatable {
    public let global: Int
    public let perPeer: Int
    public private(set) var total = 0
    private(set) var byPeer: [String: Int] = [:]

    public init(global: Int = 64, perPeer: Int = 16) {
        self.global = global
        self.perPeer = min(perPeer, global)
    }

    public enum Refusal: Equatable, Sendable {
        case global
        case peer
    }

    /// Takes a slot for `peer`, or says which bound is reached. `perPeerBound: false` takes one
    /// under the global bound only (the operator's own work, keyed apart from every peer).
    public mutating func acquire(_ peer: String, perPeerBound: Bool = true) -> Refusal? {
        guard total < global else { return .global }
        let held = byPeer[peer, default: 0]
        guard held < perPeer || !perPeerBound else { return .peer }
        total += 1
        byPeer[peer] = held + 1
        return nil
    }

    public mutating func release(_ peer: String) {
        guard let held = byPeer[peer] else { return }
        total -= 1
        byPeer[peer] = held > 1 ? held - 1 : nil
    }

    /// Peers with a request in progress (the table's size).
    public var peersInProgress: Int { byPeer.count }
}

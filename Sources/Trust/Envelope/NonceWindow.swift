import Foundation
import Synchronization

/// The request nonces accepted inside the replay window, in memory: the check every signed
/// request pays is a hash lookup, not a database write. How the guarantee survives restarts is
/// `ReplayGuard`'s part (the nonces are written when a run ends cleanly; after an unclean end,
/// everything signed before the restart is refused).
///
/// A nonce is kept as long as an envelope carrying it could still pass the timestamp check: it
/// arrived at `a` with a timestamp within `skew` of `a`, so after `a + 2 × skew` it is stale
/// whatever it says. Nonces are forgotten in arrival order, so the oldest is always first.
///
/// Bounded per sender and in all (the window is keyed by what authenticated peers send): a sender
/// with `maxPerSender` nonces in the window has the rest of its requests refused until older ones
/// leave it, and the other peers keep their share up to `maxTotal`.
public struct NonceWindowState: Sendable {
    public struct Entry: Sendable, Hashable {
        public var sender: String
        public var nonce: [UInt8]
        /// The envelope's signed time, seconds since 1970 (what is persisted).
        public var sentAt: Double
        /// When it was accepted, seconds since 1970 (what expiry follows).
        public var arrivedAt: Double

        public init(sender: String, nonce: [UInt8], sentAt: Double, arrivedAt: Double) {
            self.sender = sender
            self.nonce = nonce
            self.sentAt = sentAt
            self.arrivedAt = arrivedAt
        }
    }

    public enum Verdict: Sendable, Equatable {
        case admitted
        case replayed
        /// `maxPerSender` nonces of this sender are in the window (`perSender`), or `maxTotal` in all.
        case full(perSender: Bool)
    }

    public let skew: TimeInterval
    public let maxPerSender: Int
    public let maxTotal: Int
    private var seen: [String: Set<[UInt8]>] = [:]
    /// Arrival order; `head` is the first entry still in the window (compacted when half is dead).
    private var order: [Entry] = []
    private var head = 0

    public init(skew: TimeInterval, maxPerSender: Int, maxTotal: Int) {
        self.skew = skew
        self.maxPerSender = maxPerSender
        self.maxTotal = maxTotal
    }

    public var count: Int { order.count - head }

    public func count(from sender: String) -> Int { seen[sender]?.count ?? 0 }

    /// The nonces still in the window, oldest first.
    public var entries: ArraySlice<Entry> { order[head...] }

    /// Forgets what can no longer pass the timestamp check at `now`.
    public mutating func expire(now: Double) {
        let horizon = now - 2 * skew
        while head < order.count, order[head].arrivedAt < horizon {
            let entry = order[head]
            if var nonces = seen[entry.sender] {
                nonces.remove(entry.nonce)
                seen[entry.sender] = nonces.isEmpty ? nil : nonces
            }
            head += 1
        }
        if head > 1024, head * 2 > order.count {
            order.removeFirst(head)
            head = 0
        }
    }

    /// Whether `nonce` from `sender` was accepted inside the window.
    public func contains(_ nonce: [UInt8], from sender: String) -> Bool {
        seen[sender]?.contains(nonce) ?? false
    }

    /// Accepts `nonce` from `sender` once (the caller checked the signature and the timestamp).
    public mutating func admit(_ entry: Entry) -> Verdict {
        expire(now: entry.arrivedAt)
        if contains(entry.nonce, from: entry.sender) { return .replayed }
        if count(from: entry.sender) >= maxPerSender { return .full(perSender: true) }
        if count >= maxTotal { return .full(perSender: false) }
        seen[entry.sender, default: []].insert(entry.nonce)
        order.append(entry)
        return .admitted
    }

    /// Puts back the nonces remembered when the previous run ended cleanly. Their arrival times
    /// were not kept: each counts as arrived `now`, which keeps it at least as long as needed
    /// (its timestamp was within `skew` of its arrival, which was before `now`). Those already
    /// stale are dropped; bounds apply.
    public mutating func restore(_ entries: [(sender: String, nonce: [UInt8], sentAt: Double)], now: Double) {
        for entry in entries.sorted(by: { $0.sentAt < $1.sentAt }) where entry.sentAt + skew >= now {
            _ = admit(Entry(sender: entry.sender, nonce: entry.nonce, sentAt: entry.sentAt, arrivedAt: now))
        }
    }
}

/// `NonceWindowState` behind a lock, shared by every copy of a `ReplayGuard`.
final class NonceWindow: Sendable {
    let state: Mutex<NonceWindowState>

    init(_ state: NonceWindowState) { self.state = Mutex(state) }
}

/// Tracks IQ requests awaiting a result, with per-request deadlines.
///
/// A value-type state machine: it stores request ids, expected responders and deadlines, never
/// continuations; the runtime keeps the continuations keyed by id and performs the returned actions.
/// Time is passed in.
public struct IQTracker<Instant: Comparable & Sendable>: Sendable {
    struct Pending: Sendable {
        var expectedFrom: String?
        var deadline: Instant
        var sessionEpoch: Int
    }

    public enum Outcome: Equatable, Sendable {
        /// Deliver the response to the waiting request.
        case deliver(id: String)
        /// The response did not come from the entity the request was sent to (RFC 6120 §8.1.2.1):
        /// ignore it; a spoofed result must not complete the request.
        case ignoreSpoofed(id: String, from: String?)
        /// No request with this id is pending (late, duplicate or unsolicited): drop it.
        case ignoreUnknown(id: String)
    }

    private var pending: [String: Pending] = [:]
    /// No later than the earliest pending deadline (nil: nothing pending). Lowered on every send,
    /// made exact again only when `expire` finds it has passed: answers never rescan, so the
    /// event loop's per-iteration look at it is O(1) with any number of requests in flight. The
    /// price is a wake-up at a deadline whose request was already answered, once per stale bound.
    private var deadlineBound: Instant?

    public init() {}

    public var count: Int { pending.count }
    public func isPending(_ id: String) -> Bool { pending[id] != nil }

    /// Registers a request sent to `to` (nil: our own server/account) during session `epoch`.
    public mutating func sent(id: String, to: String?, deadline: Instant, sessionEpoch: Int) {
        pending[id] = Pending(expectedFrom: to, deadline: deadline, sessionEpoch: sessionEpoch)
        if let bound = deadlineBound, bound <= deadline { return }
        deadlineBound = deadline
    }

    /// A result or error arrived. `ownBareJID` and `ownDomain` are accepted as responders for requests
    /// sent without a `to` (addressed to our own account or server).
    public mutating func received(id: String, from: String?, ownBareJID: String, ownDomain: String) -> Outcome {
        guard let request = pending[id] else { return .ignoreUnknown(id: id) }
        let acceptable: Bool
        switch request.expectedFrom {
        case nil:
            acceptable = from == nil || from == ownBareJID || from == ownDomain
        case let expected?:
            // A request to a bare JID may be answered by the bare JID; to a full JID, by that full JID.
            acceptable = from == expected || (from == nil && expected == ownBareJID)
        }
        guard acceptable else { return .ignoreSpoofed(id: id, from: from) }
        remove(id)
        return .deliver(id: id)
    }

    /// The caller gave up (task cancelled): forget the request.
    public mutating func cancelled(id: String) -> Bool {
        guard pending[id] != nil else { return false }
        remove(id)
        return true
    }

    private mutating func remove(_ id: String) {
        pending[id] = nil
        if pending.isEmpty { deadlineBound = nil }
    }

    /// Requests whose deadline has passed, removed from the tracker.
    public mutating func expire(now: Instant) -> [String] {
        // Called on every event-loop iteration: O(1) until the bound passes, then one scan that
        // expires what is due and makes the bound exact. Plain loops, no key paths (in this
        // generic context a key path is built at run time on each call, which profiling showed to
        // cost more than the rest of the request path).
        guard let bound = deadlineBound, bound <= now else { return [] }
        var expired: [String] = []
        var earliest: Instant?
        for (id, request) in pending {
            if request.deadline <= now {
                expired.append(id)
            } else if earliest == nil || request.deadline < earliest! {
                earliest = request.deadline
            }
        }
        expired.sort()
        for id in expired { pending[id] = nil }
        deadlineBound = earliest
        return expired
    }

    /// A new session began that did not resume the old one: requests sent in earlier sessions can
    /// never be answered, so they fail now rather than at their deadline.
    public mutating func sessionReplaced(newEpoch: Int) -> [String] {
        var lost: [String] = []
        for (id, request) in pending where request.sessionEpoch < newEpoch { lost.append(id) }
        lost.sort()
        for id in lost { pending[id] = nil }
        if pending.isEmpty { deadlineBound = nil }
        return lost
    }

    /// When the event loop must next call `expire`: no later than the earliest pending deadline,
    /// possibly earlier (the deadline of a request answered since; `expire` then corrects it).
    /// Exact after `expire` and whenever only sends happened since.
    public var nextDeadline: Instant? { deadlineBound }

    /// Every pending request, removed (shutdown).
    public mutating func removeAll() -> [String] {
        let all = pending.keys.sorted()
        pending.removeAll()
        deadlineBound = nil
        return all
    }
}

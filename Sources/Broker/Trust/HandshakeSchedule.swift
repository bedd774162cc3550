import XMPP

/// When this broker starts trust handshakes with the peers it sees: a value type with no IO and no
/// clock of its own (`BrokerTrust` keeps it behind a lock and passes the time in).
///
/// - One handshake per peer at a time, and at most `maxConcurrent` in all: a room full of new peers
///   queues, and each finished handshake starts the next one waiting.
/// - A refused peer waits `retryAfterRefusal` (an unanswered one `retryAfterTimeout`) before the
///   same fingerprint is tried again; a new fingerprint is tried at once.
/// - A peer coming back online shortens that wait (its operator may have fixed what was refused),
///   but never below `comebackFloor` after its last attempt: flapping presence buys at most one
///   handshake per floor.
struct HandshakeSchedule: Sendable {
    struct Peer: Sendable {
        /// The peer's latest presence (full JID to send IQs to, announced fingerprint).
        var target: JID
        var announced: String
        var inFlight = false
        /// Wants a handshake but waits for a free slot.
        var queued = false
        /// The fingerprint the last failed handshake was for, and when it may be tried again.
        var failed: (fingerprint: String, retryAt: ContinuousClock.Instant)?
        var lastAttemptEnded: ContinuousClock.Instant?
        /// What was decided at the peer's latest presence (tests, diagnostics).
        var decision: HandshakeDecision?
    }

    var maxConcurrent: Int
    var retryAfterRefusal: Duration
    var retryAfterTimeout: Duration
    var comebackFloor: Duration
    private(set) var peers: [String: Peer] = [:]

    init(maxConcurrent: Int, retryAfterRefusal: Duration, retryAfterTimeout: Duration, comebackFloor: Duration) {
        self.maxConcurrent = maxConcurrent
        self.retryAfterRefusal = retryAfterRefusal
        self.retryAfterTimeout = retryAfterTimeout
        self.comebackFloor = comebackFloor
    }

    var inFlightCount: Int { peers.values.filter(\.inFlight).count }

    mutating func decided(_ peer: String, _ decision: HandshakeDecision) {
        peers[peer]?.decision = decision
    }

    /// A presence of `peer`.
    mutating func seen(_ peer: String, target: JID, fingerprint: String, cameOnline: Bool, now: ContinuousClock.Instant) {
        peers[peer, default: Peer(target: target, announced: fingerprint)].target = target
        peers[peer]!.announced = fingerprint
        if cameOnline, let failed = peers[peer]!.failed {
            let floor = (peers[peer]!.lastAttemptEnded ?? now) + comebackFloor
            peers[peer]!.failed = (failed.fingerprint, min(failed.retryAt, floor))
        }
    }

    /// Whether to start a handshake with `peer` now (and marks it in flight); false when one is
    /// running, the peer waits out a refusal, or no slot is free (then it is queued).
    mutating func start(_ peer: String, now: ContinuousClock.Instant) -> Bool {
        guard var state = peers[peer], !state.inFlight else { return false }
        if let failed = state.failed, failed.fingerprint == state.announced, now < failed.retryAt { return false }
        guard inFlightCount < maxConcurrent else {
            state.queued = true
            peers[peer] = state
            return false
        }
        state.inFlight = true
        state.queued = false
        peers[peer] = state
        return true
    }

    /// A handshake with `peer` for `fingerprint` ended (`timedOut`/`refused`: how it failed, if it
    /// did). Returns whether the peer announced another key meanwhile (look at it again) and the
    /// next queued peer to look at, now that a slot is free.
    mutating func finished(
        _ peer: String, fingerprint: String, failed: Bool, timedOut: Bool, now: ContinuousClock.Instant
    ) -> (lookAgain: Bool, next: String?) {
        let next = peers.first { $0.key != peer && $0.value.queued && !$0.value.inFlight }?.key
        guard var state = peers[peer] else { return (false, next) }
        state.inFlight = false
        state.lastAttemptEnded = now
        state.failed = failed ? (fingerprint, now + (timedOut ? min(retryAfterTimeout, retryAfterRefusal) : retryAfterRefusal)) : nil
        peers[peer] = state
        return (state.announced != fingerprint, next)
    }
}

/// What `BrokerTrust` decided when it last looked at a peer's presence.
public enum HandshakeDecision: String, Sendable {
    /// The peer announces no certificate fingerprint (it runs without `[trust]`): nothing to verify.
    case noFingerprint
    /// Pinned with the announced fingerprint, unexpired: no handshake needed.
    case notNeeded
    /// The operator revoked or distrusts the peer: no handshake until allowed again.
    case operatorRefused
    /// A handshake is running, the peer waits out a refusal, or no slot is free (queued).
    case waiting
    case started
}

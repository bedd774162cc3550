/// The lifecycle of one client connection: connect, session, loss, backoff, reconnect, stop.
///
/// A value-type state machine in the style of postgres-nio's `ConnectionStateMachine`: each input
/// returns the actions the runtime must perform; time is passed in.
public struct ConnectionLifecycle<Instant: Comparable & Sendable>: Sendable {
    public enum State: Equatable, Sendable {
        case idle
        case connecting(attempt: Int)
        case online(epoch: Int)
        case waitingToReconnect(attempt: Int, until: Instant)
        case stopping
        case stopped
    }

    public enum Action: Equatable, Sendable {
        case startConnecting
        /// A fresh session: announce presence, join rooms, fail requests of earlier sessions.
        case sessionStarted(epoch: Int, failRequestsBefore: Int)
        /// The old session was resumed (XEP-0198): pending requests stay valid, nothing to redo.
        case sessionResumed(epoch: Int)
        case scheduleReconnect(at: Instant, attempt: Int)
        case sendUnavailableAndDisconnect
        case finished
        case none
    }

    public struct Backoff: Sendable {
        public var initial: Duration
        public var maximum: Duration
        public init(initial: Duration = .milliseconds(100), maximum: Duration = .seconds(5)) {
            self.initial = initial
            self.maximum = maximum
        }
        /// Exponential backoff with jitter; `jitter` in 0..<1 is supplied by the caller so the machine
        /// stays deterministic under test.
        public func delay(attempt: Int, jitter: Double) -> Duration {
            let exponent = min(attempt, 16)
            let base = initial * (1 << exponent)
            let capped = min(base, maximum)
            return capped * (0.5 + jitter / 2)
        }
    }

    public private(set) var state: State = .idle
    private var epoch = 0
    private let backoff: Backoff

    public init(backoff: Backoff = Backoff()) { self.backoff = backoff }

    public mutating func start() -> Action {
        guard case .idle = state else { return .none }
        state = .connecting(attempt: 0)
        return .startConnecting
    }

    /// The stream is authenticated and bound (or resumed).
    public mutating func connected(resumed: Bool) -> Action {
        switch state {
        case .connecting:
            if resumed && epoch > 0 {
                state = .online(epoch: epoch)
                return .sessionResumed(epoch: epoch)
            }
            epoch += 1
            state = .online(epoch: epoch)
            return .sessionStarted(epoch: epoch, failRequestsBefore: epoch)
        case .stopping:
            return .sendUnavailableAndDisconnect
        default:
            return .none
        }
    }

    /// The connection closed or failed to open.
    public mutating func disconnected(now: Instant, jitter: Double, add: (Instant, Duration) -> Instant) -> Action {
        switch state {
        case .online:
            return schedule(attempt: 0, now: now, jitter: jitter, add: add)
        case .connecting(let attempt):
            return schedule(attempt: attempt + 1, now: now, jitter: jitter, add: add)
        case .stopping:
            state = .stopped
            return .finished
        case .idle, .waitingToReconnect, .stopped:
            return .none
        }
    }

    private mutating func schedule(attempt: Int, now: Instant, jitter: Double, add: (Instant, Duration) -> Instant) -> Action {
        let at = add(now, backoff.delay(attempt: attempt, jitter: jitter))
        state = .waitingToReconnect(attempt: attempt, until: at)
        return .scheduleReconnect(at: at, attempt: attempt)
    }

    /// Called by the runtime's timer; reconnects once the backoff has elapsed.
    public mutating func tick(now: Instant) -> Action {
        guard case .waitingToReconnect(let attempt, let until) = state, until <= now else { return .none }
        state = .connecting(attempt: attempt)
        return .startConnecting
    }

    public var reconnectDeadline: Instant? {
        if case .waitingToReconnect(_, let until) = state { return until }
        return nil
    }

    public mutating func stop() -> Action {
        switch state {
        case .online:
            state = .stopping
            return .sendUnavailableAndDisconnect
        case .connecting:
            state = .stopping
            return .sendUnavailableAndDisconnect
        case .idle, .waitingToReconnect:
            state = .stopped
            return .finished
        case .stopping, .stopped:
            return .none
        }
    }

    public var isOnline: Bool { if case .online = state { true } else { false } }
    public var currentEpoch: Int { epoch }
}

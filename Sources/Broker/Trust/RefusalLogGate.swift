import Synchronization

/// Lets a refusal's log line through once per sender and window, as the audit aggregator does for
/// its rows: a stranger's flood of refused requests would otherwise write a log line (~200 bytes)
/// per stanza, two hundred times what its audit rows cost. Bounded: at most `maxSenders` senders
/// are remembered; past that the table starts afresh (a few extra lines, never unbounded memory).
final class RefusalLogGate: Sendable {
    private let window: Duration
    private let maxSenders: Int
    private let lastLogged = Mutex<[String: ContinuousClock.Instant]>([:])

    init(window: Duration, maxSenders: Int = 4096) {
        self.window = window
        self.maxSenders = maxSenders
    }

    /// Whether to log a refusal of `sender` now (and remember that it was logged).
    func shouldLog(_ sender: String, now: ContinuousClock.Instant = .now) -> Bool {
        lastLogged.withLock { table in
            if let last = table[sender], now - last < window { return false }
            if table.count >= maxSenders { table.removeAll() }
            table[sender] = now
            return true
        }
    }
}

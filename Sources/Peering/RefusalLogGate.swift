import Synchronization

/// Lets a refusal's log line through once per sender and window, as the audit aggregator does for
/// its rows: a stranger's flood of refused requests would otherwise write a log line (~200 bytes)
/// per stanza, two hundred times what its audit rows cost. Bounded: at most `maxSenders` senders
/// are remembered; when that many logged within the window, further senders are not logged until
/// entries expire (a flood from many JIDs is in the audit, not the log).
public final class RefusalLogGate: Sendable {
    private let window: Duration
    private let maxSenders: Int
    private let lastLogged = Mutex<[String: ContinuousClock.Instant]>([:])

    public init(window: Duration, maxSenders: Int = 4096) {
        self.window = window
        self.maxSenders = maxSenders
    }

    /// Whether to log a refusal of `sender` now (and remember that it was logged).
    public func shouldLog(_ sender: String, now: ContinuousClock.Instant = .now) -> Bool {
        lastLogged.withLock { table in
            if let last = table[sender], now - last < window { return false }
            if table.count >= maxSenders {
                table = table.filter { now - $0.value < window }
                if table.count >= maxSenders { return false }
            }
            table[sender] = now
            return true
        }
    }
}

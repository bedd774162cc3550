import Foundation

/// Keeps a flood of refusals from costing more than a bounded number of audit rows.
///
/// A stranger (any JID that reaches our XMPP server) can send us as many stanzas as the server
/// relays, each refused. Writing one durable audit row per refusal would let it fill our disk and
/// spend an fsync of ours per stanza. Instead, per window (`Settings.window`) and per key (sender,
/// kind of decision, reason), the first refusal is written at once, with its detail, and the rest
/// are only counted; when the window has passed, one summary row carries their number (`count`).
///
/// Bounded in memory: at most `Settings.maxKeys` keys are open at once. Past that, refusals from
/// senders without an open key share one overflow key per kind and reason (peer `*`), so a flood
/// from many JIDs is still counted, in one row per window.
///
/// `@unchecked Sendable`: every access to `windows` holds `lock`; nothing in it is handed out.
public final class RefusalAggregator: @unchecked Sendable {
    public struct Settings: Sendable, Equatable {
        /// How long refusals with the same key are counted into one summary row.
        public var window: TimeInterval
        /// Keys kept open at once (the memory bound).
        public var maxKeys: Int

        public init(window: TimeInterval = 60, maxKeys: Int = 4096) {
            self.window = window
            self.maxKeys = maxKeys
        }
    }

    /// What to do with a refusal.
    public enum Decision: Equatable, Sendable {
        /// The first of its key in this window: write it now.
        case write(AuditEvent)
        /// Counted into the open window: nothing to write now.
        case counted
    }

    struct Key: Hashable {
        var peer: String
        var module: String
        var kind: String
        var reason: String
    }

    struct Window {
        var start: Date
        var last: Date
        var suppressed: Int
        var sample: AuditEvent
    }

    public let settings: Settings
    private let lock = NSLock()
    private var windows: [Key: Window] = [:]
    /// When a full table was last scanned for ended windows: at most once a second, so a flood from
    /// many senders does not cost a scan of every window per refusal.
    private var lastFullScan: Date?

    public init(settings: Settings = .init()) { self.settings = settings }

    /// The peer under which refusals from senders beyond `maxKeys` are counted.
    public static let overflowPeer = "*"

    /// Takes one refusal. Returns `.write` with the event to write (the first of its key in its
    /// window), or `.counted`. Summaries of windows that have ended are returned by `due(now:)`.
    public func admit(_ event: AuditEvent) -> (decision: Decision, summaries: [AuditEvent]) {
        lock.withLock {
            var summaries: [AuditEvent] = []
            var key = Key(peer: event.peer, module: event.module, kind: event.kind, reason: event.reason)
            if let open = windows[key], event.at.timeIntervalSince(open.start) >= settings.window {
                // This key's window has ended: its summary goes out now, and this refusal opens the next.
                if let summary = Self.summary(of: open) { summaries.append(summary) }
                windows[key] = nil
            }
            if windows[key] == nil, windows.count >= settings.maxKeys {
                if lastFullScan.map({ event.at.timeIntervalSince($0) >= 1 }) ?? true {
                    lastFullScan = event.at
                    summaries += closeEnded(now: event.at)
                }
                if windows.count >= settings.maxKeys { key.peer = Self.overflowPeer }
            }
            if var open = windows[key] {
                open.suppressed += 1
                open.last = event.at
                windows[key] = open
                return (.counted, summaries)
            }
            var first = event
            if key.peer == Self.overflowPeer {
                first.detail = "from \(event.peer) and others past the \(settings.maxKeys) senders tracked at once: \(event.detail)"
                first.peer = Self.overflowPeer
            }
            windows[key] = Window(start: event.at, last: event.at, suppressed: 0, sample: first)
            return (.write(first), summaries)
        }
    }

    /// Summaries of windows that ended by `now`; those windows are closed.
    public func due(now: Date) -> [AuditEvent] {
        lock.withLock { closeEnded(now: now) }
    }

    /// Summaries of every open window (at shutdown); all windows are closed.
    public func drain() -> [AuditEvent] {
        lock.withLock {
            let summaries = windows.values.sorted { $0.start < $1.start }.compactMap(Self.summary(of:))
            windows.removeAll()
            return summaries
        }
    }

    /// Open windows (for tests and the memory bound).
    public var openWindows: Int { lock.withLock { windows.count } }

    private func closeEnded(now: Date) -> [AuditEvent] {
        var summaries: [AuditEvent] = []
        for (key, open) in windows where now.timeIntervalSince(open.start) >= settings.window {
            if let summary = Self.summary(of: open) { summaries.append(summary) }
            windows[key] = nil
        }
        return summaries.sorted { $0.at < $1.at }
    }

    private static func summary(of window: Window) -> AuditEvent? {
        guard window.suppressed > 0 else { return nil }
        var event = window.sample
        event.id = nil
        event.at = window.last
        event.count = window.suppressed
        let seconds = Int(window.last.timeIntervalSince(window.start).rounded())
        event.detail = "\(window.suppressed) more like this in \(seconds) s after the first (aggregated)"
        return event
    }
}

import Foundation
import GRDB
import Synchronization

/// Pin statuses as last read from `trust_pin`, valid while the database has not changed.
///
/// Every envelope must be checked against the pin as it is now (an operator's `intercloud trust
/// revoke` from another process applies to the next envelope). Reading the row costs a read
/// transaction on the pool (~60 µs here, as much as the signature check); asking SQLite whether
/// anything committed since (`PRAGMA data_version` on one connection of our own) costs a few. Any
/// commit by any other connection, ours included, changes that number and empties the cache, so
/// the answer is never older than the last commit: a revocation committed before an envelope is
/// checked is seen by that check.
final class PinStatusCache: Sendable {
    private struct State {
        var version: Int?
        var statuses: [String: TrustStore.PinStatus?] = [:]
    }

    /// Peers whose status is kept; past it the cache starts over (pins are few; the bound only
    /// matters if something asks about many JIDs).
    static let maxEntries = 4096

    private let state = Mutex(State())
    /// The connection that asks for `data_version`, opened on first use; nil when it cannot be
    /// opened or after `close` (then every check reads the row, as before).
    private let probe = Mutex<(queue: DatabaseQueue?, closed: Bool)>((nil, false))
    private let path: String

    init(path: String) { self.path = path }

    /// Closes the probe connection (its three descriptors: database, WAL, shared memory): call it
    /// with the database's own close. Checks after it read the row each time.
    func close() {
        let queue = probe.withLock { probe in
            defer { probe = (nil, true) }
            return probe.queue
        }
        try? queue?.close()
    }

    private func probeQueue() -> DatabaseQueue? {
        probe.withLock { probe in
            if probe.queue == nil, !probe.closed {
                var configuration = Configuration()
                configuration.readonly = true
                configuration.label = "trust.pin-version"
                probe.queue = try? DatabaseQueue(path: path, configuration: configuration)
                if probe.queue == nil { probe.closed = true }
            }
            return probe.queue
        }
    }

    /// The status of `jid`'s pin (nil: no pin), from the cache if nothing committed since it was read.
    func status(for jid: String, store: TrustStore) throws -> TrustStore.PinStatus? {
        // One statement in autocommit mode (no BEGIN/COMMIT around it), prepared once.
        guard let version = try? probeQueue()?.inDatabase({ db in try Int.fetchOne(db.cachedStatement(sql: "PRAGMA data_version")) }) else {
            return try store.status(for: jid)
        }
        if let cached = state.withLock({ $0.version == version ? $0.statuses[jid] : nil }) {
            return cached
        }
        // Read after `version`: what is stored under it is at least as new as it.
        let status = try store.status(for: jid)
        state.withLock { state in
            if state.version != version || state.statuses.count >= Self.maxEntries {
                state = State(version: version)
            }
            state.statuses[jid] = .some(status)
        }
        return status
    }
}

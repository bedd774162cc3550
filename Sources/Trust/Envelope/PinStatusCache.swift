import Foundation
import GRDB
import GRDBSQLite
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
///
/// The probe is SQLite's C API on a read-only connection of its own, one prepared statement
/// stepped under a lock (~1 µs): through GRDB (queue hop, statement cache, cursor) it cost ~6 µs,
/// twice per request, a tenth of what a request under a session adds.
final class PinStatusCache: Sendable {
    private struct State {
        var version: Int64?
        var statuses: [String: TrustStore.PinStatus?] = [:]
    }

    /// Peers whose status is kept; past it the cache starts over (pins are few; the bound only
    /// matters if something asks about many JIDs).
    static let maxEntries = 4096

    private let state = Mutex(State())
    /// The connection that asks for `data_version`, opened on first use; closed for good when it
    /// cannot be opened or after `close` (then every check reads the row, as before).
    private let probe = Mutex(Probe())
    private let path: String

    private struct Probe {
        var connection: OpaquePointer?
        var statement: OpaquePointer?
        var closed = false
    }

    init(path: String) { self.path = path }

    /// Closes the probe connection (its three descriptors: database, WAL, shared memory): call it
    /// with the database's own close. Checks after it read the row each time.
    func close() {
        probe.withLock { probe in
            sqlite3_finalize(probe.statement)
            sqlite3_close_v2(probe.connection)
            probe = Probe(closed: true)
        }
    }

    /// `PRAGMA data_version` on the probe connection (one statement in autocommit mode, prepared
    /// once), or nil if the probe is closed or fails.
    private func dataVersion() -> Int64? {
        probe.withLock { probe -> Int64? in
            if probe.statement == nil, !probe.closed {
                var connection: OpaquePointer?
                var statement: OpaquePointer?
                if sqlite3_open_v2(path, &connection, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nil) == SQLITE_OK,
                    sqlite3_prepare_v2(connection, "PRAGMA data_version", -1, &statement, nil) == SQLITE_OK
                {
                    probe.connection = connection
                    probe.statement = statement
                } else {
                    sqlite3_finalize(statement)
                    sqlite3_close_v2(connection)
                    probe.closed = true
                }
            }
            guard let statement = probe.statement else { return nil }
            defer { sqlite3_reset(statement) }
            guard sqlite3_step(statement) == SQLITE_ROW else { return nil }
            return sqlite3_column_int64(statement, 0)
        }
    }

    /// The status of `jid`'s pin (nil: no pin), from the cache if nothing committed since it was read.
    func status(for jid: String, store: TrustStore) throws -> TrustStore.PinStatus? {
        guard let version = dataVersion() else { return try store.status(for: jid) }
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

import Foundation
import GRDB
import Synchronization

/// The replay window for envelopes: a timestamp must be within ±`skew` of our clock, and each
/// (sender, nonce) is accepted once.
///
/// Seen nonces live in memory (`NonceWindow`: a signed request costs a hash lookup, not a database
/// write) and are written to SQLite (`trust_nonce`) when the run ends cleanly, so a restart does
/// not reopen the window. The guarantee across an unclean end (kill, crash, power loss: the
/// nonces of the run are gone) is kept by the run marker (`trust_run`): a run that ends cleanly
/// says so durably, in the same transaction that writes its nonces; after one that did not, every
/// envelope signed before the new run began (`notBefore`) is refused as stale, so no envelope the
/// lost run accepted can be accepted again. The cost: after a crash, requests sealed before the
/// restart fail once and are sealed anew.
///
/// One process per database owns the window (`intercloud serve`, which alone answers signed
/// requests); a command that borrows the database only opens answers, which record no nonce.
public struct ReplayGuard: Sendable {
    public let database: DatabasePool
    public var skew: TimeInterval
    /// Set after an unclean end of the previous run (or for a borrowing command: its start):
    /// envelopes signed earlier are refused.
    public var notBefore: Date?
    let window: NonceWindow

    /// Nonces remembered per sender inside the window, and in all. A peer at the per-sender bound
    /// sends more than 400 signed requests a second for four minutes; it is refused
    /// (`tooManyRequests`) until older nonces leave the window.
    public static let maxNoncesPerSender = 100_000
    public static let maxNonces = 500_000

    public init(
        database: DatabasePool, skew: TimeInterval = 120, notBefore: Date? = nil,
        maxPerSender: Int = ReplayGuard.maxNoncesPerSender, maxTotal: Int = ReplayGuard.maxNonces
    ) {
        self.database = database
        self.skew = skew
        self.notBefore = notBefore
        self.window = NonceWindow(NonceWindowState(skew: skew, maxPerSender: maxPerSender, maxTotal: maxTotal))
    }

    /// Starts the run of the process that owns the window: marks it started (durably, before
    /// anything is admitted) and takes back the nonces the previous run wrote when it ended
    /// cleanly. After an unclean end (or if the marker cannot be read: fail closed), `notBefore`
    /// is `now`; after a clean end or on a fresh database, nil.
    public static func beginRun(database: DatabasePool, skew: TimeInterval = 120, now: Date) -> ReplayGuard {
        var remembered: [(sender: String, nonce: [UInt8], sentAt: Double)] = []
        let notBefore: Date?
        do {
            notBefore = try database.write { db -> Date? in
                let previous = try Row.fetchOne(db, sql: "SELECT clean FROM trust_run WHERE id = 1")
                let nonces = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM trust_nonce") ?? 0
                try db.execute(
                    sql: "INSERT INTO trust_run (id, clean, started_at) VALUES (1, 0, ?) ON CONFLICT(id) DO UPDATE SET clean = 0, started_at = excluded.started_at",
                    arguments: [now.timeIntervalSince1970])
                remembered = try Row.fetchAll(
                    db, sql: "SELECT sender, nonce, sent_at FROM trust_nonce WHERE sent_at >= ? ORDER BY sent_at",
                    arguments: [now.timeIntervalSince1970 - skew]
                ).map { row in (row[0], [UInt8](row[1] as Data), row[2]) }
                // A database that never admitted a nonce has none to lose.
                guard let previous else { return nonces == 0 ? nil : now }
                return (previous["clean"] as Int) == 1 ? nil : now
            }
        } catch { notBefore = now }
        let guardian = ReplayGuard(database: database, skew: skew, notBefore: notBefore)
        guardian.window.state.withLock { $0.restore(remembered, now: now.timeIntervalSince1970) }
        return guardian
    }

    /// Ends the run cleanly: one durable transaction writes the nonces still in the window
    /// (replacing the previous run's) and marks the run clean.
    public func endRun(now: Date) throws {
        let entries = window.state.withLock { state -> [NonceWindowState.Entry] in
            state.expire(now: now.timeIntervalSince1970)
            return Array(state.entries)
        }
        try database.write { db in
            try db.execute(sql: "DELETE FROM trust_nonce")
            let insert = try db.makeStatement(sql: "INSERT OR IGNORE INTO trust_nonce (sender, nonce, sent_at) VALUES (?, ?, ?)")
            for entry in entries {
                try insert.execute(arguments: [entry.sender, Data(entry.nonce), entry.sentAt])
            }
            try db.execute(sql: "UPDATE trust_run SET clean = 1 WHERE id = 1")
        }
    }

    /// Checks the timestamp and records the nonce (in memory). Call only after the signature
    /// verified, so unauthenticated traffic cannot fill the window.
    public func admit(sender: String, nonce: [UInt8], sentAt: Date, now: Date) -> EnvelopeError? {
        if abs(sentAt.timeIntervalSince(now)) > skew {
            return EnvelopeError(.stale, "timestamp \(sentAt) is more than \(Int(skew)) s from \(now)")
        }
        let bare = XmppAddr.bare(sender)
        if let notBefore, sentAt < notBefore {
            // Not recorded. Checked after "replayed" so a replay still reads as one.
            if window.state.withLock({ $0.contains(nonce, from: bare) }) {
                return EnvelopeError(.replayed, "nonce already seen from \(bare)")
            }
            return EnvelopeError(
                .stale, "signed at \(sentAt), before this broker restarted after an unclean stop (\(notBefore)); seal it again")
        }
        let entry = NonceWindowState.Entry(
            sender: bare, nonce: nonce, sentAt: sentAt.timeIntervalSince1970, arrivedAt: now.timeIntervalSince1970)
        switch window.state.withLock({ $0.admit(entry) }) {
        case .admitted: return nil
        case .replayed: return EnvelopeError(.replayed, "nonce already seen from \(bare)")
        case .full(let perSender):
            let bound = window.state.withLock { perSender ? $0.maxPerSender : $0.maxTotal }
            return EnvelopeError(
                .tooManyRequests,
                perSender
                    ? "\(bound) requests from \(bare) inside the \(Int(2 * skew)) s replay window; wait"
                    : "\(bound) requests from all peers inside the \(Int(2 * skew)) s replay window; wait")
        }
    }

    /// Number of nonces currently remembered in memory (diagnostics, tests).
    public var rememberedCount: Int { window.state.withLock { $0.count } }

    /// Number of nonces the last clean end wrote (diagnostics, tests).
    public static func persistedCount(_ database: DatabasePool) throws -> Int {
        try database.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM trust_nonce") ?? 0 }
    }
}

import Foundation
import GRDB

/// The replay window for envelopes: a timestamp must be within ±`skew` of our clock, and each
/// (sender, nonce) is accepted once. Seen nonces are kept in SQLite (`trust_nonce`) so a restart
/// does not reopen the window; entries older than the window can never be accepted again (they
/// would be stale), so they are pruned as new ones arrive.
///
/// A nonce is committed without an fsync of its own (`synchronous = NORMAL` for that
/// transaction): a killed process loses none (the WAL is written), and the next durable commit of
/// anything flushes it. Only a power loss or kernel crash can take the last few away. The
/// guarantee is kept by the run marker (`trust_run`): a run that ends cleanly says so durably;
/// after one that did not, every envelope signed before the new run began (`notBefore`) is
/// refused as stale, so an envelope whose nonce may have been lost cannot be accepted again. The
/// cost: after a crash, requests sealed before the restart fail once and are sealed anew.
public struct ReplayGuard: Sendable {
    public let database: DatabasePool
    public var skew: TimeInterval
    /// Set after an unclean end of the previous run: envelopes signed earlier are refused.
    public var notBefore: Date?

    public init(database: DatabasePool, skew: TimeInterval = 120, notBefore: Date? = nil) {
        self.database = database
        self.skew = skew
        self.notBefore = notBefore
    }

    /// Starts a run: returns the start to refuse earlier envelopes from (`notBefore`) if the
    /// previous run did not end cleanly (or if the marker cannot be read: fail closed), nil after a
    /// clean end or on a fresh database. The marker is written durably before anything is admitted.
    public static func beginRun(database: DatabasePool, now: Date) -> Date? {
        do {
            return try database.write { db -> Date? in
                let previous = try Row.fetchOne(db, sql: "SELECT clean FROM trust_run WHERE id = 1")
                let nonces = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM trust_nonce") ?? 0
                try db.execute(
                    sql: "INSERT INTO trust_run (id, clean, started_at) VALUES (1, 0, ?) ON CONFLICT(id) DO UPDATE SET clean = 0, started_at = excluded.started_at",
                    arguments: [now.timeIntervalSince1970])
                // A database that never admitted a nonce has none to lose.
                guard let previous else { return nonces == 0 ? nil : now }
                return (previous["clean"] as Int) == 1 ? nil : now
            }
        } catch { return now }
    }

    /// Ends a run cleanly: a durable commit (it also flushes every nonce committed before it).
    public static func endRun(database: DatabasePool) throws {
        try database.write { db in try db.execute(sql: "UPDATE trust_run SET clean = 1 WHERE id = 1") }
    }

    /// Runs `body` in one write transaction committed without waiting for the disk (see the type's
    /// comment for why nonces may), then puts the writer back to `synchronous = FULL`.
    func writeUnsynced<T>(_ body: (Database) throws -> T) throws -> T {
        try database.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            defer { try? db.execute(sql: "PRAGMA synchronous = FULL") }
            var result: T?
            try db.inTransaction {
                result = try body(db)
                return .commit
            }
            return result!
        }
    }

    /// Checks the timestamp and records the nonce in one transaction. Call only after the
    /// signature verified, so unauthenticated traffic cannot fill the table.
    public func admit(sender: String, nonce: [UInt8], sentAt: Date, now: Date) throws -> EnvelopeError? {
        if abs(sentAt.timeIntervalSince(now)) > skew {
            return EnvelopeError(.stale, "timestamp \(sentAt) is more than \(Int(skew)) s from \(now)")
        }
        do {
            return try writeUnsynced { db in try admit(db, sender: sender, nonce: nonce, sentAt: sentAt, now: now) }
        } catch let refusal as EnvelopeError {
            return refusal
        }
    }

    /// The nonce part of `admit`, inside a caller's write transaction (the timestamp must have
    /// been checked by the caller).
    func admit(_ db: Database, sender: String, nonce: [UInt8], sentAt: Date, now: Date) throws -> EnvelopeError? {
        let bare = XmppAddr.bare(sender)
        try db.execute(
            sql: "DELETE FROM trust_nonce WHERE sent_at < ?",
            arguments: [now.timeIntervalSince1970 - 2 * skew])
        try db.execute(
            sql: "INSERT OR IGNORE INTO trust_nonce (sender, nonce, sent_at) VALUES (?, ?, ?)",
            arguments: [bare, Data(nonce), sentAt.timeIntervalSince1970])
        if db.changesCount == 0 { return EnvelopeError(.replayed, "nonce already seen from \(bare)") }
        if let notBefore, sentAt < notBefore {
            // Not recorded: thrown, so the transaction rolls back.
            throw EnvelopeError(
                .stale, "signed at \(sentAt), before this broker restarted after an unclean stop (\(notBefore)); seal it again")
        }
        return nil
    }

    /// Number of nonces currently remembered (diagnostics, tests).
    public func rememberedCount() throws -> Int {
        try database.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM trust_nonce") ?? 0 }
    }
}

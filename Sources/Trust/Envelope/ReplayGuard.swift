import Foundation
import GRDB

/// The replay window for envelopes: a timestamp must be within ±`skew` of our clock, and each
/// (sender, nonce) is accepted once. Seen nonces are kept in SQLite (`trust_nonce`) so a restart
/// does not reopen the window; entries older than the window can never be accepted again (they
/// would be stale), so they are pruned as new ones arrive.
public struct ReplayGuard: Sendable {
    public let database: DatabasePool
    public var skew: TimeInterval

    public init(database: DatabasePool, skew: TimeInterval = 120) {
        self.database = database
        self.skew = skew
    }

    /// Checks the timestamp and records the nonce in one transaction. Call only after the
    /// signature verified, so unauthenticated traffic cannot fill the table.
    public func admit(sender: String, nonce: [UInt8], sentAt: Date, now: Date) throws -> EnvelopeError? {
        if abs(sentAt.timeIntervalSince(now)) > skew {
            return EnvelopeError(.stale, "timestamp \(sentAt) is more than \(Int(skew)) s from \(now)")
        }
        return try database.write { db in try admit(db, sender: sender, nonce: nonce, sentAt: sentAt, now: now) }
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
        return db.changesCount == 0 ? EnvelopeError(.replayed, "nonce already seen from \(bare)") : nil
    }

    /// Number of nonces currently remembered (diagnostics, tests).
    public func rememberedCount() throws -> Int {
        try database.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM trust_nonce") ?? 0 }
    }
}

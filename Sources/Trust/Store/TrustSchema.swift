import GRDB
import Storage

/// Tables of the trust store. Migration "trust.v1" is frozen: change the schema with "trust.v2".
///
/// Times are REAL Unix seconds (UTC): sortable, comparable in SQL, no time-zone text.
public enum TrustSchema: SchemaContributor {
    public static func registerMigrations(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("trust.v1") { db in
            // One row per peer JID: its pinned leaf and the operator's decision about it.
            try db.execute(sql: """
                CREATE TABLE trust_pin (
                    jid TEXT PRIMARY KEY NOT NULL,
                    state TEXT NOT NULL,            -- trusted | revoked | distrusted
                    fingerprint TEXT,               -- SHA-256 of leaf DER, hex; NULL for a bare distrust
                    leaf_der BLOB,
                    chain_der BLOB,                 -- presented chain (leaf first), DER SEQUENCE OF Certificate
                    not_before REAL,
                    not_after REAL,
                    first_trusted REAL,
                    last_verified REAL,
                    updated_at REAL NOT NULL,
                    note TEXT NOT NULL DEFAULT ''
                )
                """)
            // Envelope nonces seen inside the replay window, per sender: the window lives in memory
            // and is written here when a run ends cleanly, to be read back at the next start.
            try db.execute(sql: """
                CREATE TABLE trust_nonce (
                    sender TEXT NOT NULL,
                    nonce BLOB NOT NULL,
                    sent_at REAL NOT NULL,
                    PRIMARY KEY (sender, nonce)
                ) WITHOUT ROWID
                """)
            try db.execute(sql: "CREATE INDEX trust_nonce_sent_at ON trust_nonce(sent_at)")
        }
        // The anchor a pin's chain ended at (a new key from the same anchor may replace it), and
        // the operator's one-time consent to a new key.
        migrator.registerMigration("trust.v2-key-change") { db in
            try db.execute(sql: "ALTER TABLE trust_pin ADD COLUMN anchor_fingerprint TEXT")
            try db.execute(sql: "ALTER TABLE trust_pin ADD COLUMN accept_new_key INTEGER NOT NULL DEFAULT 0")
        }
        // Whether the last run of the replay window ended cleanly (`ReplayGuard.beginRun`): after
        // an unclean end its nonces are gone, and envelopes signed before this run are refused instead.
        migrator.registerMigration("trust.v3-run") { db in
            try db.execute(sql: """
                CREATE TABLE trust_run (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    clean INTEGER NOT NULL,
                    started_at REAL NOT NULL
                )
                """)
        }
    }
}

/// The audit table, shared by all modules. Migration "audit.v1" is frozen.
public enum AuditSchema: SchemaContributor {
    public static func registerMigrations(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("audit.v1") { db in
            try db.execute(sql: """
                CREATE TABLE audit_event (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    at REAL NOT NULL,
                    module TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    peer TEXT NOT NULL,
                    action TEXT NOT NULL,
                    outcome TEXT NOT NULL,          -- accepted | refused | operator
                    reason TEXT NOT NULL DEFAULT '',
                    detail TEXT NOT NULL DEFAULT ''
                )
                """)
            try db.execute(sql: "CREATE INDEX audit_event_at ON audit_event(at)")
            try db.execute(sql: "CREATE INDEX audit_event_peer_at ON audit_event(peer, at)")
            try db.execute(sql: "CREATE INDEX audit_event_kind_at ON audit_event(kind, at)")
        }
        // How many decisions a row stands for: a summary of aggregated refusals counts many.
        migrator.registerMigration("audit.v2-count") { db in
            try db.execute(sql: "ALTER TABLE audit_event ADD COLUMN count INTEGER NOT NULL DEFAULT 1")
        }
    }
}

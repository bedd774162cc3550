import GRDB
import Storage

/// Tables of the usage ledger and SLA breaches. Migration "metering.v1" is frozen: change the schema
/// with "metering.v2".
///
/// Record periods and creation times are INTEGER Unix seconds (the record's own whole seconds);
/// local bookkeeping times are REAL Unix seconds, as in the other modules.
public enum MeteringSchema: SchemaContributor {
    public static func registerMigrations(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("metering.v1") { db in
            // One row per usage record, on either side of the agreement. The canonical bytes are the
            // source of truth; the other record columns copy fields out of them for queries.
            try db.execute(sql: """
                CREATE TABLE metering_usage_record (
                    agreement_id TEXT NOT NULL,
                    sequence INTEGER NOT NULL,
                    provider TEXT NOT NULL,
                    consumer TEXT NOT NULL,
                    role TEXT NOT NULL,                 -- provider | consumer: our side of the agreement
                    peer TEXT NOT NULL,                 -- the other side's bare JID
                    period_from INTEGER NOT NULL,
                    period_until INTEGER NOT NULL,
                    created_at INTEGER NOT NULL,
                    canonical BLOB NOT NULL,            -- UsageRecord.canonicalBytes(), as signed
                    sha256 TEXT NOT NULL,               -- hex SHA-256 of canonical
                    provider_signature BLOB NOT NULL,
                    consumer_signature BLOB,            -- set when countersigned
                    dispute_reasons TEXT,               -- JSON array of strings, set when disputed
                    state TEXT NOT NULL,                -- proposed | countersigned | disputed
                    recorded_at REAL NOT NULL,
                    settled_at REAL,                    -- when countersigned or disputed
                    PRIMARY KEY (agreement_id, sequence, provider)
                )
                """)
            try db.execute(sql: "CREATE INDEX metering_usage_record_peer_period ON metering_usage_record(peer, period_from)")
            try db.execute(sql: """
                CREATE TABLE metering_sla_breach (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    agreement_id TEXT NOT NULL,
                    kind TEXT NOT NULL,                 -- availability | migration-downtime
                    detail TEXT NOT NULL,
                    from_time REAL NOT NULL,
                    until_time REAL NOT NULL,
                    recorded_at REAL NOT NULL,
                    UNIQUE (agreement_id, kind, from_time, until_time)
                )
                """)
            try db.execute(sql: "CREATE INDEX metering_sla_breach_agreement ON metering_sla_breach(agreement_id, from_time)")
        }
    }
}

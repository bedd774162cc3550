import Crypto
import Foundation
import GRDB
import Storage

/// The federation tables. "federation.v1" is frozen: a schema change is a new migration.
public enum FederationSchema: SchemaContributor {
    public static func registerMigrations(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("federation.v1") { db in
            // One row per service: the machine's snapshot, rewritten before every action.
            try db.create(table: "federation_service") { t in
                t.column("id", .text).primaryKey()
                t.column("agreement_id", .text).notNull()
                t.column("consumer", .text).notNull()
                t.column("template", .text).notNull()
                t.column("phase", .text).notNull()
                t.column("finished", .boolean).notNull()
                t.column("snapshot", .blob).notNull()
                t.column("created_at", .datetime).notNull()
                t.column("updated_at", .datetime).notNull()
            }
            try db.create(index: "federation_service_by_agreement", on: "federation_service", columns: ["agreement_id"])
            // What happened, in order: for operators and `intercloud services watch`.
            try db.create(table: "federation_step") { t in
                t.autoIncrementedPrimaryKey("seq")
                t.column("service_id", .text).notNull()
                t.column("at", .datetime).notNull()
                t.column("phase", .text).notNull()
                t.column("step", .text).notNull()
                t.column("detail", .text).notNull()
            }
            try db.create(index: "federation_step_by_service", on: "federation_step", columns: ["service_id", "seq"])
            // The templates this broker offers, imported from its template files at start.
            try db.create(table: "federation_template") { t in
                t.column("name", .text).primaryKey()
                t.column("document", .blob).notNull()
                t.column("imported_at", .datetime).notNull()
            }
            // The current credentials of each service: only the token's SHA-256, never the token.
            try db.create(table: "federation_credential") { t in
                t.column("service_id", .text).primaryKey()
                t.column("username", .text).notNull()
                t.column("token_sha256", .text).notNull()
                t.column("generation", .integer).notNull()
                t.column("issued_at", .datetime).notNull()
                t.column("expires_at", .datetime).notNull()
            }
        }
    }
}

/// One service as listed for operators.
public struct FederatedServiceSummary: Sendable, Hashable {
    public var serviceID: String
    public var agreementID: String
    public var consumer: String
    public var templateName: String
    public var phase: FederatedService.Phase
    public var finished: Bool
    public var createdAt: Date
    public var updatedAt: Date
}

/// One line of a service's step log.
public struct FederationStepRecord: Sendable, Hashable, Codable, FetchableRecord {
    public var seq: Int64
    public var serviceID: String
    public var at: Date
    public var phase: String
    public var step: String
    public var detail: String

    enum CodingKeys: String, CodingKey {
        case seq, serviceID = "service_id", at, phase, step, detail
    }
}

/// What `FederationJournal.validate(token:serviceID:now:)` found.
public enum CredentialValidation: Sendable, Hashable {
    /// The token is the service's current one and has not expired.
    case valid(username: String, expiresAt: Date)
    case expired(at: Date)
    /// Wrong token, an older generation, or no credentials for this service.
    case invalid
    /// The service is not active (not yet, or no more).
    case serviceNotActive

    public var isValid: Bool { if case .valid = self { true } else { false } }
}

/// The federation journal in SQLite: each service's snapshot (written with `synchronous = FULL`,
/// see `IntercloudDatabase`, before the action it leads to), a step log, the broker's templates
/// and the hashes of issued credentials.
public struct FederationJournal: Sendable {
    public let database: DatabasePool

    /// Uses a database opened with `FederationSchema` among its contributors (the broker's own).
    public init(database: DatabasePool) {
        self.database = database
    }

    /// Opens (or creates) a database holding only the federation tables.
    public static func open(path: String) throws -> FederationJournal {
        FederationJournal(database: try IntercloudDatabase.open(path: path, schema: [FederationSchema.self]))
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    // MARK: services

    /// Credentials to store with a snapshot, in the same transaction.
    struct IssuedCredentials {
        var credentials: FederatedService.Credentials
        var tokenSHA256: String
    }

    /// Stores a machine's snapshot and logs the step it is about to perform, in one transaction,
    /// with the hash of newly issued credentials when there are any (so an active service never
    /// exists on disk without its credentials, and a renewal never half happens). `insert` refuses
    /// an existing service id. A service in a final phase counts as unfinished until
    /// `markFinished` (its last action, the metering removal, is then done).
    func save(
        _ snapshot: FederatedService.Snapshot, step: String, detail: String, issuing issued: IssuedCredentials? = nil,
        revokeCredentials: Bool = false, insert: Bool = false, now: Date
    ) throws {
        let data = try Self.encoder.encode(snapshot)
        try database.write { db in
            if insert {
                try db.execute(
                    sql: """
                        INSERT INTO federation_service (id, agreement_id, consumer, template, phase, finished, snapshot, created_at, updated_at)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        snapshot.serviceID, snapshot.agreementID, snapshot.consumer, snapshot.templateName, snapshot.phase.rawValue,
                        false, data, now, now,
                    ])
            } else {
                try db.execute(
                    sql: "UPDATE federation_service SET phase = ?, snapshot = ?, updated_at = ? WHERE id = ?",
                    arguments: [snapshot.phase.rawValue, data, now, snapshot.serviceID])
                guard db.changesCount == 1 else { throw FederationError.unknownService(snapshot.serviceID) }
            }
            if let issued {
                try db.execute(
                    sql: """
                        INSERT INTO federation_credential (service_id, username, token_sha256, generation, issued_at, expires_at)
                        VALUES (?, ?, ?, ?, ?, ?)
                        ON CONFLICT (service_id) DO UPDATE SET username = excluded.username, token_sha256 = excluded.token_sha256,
                            generation = excluded.generation, issued_at = excluded.issued_at, expires_at = excluded.expires_at
                        """,
                    arguments: [
                        snapshot.serviceID, issued.credentials.username, issued.tokenSHA256, issued.credentials.generation,
                        issued.credentials.issuedAt, issued.credentials.expiresAt,
                    ])
            }
            if revokeCredentials {
                try db.execute(sql: "DELETE FROM federation_credential WHERE service_id = ?", arguments: [snapshot.serviceID])
            }
            try Self.insertStep(db, serviceID: snapshot.serviceID, phase: snapshot.phase.rawValue, step: step, detail: detail, now: now)
        }
    }

    /// The service's last action is done: `unfinished()` no longer lists it.
    func markFinished(serviceID: String, now: Date) throws {
        try database.write { db in
            try db.execute(sql: "UPDATE federation_service SET finished = 1, updated_at = ? WHERE id = ?", arguments: [now, serviceID])
        }
    }

    /// Logs the result of a step (the snapshot is stored with the next action).
    func log(serviceID: String, phase: FederatedService.Phase, step: String, detail: String, now: Date) throws {
        try database.write { db in
            try Self.insertStep(db, serviceID: serviceID, phase: phase.rawValue, step: step, detail: detail, now: now)
        }
    }

    private static func insertStep(_ db: Database, serviceID: String, phase: String, step: String, detail: String, now: Date) throws {
        try db.execute(
            sql: "INSERT INTO federation_step (service_id, at, phase, step, detail) VALUES (?, ?, ?, ?, ?)",
            arguments: [serviceID, now, phase, step, String(detail.prefix(2000))])
    }

    public func snapshot(_ serviceID: String) throws -> FederatedService.Snapshot? {
        let data = try database.read { db in
            try Data.fetchOne(db, sql: "SELECT snapshot FROM federation_service WHERE id = ?", arguments: [serviceID])
        }
        guard let data else { return nil }
        return try JSONDecoder().decode(FederatedService.Snapshot.self, from: data)
    }

    /// All services, newest first.
    public func services() throws -> [FederatedServiceSummary] {
        try database.read { db in
            try Row.fetchAll(
                db, sql: "SELECT id, agreement_id, consumer, template, phase, finished, created_at, updated_at FROM federation_service ORDER BY created_at DESC, id"
            ).map { row in
                FederatedServiceSummary(
                    serviceID: row["id"], agreementID: row["agreement_id"], consumer: row["consumer"], templateName: row["template"],
                    phase: FederatedService.Phase(rawValue: row["phase"]) ?? .failed, finished: row["finished"],
                    createdAt: row["created_at"], updatedAt: row["updated_at"])
            }
        }
    }

    /// Services not yet ended or failed, to resume after a restart.
    public func unfinished() throws -> [String] {
        try database.read { db in
            try String.fetchAll(db, sql: "SELECT id FROM federation_service WHERE finished = 0 ORDER BY created_at, id")
        }
    }

    /// The step log of a service; `after` a sequence number to follow it.
    public func steps(_ serviceID: String, after seq: Int64 = 0) throws -> [FederationStepRecord] {
        try database.read { db in
            try FederationStepRecord.fetchAll(
                db, sql: "SELECT * FROM federation_step WHERE service_id = ? AND seq > ? ORDER BY seq", arguments: [serviceID, seq])
        }
    }

    // MARK: templates

    /// Replaces the broker's templates with `templates` (the files read at start): a template
    /// whose file was removed is no longer offered. Running services keep their own copy.
    public func importTemplates(_ templates: [ServerTemplate], now: Date) throws {
        let documents = try templates.map { ($0.name, try Self.encoder.encode($0)) }
        try database.write { db in
            try db.execute(sql: "DELETE FROM federation_template")
            for (name, document) in documents {
                try db.execute(
                    sql: "INSERT INTO federation_template (name, document, imported_at) VALUES (?, ?, ?)",
                    arguments: [name, document, now])
            }
        }
    }

    /// The templates this broker offers, by name.
    public func templates() throws -> [ServerTemplate] {
        let documents = try database.read { db in
            try Data.fetchAll(db, sql: "SELECT document FROM federation_template ORDER BY name")
        }
        return try documents.map { try JSONDecoder().decode(ServerTemplate.self, from: $0) }
    }

    public func template(named name: String) throws -> ServerTemplate? {
        let document = try database.read { db in
            try Data.fetchOne(db, sql: "SELECT document FROM federation_template WHERE name = ?", arguments: [name])
        }
        return try document.map { try JSONDecoder().decode(ServerTemplate.self, from: $0) }
    }

    // MARK: credentials

    /// SHA-256 of a token, lowercase hex.
    public static func hash(token: String) -> String {
        SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// Checks a token a caller presented for `serviceID` (the broker calls this for every metered
    /// call). Compares hashes in constant time, so timing does not reveal how much of a guess was right.
    public func validate(token: String, serviceID: String, now: Date) throws -> CredentialValidation {
        guard token.utf8.count <= 512 else { return .invalid }
        let row = try database.read { db in
            try Row.fetchOne(
                db,
                sql: """
                    SELECT s.phase, c.username, c.token_sha256, c.expires_at FROM federation_service s
                    LEFT JOIN federation_credential c ON c.service_id = s.id WHERE s.id = ?
                    """,
                arguments: [serviceID])
        }
        guard let row else { return .invalid }
        guard (row["phase"] as String?) == FederatedService.Phase.active.rawValue else { return .serviceNotActive }
        guard let stored: String = row["token_sha256"], let username: String = row["username"], let expiresAt: Date = row["expires_at"] else {
            return .invalid
        }
        guard Self.constantTimeEqual(Self.hash(token: token), stored) else { return .invalid }
        guard now < expiresAt else { return .expired(at: expiresAt) }
        return .valid(username: username, expiresAt: expiresAt)
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for i in 0..<x.count { difference |= x[i] ^ y[i] }
        return difference == 0
    }
}

import Foundation
import GRDB
import Storage

/// What the broker records so that both sides of an agreement can meter it independently
/// (frozen migration `broker-metering.v1`):
/// - `metering_placement`: a peer's workload placed in the provider's cloud under an agreement,
///   on both sides (the provider when it creates the instance, the consumer when its workload
///   lands there), with when it was placed and removed;
/// - `metering_observation`: the provider's samples of its driver's state for the agreement;
/// - `metering_transfer`: bytes moved under the agreement (image transfers), on both sides;
/// - `metering_availability`: availability samples for SLA measurement.
public struct MeteringStore: Sendable {
    public let database: DatabasePool

    public init(database: DatabasePool) { self.database = database }

    public enum Schema: SchemaContributor {
        public static func registerMigrations(in migrator: inout DatabaseMigrator) {
            migrator.registerMigration("broker-metering.v1") { db in
                try db.create(table: "metering_placement") { t in
                    t.column("agreement_id", .text).notNull()
                    t.column("instance_id", .text).notNull()
                    t.column("role", .text).notNull()
                    t.column("peer", .text).notNull()
                    t.column("instance_type", .text).notNull()
                    t.column("vcpu", .integer).notNull()
                    t.column("memory_gib", .text).notNull()
                    t.column("disk_bytes", .integer).notNull()
                    t.column("placed_at", .double).notNull()
                    t.column("removed_at", .double)
                    t.primaryKey(["agreement_id", "instance_id", "role"])
                }
                try db.create(table: "metering_observation") { t in
                    t.autoIncrementedPrimaryKey("id")
                    t.column("agreement_id", .text).notNull()
                    t.column("time", .double).notNull()
                    t.column("observation", .blob).notNull()
                }
                try db.create(index: "metering_observation_time", on: "metering_observation", columns: ["agreement_id", "time"])
                try db.create(table: "metering_transfer") { t in
                    t.autoIncrementedPrimaryKey("id")
                    t.column("agreement_id", .text).notNull().indexed()
                    t.column("role", .text).notNull()
                    t.column("time", .double).notNull()
                    t.column("bytes", .integer).notNull()
                }
                try db.create(table: "metering_availability") { t in
                    t.autoIncrementedPrimaryKey("id")
                    t.column("agreement_id", .text).notNull()
                    t.column("time", .double).notNull()
                    t.column("up", .boolean).notNull()
                }
                try db.create(index: "metering_availability_time", on: "metering_availability", columns: ["agreement_id", "time"])
            }
        }
    }

    /// A workload under an agreement.
    public struct Placement: Sendable, Hashable {
        public var agreementID: String
        public var instanceID: String
        public var role: LedgerRole
        public var peer: String
        public var instanceType: String
        public var vcpu: Int
        public var memoryGiB: Decimal
        public var diskBytes: Int64
        public var placedAt: Date
        public var removedAt: Date?

        public init(
            agreementID: String, instanceID: String, role: LedgerRole, peer: String, instanceType: String, vcpu: Int,
            memoryGiB: Decimal, diskBytes: Int64, placedAt: Date, removedAt: Date? = nil
        ) {
            self.agreementID = agreementID
            self.instanceID = instanceID
            self.role = role
            self.peer = peer
            self.instanceType = instanceType
            self.vcpu = vcpu
            self.memoryGiB = memoryGiB
            self.diskBytes = diskBytes
            self.placedAt = placedAt
            self.removedAt = removedAt
        }
    }

    /// Records a placement (again: no change). Synchronous: for code off the cooperative pool
    /// (actors on `StorageExecutor`, commands); tasks on the pool use `offPool`.
    public func place(_ placement: Placement) throws {
        try database.write { db in try Self.place(placement, db) }
    }

    /// Marks a placement removed at `time` (terminated, migrated away). Synchronous, as `place`.
    public func remove(agreementID: String, instanceID: String, role: LedgerRole, at time: Date) throws {
        try database.write { db in try Self.remove(agreementID: agreementID, instanceID: instanceID, role: role, at: time, db) }
    }

    /// The same writes for tasks on the cooperative pool: on GRDB's writer queue
    /// (`durableWrite`), so the fsync holds no pool thread.
    public var offPool: OffPool { OffPool(store: self) }

    public struct OffPool: Sendable {
        let store: MeteringStore

        public func place(_ placement: Placement) async throws {
            try await store.database.durableWrite { db in try MeteringStore.place(placement, db) }
        }

        public func remove(agreementID: String, instanceID: String, role: LedgerRole, at time: Date) async throws {
            try await store.database.durableWrite { db in
                try MeteringStore.remove(agreementID: agreementID, instanceID: instanceID, role: role, at: time, db)
            }
        }
    }

    private static func place(_ placement: Placement, _ db: Database) throws {
        try db.execute(
            sql: """
                INSERT INTO metering_placement(agreement_id, instance_id, role, peer, instance_type, vcpu, memory_gib, disk_bytes, placed_at, removed_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING
                """,
            arguments: [
                placement.agreementID, placement.instanceID, placement.role.rawValue, placement.peer, placement.instanceType,
                placement.vcpu, "\(placement.memoryGiB)", placement.diskBytes, placement.placedAt.timeIntervalSince1970,
                placement.removedAt?.timeIntervalSince1970,
            ])
    }

    private static func remove(agreementID: String, instanceID: String, role: LedgerRole, at time: Date, _ db: Database) throws {
        try db.execute(
            sql: "UPDATE metering_placement SET removed_at = ? WHERE agreement_id = ? AND instance_id = ? AND role = ? AND removed_at IS NULL",
            arguments: [time.timeIntervalSince1970, agreementID, instanceID, role.rawValue])
    }

    public func placements(agreementID: String, role: LedgerRole) throws -> [Placement] {
        try database.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM metering_placement WHERE agreement_id = ? AND role = ? ORDER BY placed_at",
                arguments: [agreementID, role.rawValue]
            ).map { row in
                Placement(
                    agreementID: row["agreement_id"], instanceID: row["instance_id"], role: LedgerRole(rawValue: row["role"]) ?? role,
                    peer: row["peer"], instanceType: row["instance_type"], vcpu: row["vcpu"],
                    memoryGiB: Decimal(string: row["memory_gib"]) ?? 0, diskBytes: row["disk_bytes"],
                    placedAt: Date(timeIntervalSince1970: row["placed_at"]),
                    removedAt: (row["removed_at"] as Double?).map(Date.init(timeIntervalSince1970:)))
            }
        }
    }

    public func addTransfer(agreementID: String, role: LedgerRole, bytes: Int64, at time: Date) throws {
        try database.write { db in
            try db.execute(
                sql: "INSERT INTO metering_transfer(agreement_id, role, time, bytes) VALUES (?, ?, ?, ?)",
                arguments: [agreementID, role.rawValue, time.timeIntervalSince1970, bytes])
        }
    }

    /// Cumulative bytes transferred under the agreement up to and including `time`.
    public func transferred(agreementID: String, role: LedgerRole, upTo time: Date) throws -> UInt64 {
        try database.read { db in
            UInt64(try Int64.fetchOne(
                db, sql: "SELECT COALESCE(SUM(bytes), 0) FROM metering_transfer WHERE agreement_id = ? AND role = ? AND time <= ?",
                arguments: [agreementID, role.rawValue, time.timeIntervalSince1970]) ?? 0)
        }
    }

    /// When the first bytes under the agreement moved, if any.
    public func firstTransfer(agreementID: String, role: LedgerRole) throws -> Date? {
        try database.read { db in
            try Double.fetchOne(
                db, sql: "SELECT MIN(time) FROM metering_transfer WHERE agreement_id = ? AND role = ?", arguments: [agreementID, role.rawValue]
            ).map(Date.init(timeIntervalSince1970:))
        }
    }

    /// Transfer event times within [from, until), for the consumer's own observation series.
    public func transferTimes(agreementID: String, role: LedgerRole, from: Date, until: Date) throws -> [Date] {
        try database.read { db in
            try Double.fetchAll(
                db, sql: "SELECT time FROM metering_transfer WHERE agreement_id = ? AND role = ? AND time >= ? AND time < ? ORDER BY time",
                arguments: [agreementID, role.rawValue, from.timeIntervalSince1970, until.timeIntervalSince1970]
            ).map(Date.init(timeIntervalSince1970:))
        }
    }

    public func addObservation(_ observation: UsageObservation) throws {
        let blob = try JSONEncoder.metering.encode(observation)
        try database.write { db in
            try db.execute(
                sql: "INSERT INTO metering_observation(agreement_id, time, observation) VALUES (?, ?, ?)",
                arguments: [observation.agreementID, observation.time.timeIntervalSince1970, blob])
        }
    }

    /// Observations for [from, until): the last one before `from` (its state holds into the
    /// period) and every one inside, in time order.
    public func observations(agreementID: String, from: Date, until: Date) throws -> [UsageObservation] {
        try database.read { db in
            var blobs: [Data] = []
            if let before = try Data.fetchOne(
                db, sql: "SELECT observation FROM metering_observation WHERE agreement_id = ? AND time < ? ORDER BY time DESC, id DESC LIMIT 1",
                arguments: [agreementID, from.timeIntervalSince1970])
            {
                blobs.append(before)
            }
            blobs += try Data.fetchAll(
                db, sql: "SELECT observation FROM metering_observation WHERE agreement_id = ? AND time >= ? AND time < ? ORDER BY time, id",
                arguments: [agreementID, from.timeIntervalSince1970, until.timeIntervalSince1970])
            return try blobs.map { try JSONDecoder.metering.decode(UsageObservation.self, from: $0) }
        }
    }

    public func addAvailability(agreementID: String, _ sample: AvailabilitySample) throws {
        try database.write { db in
            try db.execute(
                sql: "INSERT INTO metering_availability(agreement_id, time, up) VALUES (?, ?, ?)",
                arguments: [agreementID, sample.time.timeIntervalSince1970, sample.isUp])
        }
    }

    public func availability(agreementID: String, from: Date, until: Date) throws -> [AvailabilitySample] {
        try database.read { db in
            try Row.fetchAll(
                db, sql: "SELECT time, up FROM metering_availability WHERE agreement_id = ? AND time >= ? AND time < ? ORDER BY time, id",
                arguments: [agreementID, from.timeIntervalSince1970, until.timeIntervalSince1970]
            ).map { AvailabilitySample(time: Date(timeIntervalSince1970: $0["time"]), isUp: $0["up"]) }
        }
    }
}

extension JSONEncoder {
    static let metering: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .secondsSince1970
        encoder.outputFormatting = .sortedKeys
        return encoder
    }()
}

extension JSONDecoder {
    static let metering: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .secondsSince1970
        return decoder
    }()
}

import Foundation
import GRDB
import Metering
import Storage
import Trust
import XMLModel

/// The broker's own federation tables, next to the Federation module's journal (`FederationSchema`,
/// the provider side). "broker-federation.v1" and ".v2" are frozen: a schema change is a new migration.
///
/// - `federation_consumed`: services this broker selected at peers (the consumer side): where
///   they answer and until when the credentials hold; never the token.
/// - `federation_call`: calls to services this broker provides whose credentials were checked
///   (`FederationService.validateCall`), counted per service; `federation_call_second` keeps the
///   valid ones per second, which usage records bill (`validCalls(agreementID:in:)`).
/// - `federation_request`: operator requests from the CLI for the running broker (select, status,
///   renew, teardown), with their outcome. A new token stays in `outcome` only until the CLI that
///   asked has read it (`FederationStore.takeOutcome` wipes it): it is shown once.
public enum FederationStore {
    public enum Schema: SchemaContributor {
        public static func registerMigrations(in migrator: inout DatabaseMigrator) {
            migrator.registerMigration("broker-federation.v1") { db in
                try db.create(table: "federation_consumed") { t in
                    t.primaryKey("service_id", .text)
                    t.column("peer", .text).notNull()
                    t.column("agreement_id", .text).notNull()
                    t.column("template", .text).notNull()
                    t.column("phase", .text).notNull()
                    t.column("endpoint", .text)
                    t.column("protocol", .text)
                    t.column("interface", .text)
                    t.column("username", .text)
                    t.column("credentials_expire_at", .datetime)
                    t.column("agreement_ends_at", .datetime)
                    t.column("reason", .text)
                    t.column("created_at", .datetime).notNull()
                    t.column("updated_at", .datetime).notNull()
                }
                try db.create(table: "federation_call") { t in
                    t.primaryKey("service_id", .text)
                    t.column("valid", .integer).notNull()
                    t.column("refused", .integer).notNull()
                    t.column("last_call_at", .datetime).notNull()
                }
                try db.create(table: "federation_request") { t in
                    t.primaryKey("id", .text)
                    t.column("kind", .text).notNull()
                    t.column("peer", .text)
                    t.column("template", .text)
                    t.column("parameters", .text)
                    t.column("agreement_id", .text)
                    t.column("service_id", .text)
                    t.column("requested_at", .datetime).notNull()
                    t.column("taken", .boolean).notNull().defaults(to: false)
                    t.column("finished", .boolean).notNull().defaults(to: false)
                    t.column("outcome", .text)
                    t.column("error", .text)
                }
            }
            // Valid calls per service and second, so a usage record counts exactly the calls of
            // its period (periods start at any second).
            migrator.registerMigration("broker-federation.v2") { db in
                try db.create(table: "federation_call_second") { t in
                    t.column("service_id", .text).notNull()
                    t.column("second", .integer).notNull()
                    t.column("valid", .integer).notNull()
                    t.primaryKey(["service_id", "second"])
                }
            }
        }
    }

    /// Every table federation needs in the broker database (the journal's and these).
    public static var schema: [any SchemaContributor.Type] { [FederationSchema.self, Schema.self] }

    /// Applies the federation migrations to an already open broker database (a no-op once they
    /// are part of `BrokerNode.schema`).
    public static func prepare(_ database: DatabasePool) throws {
        var migrator = DatabaseMigrator()
        for contributor in schema { contributor.registerMigrations(in: &migrator) }
        try migrator.migrate(database)
    }

    // MARK: services at peers (consumer side)

    /// A service this broker selected at a peer, as stored (no token).
    public struct ConsumedService: Sendable, Hashable, Codable {
        public var serviceID: String
        public var peer: String
        public var agreementID: String
        public var templateName: String
        /// `selecting`, then the provider's phase (`active`, `ended`, `failed`, ...).
        public var phase: String
        /// `protocol://host:port/path`.
        public var endpoint: String?
        public var protocolName: String?
        public var interfaceDescription: String?
        public var username: String?
        public var credentialsExpireAt: Date?
        public var agreementEndsAt: Date?
        public var reason: String?
        public var createdAt: Date
        public var updatedAt: Date

        init(row: Row) {
            serviceID = row["service_id"]
            peer = row["peer"]
            agreementID = row["agreement_id"]
            templateName = row["template"]
            phase = row["phase"]
            endpoint = row["endpoint"]
            protocolName = row["protocol"]
            interfaceDescription = row["interface"]
            username = row["username"]
            credentialsExpireAt = row["credentials_expire_at"]
            agreementEndsAt = row["agreement_ends_at"]
            reason = row["reason"]
            createdAt = row["created_at"]
            updatedAt = row["updated_at"]
        }
    }

    static func insertConsumed(
        _ db: Database, serviceID: String, peer: String, agreementID: String, template: String, agreementEndsAt: Date?, now: Date
    ) throws {
        try db.execute(
            sql: """
                INSERT INTO federation_consumed (service_id, peer, agreement_id, template, phase, agreement_ends_at, created_at, updated_at)
                VALUES (?, ?, ?, ?, 'selecting', ?, ?, ?)
                """,
            arguments: [serviceID, peer, agreementID, template, agreementEndsAt, now, now])
    }

    static func updateConsumed(
        _ db: Database, serviceID: String, phase: String, endpoint: ServiceEndpoint? = nil, interface: String? = nil,
        credentials: ServiceCredentials? = nil, reason: String? = nil, now: Date
    ) throws {
        try db.execute(
            sql: """
                UPDATE federation_consumed SET phase = ?, endpoint = COALESCE(?, endpoint), protocol = COALESCE(?, protocol),
                    interface = COALESCE(?, interface), username = COALESCE(?, username),
                    credentials_expire_at = COALESCE(?, credentials_expire_at), reason = COALESCE(?, reason), updated_at = ?
                WHERE service_id = ?
                """,
            arguments: [
                phase, endpoint?.url, endpoint?.protocolName, interface, credentials?.username, credentials?.expiresAt, reason, now,
                serviceID,
            ])
    }

    public static func consumed(database: DatabasePool, serviceID: String) throws -> ConsumedService? {
        try database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM federation_consumed WHERE service_id = ?", arguments: [serviceID]).map(ConsumedService.init(row:))
        }
    }

    /// Services selected at peers, newest first.
    public static func consumed(database: DatabasePool) throws -> [ConsumedService] {
        try database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM federation_consumed ORDER BY created_at DESC, service_id").map(ConsumedService.init(row:))
        }
    }

    // MARK: both sides, for operators

    /// One service as `intercloud services` lists it: provided here (role provider) or selected
    /// at a peer (role consumer).
    public struct ServiceSummary: Sendable, Hashable, Codable {
        public var serviceID: String
        public var role: String
        /// The other broker: the consumer of a provided service, the provider of a consumed one.
        public var peer: String
        public var agreementID: String
        public var templateName: String
        public var phase: String
        public var endpoint: String?
        public var credentialsExpireAt: Date?
        public var reason: String?
        /// Calls whose credentials were checked (provided services only).
        public var validCalls: Int?
        public var refusedCalls: Int?
        public var updatedAt: Date
    }

    /// Every service, provided and consumed, newest first.
    public static func summaries(database: DatabasePool) throws -> [ServiceSummary] {
        let journal = FederationJournal(database: database)
        var summaries: [ServiceSummary] = []
        for service in try journal.services() {
            let snapshot = try journal.snapshot(service.serviceID)
            let calls = try callCount(database: database, serviceID: service.serviceID)
            summaries.append(ServiceSummary(
                serviceID: service.serviceID, role: "provider", peer: service.consumer, agreementID: service.agreementID,
                templateName: service.templateName, phase: service.phase.rawValue,
                endpoint: service.phase == .active ? snapshot?.endpoint?.url : nil,
                credentialsExpireAt: service.phase == .active ? snapshot?.credentials?.expiresAt : nil,
                reason: snapshot?.failureReason ?? snapshot?.teardownReason, validCalls: calls.valid, refusedCalls: calls.refused,
                updatedAt: service.updatedAt))
        }
        for service in try consumed(database: database) {
            summaries.append(ServiceSummary(
                serviceID: service.serviceID, role: "consumer", peer: service.peer, agreementID: service.agreementID,
                templateName: service.templateName, phase: service.phase, endpoint: service.endpoint,
                credentialsExpireAt: service.credentialsExpireAt, reason: service.reason, updatedAt: service.updatedAt))
        }
        return summaries.sorted { ($0.updatedAt, $0.serviceID) > ($1.updatedAt, $1.serviceID) }
    }

    /// The step log of a provided service (empty for a consumed one), as lines for operators.
    public static func steps(database: DatabasePool, serviceID: String) throws -> [String] {
        let format = ISO8601DateFormatter()
        return try FederationJournal(database: database).steps(serviceID).map {
            "\(format.string(from: $0.at))  \($0.phase)  \($0.step)\($0.detail.isEmpty ? "" : ": \($0.detail)")"
        }
    }

    // MARK: metered calls (provider side)

    /// Calls to one provided service whose credentials were checked.
    public struct CallCount: Sendable, Hashable, Codable {
        public var valid: Int
        public var refused: Int
        public var lastCallAt: Date?

        public static let none = CallCount(valid: 0, refused: 0, lastCallAt: nil)
    }

    /// Checks tokens presented for services this broker provides and counts the calls. Only
    /// services that exist are counted, so guessed ids cannot grow the table.
    ///
    /// A call is answered only once its count is durable, as before, but counts of calls checked
    /// at the same moment share one commit (`GroupCommit`): a service called many times at once
    /// costs one fsync per batch, not one per call, and none on the cooperative pool.
    public final class CallCounter: Sendable {
        struct Call: Sendable {
            var serviceID: String
            var valid: Bool
            var now: Date
        }

        public let database: DatabasePool
        private let group: GroupCommit<Call, Void>

        public init(database: DatabasePool) {
            self.database = database
            self.group = GroupCommit(database: database) { db, call in try CallCounter.count(call, db) }
        }

        public func validate(serviceID: String, token: String, now: Date) async throws -> CredentialValidation {
            let result = try FederationJournal(database: database).validate(token: token, serviceID: serviceID, now: now)
            try await group.commit(Call(serviceID: serviceID, valid: result.isValid, now: now))
            return result
        }

        static func count(_ call: Call, _ db: Database) throws {
            let valid = call.valid ? 1 : 0
            try db.execute(
                sql: """
                    INSERT INTO federation_call (service_id, valid, refused, last_call_at)
                    SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM federation_service WHERE id = ?)
                    ON CONFLICT (service_id) DO UPDATE SET valid = valid + excluded.valid, refused = refused + excluded.refused,
                        last_call_at = excluded.last_call_at
                    """,
                arguments: [call.serviceID, valid, 1 - valid, call.now, call.serviceID])
            if call.valid {
                try db.execute(
                    sql: """
                        INSERT INTO federation_call_second (service_id, second, valid) VALUES (?, ?, 1)
                        ON CONFLICT (service_id, second) DO UPDATE SET valid = valid + 1
                        """,
                    arguments: [call.serviceID, Int64(call.now.timeIntervalSince1970.rounded(.down))])
            }
        }
    }

    /// Valid calls to services provided under `agreementID` in `period` (whole seconds, from
    /// inclusive, until exclusive: consecutive periods split the calls without overlap or gap).
    public static func validCalls(database: DatabasePool, agreementID: String, in period: MeteringPeriod) throws -> Int64 {
        try database.read { db in
            try Int64.fetchOne(
                db,
                sql: """
                    SELECT COALESCE(SUM(c.valid), 0) FROM federation_call_second c JOIN federation_service s ON s.id = c.service_id
                    WHERE s.agreement_id = ? AND c.second >= ? AND c.second < ?
                    """,
                arguments: [
                    agreementID, Int64(period.from.timeIntervalSince1970.rounded(.down)),
                    Int64(period.until.timeIntervalSince1970.rounded(.down)),
                ]) ?? 0
        }
    }

    public static func callCount(database: DatabasePool, serviceID: String) throws -> CallCount {
        try database.read { db in
            try Row.fetchOne(db, sql: "SELECT valid, refused, last_call_at FROM federation_call WHERE service_id = ?", arguments: [serviceID])
                .map { CallCount(valid: $0["valid"], refused: $0["refused"], lastCallAt: $0["last_call_at"]) } ?? .none
        }
    }

    /// Valid calls to every service provided under `agreementID`.
    public static func validCalls(database: DatabasePool, agreementID: String) throws -> Int {
        try database.read { db in
            try Int.fetchOne(
                db,
                sql: """
                    SELECT COALESCE(SUM(c.valid), 0) FROM federation_call c JOIN federation_service s ON s.id = c.service_id
                    WHERE s.agreement_id = ?
                    """,
                arguments: [agreementID]) ?? 0
        }
    }

    // MARK: operator requests

    /// What an operator asks the running broker to do.
    public enum RequestKind: String, Sendable, Codable, CaseIterable {
        /// Select a template at a peer (consumer side).
        case select
        /// Ask the provider for the service's state.
        case status
        /// New credentials (consumer side).
        case renew
        /// End a service: at the provider for a consumed one, locally for a provided one.
        case teardown
    }

    /// The result of an operator request, as the CLI shows it. `token` is set once, for `select`
    /// and `renew`, and wiped when the CLI has read it.
    public struct RequestOutcome: Sendable, Hashable, Codable {
        public var serviceID: String
        public var role: String
        public var phase: String
        public var endpoint: String?
        public var protocolName: String?
        public var interfaceDescription: String?
        public var username: String?
        public var token: String?
        public var credentialsExpireAt: Date?
        public var reason: String?

        public init(
            serviceID: String, role: String, phase: String, endpoint: String? = nil, protocolName: String? = nil,
            interfaceDescription: String? = nil, username: String? = nil, token: String? = nil, credentialsExpireAt: Date? = nil,
            reason: String? = nil
        ) {
            self.serviceID = serviceID
            self.role = role
            self.phase = phase
            self.endpoint = endpoint
            self.protocolName = protocolName
            self.interfaceDescription = interfaceDescription
            self.username = username
            self.token = token
            self.credentialsExpireAt = credentialsExpireAt
            self.reason = reason
        }
    }

    /// A queued operator request.
    public struct QueuedRequest: Sendable, Hashable {
        public var id: String
        public var kind: RequestKind
        public var peer: String?
        public var template: String?
        public var parameters: [String: String]
        public var agreementID: String?
        public var serviceID: String?

        public init(
            id: String = "req-" + RandomIdentifier.hex(bytes: 8), kind: RequestKind, peer: String? = nil, template: String? = nil,
            parameters: [String: String] = [:], agreementID: String? = nil, serviceID: String? = nil
        ) {
            self.id = id
            self.kind = kind
            self.peer = peer
            self.template = template
            self.parameters = parameters
            self.agreementID = agreementID
            self.serviceID = serviceID
        }
    }

    /// Queues a request for the running broker (from the CLI); returns its id.
    @discardableResult
    public static func enqueue(database: DatabasePool, _ request: QueuedRequest, now: Date) throws -> String {
        let parameters = String(decoding: try JSONEncoder().encode(request.parameters), as: UTF8.self)
        try database.write { db in
            try db.execute(
                sql: """
                    INSERT INTO federation_request (id, kind, peer, template, parameters, agreement_id, service_id, requested_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    request.id, request.kind.rawValue, request.peer, request.template, parameters, request.agreementID, request.serviceID, now,
                ])
        }
        return request.id
    }

    /// The newest queued select for `serviceID`, if any: a command killed after queuing it can
    /// wait for that request's outcome instead of selecting again.
    public static func selectRequest(database: DatabasePool, serviceID: String) throws -> String? {
        try database.read { db in
            try String.fetchOne(
                db, sql: "SELECT id FROM federation_request WHERE kind = ? AND service_id = ? ORDER BY requested_at DESC LIMIT 1",
                arguments: [RequestKind.select.rawValue, serviceID])
        }
    }

    /// The state of a queued request: nil if unknown.
    public enum RequestState: Sendable, Hashable {
        case waiting
        case running
        case done(RequestOutcome)
        case failed(String)
    }

    /// Reads a request's state; a finished outcome's token is wiped in the same transaction, so
    /// it is shown once.
    public static func takeOutcome(database: DatabasePool, id: String) throws -> RequestState? {
        try database.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT taken, finished, outcome, error FROM federation_request WHERE id = ?", arguments: [id])
            else { return nil }
            guard row["finished"] as Bool else { return (row["taken"] as Bool) ? .running : .waiting }
            if let error: String = row["error"] { return .failed(error) }
            guard let text: String = row["outcome"], let outcome = try? decoder.decode(RequestOutcome.self, from: Data(text.utf8)) else {
                return .failed("the broker recorded no outcome")
            }
            if outcome.token != nil {
                var wiped = outcome
                wiped.token = nil
                try db.execute(
                    sql: "UPDATE federation_request SET outcome = ? WHERE id = ?",
                    arguments: [String(decoding: try encoder.encode(wiped), as: UTF8.self), id])
            }
            return .done(outcome)
        }
    }

    /// Marks every waiting request taken and returns them (the running broker's side).
    static func takeRequests(database: DatabasePool) async throws -> [QueuedRequest] {
        try await database.durableWrite { db in
            let rows = try Row.fetchAll(db, sql: "SELECT * FROM federation_request WHERE taken = 0 ORDER BY requested_at, id")
            try db.execute(sql: "UPDATE federation_request SET taken = 1 WHERE taken = 0")
            return rows.map { row in
                let parameters = (row["parameters"] as String?).flatMap { try? JSONDecoder().decode([String: String].self, from: Data($0.utf8)) }
                return QueuedRequest(
                    id: row["id"], kind: RequestKind(rawValue: row["kind"]) ?? .status, peer: row["peer"], template: row["template"],
                    parameters: parameters ?? [:], agreementID: row["agreement_id"], serviceID: row["service_id"])
            }
        }
    }

    static func finish(database: DatabasePool, id: String, outcome: Result<RequestOutcome, any Error>) async {
        let text: String?
        let error: String?
        switch outcome {
        case .success(let value):
            text = (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) }
            error = text == nil ? "cannot encode the outcome" : nil
        case .failure(let failure):
            text = nil
            error = String(describing: failure)
        }
        try? await database.durableWrite { db in
            try db.execute(
                sql: "UPDATE federation_request SET finished = 1, outcome = ?, error = ? WHERE id = ?", arguments: [text, error, id])
        }
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }()

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()
}

/// Federation messages over signed IQs: `<federation xmlns='urn:intercloud:federation:0'>JSON</federation>`.
enum FederationWire {
    static func encode(_ message: FederationMessage) throws -> [UInt8] {
        let json = String(decoding: try message.encoded(), as: UTF8.self)
        return Array(XMLElement("federation", namespace: FederationMessage.namespace, text: json).serialized().utf8)
    }

    /// Decodes and validates a peer's message (size bounded before parsing).
    static func decode(_ bytes: [UInt8]) throws(FederationMessageError) -> FederationMessage {
        guard bytes.count <= FederationMessage.maximumEncodedBytes * 2 else {
            throw FederationMessageError("\(bytes.count) bytes exceeds the limit")
        }
        guard let element = try? XMLElement.parse(String(decoding: bytes, as: UTF8.self), maxBytes: FederationMessage.maximumEncodedBytes * 2),
            element.name == "federation", element.namespace == FederationMessage.namespace, element.elements.isEmpty
        else { throw FederationMessageError("expected <federation xmlns='\(FederationMessage.namespace)'>JSON</federation>") }
        return try FederationMessage.decode(Data(element.text.utf8))
    }
}

/// Metering's view of federated services, read from this store.
public struct FederationServiceUsage: FederatedServiceUsage {
    let database: DatabasePool

    public init(database: DatabasePool) { self.database = database }

    public func validCalls(agreementID: String, in period: MeteringPeriod) throws -> Int64 {
        try FederationStore.validCalls(database: database, agreementID: agreementID, in: period)
    }

    public func consumesServices(agreementID: String) throws -> Bool {
        try FederationStore.consumed(database: database).contains { $0.agreementID == agreementID }
    }
}

/// The provider's metering of federated services: the runner reports the instance it handed to
/// the consumer, and its end, as placements under the agreement (role provider), which the
/// metering service samples and bills like any other workload.
struct BrokerFederationMetering: FederationMeteringHook {
    let store: MeteringStore

    func placed(_ placement: FederationPlacement) async throws {
        try await store.offPool.place(MeteringStore.Placement(
            agreementID: placement.agreementID, instanceID: placement.instanceID, role: .provider, peer: placement.consumer,
            instanceType: placement.instanceType, vcpu: placement.vCPU, memoryGiB: Decimal(placement.memoryMiB) / 1024,
            diskBytes: Int64(placement.diskGiB) << 30, placedAt: placement.placedAt))
    }

    func removed(_ removal: FederationRemoval) async throws {
        try await store.offPool.remove(agreementID: removal.agreementID, instanceID: removal.instanceID, role: .provider, at: removal.removedAt)
    }
}

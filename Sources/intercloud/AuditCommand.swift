import ArgumentParser
import Foundation
import Storage
import Trust

/// `intercloud audit`: trust decisions and refused requests of every module, newest first.
/// Thin over `Trust.AuditLog` / `AuditReport`. To be switched to `--config FILE` later.
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Show the audit log (table or JSON), with filters.")

    enum Output: String, ExpressibleByArgument, CaseIterable { case table, json }

    @Option(help: "Path of the broker database.") var database: String
    @Option(help: "Only this peer JID.") var peer: String?
    @Option(help: "Only this kind (e.g. trust.handshake), or a prefix ending in '.' (e.g. trust.).") var kind: String?
    @Option(help: "Only this module (trust, catalog, ...).") var module: String?
    @Option(help: "Only this outcome: accepted, refused, operator.") var outcome: String?
    @Option(help: "Only this reason code (e.g. unknownCA, replayed).") var reason: String?
    @Option(help: "Since an ISO 8601 time or an age (90s, 15m, 2h, 7d).") var since: String?
    @Option(help: "At most this many events.") var limit: Int = 100
    @Option(help: "table or json.") var output: Output = .table

    func run() async throws {
        var query = AuditQuery(peer: peer, module: module, kind: kind, reason: reason, limit: limit)
        if let outcome {
            guard let value = AuditEvent.Outcome(rawValue: outcome) else { throw ValidationError("unknown outcome \(outcome)") }
            query.outcome = value
        }
        if let since {
            guard let date = AuditQuery.parseTime(since, now: Date()) else { throw ValidationError("cannot read time \(since)") }
            query.since = date
        }
        let pool = try IntercloudDatabase.open(path: database, schema: [AuditSchema.self], readOnly: true)
        let events = try AuditLog(database: pool).events(matching: query)
        switch output {
        case .table: print(AuditReport.table(events), terminator: "")
        case .json: print(try AuditReport.json(events), terminator: "")
        }
    }
}

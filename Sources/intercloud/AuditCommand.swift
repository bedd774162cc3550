import ArgumentParser
import Foundation
import Storage
import Trust

/// `intercloud audit`: trust decisions and refused requests of every module, newest first.
/// Thin over `Trust.AuditLog` / `AuditReport`.
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Show the audit log (table or JSON), with filters.",
        discussion: """
            Every trust decision (handshake accepted or refused, with the reason), every
            operator decision (trust revoke/allow/distrust) and every refused federation
            request (unsigned, bad signature, replayed, untrusted sender, ...) is recorded
            before the broker answers. Works while the broker runs.

              intercloud audit --config cloud1.toml                  # everything
              intercloud audit --config cloud1.toml --outcome refused
              intercloud audit --config cloud1.toml --kind trust.envelope --since 1h
              intercloud audit -c cloud1.toml --peer broker@cloud2.example --output json

            Reasons: unknownCA, expired, notYetValid, revoked, xmppAddrMismatch,
            missingXmppAddr, wrongKeyUsage, badSignature, replayedNonce, pinRevoked,
            distrusted, peerRefused, timeout (handshakes); unsigned, malformed,
            badSignature, untrustedSender, pinRevoked, replayed, stale, wrongNamespace, notThisExchange,
            trustNotConfigured (requests).
            """)

    enum Output: String, ExpressibleByArgument, CaseIterable { case table, json }

    @OptionGroup var location: BrokerDatabaseOptions
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
        let pool = try IntercloudDatabase.open(path: try location.path(), schema: [AuditSchema.self], readOnly: true)
        let events = try AuditLog(database: pool).events(matching: query)
        switch output {
        case .table: print(AuditReport.table(events), terminator: "")
        case .json: print(try AuditReport.json(events), terminator: "")
        }
    }
}

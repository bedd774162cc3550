import ArgumentParser
import Broker
import Foundation
import Metering
import Negotiation
import Policy
import Storage
import XMPP

enum BillFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json, csv
}

/// `2026-11-01`, `2026-11-01T12:00:00Z` or `now`.
func parseDate(_ text: String, option: String) throws -> Date {
    if text == "now" { return Date() }
    let full = ISO8601DateFormatter()
    if let date = full.date(from: text) { return date }
    let day = ISO8601DateFormatter()
    day.formatOptions = [.withFullDate]
    if let date = day.date(from: text) { return date }
    throw ValidationError("\(option): '\(text)' is not a date (YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or now)")
}

struct UsageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "usage",
        abstract: "Usage records, bills and SLA breaches under agreements with peers.",
        discussion: """
            The provider's broker samples its cloud for every agreement in force, closes one
            usage record per metering period ([metering] period_seconds, default 3600), signs it
            and sends it to the consumer, which compares it with its own view and countersigns
            or disputes it with reasons. Both keep the exchange in their ledger.

              [metering]
              sample_seconds = 60        # provider sampling interval
              period_seconds = 3600      # one usage record per period
              tolerance_percent = 1      # relative difference accepted before disputing

            A bill covers the countersigned records lying within --from/--to, priced with the
            agreement's rate card, each line rounded half-up to the cent:
              intercloud usage report --config cloud2.toml --peer broker@cloud1.example \\
                --from 2026-11-01 --to 2026-12-01 [--output table|json|csv]
            """,
        subcommands: [Report.self, Records.self, SLA.self],
        defaultSubcommand: Report.self)

    static func open(_ config: String) throws -> (BrokerConfiguration, UsageLedger, NegotiationStore) {
        let configuration = try loadConfiguration(config)
        guard FileManager.default.fileExists(atPath: configuration.databasePath) else {
            throw ValidationError("no database at \(configuration.databasePath): has this broker run yet?")
        }
        let database = try IntercloudDatabase.open(path: configuration.databasePath, schema: BrokerNode.schema)
        return (configuration, UsageLedger(database: database), NegotiationStore(database: database))
    }

    struct Report: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the bill for one peer between two dates (countersigned records only).")

        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).") var config: String
        @Option(help: "Peer broker JID (bare).") var peer: String
        @Option(help: "Start of the billing period (YYYY-MM-DD or ISO 8601).") var from: String
        @Option(help: "End of the billing period, exclusive (YYYY-MM-DD, ISO 8601 or now).") var to: String = "now"
        @Option(name: .customLong("as"), help: "This broker's side: provider (what the peer owes) or consumer (what we owe). Default: whichever has records.")
        var side: String?
        @Option(help: "Output format: table, json or csv.") var output: BillFormat = .table

        func run() async throws {
            let (configuration, ledger, negotiations) = try UsageCommand.open(config)
            let local = configuration.xmpp.jid.bare.description
            let peerJID = try JID(peer).bare.description
            let period = MeteringPeriod(from: try parseDate(from, option: "--from"), until: try parseDate(to, option: "--to"))
            guard !period.isEmpty else { throw ValidationError("--to must be after --from") }
            var roles: [LedgerRole] = [.provider, .consumer]
            if let side {
                guard let role = LedgerRole(rawValue: side) else { throw ValidationError("--as must be provider or consumer") }
                roles = [role]
            }
            var bills: [Bill] = []
            for role in roles {
                let records = try ledger.billableRecords(peer: peerJID, role: role, period: period)
                guard !records.isEmpty else { continue }
                for agreementID in Set(records.map(\.agreementID)).sorted() {
                    guard let stored = try negotiations.agreement(agreementID) else {
                        throw ValidationError("records refer to agreement \(agreementID), which this broker does not hold")
                    }
                    let billed = records.filter { $0.agreementID == agreementID }
                    bills.append(try Bill(
                        provider: role == .provider ? local : peerJID, consumer: role == .provider ? peerJID : local, period: period,
                        rates: stored.agreement.terms.rates, records: billed))
                }
                if side == nil { break }
            }
            guard !bills.isEmpty else {
                let pending = try ledger.entries(peer: peerJID, overlapping: period).filter { $0.state != .countersigned }.count
                throw ValidationError("no countersigned usage records with \(peerJID) within \(period)\(pending > 0 ? " (\(pending) proposed or disputed: see `intercloud usage records`)" : "")")
            }
            for (index, bill) in bills.enumerated() {
                switch output {
                case .table: print(BillRenderer.table(bill) + (index < bills.count - 1 ? "\n" : ""))
                case .json: print(BillRenderer.json(bill))
                case .csv: print(BillRenderer.csv(bill), terminator: "")
                }
            }
        }
    }

    struct Records: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List usage records in the ledger with their state.")
        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).") var config: String
        @Option(help: "Peer broker JID (bare).") var peer: String
        @Option(help: "Start (YYYY-MM-DD or ISO 8601).") var from: String = "1970-01-01"
        @Option(help: "End, exclusive.") var to: String = "now"
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table

        func run() async throws {
            let (_, ledger, _) = try UsageCommand.open(config)
            let period = MeteringPeriod(from: try parseDate(from, option: "--from"), until: try parseDate(to, option: "--to"))
            let entries = try ledger.entries(peer: try JID(peer).bare.description, overlapping: period)
            switch output {
            case .json:
                struct Item: Encodable {
                    var key: String, role: String, state: String, period: String, sha256: String, reasons: [String]
                }
                let items = entries.map {
                    Item(key: $0.key.description, role: $0.role.rawValue, state: $0.state.rawValue, period: $0.period.description,
                         sha256: $0.sha256, reasons: $0.disputeReasons)
                }
                print(String(decoding: try jsonEncoder().encode(items), as: UTF8.self))
            case .table:
                printTable(
                    headers: ["RECORD", "ROLE", "STATE", "PERIOD", "REASONS"],
                    rows: entries.map { [$0.key.description, $0.role.rawValue, $0.state.rawValue, $0.period.description, $0.disputeReasons.joined(separator: "; ")] })
            }
        }
    }

    struct SLA: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "sla", abstract: "List SLA breaches (availability below the agreed level, migration downtime above it).")
        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).") var config: String
        @Option(help: "Only this agreement.") var agreement: String?
        @Option(help: "Start (YYYY-MM-DD or ISO 8601).") var from: String = "1970-01-01"
        @Option(help: "End, exclusive.") var to: String = "now"
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table

        func run() async throws {
            let (_, ledger, _) = try UsageCommand.open(config)
            let period = MeteringPeriod(from: try parseDate(from, option: "--from"), until: try parseDate(to, option: "--to"))
            let breaches = try ledger.breaches(agreementID: agreement, overlapping: period)
            switch output {
            case .json: print(String(decoding: try jsonEncoder().encode(breaches), as: UTF8.self))
            case .table:
                let format = ISO8601DateFormatter()
                if breaches.isEmpty { print("no SLA breaches within \(period)"); return }
                printTable(
                    headers: ["AGREEMENT", "KIND", "FROM", "UNTIL", "DETAIL"],
                    rows: breaches.map { [$0.agreementID, $0.kind.rawValue, format.string(from: $0.from), format.string(from: $0.until), $0.detail] })
            }
        }
    }
}

import ArgumentParser
import Foundation

@main
struct Intercloud: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "intercloud",
        abstract: "A broker that lets independent clouds peer with each other over XMPP.",
        discussion: """
            Each cloud runs one broker. Brokers announce their cloud over XMPP, find each other in
            exchange rooms (XEP-0045) or by direct peering, establish trust with X.509 certificates,
            and keep a registry of peers in SQLite.

            Start a broker:      intercloud serve --config cloud1.toml
            Configuration keys:  intercloud config reference [--output toml|json]
            Driver operations:   intercloud provider lifecycle [--output markdown|json]
            See its peers:       intercloud peers --config cloud1.toml [--output json]
            Approve a peering:   intercloud peers approve broker@cloud3.example --config cloud1.toml
            Negotiate:           intercloud negotiate --config cloud1.toml --peer broker@cloud2.example
            Agreements:          intercloud agreement list --config cloud1.toml
            Clusters:            intercloud cluster launch shop.toml --config cloud1.toml
            """,
        subcommands: [
            ServeCommand.self, ConfigCommand.self, PeersCommand.self, CertsCommand.self, TrustCommand.self, AuditCommand.self, CatalogCommand.self,
            ProviderCommand.self, PolicyCommand.self, NegotiateCommand.self, NegotiationsCommand.self, AgreementCommand.self, UsageCommand.self, MigrateCommand.self, MigrationsCommand.self, FederateCommand.self, ServicesCommand.self, ClusterCommand.self, BackupCommand.self,
        ])
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json
}

/// Prints rows as an aligned text table.
func printTable(headers: [String], rows: [[String]]) {
    var widths = headers.map(\.count)
    for row in rows {
        for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) }
    }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { index, cell in
            index == cells.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
    }
    print(line(headers))
    for row in rows { print(line(row)) }
}

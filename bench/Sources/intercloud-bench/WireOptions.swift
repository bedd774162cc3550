import ArgumentParser
import BenchmarkHarness

/// Where the wire benchmarks find their XMPP server and the two accounts the brokers log in with
/// (bench/lib/two-brokers.sh registers them in a private Prosody).
struct WireOptions: ParsableArguments {
    @Option(help: "XMPP server address.") var host = "127.0.0.1"
    @Option(help: "XMPP server client port.") var port: Int
    @Option(help: "Broker A's account (the requester).") var jidA: String
    @Option var passA: String
    @Option(help: "Broker B's account (the responder).") var jidB: String
    @Option var passB: String
    @Option(help: "CA of the server's TLS certificate (DIR/certs/ca.crt for scripts/prosody.sh).") var caFile: String?

    var server: Server { Server(host: host, port: port, caFile: caFile ?? "") }
    var accountA: Account { Account(jid: jidA, password: passA) }
    var accountB: Account { Account(jid: jidB, password: passB) }
}

/// How a subcommand prints its report.
struct ReportOptions: ParsableArguments {
    @Option(help: "markdown (as bench/RESULTS.md quotes it) or json.") var format: ReportFormat = .markdown

    func print(_ report: Report) {
        Swift.print(report.rendered(as: format), terminator: "")
    }
}

extension ReportFormat: ExpressibleByArgument {}

struct Server: Sendable {
    var host: String
    var port: Int
    /// CA of the server's TLS certificate.
    var caFile: String
}

struct Account: Sendable {
    var jid: String
    var password: String

    /// The account without a resource.
    var bare: String { jid.split(separator: "/").first.map(String.init) ?? jid }
}

struct BenchmarkFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

import ArgumentParser
import Broker
import Foundation
import Logging
import Peering
import ServiceLifecycle
import UnixSignals

struct ServeCommand: AsyncParsableCommand {
    /// The configurable limits with their declared defaults, so this help never restates a number.
    static let limits = BrokerSettings.declarations
        .filter { ["max_open_per_peer", "max_open", "max_concurrent_per_agreement", "max_calls_per_second", "aggregate_seconds", "retention_days"].contains($0.key) }
        .map { "  [\($0.section)] \($0.key) = \($0.defaultValue ?? "")" }
        .joined(separator: "\n")

    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run this cloud's broker until SIGTERM or SIGINT.",
        discussion: """
            Connects to the XMPP server named in the configuration (STARTTLS, server
            certificate verified against xmpp.ca_file), announces the cloud with its
            regions and load, joins the exchange rooms in discovery.rooms, asks the
            brokers in discovery.peers to peer, and approves peering requests that match
            discovery.approve. The peer registry is kept in broker.database (SQLite);
            `intercloud peers` reads it while the broker runs.

            On SIGTERM the broker leaves its rooms, sends unavailable presence and closes
            the database. It reconnects with backoff if the server goes away, resuming the
            stream (XEP-0198) where the server allows it.

            Example configuration (TOML). Every key, its default and the values it accepts:
            `intercloud config reference` (`--output toml` prints a file to start from);
            `intercloud config check --config FILE` reads a file without starting anything.

              [broker]
              cloud = "cloud1"
              regions = ["eu-west"]
              database = "var/cloud1.sqlite"

              [xmpp]
              jid = "broker@cloud1.example/broker"
              password_file = "secrets/cloud1.password"
              ca_file = "certs/xmpp-ca.pem"

              [discovery]
              rooms = ["exchange@conference.cloud1.example"]
              peers = ["broker@cloud2.example"]
              approve = ["*@cloud2.example"]

              [trust]            # optional; see `intercloud certs --help`
              key = "certs/broker.key"
              chain = "certs/broker-chain.pem"
              anchors = ["certs/anchors/"]

              [catalog]          # optional; see `intercloud catalog --help`
              files = ["catalog/offerings.ttl"]

            With [trust] the broker announces its certificate fingerprint, runs a mutual
            certificate handshake (urn:intercloud:trust:0) with every peer broker it sees,
            pins the peers whose chains verify, and serves federation requests only as
            envelopes signed by a pinned peer. A peer announcing a new fingerprint is
            handshaken again; its new key is accepted only if its new chain verifies.
            After the first request to a peer the two agree a session key (X25519, in two
            signed envelopes) and authenticate later requests by HMAC under it instead of
            signatures; `[trust] sessions = false` keeps signatures on every request.
            Without [trust] it announces no fingerprint and refuses every federation
            request (not-authorized); discovery and the status query work as before. See
            `intercloud peers` (TRUST column), `intercloud trust`, `intercloud audit`.

            With [catalog] (and [trust]) the broker answers SPARQL queries from trusted peers
            over urn:intercloud:catalog:0 against the listed RDF files plus a generated
            description of itself (named graph <urn:intercloud:graph:self>).

            Limits against lying peers and strangers are listed in SECURITY.md. Those an
            operator sets, at their defaults:
            \(limits)
            """)

    @Option(name: .shortAndLong, help: "Broker configuration file (TOML).")
    var config: String

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: Logger.Level = .info

    func run() async throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let configuration = try loadConfiguration(config)
        let logger = Logger(label: "intercloud.serve")
        let broker: BrokerNode
        do { broker = try BrokerNode(configuration: configuration) } catch let error as BrokerTrustSetupError {
            throw ValidationError("\(config): \(error)")
        }
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: broker)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

func loadConfiguration(_ path: String) throws -> BrokerConfiguration {
    do { return try BrokerConfiguration.load(path: path) } catch let error as BrokerConfiguration.Error {
        throw ValidationError(error.description)
    }
}

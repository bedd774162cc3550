import ArgumentParser
import Broker
import Federation
import Foundation
import GRDB
import Storage
import XMPP

/// Opens the broker database of a configuration that has run (the federation tables included).
func openFederationDatabase(_ config: String) throws -> DatabasePool {
    let configuration = try loadConfiguration(config)
    guard FileManager.default.fileExists(atPath: configuration.databasePath) else {
        throw ValidationError("no database at \(configuration.databasePath): has this broker run yet?")
    }
    let database = try IntercloudDatabase.open(path: configuration.databasePath, schema: BrokerNode.schema)
    // A migrator of its own: registering the federation migrations twice (once they are part of
    // `BrokerNode.schema`) would be an error.
    try FederationStore.prepare(database)
    return database
}

/// Queues a federation request for the running broker and waits for its outcome (read once: a
/// new token is wiped from the database as it is read).
func performFederationRequest(
    _ request: FederationStore.QueuedRequest, database: DatabasePool, config: String, timeout: TimeInterval
) async throws -> FederationStore.RequestOutcome {
    let id = try FederationStore.enqueue(database: database, request, now: Date())
    return try await awaitFederationOutcome(id: id, database: database, config: config, timeout: timeout)
}

/// Waits for the outcome of queued request `id` (read once, as above).
func awaitFederationOutcome(
    id: String, database: DatabasePool, config: String, timeout: TimeInterval
) async throws -> FederationStore.RequestOutcome {
    let started = Date()
    while Date().timeIntervalSince(started) < timeout {
        switch try FederationStore.takeOutcome(database: database, id: id) {
        case .done(let outcome)?: return outcome
        case .failed(let error)?: throw ValidationError(error)
        case .waiting?:
            if Date().timeIntervalSince(started) > 15 {
                throw ValidationError("the broker did not take the request within 15 s: is `intercloud serve --config \(config)` running?")
            }
        case .running?, nil: break
        }
        try await Task.sleep(for: .milliseconds(100))
    }
    throw ValidationError("no outcome within \(Int(timeout)) s; see `intercloud services list --config \(config)`")
}

/// Prints an outcome as a block of `key: value` lines or as JSON.
func printFederationOutcome(_ outcome: FederationStore.RequestOutcome, output: OutputFormat) throws {
    switch output {
    case .json:
        emit(String(decoding: try jsonEncoder().encode(outcome), as: UTF8.self))
    case .table:
        let format = ISO8601DateFormatter()
        var lines = ["service:     \(outcome.serviceID) (\(outcome.role))", "phase:       \(outcome.phase)"]
        if let endpoint = outcome.endpoint { lines.append("endpoint:    \(endpoint)") }
        if let interface = outcome.interfaceDescription { lines.append("interface:   \(interface)") }
        if let username = outcome.username { lines.append("username:    \(username)") }
        if let token = outcome.token { lines.append("token:       \(token)   (shown once: it is not stored)") }
        if let expiry = outcome.credentialsExpireAt { lines.append("expires:     \(format.string(from: expiry))") }
        if let reason = outcome.reason { lines.append("reason:      \(reason)") }
        for line in lines { emit(line) }
    }
}

struct FederateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "federate",
        abstract: "Run a service from a peer's catalog in the peer's cloud (service federation).",
        discussion: """
            Asks the running broker (`intercloud serve --config FILE`) to select --template at
            --peer over urn:intercloud:federation:0 (signed envelopes). Find templates with
              intercloud catalog query --config cloud1.toml --peer broker@cloud2.example \\
                'PREFIX ic: <https://intercloud.example.org/ontology#>
                 SELECT ?name ?port WHERE { GRAPH <urn:intercloud:graph:templates> {
                   ?o a ic:Offering ; ic:name ?name ; ic:service ?s . ?s ic:port ?port } }'

            The provider checks the agreement (--agreement, default: the newest in force in which
            the peer grants federate), its quota and its policy, validates the parameters against
            the template, provisions the instance through its cloud driver and answers with the
            endpoint, the interface description and short-lived credentials. Both brokers meter
            the instance under the agreement.

              intercloud federate --config cloud1.toml --peer broker@cloud2.example \\
                --template web-server --param site_name=shop --param max_connections=64

            The token is printed once and stored nowhere on this side: keep it. Renew it with
            `intercloud services renew ID`; end the service with `intercloud services teardown ID`.
            """)

    @Option(name: .shortAndLong, help: "Broker configuration file (TOML).") var config: String
    @Option(help: "Provider broker JID (bare).") var peer: String
    @Option(help: "Template name (ic:name of the offering).") var template: String
    @Option(name: .customLong("param"), help: "A template parameter as NAME=VALUE (repeatable).") var parameters: [String] = []
    @Option(help: "Agreement ID (default: the newest in force granting federate).") var agreement: String?
    @Option(help: "Seconds to wait for the service to run.") var timeout: Double = 600
    @Option(help: "Output format: table or json.") var output: OutputFormat = .table

    func parsedParameters() throws -> [String: String] {
        var values: [String: String] = [:]
        for parameter in parameters {
            guard let equals = parameter.firstIndex(of: "="), equals != parameter.startIndex else {
                throw ValidationError("--param expects NAME=VALUE, not '\(parameter)'")
            }
            let name = String(parameter[..<equals])
            guard values[name] == nil else { throw ValidationError("parameter \(name) given twice") }
            values[name] = String(parameter[parameter.index(after: equals)...])
        }
        return values
    }

    func validate() throws { _ = try parsedParameters() }

    func run() async throws {
        let database = try openFederationDatabase(config)
        let peerJID = try JID(peer).bare.description
        if output == .table { emit("selecting \(template) at \(peerJID) ...") }
        let outcome = try await performFederationRequest(
            .init(kind: .select, peer: peerJID, template: template, parameters: try parsedParameters(), agreementID: agreement),
            database: database, config: config, timeout: timeout)
        try printFederationOutcome(outcome, output: output)
    }
}

struct ServicesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "services",
        abstract: "Federated services: those this cloud runs for peers and those it runs at peers.",
        subcommands: [List.self, Show.self, Renew.self, Teardown.self],
        defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List services (newest first) with role, peer, phase and endpoint.")
        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).") var config: String
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table

        func run() async throws {
            let summaries = try FederationStore.summaries(database: try openFederationDatabase(config))
            switch output {
            case .json:
                emit(String(decoding: try jsonEncoder().encode(summaries), as: UTF8.self))
            case .table:
                printTable(
                    headers: ["ID", "ROLE", "PEER", "TEMPLATE", "PHASE", "CALLS", "ENDPOINT"],
                    rows: summaries.map {
                        [$0.serviceID, $0.role, $0.peer, $0.templateName, $0.phase, $0.validCalls.map(String.init) ?? "-", $0.endpoint ?? "-"]
                    })
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one service: endpoint, credentials expiry, metered calls, steps.")
        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).") var config: String
        @Argument(help: "Service ID.") var id: String
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table

        func run() async throws {
            let database = try openFederationDatabase(config)
            guard let summary = try FederationStore.summaries(database: database).first(where: { $0.serviceID == id }) else {
                throw ValidationError("no service \(id)")
            }
            let steps = try FederationStore.steps(database: database, serviceID: id)
            switch output {
            case .json:
                struct Detail: Encodable { var service: FederationStore.ServiceSummary; var steps: [String] }
                emit(String(decoding: try jsonEncoder().encode(Detail(service: summary, steps: steps)), as: UTF8.self))
            case .table:
                let format = ISO8601DateFormatter()
                var lines = [
                    "service:     \(summary.serviceID) (\(summary.role))", "peer:        \(summary.peer)",
                    "agreement:   \(summary.agreementID)", "template:    \(summary.templateName)", "phase:       \(summary.phase)",
                ]
                if let endpoint = summary.endpoint { lines.append("endpoint:    \(endpoint)") }
                if let expiry = summary.credentialsExpireAt { lines.append("expires:     \(format.string(from: expiry))") }
                if let valid = summary.validCalls { lines.append("calls:       \(valid) valid, \(summary.refusedCalls ?? 0) refused") }
                if let reason = summary.reason { lines.append("reason:      \(reason)") }
                if !steps.isEmpty { lines.append("steps:") }
                for line in lines { emit(line) }
                for step in steps { emit("  \(step)") }
            }
        }
    }

    struct Renew: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "New credentials for a service run at a peer (the old token stops working).")
        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).") var config: String
        @Argument(help: "Service ID.") var id: String
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table

        func run() async throws {
            let outcome = try await performFederationRequest(
                .init(kind: .renew, serviceID: id), database: try openFederationDatabase(config), config: config, timeout: 120)
            try printFederationOutcome(outcome, output: output)
        }
    }

    struct Teardown: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "End a service: at the peer for one run there, here for one this cloud runs for a peer.")
        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).") var config: String
        @Argument(help: "Service ID.") var id: String
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table

        func run() async throws {
            let outcome = try await performFederationRequest(
                .init(kind: .teardown, serviceID: id), database: try openFederationDatabase(config), config: config, timeout: 300)
            try printFederationOutcome(outcome, output: output)
            if !["ended", "tearing-down"].contains(outcome.phase) { throw ExitCode(1) }
        }
    }
}

import ArgumentParser
import Broker
import Clusters
import Federation
import Foundation
import GRDB
import Logging
import Providers
import Storage
import Trust

/// `intercloud cluster ...`: launch, stop, start and tear down clusters of server templates.
///
/// The command itself is the cluster runner: local servers are created with the `[provider]` of
/// `--config` (as `intercloud provider` does), and the cluster journal lives in the broker's
/// database, so `intercloud serve` need not run for a cluster of local members. Peer members are
/// selected through the running broker's federation service (its request queue, as
/// `intercloud federate` does), so they need `intercloud serve --config FILE` running.
struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Launch, stop, start and tear down clusters: named sets of server templates run together.",
        discussion: """
            A cluster file names a cluster and its members; each member is a server template (from \
            the broker's [federation] templates) with its parameters, a count, the members it must \
            come after, and optionally a peer broker that runs it through service federation:

              version = 1
              name = "shop"

              [[member]]
              name = "db"
              template = "postgres-db"
              parameters = { database = "shop" }

              [[member]]
              name = "web"
              template = "web-server"
              count = 2
              after = ["db"]
              parameters = { site_name = "shop" }
              boot_timeout_seconds = 120

            `launch` creates the servers in that order (db-1, then web-1 and web-2), each running \
            before the next is created. If one fails, every server already created is removed, \
            last first, and the cluster ends `failed` with the reason: nothing is left running. \
            Every step is journaled before it is performed; a command that was killed is finished \
            with `intercloud cluster resume`.

              intercloud cluster check shop.toml -c cloud1.toml     # launch order
              intercloud cluster launch shop.toml -c cloud1.toml
              intercloud cluster list -c cloud1.toml --output json
              intercloud cluster show shop -c cloud1.toml           # servers, steps
              intercloud cluster stop shop -c cloud1.toml           # web-2 .. db-1
              intercloud cluster start shop -c cloud1.toml          # db-1 .. web-2
              intercloud cluster teardown shop -c cloud1.toml

            Servers here are driven with the [provider] of --config directly; the journal is in \
            the broker's database. A member with `peer = "broker@cloud2.example"` is selected at \
            that broker (an agreement granting federate must be in force) by the running \
            `intercloud serve --config FILE`; its token is printed once. Stop and start leave peer \
            members running (the federation protocol has no stop); teardown ends them at the peer.
            """,
        subcommands: [Check.self, Launch.self, List.self, Show.self, Stop.self, Start.self, Teardown.self, Resume.self])

    struct Options: ParsableArguments {
        @Option(name: .shortAndLong, help: "Broker configuration file (TOML): its [provider], [federation] templates and database.")
        var config: String
        @Option(help: "Output format: table or json.")
        var output: OutputFormat = .table
        @Flag(name: .shortAndLong, help: "No progress lines on stderr.")
        var quiet = false
    }

    // MARK: subcommands

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a cluster file against this broker's templates and print the launch order; creates nothing.")
        @OptionGroup var options: Options
        @Argument(help: "Cluster file (TOML).") var file: String

        func run() async throws {
            let context = try ClusterContext(options)
            let definition = try context.definition(file)
            struct Planned: Encodable {
                var member: String
                var template: String
                var count: Int
                var after: [String]
                var peer: String?
            }
            let order = definition.launchOrder.map { Planned(member: $0.name, template: $0.template, count: $0.count, after: $0.after, peer: $0.peer) }
            switch options.output {
            case .json:
                struct Plan: Encodable { var name: String; var source: String; var launchOrder: [Planned] }
                emit(String(decoding: try jsonEncoder().encode(Plan(name: definition.name, source: definition.source, launchOrder: order)), as: UTF8.self))
            case .table:
                print("\(definition.name): \(definition.source) is valid; launch order:")
                printTable(
                    headers: ["MEMBER", "TEMPLATE", "COUNT", "AFTER", "WHERE"],
                    rows: order.map { [$0.member, $0.template, String($0.count), $0.after.joined(separator: ",").nonEmpty ?? "-", $0.peer ?? "here"] })
            }
        }
    }

    struct Launch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Launch a cluster file: servers in dependency order; a failure rolls back what was created.",
            discussion: "Exits 1 when the cluster ends failed (after its rollback), printing why.")
        @OptionGroup var options: Options
        @Argument(help: "Cluster file (TOML).") var file: String

        func run() async throws {
            let context = try ClusterContext(options)
            let definition = try context.definition(file)
            let runner = try await context.runner(peers: definition.members.contains { $0.peer != nil })
            let status = try await context.perform { try await runner.launch(definition, templates: try context.templates()) }
            try printStatus(status, options: options)
            if status.phase != .running { throw ExitCode(1) }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List clusters (newest first) with their phase and servers.")
        @OptionGroup var options: Options

        func run() async throws {
            let clusters = try await ClusterContext(options).reader().list()
            switch options.output {
            case .json:
                emit(String(decoding: try jsonEncoder().encode(clusters), as: UTF8.self))
            case .table:
                printTable(
                    headers: ["NAME", "ID", "PHASE", "SERVERS", "REASON"],
                    rows: clusters.map { cluster in
                        let running = cluster.servers.filter { $0.state == .running }.count
                        return [cluster.name, cluster.id, cluster.phase.rawValue, "\(running)/\(cluster.servers.count) running", cluster.reason ?? "-"]
                    })
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one cluster: its servers and every journaled step.")
        @OptionGroup var options: Options
        @Argument(help: "Cluster name.") var name: String

        func run() async throws {
            let context = try ClusterContext(options)
            let runner = try await context.reader()
            // Read while another command may be acting: no lock.
            let status = try await context.perform(locked: false) { try await runner.status(name: name) }
            let steps = try runner.journal.steps(status.id)
            switch options.output {
            case .json:
                struct Detail: Encodable { var cluster: ClusterStatus; var steps: [ClusterStepRecord] }
                emit(String(decoding: try jsonEncoder().encode(Detail(cluster: status, steps: steps)), as: UTF8.self))
            case .table:
                try printStatus(status, options: options)
                print("steps:")
                let format = ISO8601DateFormatter()
                printTable(
                    headers: ["  AT", "PHASE", "NEXT STEP", "AFTER"],
                    rows: steps.map { ["  " + format.string(from: $0.at), $0.phase, $0.step, $0.detail] })
            }
        }
    }

    struct Stop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop every server of a cluster here, last launched first (peer members keep running).",
            discussion: "A server that does not stop leaves the cluster `degraded` (exit 1); stop, start or teardown again.")
        @OptionGroup var options: Options
        @Argument(help: "Cluster name.") var name: String

        func run() async throws {
            let context = try ClusterContext(options)
            let runner = try await context.runner(peers: false)
            let status = try await context.perform { try await runner.stop(name: name) }
            try printStatus(status, options: options)
            if status.phase != .stopped { throw ExitCode(1) }
        }
    }

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start the stopped servers of a cluster, first launched first.",
            discussion: "A server that does not start leaves the cluster `degraded` (exit 1).")
        @OptionGroup var options: Options
        @Argument(help: "Cluster name.") var name: String

        func run() async throws {
            let context = try ClusterContext(options)
            let runner = try await context.runner(peers: false)
            let status = try await context.perform { try await runner.start(name: name) }
            try printStatus(status, options: options)
            if status.phase != .running { throw ExitCode(1) }
        }
    }

    struct Teardown: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove every server of a cluster, last launched first, here and at peers.",
            discussion: """
                Also finishes a launch or rollback that a killed command left. A step that keeps \
                failing (the cloud refuses to terminate) is retried a few times, then the cluster \
                is left `stalled` in its phase with the reason (exit 1): run teardown again.
                """)
        @OptionGroup var options: Options
        @Argument(help: "Cluster name.") var name: String

        func run() async throws {
            let context = try ClusterContext(options)
            let runner = try await context.runner(peers: true)
            let status = try await context.perform { try await runner.teardown(name: name) }
            try printStatus(status, options: options)
            if !status.phase.isFinal { throw ExitCode(1) }
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Finish what a killed cluster command left under way (a launch, stop, start, rollback or teardown).",
            discussion: """
                Read from the journal: a server whose create was sent is looked up by its name and \
                adopted (or created again), a wait goes on until its deadline, a rollback or \
                teardown goes on from the server it reached. Without NAME, every cluster with a \
                step under way.
                """)
        @OptionGroup var options: Options
        @Argument(help: "Cluster name (default: every cluster with a step under way).") var name: String?

        func run() async throws {
            let context = try ClusterContext(options)
            let runner = try await context.runner(peers: true)
            let statuses: [ClusterStatus]
            if let name {
                statuses = [try await context.perform { try await runner.resume(name: name) }]
            } else {
                statuses = try await context.perform { try await runner.resume() }
            }
            switch options.output {
            case .json: emit(String(decoding: try jsonEncoder().encode(statuses), as: UTF8.self))
            case .table:
                if statuses.isEmpty { print("no cluster has a step under way") }
                for status in statuses { try printStatus(status, options: options) }
            }
        }
    }
}

/// What every cluster subcommand opens: the configuration, the broker's database with the
/// cluster tables, the driver of its `[provider]`.
struct ClusterContext {
    let options: ClusterCommand.Options
    let configuration: BrokerConfiguration

    init(_ options: ClusterCommand.Options) throws {
        self.options = options
        self.configuration = try loadConfiguration(options.config)
    }

    /// The templates of `[federation] templates`.
    func templates() throws -> [ServerTemplate] {
        let paths = configuration.federation.templatePaths
        guard !paths.isEmpty else { return [] }
        do { return try TemplateLoader.load(paths: try FederationService.templateFiles(paths)) } catch let error as TemplateLoadError {
            throw ValidationError("template files:\n\(error)")
        }
    }

    /// Reads and checks a cluster file against the templates.
    func definition(_ file: String) throws -> ClusterDefinition {
        do { return try ClusterLoader.load(path: file, templates: try templates()) } catch let error as TemplateLoadError {
            throw ValidationError("\(error)")
        }
    }

    /// The broker database with the cluster tables (created when the broker has not run yet).
    func database() throws -> DatabasePool {
        let database = try IntercloudDatabase.open(path: configuration.databasePath, schema: BrokerNode.schema)
        // Migrators of their own: the broker's schema does not register these tables.
        try ClusterJournal.prepare(database)
        return database
    }

    /// A runner that only reads (list, show): no driver is connected.
    func reader() async throws -> ClusterRunner {
        ClusterRunner(driver: nil, journal: ClusterJournal(database: try database()))
    }

    /// A runner with the `[provider]` driver; with `peers`, peer members go through the running
    /// broker's federation request queue.
    func runner(peers: Bool) async throws -> ClusterRunner {
        let database = try database()
        var driver: (any CloudDriver)?
        if let provider = configuration.provider {
            driver = try await DriverRegistry.make(DriverSettings(kind: provider.driver, options: provider.options))
        }
        let quiet = options.quiet
        let progress: ClusterRunner.ProgressHandler = { event in
            guard !quiet else { return }
            FileHandle.standardError.write(Data("\(event)\n".utf8))
        }
        // Progress lines already say what the log's info lines would; warnings (a rollback) stay.
        var logger = Logger(label: "intercloud.clusters")
        logger.logLevel = .warning
        return ClusterRunner(
            driver: driver, peers: peers ? BrokerQueuePeerPlacement(database: database, config: options.config) : nil,
            journal: ClusterJournal(database: database), configuration: .init(pollInterval: .milliseconds(500)),
            audit: AuditLog(database: database), logger: logger, progress: progress)
    }

    /// Runs `body` holding this broker's cluster lock, so two commands never act on clusters at
    /// once (each journals what it does; two writers would undo each other's steps).
    func perform<T>(locked: Bool = true, _ body: () async throws -> T) async throws -> T {
        guard locked else {
            do { return try await body() } catch let error as ClusterError { throw ClusterCommandError(description: error.description) }
        }
        let busy = "another `intercloud cluster` command is acting on this broker's clusters; wait for it"
        return try await withCommandLock(configuration.databasePath + ".clusters.lock", busy: busy) {
            do { return try await body() } catch let error as ClusterError { throw ClusterCommandError(description: error.description) }
        }
    }
}

/// A request the cluster runner refused or could not finish: printed as `Error: ...`, exit 1
/// (not a usage error: the command line was fine).
struct ClusterCommandError: Error, CustomStringConvertible {
    var description: String
}

/// Places peer members through the running broker: a federation request queued in its database
/// (as `intercloud federate` does) with the unit's service id, so a repeated select after a restart
/// finds the service instead of selecting a second one.
struct BrokerQueuePeerPlacement: ClusterPeerPlacement {
    let database: DatabasePool
    let config: String

    func place(serviceID: String, selection: Cluster.PeerSelection, timeout: Duration) async throws -> PeerPlacementOutcome {
        let seconds = Double(timeout.components.seconds) + 60
        if let queued = try FederationStore.selectRequest(database: database, serviceID: serviceID) {
            // Queued by a command that was killed before it read the answer (the broker may still
            // be working on it): that request's outcome, never a second select.
            let outcome = try await awaitFederationOutcome(id: queued, database: database, config: config, timeout: seconds)
            guard outcome.phase == "active" else { throw PeerPlacementError("service \(serviceID) at \(selection.peer) is \(outcome.phase)") }
            return PeerPlacementOutcome(endpoint: outcome.endpoint, token: outcome.token)
        }
        let outcome = try await performFederationRequest(
            .init(
                kind: .select, peer: selection.peer, template: selection.template, parameters: selection.parameters,
                agreementID: selection.agreementID, serviceID: serviceID),
            database: database, config: config, timeout: seconds)
        return PeerPlacementOutcome(endpoint: outcome.endpoint, token: outcome.token)
    }

    func release(serviceID: String, peer: String) async throws {
        // A select still queued or under way would place the service after this release: let it
        // finish first (its failure is fine: then there is nothing to end).
        if let queued = try FederationStore.selectRequest(database: database, serviceID: serviceID) {
            _ = try? await awaitFederationOutcome(id: queued, database: database, config: config, timeout: 600)
        }
        guard let consumed = try FederationStore.consumed(database: database, serviceID: serviceID),
              !["ended", "failed"].contains(consumed.phase) else { return }
        let outcome = try await performFederationRequest(.init(kind: .teardown, serviceID: serviceID), database: database, config: config, timeout: 300)
        guard ["ended", "failed"].contains(outcome.phase) else { throw PeerPlacementError("service \(serviceID) at \(peer) is \(outcome.phase)") }
    }
}

/// A cluster as a block of lines and a table of servers, or as JSON.
func printStatus(_ status: ClusterStatus, options: ClusterCommand.Options) throws {
    switch options.output {
    case .json:
        emit(String(decoding: try jsonEncoder().encode(status), as: UTF8.self))
    case .table:
        print("cluster:  \(status.name) (\(status.id))")
        print("phase:    \(status.phase.rawValue)")
        if let reason = status.reason { print("reason:   \(reason)") }
        if let stalled = status.stalled { print("stalled:  \(stalled)") }
        print("file:     \(status.source)")
        printTable(
            headers: ["SERVER", "TEMPLATE", "WHERE", "STATE", "INSTANCE/SERVICE", "ADDRESS"],
            rows: status.servers.map { server in
                [server.unit, server.template, server.peer ?? "here", server.state.rawValue, server.instanceID ?? server.name,
                 server.endpoint ?? server.addresses.joined(separator: ",").nonEmpty ?? "-"]
            })
    }
}

extension String {
    fileprivate var nonEmpty: String? { isEmpty ? nil : self }
}

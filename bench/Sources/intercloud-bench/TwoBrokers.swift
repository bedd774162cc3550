import Broker
import Foundation
import Logging
import ServiceLifecycle
import Trust

/// Two (or more) real brokers in this process, as `intercloud serve` runs them, each in a service
/// group of its own so one can be stopped without the other; what the wire benchmarks share.
struct RunningBrokers {
    let nodes: [BrokerNode]
    private let groups: [ServiceGroup]
    private let runs: [Task<Void, any Error>]

    init(_ configurations: [BrokerConfiguration]) throws {
        // Warnings only: a benchmark's output is its report.
        var quiet = Logger(label: "intercloud.bench")
        quiet.logLevel = .warning
        nodes = try configurations.map { try BrokerNode(configuration: $0, logger: quiet) }
        groups = nodes.map { node in ServiceGroup(configuration: .init(services: [.init(service: node)], logger: quiet)) }
        runs = groups.map { group in Task { try await group.run() } }
    }

    /// Shuts every broker down gracefully and waits until each has stopped.
    func stop() async {
        for group in groups { await group.triggerGracefulShutdown() }
        for run in runs { _ = try? await run.value }
    }

    /// Runs `body` and stops the brokers afterwards, whether it threw or not.
    func whileRunning<T>(_ body: () async throws -> T) async throws -> T {
        do {
            let result = try await body()
            await stop()
            return result
        } catch {
            await stop()
            throw error
        }
    }
}

enum BrokerPair {
    /// Whether `node` holds a trusted pin for `jid` (both brokers of a pair must, before measuring).
    static func isTrusted(_ node: BrokerNode, _ jid: String) -> Bool {
        ((try? node.trust?.service.store.pin(for: jid)) ?? nil)?.state == .trusted
    }

    /// Polls until `ready` holds, failing after `timeout`.
    static func waitUntil(_ what: String, timeout: Duration = .seconds(30), _ ready: () -> Bool) async throws {
        let started = ContinuousClock.now
        while !ready() {
            if ContinuousClock.now - started > timeout { throw BenchmarkFailure("\(what) within \(timeout)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Configurations for brokers on `accounts`, each with a PKI of its own (root → leaf) and
    /// trusting the other's root, as two clouds with pairwise anchors would; they peer directly
    /// (roster subscription, approved because each lists the other in discovery.peers).
    /// `extraTOML[i]` is appended to broker i's file.
    static func configurations(
        _ accounts: [Account], server: Server, directory: URL, streamManagement: Bool, extraTOML: [String] = ["", ""]
    ) throws -> [BrokerConfiguration] {
        let bares = accounts.map(\.bare)
        var paths: [String] = []
        for (index, account) in accounts.enumerated() {
            let root = try CertificateAuthority.makeRoot(commonName: "bench root \(index + 1)", notBefore: Date() - 3600)
            let identity = try root.issueBrokerIdentity(jid: bares[index], notBefore: Date() - 3600)
            try identity.save(
                keyPath: directory.appendingPathComponent("broker\(index + 1).key").path,
                chainPath: directory.appendingPathComponent("broker\(index + 1)-chain.pem").path)
            try PEMFiles.writeCertificates([root.certificate], toPath: directory.appendingPathComponent("root\(index + 1).pem").path)
            let other = 1 - index
            let cloud = "bench\(index + 1)"
            let toml = """
                [broker]
                cloud = "\(cloud)"
                regions = ["\(cloud)-a"]
                database = "\(cloud).sqlite"

                [xmpp]
                jid = "\(bares[index])/bench"
                password = "\(account.password)"
                host = "\(server.host)"
                port = \(server.port)
                ca_file = "\(server.caFile)"
                stream_management = \(streamManagement)

                [discovery]
                peers = ["\(bares[other])"]

                [trust]
                key = "broker\(index + 1).key"
                chain = "broker\(index + 1)-chain.pem"
                anchors = ["root\(other + 1).pem"]

                \(extraTOML[index])
                """
            let path = directory.appendingPathComponent("\(cloud).toml").path
            try toml.write(toFile: path, atomically: true, encoding: .utf8)
            paths.append(path)
        }
        return try paths.map { try BrokerConfiguration.load(path: $0) }
    }
}

/// A temporary directory for one run's PKI, configurations and databases, removed by `remove()`.
struct ScratchDirectory {
    let url: URL

    init(_ prefix: String) throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(at: url) }
}

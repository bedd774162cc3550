import Clusters
import Federation
import Foundation
import Providers
import Synchronization
import Testing

/// The repository root: its `templates/` and `clusters/` are tested as shipped.
let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A scratch directory removed when the test ends.
final class TemporaryDirectory: Sendable {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("cluster-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    func file(_ name: String, _ contents: String) throws -> String {
        let path = url.appendingPathComponent(name).path
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}

/// Collects the runner's progress lines.
final class ProgressLog: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
}

/// One broker's clusters on a real SimCloud and a real SQLite journal in a temporary directory;
/// `restarted()` opens new instances of both on the same files, as a new process would after kill -9.
struct ClusterFixture {
    let directory: TemporaryDirectory
    let cloud: SimCloud
    let journal: ClusterJournal
    let runner: ClusterRunner
    let templates: [ServerTemplate]
    let progress: ProgressLog
    let peer: InProcessFederationPeer?

    static let configuration = ClusterRunner.Configuration(
        cluster: Cluster.Configuration(retryInterval: 0.05, maxRemoveAttempts: 3, maxCreateAttempts: 2, powerTimeout: 10),
        pollInterval: .milliseconds(5))

    init(
        directory: TemporaryDirectory? = nil, delays: SimCloud.Delays = .instant, peer: InProcessFederationPeer? = nil,
        observer: ClusterRunner.JournalObserver? = nil
    ) throws {
        let directory = try directory ?? TemporaryDirectory()
        self.directory = directory
        var cloudConfiguration = SimCloud.Configuration(dataDirectory: directory.url.appendingPathComponent("sim"), delays: delays)
        cloudConfiguration.durableWrites = false
        cloud = try SimCloud(configuration: cloudConfiguration)
        journal = try ClusterJournal.open(path: directory.url.appendingPathComponent("broker.sqlite").path)
        templates = try TemplateLoader.load(directory: repositoryRoot.appendingPathComponent("templates").path)
        let progress = ProgressLog()
        self.progress = progress
        self.peer = peer
        runner = ClusterRunner(
            driver: cloud, peers: peer, journal: journal, configuration: Self.configuration, progress: { progress.append($0.description) },
            observer: observer)
    }

    /// The same files opened again by a new runner and a new driver object, with no observer.
    func restarted() throws -> ClusterFixture {
        try ClusterFixture(directory: directory, delays: .instant, peer: peer)
    }

    /// The shipped example: db-1, then web-1 and web-2.
    func shop() throws -> ClusterDefinition {
        try ClusterLoader.load(path: repositoryRoot.appendingPathComponent("clusters/shop.toml").path, templates: templates)
    }

    func definition(_ text: String) throws -> ClusterDefinition {
        try ClusterLoader.parse(text, file: "test.toml", templates: templates)
    }

    /// Instances of the cloud that are not terminated.
    func liveInstances() async throws -> [Instance] {
        try await cloud.listInstances().filter { $0.state != .terminated && $0.state != .terminating }
    }

    /// The cluster's steps as `unit-less step` names, in order.
    func steps(_ name: String) async throws -> [ClusterStepRecord] {
        let id = try #require(try journal.clusterID(named: name))
        return try journal.steps(id)
    }
}

/// The provider side of service federation, in this process: a real `FederationRunner` with its own
/// SimCloud and journal, called directly instead of over XMPP (the only part left out is the
/// signed transport between the two brokers).
struct InProcessFederationPeer: ClusterPeerPlacement {
    let directory: TemporaryDirectory
    let cloud: SimCloud
    let runner: FederationRunner
    static let consumer = "broker@cloud1.test"

    init() throws {
        directory = try TemporaryDirectory()
        var configuration = SimCloud.Configuration(dataDirectory: directory.url.appendingPathComponent("sim"), delays: .instant)
        configuration.durableWrites = false
        cloud = try SimCloud(configuration: configuration)
        let journal = try FederationJournal.open(path: directory.url.appendingPathComponent("peer.sqlite").path)
        try journal.importTemplates(try TemplateLoader.load(directory: repositoryRoot.appendingPathComponent("templates").path), now: Date())
        runner = FederationRunner(
            driver: cloud, journal: journal,
            configuration: .init(service: .init(bootTimeout: 30, teardownRetryInterval: 1), pollInterval: .milliseconds(5)))
    }

    func place(serviceID: String, selection: Cluster.PeerSelection, timeout: Duration) async throws -> PeerPlacementOutcome {
        if let known = try? await runner.status(serviceID: serviceID) {
            guard known.phase == .active else { throw PeerPlacementError("service \(serviceID) is \(known.phase.rawValue)") }
            return PeerPlacementOutcome(endpoint: known.endpoint?.url)
        }
        let service = try await runner.provision(
            serviceID: serviceID,
            selection: ServiceSelection(templateName: selection.template, parameters: selection.parameters, agreementID: selection.agreementID ?? "agr-1"),
            consumer: Self.consumer, agreementEndsAt: .distantFuture, now: Date())
        return PeerPlacementOutcome(endpoint: service.endpoint.url, token: service.credentials.token)
    }

    func release(serviceID: String, peer: String) async throws {
        do {
            let status = try await runner.teardown(serviceID: serviceID, now: Date())
            guard status.phase.isFinal else { throw PeerPlacementError("service \(serviceID) is \(status.phase.rawValue)") }
        } catch FederationError.unknownService {
            return
        }
    }

    func liveInstances() async throws -> [Instance] {
        try await cloud.listInstances().filter { $0.state != .terminated && $0.state != .terminating }
    }
}

struct SimulatedCrash: Error {}

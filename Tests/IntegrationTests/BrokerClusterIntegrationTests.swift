import Broker
import Clusters
import Federation
import Foundation
import Policy
import Providers
import TestSupport
import Testing

/// Clusters with a member at a peer, between two brokers over a real Prosody: the consumer's
/// cluster runner places the peer member through its own `FederationService` (signed envelopes,
/// the provider's agreement checks, its SimCloud), and its local members in a SimCloud of its own.
@Suite(.serialized, .timeLimit(.minutes(4))) struct BrokerClusterIntegrationTests {
    let federation: BrokerFederationIntegrationTests

    init() throws { federation = try BrokerFederationIntegrationTests() }

    static let definition = """
        version = 1
        name = "shop"
        [[member]]
        name = "api"
        template = "web-server"
        peer = "%@"
        parameters = { site_name = "api" }
        [[member]]
        name = "web"
        template = "web-server"
        after = ["api"]
        parameters = { site_name = "shop" }
        """

    struct Consumer {
        var runner: ClusterRunner
        var cloud: SimCloud
        var directory: URL
        var templates: [ServerTemplate]
    }

    /// The consumer broker's cluster runner: its journal in the broker's database, peer members
    /// through its federation service, local members in a SimCloud of its own.
    func consumer(_ federated: BrokerFederationIntegrationTests.Federated) throws -> Consumer {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-cluster-\(UUID().uuidString.prefix(8))")
        var configuration = SimCloud.Configuration(dataDirectory: directory.appendingPathComponent("sim"), delays: .instant)
        configuration.durableWrites = false
        let cloud = try SimCloud(configuration: configuration)
        let database = federated.pair.consumer.node.database
        try ClusterJournal.prepare(database)
        let runner = ClusterRunner(
            driver: cloud, peers: FederationPeerPlacement(federation: federated.consumer), journal: ClusterJournal(database: database),
            configuration: .init(cluster: .init(retryInterval: 1), pollInterval: .milliseconds(20)), audit: federated.pair.consumer.node.audit)
        let templates = try TemplateLoader.load(directory: try TestProsody.repositoryRoot().appendingPathComponent("templates").path)
        return Consumer(runner: runner, cloud: cloud, directory: directory, templates: templates)
    }

    func liveInstances(_ driver: any CloudDriver) async throws -> [Instance] {
        try await driver.listInstances().filter { $0.state != .terminated && $0.state != .terminating }
    }

    @Test func aPeerMemberIsSelectedAtThePeerBeforeTheLocalOneAndTeardownEndsItThere() async throws {
        let federated = try await federation.federated()
        let pair = federated.pair
        _ = try await federation.agree(pair, entitlements: [.query, .federate])
        let consumer = try consumer(federated)
        defer { try? FileManager.default.removeItem(at: consumer.directory) }
        let definition = try ClusterLoader.parse(
            Self.definition.replacingOccurrences(of: "%@", with: pair.providerJID), file: "shop.toml", templates: consumer.templates)

        let status = try await consumer.runner.launch(definition, templates: consumer.templates)
        #expect(status.phase == .running, "\(status.reason ?? "")")
        let api = try #require(status.servers.first)
        #expect(api.unit == "api-1" && api.peer == pair.providerJID)
        // The peer's service is the unit's: its id is the unit's name, its instance runs at the provider.
        let snapshot = try #require(try federated.provider.journal.snapshot(api.name))
        #expect(snapshot.phase == .active && snapshot.consumer == pair.consumerJID)
        #expect(snapshot.request.extra["userData"]?.contains("<h1>api</h1>") == true)
        let instanceID = try #require(snapshot.instanceID)
        let host = try #require(try await federated.driver.describe(instance: instanceID).addresses.first)
        #expect(api.endpoint == "http://\(host):8080/")
        #expect(try await liveInstances(consumer.cloud).count == 1)
        // The select went out before the local web server was created.
        let steps = try consumer.runner.journal.steps(status.id).map(\.step).filter { $0.hasPrefix("place") || $0.hasPrefix("create") }
        #expect(steps == ["place api-1", "create web-1"])

        let torn = try await consumer.runner.teardown(name: "shop")
        #expect(torn.phase == .tornDown, "\(torn.stalled ?? "")")
        #expect(await eventually { await BrokerFederationIntegrationTests.isGone(instanceID, federated.driver) })
        #expect(try FederationStore.consumed(database: federated.consumer.database, serviceID: api.name)?.phase == "ended")
        #expect(try await liveInstances(consumer.cloud).isEmpty)
        #expect(pair.consumer.auditEvents(kind: "cluster.torn-down").count == 1)
        await federation.stop(federated)
    }

    @Test func aLocalMemberFailingAfterThePeerMemberRanEndsThePeerServiceInTheRollback() async throws {
        let federated = try await federation.federated()
        let pair = federated.pair
        _ = try await federation.agree(pair, entitlements: [.query, .federate])
        let consumer = try consumer(federated)
        defer { try? FileManager.default.removeItem(at: consumer.directory) }
        let definition = try ClusterLoader.parse(
            Self.definition.replacingOccurrences(of: "%@", with: pair.providerJID), file: "shop.toml", templates: consumer.templates)
        await consumer.cloud.inject(.fail(.create, times: 1))

        let status = try await consumer.runner.launch(definition, templates: consumer.templates)
        #expect(status.phase == .failed)
        #expect(status.reason?.hasPrefix("web-1: create failed") == true)
        let api = try #require(status.servers.first)
        let snapshot = try #require(try federated.provider.journal.snapshot(api.name))
        #expect(snapshot.phase == .ended)
        let instances = try await liveInstances(federated.driver)
        #expect(instances.isEmpty, "\(instances)")
        #expect(try FederationStore.consumed(database: federated.consumer.database, serviceID: api.name)?.phase == "ended")
        #expect(pair.consumer.auditEvents(kind: "cluster.failed").count == 1)
        await federation.stop(federated)
    }

    /// Runs the `intercloud` executable off the cooperative pool (the in-process brokers need it
    /// to answer the request the command queues) and returns its status and output.
    static func intercloud(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        let binary = try CrashTestClouds.intercloudBinary()
        return try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                do {
                    let process = Process()
                    process.executableURL = URL(fileURLWithPath: binary)
                    process.arguments = arguments
                    let out = Pipe(), err = Pipe()
                    process.standardOutput = out
                    process.standardError = err
                    try process.run()
                    let stdout = out.fileHandleForReading.readDataToEndOfFile()
                    let stderr = err.fileHandleForReading.readDataToEndOfFile()
                    process.waitUntilExit()
                    continuation.resume(returning: (
                        process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self)))
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    @Test func theCLIPlacesAPeerMemberThroughTheRunningBrokersFederationService() async throws {
        let federated = try await federation.federated()
        let pair = federated.pair
        _ = try await federation.agree(pair, entitlements: [.query, .federate])
        let config = pair.consumer.node.configuration.sourcePath
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-cluster-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("remote.toml").path
        try """
            version = 1
            name = "remote"
            [[member]]
            name = "api"
            template = "web-server"
            peer = "\(pair.providerJID)"
            count = 2
            """.write(toFile: file, atomically: true, encoding: .utf8)

        let launch = try await Self.intercloud(["cluster", "launch", file, "--config", config, "--output", "json"])
        #expect(launch.status == 0, "\(launch.stderr)")
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let launched = try decoder.decode(ClusterStatus.self, from: Data(launch.stdout.utf8))
        #expect(launched.phase == .running)
        #expect(launched.servers.map(\.unit) == ["api-1", "api-2"])
        #expect(launched.servers.allSatisfy { $0.peer == pair.providerJID && $0.endpoint?.hasSuffix(":8080/") == true })
        // Each service's token is shown once, on stderr with the progress.
        #expect(launch.stderr.components(separatedBy: "shown once").count == 3)
        for server in launched.servers {
            #expect(try federated.provider.journal.snapshot(server.name)?.phase == .active)
        }

        let teardown = try await Self.intercloud(["cluster", "teardown", "remote", "--config", config, "--output", "json", "--quiet"])
        #expect(teardown.status == 0, "\(teardown.stderr)")
        #expect(try decoder.decode(ClusterStatus.self, from: Data(teardown.stdout.utf8)).phase == .tornDown)
        for server in launched.servers {
            #expect(try federated.provider.journal.snapshot(server.name)?.phase == .ended)
        }
        await federation.stop(federated)
    }

    @Test func aCLILaunchKilledWhileItsSelectIsUnderWayIsResumedWithOneServicePerServer() async throws {
        // The provider's instances take 3 s to run: the resume comes while the select is under way.
        let federated = try await federation.federated(bootDelayMilliseconds: 3000)
        let pair = federated.pair
        _ = try await federation.agree(pair, entitlements: [.query, .federate], instances: 4)
        let config = pair.consumer.node.configuration.sourcePath
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-cluster-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("remote.toml").path
        try """
            version = 1
            name = "remote"
            [[member]]
            name = "api"
            template = "web-server"
            peer = "\(pair.providerJID)"
            count = 2
            """.write(toFile: file, atomically: true, encoding: .utf8)

        // kill -9 once api-2's select is queued (the broker then works on it for 3 s): the resume
        // must wait for that select, not send a second one.
        let binary = try CrashTestClouds.intercloudBinary()
        let database = federated.consumer.database
        let progress: String = try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                do {
                    let process = Process()
                    process.executableURL = URL(fileURLWithPath: binary)
                    process.arguments = ["cluster", "launch", file, "--config", config]
                    let err = Pipe()
                    process.standardError = err
                    process.standardOutput = FileHandle.nullDevice
                    try process.run()
                    var text = ""
                    while !text.contains("api-2: select"), !text.hasSuffix("\n") || !text.contains("api-2: select") {
                        let data = err.fileHandleForReading.availableData
                        if data.isEmpty { break }
                        text += String(decoding: data, as: UTF8.self)
                    }
                    // "remote api-2: select web-server at PEER as SERVICE-ID"
                    let line = text.components(separatedBy: "\n").first { $0.contains("api-2: select") } ?? ""
                    let serviceID = line.components(separatedBy: " as ").last ?? ""
                    let deadline = Date().addingTimeInterval(10)
                    while (try? FederationStore.selectRequest(database: database, serviceID: serviceID)) == nil, Date() < deadline {
                        usleep(10_000)
                    }
                    kill(process.processIdentifier, SIGKILL)
                    process.waitUntilExit()
                    continuation.resume(returning: text)
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
        #expect(progress.contains("api-2: select"), "\(progress)")
        let api2 = try #require(progress.components(separatedBy: "\n").first { $0.contains("api-2: select") }?.components(separatedBy: " as ").last)
        #expect(try FederationStore.selectRequest(database: database, serviceID: api2) != nil)

        let resume = try await Self.intercloud(["cluster", "resume", "remote", "--config", config, "--output", "json", "-q"])
        #expect(resume.status == 0, "\(resume.stderr)")
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let resumed = try decoder.decode([ClusterStatus].self, from: Data(resume.stdout.utf8))
        #expect(resumed.map(\.phase) == [.running])
        // One service per server at the provider, each the unit's own: nothing selected twice.
        let provided = try FederationStore.summaries(database: federated.provider.database).filter { $0.role == "provider" }
        #expect(Set(provided.map(\.serviceID)) == Set(resumed.first?.servers.map(\.name) ?? []))
        #expect(provided.allSatisfy { $0.phase == "active" })
        #expect(try await liveInstances(federated.driver).count == 2)

        _ = try await Self.intercloud(["cluster", "teardown", "remote", "--config", config, "-q"])
        #expect(try await liveInstances(federated.driver).isEmpty)
        await federation.stop(federated)
    }
}

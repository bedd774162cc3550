import Foundation
import Providers
import Testing

@testable import Federation

/// The repository's `templates/` directory (the documented examples are tested as shipped).
let templatesDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("templates").path

/// A scratch directory removed when the test ends.
final class TemporaryDirectory: Sendable {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("federation-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    func file(_ name: String, _ contents: String) throws -> String {
        let path = url.appendingPathComponent(name).path
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}

/// Records what the runner reports to metering.
actor MeteringRecorder: FederationMeteringHook {
    private(set) var placements: [FederationPlacement] = []
    private(set) var removals: [FederationRemoval] = []

    func placed(_ placement: FederationPlacement) async throws { placements.append(placement) }
    func removed(_ removal: FederationRemoval) async throws { removals.append(removal) }
}

/// One broker's federation side on a real SimCloud and a real SQLite journal, both in a temporary
/// directory; `restarted()` opens new instances of both on the same files, as a new process would.
struct FederationFixture {
    let directory: TemporaryDirectory
    let cloud: SimCloud
    let journal: FederationJournal
    let metering: MeteringRecorder
    let runner: FederationRunner
    let t0: Date
    let agreementEndsAt: Date
    let configuration: FederationRunner.Configuration

    static let serviceConfiguration = FederatedService.Configuration(
        credentialTTL: 600, bootTimeout: 30, teardownRetryInterval: 10, maxCreateAttempts: 2)

    init(
        directory: TemporaryDirectory? = nil, t0: Date = Date(timeIntervalSince1970: 1_800_000_000),
        observer: FederationRunner.JournalObserver? = nil, metering: MeteringRecorder = MeteringRecorder()
    ) throws {
        let directory = try directory ?? TemporaryDirectory()
        self.directory = directory
        var cloudConfiguration = SimCloud.Configuration(
            dataDirectory: directory.url.appendingPathComponent("sim"), delays: .instant)
        cloudConfiguration.durableWrites = false
        cloud = try SimCloud(configuration: cloudConfiguration)
        journal = try FederationJournal.open(path: directory.url.appendingPathComponent("broker.sqlite").path)
        self.metering = metering
        configuration = FederationRunner.Configuration(service: Self.serviceConfiguration, pollInterval: .milliseconds(5))
        runner = FederationRunner(driver: cloud, journal: journal, configuration: configuration, metering: metering, observer: observer)
        self.t0 = t0
        agreementEndsAt = t0.addingTimeInterval(3600)
        try journal.importTemplates(try TemplateLoader.load(directory: templatesDirectory), now: t0)
    }

    /// The same files opened again by a new runner (and a new driver object), with no observer.
    func restarted() throws -> FederationFixture {
        try FederationFixture(directory: directory, t0: t0, metering: metering)
    }

    func webSelection(site: String = "shop") -> ServiceSelection {
        ServiceSelection(templateName: "web-server", parameters: ["site_name": site], agreementID: "agr-1")
    }

    func provisionWeb(_ serviceID: String = "svc-1") async throws -> ProvisionedService {
        try await runner.provision(
            serviceID: serviceID, selection: webSelection(), consumer: "broker@cloud2.test", agreementEndsAt: agreementEndsAt, now: t0)
    }

    /// Instances of the driver carrying `serviceID`'s instance name.
    func instances(of serviceID: String) async throws -> [Instance] {
        let name = FederatedService.instanceName(for: serviceID)
        return try await cloud.listInstances().filter { $0.name == name }
    }
}

struct SimulatedCrash: Error {}

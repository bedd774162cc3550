import Foundation
import TestSupport
@testable import Providers

/// The OpenStack driver against the shared real OpenStack (`TestOpenStack`): the busybox guest's raw
/// disk image and the `ic.tiny` flavor, authenticated with the test project's application credential.
enum OpenStackFixture {
    static let access = ExclusiveAccess()

    static func configuration(_ cloud: TestOpenStack, credentials: OpenStackDriver.Credentials? = nil) -> OpenStackDriver.Configuration {
        OpenStackDriver.Configuration(
            authURL: cloud.authURL,
            credentials: credentials ?? .applicationCredential(id: cloud.applicationCredentialID, secret: cloud.applicationCredentialSecret),
            region: cloud.region, prices: ["ic.tiny": Price(Decimal(string: "0.0100")!), "ic.small": Price(Decimal(string: "0.0200")!)],
            kernelImage: cloud.kernelImageID, ramdiskImage: cloud.ramdiskImageID, pageSize: 2,
            retry: RetryPolicy(maxAttempts: 5, baseDelay: .milliseconds(200)))
    }

    static func make() async throws -> DriverFixture {
        let cloud = try await TestOpenStack.shared()
        let driver = OpenStackDriver(configuration: configuration(cloud))
        try await driver.connect()
        let marker = cloud.guestMarker
        // Nova starts the console log afresh with every boot of the domain (a reboot included), so
        // boots are counted as the distinct boot ids the guest printed, remembered across calls.
        let seen = BootIDs()
        @Sendable func boots(_ instance: Instance) async -> Int {
            let log = (try? await driver.consoleOutput(instance: instance.id)) ?? ""
            return seen.record(instance.id, log: log, marker: marker)
        }
        @Sendable func waitForBoots(_ instance: Instance, _ count: Int) async throws {
            let clock = ContinuousClock()
            let deadline = clock.now.advanced(by: .seconds(180))
            while await boots(instance) <= count {
                guard clock.now < deadline else {
                    throw CommandError(command: "wait for \(instance.name) to boot", output: "fewer than \(count + 1) boots seen after 180 s")
                }
                try await Task.sleep(for: .seconds(1))
            }
        }
        return DriverFixture(
            driver: driver, imageID: cloud.imageID, sizeID: cloud.flavor, timeout: .seconds(240), exportFormat: .qcow2,
            // The guest's acpid must run before a graceful shutdown or a soft reboot can reach it.
            afterBoot: { instance in
                let clock = ContinuousClock()
                let deadline = clock.now.advanced(by: .seconds(180))
                while !((try? await driver.consoleOutput(instance: instance.id)) ?? "").contains(marker) {
                    guard clock.now < deadline else {
                        throw CommandError(command: "wait for \(instance.name) to boot", output: "no boot marker after 180 s")
                    }
                    try await Task.sleep(for: .seconds(1))
                }
            },
            bootCount: boots, waitForBoots: waitForBoots,
            teardown: {
                // Servers a failed test left behind would count against the next test's capacity. Only
                // conformance fixtures make these names, and they take turns (`access`).
                for instance in (try? await driver.listInstances()) ?? [] where instance.name.hasPrefix("conf-") || instance.name == "bad" {
                    try? await driver.terminate(instance: instance.id)
                }
            })
    }
}

/// Boot ids each instance's guest has printed (`INTERCLOUD-GUEST-READY boot=ID`).
final class BootIDs: @unchecked Sendable {
    // `@unchecked`: `ids` is only touched while holding `lock`.
    private let lock = NSLock()
    private var ids: [String: Set<String>] = [:]

    /// Adds the boot ids in `log` and returns how many distinct ones `instance` has shown so far.
    func record(_ instance: String, log: String, marker: String) -> Int {
        let found = log.components(separatedBy: "\n").compactMap { line -> String? in
            guard let range = line.range(of: "\(marker) boot=") else { return nil }
            return String(line[range.upperBound...]).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return lock.withLock {
            ids[instance, default: []].formUnion(found)
            return ids[instance]?.count ?? 0
        }
    }
}

import Foundation
import TestSupport
@testable import Providers

/// The OpenStack driver against the shared real OpenStack (`TestOpenStack`): the busybox guest's raw
/// disk image and the `ic.tiny` flavor, authenticated with the test project's application credential.
enum OpenStackFixture {
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
        @Sendable func boots(_ instance: Instance) async -> Int {
            let log = (try? await driver.consoleOutput(instance: instance.id)) ?? ""
            return log.components(separatedBy: marker).count - 1
        }
        @Sendable func waitForBoots(_ instance: Instance, _ count: Int) async throws {
            let clock = ContinuousClock()
            let deadline = clock.now.advanced(by: .seconds(180))
            while await boots(instance) <= count {
                guard clock.now < deadline else {
                    throw CommandError(command: "wait for \(instance.name) to boot", output: "fewer than \(count + 1) boot markers after 180 s")
                }
                try await Task.sleep(for: .seconds(1))
            }
        }
        return DriverFixture(
            driver: driver, imageID: cloud.imageID, sizeID: cloud.flavor, timeout: .seconds(240), exportFormat: .qcow2,
            afterBoot: { _ in },
            bootCount: boots, waitForBoots: waitForBoots,
            teardown: {
                // Servers and images a failed test left behind would count against the next test's capacity.
                for instance in (try? await driver.listInstances()) ?? [] where instance.name.hasPrefix("conf-") || instance.name == "bad" {
                    try? await driver.terminate(instance: instance.id)
                }
            })
    }
}

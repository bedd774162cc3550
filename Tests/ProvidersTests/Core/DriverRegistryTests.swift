import Foundation
import Testing
@testable import Providers

@Suite("Driver registry")
struct DriverRegistryTests {
    @Test("builds each driver kind from settings")
    func builds() async throws {
        let directory = try TemporaryDirectory.make("registry")
        defer { try? FileManager.default.removeItem(at: directory) }
        let sim = try await DriverRegistry.make(.init(kind: "simcloud", options: ["data-dir": directory.path, "max-instances": "3"]))
        #expect(sim.driverName == "simcloud")
        #expect(try await sim.capacity().maxInstances == 3)
        let libvirt = try await DriverRegistry.make(.init(kind: "libvirt", options: ["uri": "test:///default"]))
        #expect(libvirt.driverName == "libvirt")
        #expect(!libvirt.capabilities.supports(.importImage))
        let ec2 = try await DriverRegistry.make(
            .init(kind: "ec2", options: ["endpoint": "http://127.0.0.1:1", "region": "eu-west-1"]),
            environment: ["AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"])
        #expect(ec2.driverName == "ec2")
        #expect(!ec2.capabilities.supports(.suspend))
    }

    @Test("bad settings are clear errors")
    func badSettings() async throws {
        let unknown = await #expect(throws: ProviderError.self) { _ = try await DriverRegistry.make(.init(kind: "azure")) }
        #expect(unknown?.code == .invalidInput)
        let option = await #expect(throws: ProviderError.self) {
            _ = try await DriverRegistry.make(.init(kind: "simcloud", options: ["data-dir": "/tmp/x", "colour": "blue"]))
        }
        #expect(option?.message.contains("colour") == true)
        let credentials = await #expect(throws: ProviderError.self) {
            _ = try await DriverRegistry.make(.init(kind: "ec2", options: ["endpoint": "http://127.0.0.1:1"]), environment: [:])
        }
        #expect(credentials?.code == .authentication)
    }
}

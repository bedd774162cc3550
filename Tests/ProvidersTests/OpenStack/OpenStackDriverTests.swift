import Foundation
import TestSupport
import Testing
@testable import Providers

/// The OpenStack driver against a real OpenStack on loopback (`TestOpenStack`), cross-checked with the
/// `openstack` CLI, which we did not write. The lifecycle verbs are covered by the conformance suite.
@Suite("OpenStack driver on a real OpenStack", .serialized)
struct OpenStackDriverTests {
    func cloudAndDriver() async throws -> (TestOpenStack, OpenStackDriver) {
        let cloud = try await TestOpenStack.shared()
        let driver = OpenStackDriver(configuration: OpenStackFixture.configuration(cloud))
        try await driver.connect()
        return (cloud, driver)
    }

    /// Runs `body`, then deletes the servers and images it recorded, also when it failed.
    func withCleanup(_ driver: OpenStackDriver, _ body: (Leftovers) async throws -> Void) async throws {
        let leftovers = Leftovers()
        do { try await body(leftovers) } catch {
            await leftovers.remove(driver)
            throw error
        }
        await leftovers.remove(driver)
    }

    @Test("what the driver does the openstack CLI sees, and what the CLI does the driver sees")
    func cliCrossCheck() async throws {
        let (cloud, driver) = try await cloudAndDriver()
        try await withCleanup(driver) { leftovers in
            let name = "xcheck-\(UUID().uuidString.prefix(6).lowercased())"
            let created = try await driver.create(
                CreateInstanceRequest(name: name, sizeID: "ic.small", imageID: cloud.imageID, extra: ["userData": "#!/bin/sh\necho hi\n"]),
                progress: nil)
            leftovers.servers.append(created.id)
            let shown = try #require(try cloud.cli(["server", "show", created.id]) as? [String: Any])
            #expect(shown["name"] as? String == name)
            #expect((shown["flavor"] as? String)?.hasPrefix("ic.small") == true, "\(shown["flavor"] ?? "-")")

            let other = "cli-\(UUID().uuidString.prefix(6).lowercased())"
            let made = try #require(try cloud.cli(
                ["--os-compute-api-version", "2.60", "server", "create", "--flavor", "ic.tiny", "--image", cloud.imageID, "--nic", "none", other]) as? [String: Any])
            let otherID = try #require(made["id"] as? String)
            leftovers.servers.append(otherID)
            let seen = try await driver.describe(instance: otherID)
            #expect(seen.name == other && seen.sizeID == "ic.tiny" && seen.imageID == cloud.imageID)
            // pageSize is 2 in the fixture: the list follows Nova's next links past the first page.
            let listed = try await driver.listInstances()
            #expect(listed.contains { $0.id == created.id } && listed.contains { $0.id == otherID })
            let filtered = try await driver.listServers(filters: ["name": "^\(other)$"])
            #expect(filtered.map(\.id) == [otherID])

            let running = try await driver.waitFor(instance: created.id, state: .running, timeout: .seconds(240), pollInterval: .seconds(1))
            // No network configured: the server was created with "networks": "none".
            #expect(running.addresses.isEmpty && running.extra["networks"] == nil, "\(running.addresses)")
            let plain = try #require(try cloud.cli(["server", "show", created.id]) as? [String: Any])
            #expect((plain["addresses"] as? [String: Any])?.isEmpty == true, "\(plain["addresses"] ?? "-")")
            _ = try await driver.shutdown(running.id)
            _ = try await driver.waitFor(instance: created.id, state: .stopped, timeout: .seconds(120), pollInterval: .seconds(1))
            let stopped = try #require(try cloud.cli(["server", "show", created.id]) as? [String: Any])
            #expect(stopped["status"] as? String == "SHUTOFF")

            try await driver.terminate(instance: otherID)
            try await driver.terminate(instance: created.id)
            _ = try await driver.waitFor(instance: created.id, state: .terminated, timeout: .seconds(120), pollInterval: .seconds(1))
        }
    }

    @Test("a server on the guest network has the addresses the openstack CLI shows, and its guest answers at them")
    func networkAddresses() async throws {
        let (cloud, base) = try await cloudAndDriver()
        let network = try #require(cloud.networkID, "the cloud has no guest network: restart it with this scripts/openstack.sh")
        // The network as the driver's option (a broker's `network` setting), not per request.
        var configuration = base.configuration
        configuration.network = network
        let driver = OpenStackDriver(configuration: configuration)
        try await withCleanup(driver) { leftovers in
            let name = "net-\(UUID().uuidString.prefix(6).lowercased())"
            let created = try await driver.create(CreateInstanceRequest(name: name, sizeID: cloud.flavor, imageID: cloud.imageID), progress: nil)
            leftovers.servers.append(created.id)
            let running = try await driver.waitFor(instance: created.id, state: .running, timeout: .seconds(240), pollInterval: .seconds(1))
            let shown = try #require(try cloud.cli(["server", "show", created.id]) as? [String: Any])
            let byNetwork = try #require(shown["addresses"] as? [String: [String]], "\(shown["addresses"] ?? "-")")
            #expect(running.addresses == byNetwork.keys.sorted().flatMap { byNetwork[$0] ?? [] }, "\(running.addresses) vs \(byNetwork)")
            #expect(byNetwork.keys.sorted() == [cloud.networkName ?? "-"] && running.extra["networks"] == cloud.networkName)
            let address = try #require(running.addresses.first)
            let listed = try #require(try await driver.listServers(filters: ["name": "^\(name)$"]).first)
            #expect(listed.addresses == running.addresses)
            // Neutron's port for the server holds that address.
            let ports = try #require(try cloud.cli(["port", "list", "--device-id", created.id]) as? [[String: Any]])
            let fixed = ports.flatMap { ($0["Fixed IP Addresses"] as? [[String: Any]]) ?? [] }.compactMap { $0["ip_address"] as? String }
            #expect(fixed == [address], "\(ports)")
            // The guest took it by DHCP (its console says so) and answers there from this machine.
            #expect(await eventually(timeout: .seconds(240)) {
                if ((try? await driver.consoleOutput(instance: created.id)) ?? "").contains("\(TestOpenStack.guestAddressMarker) eth0 \(address)") { return true }
                try? await Task.sleep(for: .seconds(1))
                return false
            })
            #expect(await eventually(timeout: .seconds(30)) {
                TestOpenStack.fetch("http://\(address):\(TestOpenStack.guestHTTPPort)/")?.contains(TestOpenStack.guestHTTPMarker) == true
            })
            try await driver.terminate(instance: created.id)
            _ = try await driver.waitFor(instance: created.id, state: .terminated, timeout: .seconds(120), pollInterval: .seconds(1))
            #expect((try cloud.cli(["port", "list", "--device-id", created.id]) as? [Any])?.isEmpty == true)
        }
    }

    @Test("sizes are the flavors with configured prices; capacity comes from Nova's limits")
    func sizesAndCapacity() async throws {
        let (cloud, driver) = try await cloudAndDriver()
        let sizes = try await driver.listSizes()
        let tiny = try #require(sizes.first { $0.id == "ic.tiny" })
        #expect(tiny.pricePerHour == Price(Decimal(string: "0.0100")!))
        let flavors = try #require(try cloud.cli(["flavor", "list"]) as? [[String: Any]])
        let cliTiny = try #require(flavors.first { $0["Name"] as? String == "ic.tiny" })
        #expect(cliTiny["RAM"] as? Int == tiny.memoryMiB && cliTiny["VCPUs"] as? Int == tiny.vCPU && cliTiny["Disk"] as? Int == tiny.diskGiB)
        let capacity = try await driver.capacity()
        let limits = try #require(try cloud.cli(["limits", "show", "--absolute"]) as? [[String: Any]])
        let maxInstances = limits.first { $0["Name"] as? String == "maxTotalInstances" }?["Value"] as? Int
        #expect(capacity.maxInstances == maxInstances)
    }

    @Test("password and application-credential logins work; a wrong secret is an authentication error")
    func authentication() async throws {
        let cloud = try await TestOpenStack.shared()
        let password = OpenStackDriver(configuration: OpenStackFixture.configuration(cloud, credentials: .password(
            user: cloud.username, userDomain: cloud.userDomain, password: cloud.password, project: cloud.projectName,
            projectDomain: cloud.projectDomain)))
        try await password.connect()
        #expect(try await password.listSizes().contains { $0.id == "ic.tiny" })

        let wrong = OpenStackDriver(configuration: OpenStackFixture.configuration(
            cloud, credentials: .applicationCredential(id: cloud.applicationCredentialID, secret: "not-the-secret")))
        let error = await #expect(throws: ProviderError.self) { try await wrong.connect() }
        #expect(error?.code == .authentication && error?.driver == "openstack" && error?.verb == .connect)
        #expect(error?.message.contains("auth/tokens") == true)

        var elsewhere = OpenStackFixture.configuration(cloud)
        elsewhere.region = "NoSuchRegion"
        let regionError = await #expect(throws: ProviderError.self) { try await OpenStackDriver(configuration: elsewhere).connect() }
        #expect(regionError?.code == .invalidInput && regionError?.message.contains("RegionOne") == true)

        // Through the registry, as a broker's [provider] makes it: secrets from the environment only.
        let made = try await DriverRegistry.make(
            DriverSettings(kind: "openstack", options: ["auth-url": cloud.authURL.absoluteString, "region": cloud.region, "prices": "ic.tiny=0.5"]),
            environment: cloud.environment())
        #expect(try await made.listSizes().first { $0.id == "ic.tiny" }?.pricePerHour == Price(Decimal(string: "0.5")!))
        let missing = await #expect(throws: ProviderError.self) {
            _ = try await DriverRegistry.make(DriverSettings(kind: "openstack", options: ["auth-url": cloud.authURL.absoluteString]), environment: [:])
        }
        #expect(missing?.code == .authentication && missing?.message.contains("OS_APPLICATION_CREDENTIAL_ID") == true)
    }

    @Test("an uploaded image carries Glance's os_hash_value of our bytes, and downloads match it")
    func imageChecksums() async throws {
        let (cloud, driver) = try await cloudAndDriver()
        let directory = try TemporaryDirectory.make("openstack-images")
        defer { try? FileManager.default.removeItem(at: directory) }
        // 4 MiB of known content, raw.
        var bytes = [UInt8](repeating: 0, count: 4 << 20)
        for index in stride(from: 0, to: bytes.count, by: 4096) { bytes[index] = UInt8(truncatingIfNeeded: index / 4096) }
        let file = directory.appendingPathComponent("disk.raw")
        try Data(bytes).write(to: file)
        let sha256 = try FileCopy.digest(of: file).sha256
        let image = try await driver.importImage(
            from: file, name: "checksum-\(UUID().uuidString.prefix(6))", format: .raw, expectedSHA256: sha256, progress: nil)
        try await withCleanup(driver) { leftovers in
            leftovers.images.append(image.id)
            #expect(image.sha256 == sha256)
            #expect(image.extra["kernel_id"] == cloud.kernelImageID)
            let shown = try #require(try cloud.cli(["image", "show", image.id]) as? [String: Any])
            #expect(shown["status"] as? String == "active")
            let sha512 = try runProgram("/usr/bin/sha512sum", [file.path]).split(separator: " ").first.map(String.init)
            #expect(image.extra["os_hash_value"] == sha512, "os_hash_value from Glance equals sha512sum of the file")

            let exported = try await driver.exportImage(id: image.id, to: directory.appendingPathComponent("out.vmdk"), format: .vmdk, progress: nil)
            #expect(exported.contentSHA256 == sha256)
            let back = try await driver.exportImage(id: image.id, to: directory.appendingPathComponent("out.raw"), format: .raw, progress: nil)
            #expect(back.fileSHA256 == sha256)
            // The CLI downloads the same bytes.
            let saved = directory.appendingPathComponent("cli.raw")
            _ = try runProgram("/usr/bin/openstack", ["image", "save", "--file", saved.path, image.id], environment: cloud.environment())
            #expect(try FileCopy.digest(of: saved).sha256 == sha256)

            try await driver.deregisterImage(id: image.id)
            let gone = await #expect(throws: ProviderError.self) {
                _ = try await driver.exportImage(id: image.id, to: directory.appendingPathComponent("gone.raw"), format: .raw, progress: nil)
            }
            #expect(gone?.code == .notFound)
        }
    }

    @Test("a snapshot of a running guest holds real data and boots again")
    func snapshotBoots() async throws {
        let (cloud, driver) = try await cloudAndDriver()
        try await withCleanup(driver) { leftovers in
            let created = try await driver.create(
                CreateInstanceRequest(name: "snap-\(UUID().uuidString.prefix(6).lowercased())", sizeID: "ic.tiny", imageID: cloud.imageID),
                progress: nil)
            leftovers.servers.append(created.id)
            _ = try await driver.waitFor(instance: created.id, state: .running, timeout: .seconds(240), pollInterval: .seconds(1))
            let events = ProgressLog()
            let snapshot = try await driver.snapshot(instance: created.id, name: "snap-image", progress: { events.append($0.message) })
            leftovers.images.append(snapshot.id)
            #expect(snapshot.rawState == "active")
            #expect((snapshot.sizeBytes ?? 0) > 0)
            #expect(snapshot.extra["os_hash_value"]?.count == 128)
            #expect(events.messages.contains { $0.contains("active") })
            let again = try await driver.create(
                CreateInstanceRequest(name: "from-snap", sizeID: "ic.tiny", imageID: snapshot.id), progress: nil)
            leftovers.servers.append(again.id)
            _ = try await driver.waitFor(instance: again.id, state: .running, timeout: .seconds(240), pollInterval: .seconds(1))
            #expect(await eventually(timeout: .seconds(180)) {
                ((try? await driver.consoleOutput(instance: again.id)) ?? "").contains(cloud.guestMarker)
            })
        }
    }
}

/// Servers and images a test made, to delete afterwards.
final class Leftovers: @unchecked Sendable {
    // `@unchecked`: the lists are only touched while holding `lock`.
    private let lock = NSLock()
    private var serverIDs: [String] = []
    private var imageIDs: [String] = []
    var servers: [String] {
        get { lock.withLock { serverIDs } }
        set { lock.withLock { serverIDs = newValue } }
    }
    var images: [String] {
        get { lock.withLock { imageIDs } }
        set { lock.withLock { imageIDs = newValue } }
    }

    func remove(_ driver: OpenStackDriver) async {
        for id in servers { try? await driver.terminate(instance: id) }
        for id in images { try? await driver.deregisterImage(id: id) }
    }
}

final class ProgressLog: @unchecked Sendable {
    // `@unchecked`: `items` is only touched while holding `lock`.
    private let lock = NSLock()
    private var items: [String] = []
    func append(_ message: String) { lock.withLock { items.append(message) } }
    var messages: [String] { lock.withLock { items } }
}

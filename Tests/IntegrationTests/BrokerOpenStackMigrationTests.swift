import Broker
import Catalog
import CatalogQueries
import Foundation
import Metering
import Migration
import Policy
import Providers
import TestSupport
import Testing

/// The shared real OpenStack (`TestOpenStack`) as a broker's `[provider]`. The broker reads the
/// secret from the environment as in production (`OS_APPLICATION_CREDENTIAL_*`), so this process's
/// environment gets the test project's application credential before any broker starts.
enum BrokerOpenStack {
    static func cloud() async throws -> TestOpenStack {
        let cloud = try await TestOpenStack.shared()
        for (key, value) in cloud.environment() where key.hasPrefix("OS_") { setenv(key, value, 1) }
        return cloud
    }

    /// A `[provider]` section for it. Imported disks boot with the test guest's kernel and ramdisk,
    /// as the libvirt destination boots them directly. With `network` (a Neutron network id), the
    /// broker's servers get a port and an address on it; without, they have no network.
    static func section(_ cloud: TestOpenStack, network: String? = nil) -> String {
        """
        [provider]
        driver = "openstack"
        options = { auth-url = "\(cloud.authURL.absoluteString)", region = "\(cloud.region)", kernel-image = "\(cloud.kernelImageID)", ramdisk-image = "\(cloud.ramdiskImageID)", kernel-command-line = "console=ttyS0", prices = "ic.tiny=0.0100,ic.small=0.0200,ic.medium=0.0400"\(network.map { ", network = \"\($0)\"" } ?? "") }

        [migration]
        graceful_shutdown_seconds = 30
        boot_timeout_seconds = 300
        """
    }
}

/// Cold migration between two brokers over a real Prosody onto and off a real OpenStack: the disk
/// leaves SimCloud and boots in Nova as a QEMU guest; a Nova server's snapshot leaves Glance and boots
/// under libvirt. The same SHA-256 of the raw disk content is recorded at both ends.
@Suite(.serialized, .timeLimit(.minutes(12))) struct BrokerOpenStackMigrationTests {
    let migration: BrokerMigrationIntegrationTests

    init() throws { migration = try BrokerMigrationIntegrationTests() }

    @Test func simCloudInstanceMigratesIntoOpenStackAndBootsInNova() async throws {
        let cloud = try await BrokerOpenStack.cloud()
        let simSection = BrokerMigrationIntegrationTests.section.replacingOccurrences(of: "%@", with: "c-\(UUID().uuidString.prefix(6))")
        let pair = try await migration.negotiation.trustedPair(
            consumerSection: simSection, providerSection: BrokerOpenStack.section(cloud),
            providerPrices: ["ic.tiny": "0.0100", "ic.small": "0.0200", "ic.medium": "0.0400"])
        #expect(await eventually(timeout: .seconds(60)) { pair.consumer.node.migration?.isReady == true && pair.provider.node.migration?.isReady == true })
        let destination = try await #require(pair.provider.node.provider).driver()
        #expect(destination.driverName == "openstack")
        let openstack = try #require(destination as? OpenStackDriver)
        var arrivedID: String?
        var arrivedImageID: String?
        do {
            // Live inventory: the OpenStack broker publishes its flavors with their prices, and a peer's
            // catalog query sees them.
            var offerings: [[String]] = []
            var last = ""
            let published = await eventually(timeout: .seconds(60)) {
                let answer: QueryResult
                do {
                    answer = try await pair.consumer.node.catalogQueries.query(
                        BrokerCatalogIntegrationTests.prefixes + """
                        SELECT ?name ?price WHERE { GRAPH <urn:intercloud:graph:inventory> {
                          ?o a ic:Offering ; ic:name ?name ; ic:pricePerHour ?price } } ORDER BY ?name
                        """, peer: try RunningBroker.full(pair.providerJID))
                } catch {
                    last = "\(error)"
                    return false
                }
                last = "\(answer)"
                guard case .solutions(let table) = answer else { return false }
                offerings = table.rows.map { $0.map(CatalogProtocol.cell) }
                return !offerings.isEmpty
            }
            #expect(published, "last answer: \(last)")
            #expect(offerings == [["ic.medium", "0.04"], ["ic.small", "0.02"], ["ic.tiny", "0.01"]], "\(offerings)")

            let agreement = try await migration.agree(pair, types: [])
            let (source, instance) = try await migration.runningInstance(pair.consumer.node, size: "sim.nano")
            let seed = try #require(try await source.listImages().first { $0.id == instance.imageID }?.sha256)

            let clock = ContinuousClock()
            let started = clock.now
            let service = try #require(pair.consumer.node.migration)
            let result = try await service.migrate(instanceID: instance.id, to: pair.providerJID, agreementID: agreement.id)
            print("SimCloud → OpenStack over XMPP took \(clock.now - started)")
            #expect(result.outcome == .completed, "\(result.outcome)")

            #expect(try await source.listInstances().filter { $0.id == instance.id && $0.state != .terminated }.isEmpty)
            let arrived = try #require(try await destination.listInstances().first { $0.name == "web-1" })
            arrivedID = arrived.id
            arrivedImageID = arrived.imageID
            #expect(arrived.state == .running && arrived.sizeID == "ic.medium", "\(arrived.rawState) \(arrived.sizeID ?? "-")")
            let image = try #require(try await destination.listImages().first { $0.id == arrived.imageID })
            #expect(image.sha256 == seed)
            // The openstack CLI sees the server and the image Glance holds for it.
            let server = try #require(try cloud.cli(["server", "show", arrived.id]) as? [String: Any])
            #expect(server["status"] as? String == "ACTIVE")
            let shown = try #require(try cloud.cli(["image", "show", image.id]) as? [String: Any])
            let properties = shown["properties"] as? [String: Any] ?? [:]
            #expect(properties["intercloud_content_sha256"] as? String == seed)
            // A real guest: Nova booted it and its init printed the marker on the serial console.
            #expect(await eventually(timeout: .seconds(240)) {
                ((try? await openstack.consoleOutput(instance: arrived.id)) ?? "").contains(cloud.guestMarker)
            })
            #expect(try pair.provider.node.metering.store.placements(agreementID: agreement.id, role: .provider).count == 1)
        } catch {
            await Self.clean(openstack, server: arrivedID, image: arrivedImageID)
            await migration.negotiation.stop(pair)
            throw error
        }
        await Self.clean(openstack, server: arrivedID, image: arrivedImageID)
        await migration.negotiation.stop(pair)
    }

    @Test func openStackServerMigratesToLibvirtWithTheSameDiskContent() async throws {
        let cloud = try await BrokerOpenStack.cloud()
        let uri = try await BrokerLibvirtSession.uri()
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-broker-os-lv-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: root) }
        let libvirtSection = try BrokerLibvirtSession.providerSection(uri: uri, root: root)
        let pair = try await migration.negotiation.trustedPair(
            consumerSection: BrokerOpenStack.section(cloud), providerSection: libvirtSection,
            providerPrices: ["lv.tiny": "0.0100", "lv.small": "0.0200", "lv.medium": "0.0300", "lv.large": "0.0600"])
        #expect(await eventually(timeout: .seconds(60)) { pair.consumer.node.migration?.isReady == true && pair.provider.node.migration?.isReady == true })
        let sourceProvider = try #require(pair.consumer.node.provider)
        let source = try #require(try await sourceProvider.driver() as? OpenStackDriver)
        let destination = try await #require(pair.provider.node.provider).driver()
        var serverID: String?
        do {
            let agreement = try await migration.agree(pair, types: [])
            let created = try await source.create(
                CreateInstanceRequest(name: "web-1", sizeID: "ic.tiny", imageID: cloud.imageID), progress: nil)
            serverID = created.id
            _ = try await source.waitFor(instance: created.id, state: .running, timeout: .seconds(300), pollInterval: .seconds(1))

            let clock = ContinuousClock()
            let started = clock.now
            let service = try #require(pair.consumer.node.migration)
            let result = try await service.migrate(instanceID: created.id, to: pair.providerJID, agreementID: agreement.id)
            print("OpenStack → libvirt over XMPP took \(clock.now - started)")
            #expect(result.outcome == .completed, "\(result.outcome)")

            // The Nova server is gone; the snapshot the migration took in Glance was removed too.
            #expect(try await source.listInstances().filter { $0.id == created.id && $0.state != .terminated }.isEmpty)
            let arrived = try #require(try await destination.listInstances().first { $0.name == "web-1" })
            #expect(arrived.state == .running)
            let arrivedImage = try #require(try await destination.listImages().first { $0.id == arrived.imageID })
            // The same raw content at both ends. Nova grew the busybox disk to ic.tiny's 1 GiB and the
            // guest never writes to it, so the server's disk was exactly that: the image's bytes, then zeros.
            let original = try await source.exportImage(
                id: cloud.imageID, to: root.appendingPathComponent("original.raw"), format: .raw, progress: nil)
            let handle = try FileHandle(forWritingTo: original.url)
            try handle.truncate(atOffset: 1 << 30)
            try handle.close()
            let grown = try runProgram("/usr/bin/sha256sum", [original.url.path]).split(separator: " ").first.map(String.init)
            #expect(arrivedImage.sha256 == grown, "\(arrivedImage.sha256 ?? "-") vs \(grown ?? "-")")
            let log = try #require(arrived.extra["consoleLog"])
            #expect(await eventually(timeout: .seconds(150)) {
                ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains(BrokerLibvirtSession.bootMarker)
            })
        } catch {
            if let serverID { try? await source.terminate(instance: serverID) }
            for instance in (try? await destination.listInstances()) ?? [] { try? await destination.terminate(instance: instance.id) }
            await migration.negotiation.stop(pair)
            throw error
        }
        for instance in try await destination.listInstances() { try await destination.terminate(instance: instance.id) }
        await migration.negotiation.stop(pair)
    }

    /// Deletes the migrated server and the image it was imported as (the destination keeps both
    /// when a migration completes; the test's cloud is shared by the whole run).
    static func clean(_ driver: OpenStackDriver, server: String?, image: String?) async {
        if let server {
            try? await driver.terminate(instance: server)
            _ = try? await driver.waitFor(instance: server, state: .terminated, timeout: .seconds(120), pollInterval: .seconds(1))
        }
        if let image { try? await driver.deregisterImage(id: image) }
    }
}

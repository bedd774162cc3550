import Broker
import Foundation
import Metering
import Migration
import Policy
import Providers
import TestSupport
import Testing

/// A private libvirt session daemon (`scripts/libvirt-session.sh`) for this test process, with the
/// tiny guest (`scripts/guest-build.sh`): QEMU runs as uid 65534, the broker talks to the socket.
enum BrokerLibvirtSession {
    static let uid = 65534
    static let bootMarker = "INTERCLOUD-GUEST-READY"
    static let guest = URL(fileURLWithPath: ProcessInfo.processInfo.environment["INTERCLOUD_GUEST_DIR"] ?? "/tmp/intercloud-test-guest")

    /// The daemon's URI, started once per process and stopped when the process exits.
    static let started: Result<String, any Error> = {
        do {
            let root = try TestProsody.repositoryRoot().path
            let directory = "/tmp/intercloud-broker-libvirt-\(getpid())"
            try runShell("bash \(shellQuoted(root))/scripts/guest-build.sh \(shellQuoted(guest.path))")
            try runShell("bash \(shellQuoted(root))/scripts/libvirt-session.sh start \(shellQuoted(directory)) \(getpid())")
            return .success("qemu+unix:///session?socket=\(directory)/run/libvirt/libvirt-sock")
        } catch {
            return .failure(error)
        }
    }()

    /// Starts the daemon off the cooperative pool (building the guest can take a while the first time).
    static func uri() async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(with: started) }
        }
    }

    /// A `[provider]` (and `[migration]`) section for a libvirt cloud on this daemon, its image and
    /// instance folders under `root`, guests booted directly from the test guest's kernel and
    /// initramfs. The folders belong to the session user: QEMU writes overlays and console logs there.
    static func providerSection(uri: String, root: URL) throws -> String {
        let images = root.appendingPathComponent("images")
        let instances = root.appendingPathComponent("instances")
        for folder in [root, images, instances] {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try FileManager.default.setAttributes(
                [.posixPermissions: 0o755, .ownerAccountID: NSNumber(value: uid), .groupOwnerAccountID: NSNumber(value: uid)],
                ofItemAtPath: folder.path)
        }
        return """
            [provider]
            driver = "libvirt"
            options = { uri = "\(uri)", image-dir = "\(images.path)", instance-dir = "\(instances.path)", domain-type = "qemu", kernel = "\(guest.appendingPathComponent("vmlinuz").path)", initrd = "\(guest.appendingPathComponent("initrd.gz").path)", cmdline = "console=ttyS0 quiet", file-owner-uid = "\(uid)" }

            [migration]
            graceful_shutdown_seconds = 5
            boot_timeout_seconds = 120
            """
    }
}

/// Cold migration between two brokers over a real Prosody into a libvirt cloud: the consumer's
/// SimCloud instance moves to the provider's libvirt, where it runs as a real QEMU guest (booted
/// directly from the tiny guest's kernel and initramfs, with the migrated disk as its block device).
///
/// The agreement and the provider's rate card name the provider's own (libvirt) sizes: the
/// destination checks the size it maps the SimCloud instance to (`lv.*`), not the source's name.
/// libvirt as a source is covered by `CrossDriverMigrationTests`.
@Suite(.serialized, .timeLimit(.minutes(6))) struct BrokerLibvirtMigrationTests {
    let migration: BrokerMigrationIntegrationTests

    init() throws { migration = try BrokerMigrationIntegrationTests() }

    @Test func simCloudInstanceMigratesOverXMPPIntoLibvirtAndBootsAsAQemuGuest() async throws {
        let uri = try await BrokerLibvirtSession.uri()
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-broker-lv-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: root) }
        let libvirtSection = try BrokerLibvirtSession.providerSection(uri: uri, root: root)
        let simSection = BrokerMigrationIntegrationTests.section.replacingOccurrences(of: "%@", with: "c-\(UUID().uuidString.prefix(6))")
        let pair = try await migration.negotiation.trustedPair(
            consumerSection: simSection, providerSection: libvirtSection,
            providerPrices: ["lv.tiny": "0.0100", "lv.small": "0.0200", "lv.medium": "0.0300", "lv.large": "0.0600"])
        #expect(await eventually(timeout: .seconds(30)) { pair.consumer.node.migration?.isReady == true && pair.provider.node.migration?.isReady == true })
        let agreement = try await migration.agree(pair, types: [])
        let destination = try await #require(pair.provider.node.provider).driver()
        #expect(destination.driverName == "libvirt")
        do {
            let (source, instance) = try await migration.runningInstance(pair.consumer.node, size: "sim.small")
            let seed = try #require(try await source.listImages().first { $0.id == instance.imageID }?.sha256)

            let clock = ContinuousClock()
            let started = clock.now
            let service = try #require(pair.consumer.node.migration)
            let result = try await service.migrate(instanceID: instance.id, to: pair.providerJID, agreementID: agreement.id)
            print("SimCloud → libvirt over XMPP took \(clock.now - started)")
            #expect(result.outcome == .completed, "\(result.outcome)")

            // The source copy is gone; the libvirt domain runs with the migrated disk's content, in
            // the smallest libvirt size that fits sim.small (1 vCPU, 2 GiB, 20 GiB).
            #expect(try await source.listInstances().filter { $0.id == instance.id && $0.state != .terminated }.isEmpty)
            let arrived = try #require(try await destination.listInstances().first { $0.name == "web-1" })
            #expect(arrived.state == .running && arrived.sizeID == "lv.medium", "\(arrived.rawState) \(arrived.sizeID ?? "-")")
            #expect(try await destination.listImages().first { $0.id == arrived.imageID }?.sha256 == seed)
            // A real guest: its init prints the boot marker on the serial console.
            let log = try #require(arrived.extra["consoleLog"])
            let booted = clock.now
            #expect(await eventually(timeout: .seconds(150)) {
                ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains(BrokerLibvirtSession.bootMarker)
            })
            print("guest boot marker seen \(clock.now - booted) after the migration completed")
            #expect(await eventually {
                (try? pair.provider.node.migration?.journal.migrations().first { $0.migrationID == result.migrationID })??.phase == "completed"
            })
            #expect(try pair.consumer.node.metering.store.transferred(agreementID: agreement.id, role: .consumer, upTo: Date()) > 0)
            #expect(try pair.provider.node.metering.store.placements(agreementID: agreement.id, role: .provider).count == 1)
        } catch {
            for instance in (try? await destination.listInstances()) ?? [] { try? await destination.terminate(instance: instance.id) }
            await migration.negotiation.stop(pair)
            throw error
        }
        for instance in try await destination.listInstances() { try await destination.terminate(instance: instance.id) }
        await migration.negotiation.stop(pair)
    }
}

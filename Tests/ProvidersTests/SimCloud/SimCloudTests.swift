import Foundation
import GRDB
import Testing
@testable import Providers
import Storage

@Suite("SimCloud")
struct SimCloudTests {
    func makeCloud(
        delays: SimCloud.Delays = .instant, limits: SimCloud.Limits = .init()
    ) throws -> (SimCloud, URL) {
        let directory = try TemporaryDirectory.make("simcloud")
        return (try SimCloud(configuration: .init(dataDirectory: directory, delays: delays, limits: limits)), directory)
    }

    func files(in directory: URL, _ folder: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory.appendingPathComponent(folder).path)) ?? []).sorted()
    }

    @Test("the seed image has a real, stable checksum and the catalog has prices")
    func seedAndCatalog() async throws {
        let (cloud, directory) = try makeCloud()
        defer { try? FileManager.default.removeItem(at: directory) }
        let image = try #require(try await cloud.listImages().first)
        let digest = try FileCopy.digest(of: directory.appendingPathComponent("images/\(image.id).raw"))
        #expect(image.sha256 == digest.sha256)
        #expect(image.sizeBytes == 8 << 20)
        let (other, otherDirectory) = try makeCloud()
        defer { try? FileManager.default.removeItem(at: otherDirectory) }
        #expect(try await other.listImages().first?.sha256 == image.sha256)
        let sizes = try await cloud.listSizes()
        #expect(sizes.first { $0.id == "sim.small" }?.pricePerHour == Price(Decimal(string: "0.0230")!, "USD"))
    }

    @Test("transitions take the configured delays and keep the raw state beside the normalized one")
    func delayedTransitions() async throws {
        let (cloud, directory) = try makeCloud(delays: .init(
            boot: .milliseconds(300), shutdown: .seconds(600), reboot: .milliseconds(300), save: .milliseconds(300),
            terminate: .milliseconds(300)))
        defer { try? FileManager.default.removeItem(at: directory) }
        let created = try await cloud.create(
            CreateInstanceRequest(name: "web", sizeID: "sim.small", imageID: SimCloud.seedImageID), progress: nil)
        #expect(created.state == .pending)
        #expect(created.rawState == "booting")
        let running = try await cloud.waitFor(instance: created.id, state: .running, timeout: .seconds(30))
        #expect(running.addresses.count == 1)
        let stopping = try await cloud.shutdown(created.id)
        #expect(stopping.state == .stopping && stopping.rawState == "shutting-down")
        // The guest "ignores" the shutdown for 10 minutes: a wait times out with a clear error...
        let error = await #expect(throws: ProviderError.self) {
            try await cloud.waitFor(instance: created.id, state: .stopped, timeout: .milliseconds(50))
        }
        #expect(error?.code == .timeout)
        #expect(error?.message.contains("stopping (shutting-down)") == true)
        // ...and a hard stop ends it at once.
        let destroyed = try await cloud.destroy(created.id)
        let restarted = try await cloud.start(created.id)
        #expect(restarted.state == .pending)
        _ = try await cloud.waitFor(instance: created.id, state: .running, timeout: .seconds(30))
        #expect(destroyed.state == .stopped && destroyed.rawState == "stopped:destroyed")
    }

    @Test("state survives reopening the database")
    func persistence() async throws {
        let directory = try TemporaryDirectory.make("simcloud")
        defer { try? FileManager.default.removeItem(at: directory) }
        let id: String
        do {
            let cloud = try SimCloud(configuration: .init(dataDirectory: directory, delays: .instant))
            id = try await cloud.create(
                CreateInstanceRequest(name: "db", sizeID: "sim.medium", imageID: SimCloud.seedImageID), progress: nil).id
            _ = try await cloud.suspend(id)
        }
        let reopened = try SimCloud(configuration: .init(dataDirectory: directory, delays: .instant))
        let instance = try await reopened.describe(instance: id)
        #expect(instance.state == .paused)
        #expect(instance.sizeID == "sim.medium")
    }

    @Test("capacity limits refuse an instance that does not fit")
    func capacityLimit() async throws {
        let (cloud, directory) = try makeCloud(limits: .init(maxInstances: 2, maxVCPU: 3, maxMemoryMiB: nil))
        defer { try? FileManager.default.removeItem(at: directory) }
        _ = try await cloud.create(CreateInstanceRequest(name: "a", sizeID: "sim.medium", imageID: SimCloud.seedImageID), progress: nil)
        let error = await #expect(throws: ProviderError.self) {
            _ = try await cloud.create(CreateInstanceRequest(name: "b", sizeID: "sim.medium", imageID: SimCloud.seedImageID), progress: nil)
        }
        #expect(error?.code == .capacityExceeded)
        #expect(error?.description.contains("vCPU") == true)
        _ = try await cloud.create(CreateInstanceRequest(name: "c", sizeID: "sim.nano", imageID: SimCloud.seedImageID), progress: nil)
        let capacity = try await cloud.capacity()
        #expect(capacity.usedInstances == 2 && capacity.usedVCPU == 3)
        #expect(files(in: directory, "disks").count == 2)
    }

    @Test("an injected failure fails the verb N times, then it works")
    func failVerbNTimes() async throws {
        let (cloud, directory) = try makeCloud()
        defer { try? FileManager.default.removeItem(at: directory) }
        await cloud.inject(.fail(.create, times: 2))
        for _ in 0..<2 {
            let error = await #expect(throws: ProviderError.self) {
                _ = try await cloud.create(CreateInstanceRequest(name: "x", sizeID: "sim.small", imageID: SimCloud.seedImageID), progress: nil)
            }
            #expect(error?.code == .injectedFault && error?.verb == .create)
        }
        _ = try await cloud.create(CreateInstanceRequest(name: "x", sizeID: "sim.small", imageID: SimCloud.seedImageID), progress: nil)
    }

    @Test("a create that fails after its work leaves no disk and no row behind")
    func createCleanup() async throws {
        let (cloud, directory) = try makeCloud()
        defer { try? FileManager.default.removeItem(at: directory) }
        await cloud.inject(.failAfterWork(.create))
        await #expect(throws: ProviderError.self) {
            _ = try await cloud.create(CreateInstanceRequest(name: "x", sizeID: "sim.small", imageID: SimCloud.seedImageID), progress: nil)
        }
        #expect(try await cloud.listInstances().isEmpty)
        #expect(files(in: directory, "disks").isEmpty)
    }

    @Test("a crash mid-export leaves no partial file; the next export works and matches")
    func crashMidExport() async throws {
        let (cloud, directory) = try makeCloud()
        defer { try? FileManager.default.removeItem(at: directory) }
        let out = try TemporaryDirectory.make("export")
        defer { try? FileManager.default.removeItem(at: out) }
        await cloud.inject(.crashExport(afterBytes: 1 << 20))
        let destination = out.appendingPathComponent("seed.raw")
        let error = await #expect(throws: ProviderError.self) {
            _ = try await cloud.exportImage(id: SimCloud.seedImageID, to: destination, format: .raw, progress: nil)
        }
        #expect(error?.code == .injectedFault && error?.verb == .exportImage)
        #expect(try FileManager.default.contentsOfDirectory(atPath: out.path).isEmpty)
        let counter = Counter()
        let file = try await cloud.exportImage(id: SimCloud.seedImageID, to: destination, format: .raw) { _ in counter.increment() }
        #expect(counter.value >= 1)
        #expect(file.fileSHA256 == file.contentSHA256)
        #expect(try FileCopy.digest(of: destination).sha256 == file.fileSHA256)
    }

    @Test("a raw export shares the stored image's file (images are immutable): no copy, the recorded digest")
    func exportLinksStoredImage() async throws {
        let (cloud, directory) = try makeCloud()
        defer { try? FileManager.default.removeItem(at: directory) }
        let out = directory.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        let file = try await cloud.exportImage(id: SimCloud.seedImageID, to: out.appendingPathComponent("seed.raw"), format: .raw, progress: nil)
        let stored = directory.appendingPathComponent("images/\(SimCloud.seedImageID).raw")
        #expect(try inode(of: file.url) == inode(of: stored))
        #expect(try FileCopy.digest(of: file.url).sha256 == file.fileSHA256)
        // Removing the export leaves the image whole.
        try FileManager.default.removeItem(at: file.url)
        #expect(try FileCopy.digest(of: stored).sha256 == file.contentSHA256)
    }

    @Test("an instance created with consumeImage boots from the image's own file: no copy, the image starts no other instance")
    func consumeImage() async throws {
        let (cloud, directory) = try makeCloud()
        defer { try? FileManager.default.removeItem(at: directory) }
        let received = directory.appendingPathComponent("received.raw")
        try Data(repeating: 9, count: 2 << 20).write(to: received)
        let digest = try FileCopy.digest(of: received).sha256
        let inodeReceived = try inode(of: received)
        // The caller hashed the file as it received it: recorded without another pass, by link.
        let image = try await cloud.adoptImage(from: received, name: "migrated", format: .raw, expectedSHA256: digest, digestVerified: true, progress: nil)
        #expect(image.sha256 == digest)
        let created = try await cloud.create(
            CreateInstanceRequest(name: "vm", sizeID: "sim.small", imageID: image.id, extra: ["consumeImage": "true"]), progress: nil)
        let disk = directory.appendingPathComponent(created.extra["disk"] ?? "")
        #expect(try inode(of: disk) == inodeReceived)
        #expect(try FileCopy.digest(of: disk).sha256 == digest)
        #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent(image.extra["file"] ?? "").path))
        let listed = try #require(try await cloud.listImages().first { $0.id == image.id })
        #expect(listed.rawState == "consumed" && listed.extra["consumedBy"] == created.id)
        let refused = await #expect(throws: ProviderError.self) {
            _ = try await cloud.create(CreateInstanceRequest(name: "vm2", sizeID: "sim.small", imageID: image.id), progress: nil)
        }
        #expect(refused?.code == .invalidState)
        // Stop and start: the disk has one name, nothing to un-share, the content stays.
        _ = try await cloud.waitFor(instance: created.id, state: .running, timeout: .seconds(10))
        _ = try await cloud.shutdown(created.id)
        _ = try await cloud.waitFor(instance: created.id, state: .stopped, timeout: .seconds(10))
        _ = try await cloud.start(created.id)
        #expect(try inode(of: disk) == inodeReceived)
        // Deregistering the consumed image leaves the instance's disk.
        try await cloud.deregisterImage(id: image.id)
        #expect(try FileCopy.digest(of: disk).sha256 == digest)
        // A failed create does not consume the image.
        let other = try await cloud.importImage(from: disk, name: "other", format: .raw, expectedSHA256: nil, progress: nil)
        await cloud.inject(.failAfterWork(.create))
        await #expect(throws: ProviderError.self) {
            _ = try await cloud.create(
                CreateInstanceRequest(name: "vm3", sizeID: "sim.small", imageID: other.id, extra: ["consumeImage": "true"]), progress: nil)
        }
        let kept = try #require(try await cloud.listImages().first { $0.id == other.id })
        #expect(kept.rawState == "available")
        #expect(try FileCopy.digest(of: directory.appendingPathComponent(kept.extra["file"] ?? "")).sha256 == digest)
    }

    @Test("a stopped instance's snapshot shares its disk until the instance starts again, then the instance writes a private copy")
    func stoppedSnapshotIsCopyOnWrite() async throws {
        let (cloud, directory) = try makeCloud()
        defer { try? FileManager.default.removeItem(at: directory) }
        let created = try await cloud.create(CreateInstanceRequest(name: "vm", sizeID: "sim.small", imageID: SimCloud.seedImageID), progress: nil)
        _ = try await cloud.waitFor(instance: created.id, state: .running, timeout: .seconds(10))
        _ = try await cloud.shutdown(created.id)
        _ = try await cloud.waitFor(instance: created.id, state: .stopped, timeout: .seconds(10))
        let disk = directory.appendingPathComponent(try await cloud.describe(instance: created.id).extra["disk"] ?? "")
        let image = try await cloud.snapshot(instance: created.id, name: "snap", progress: nil)
        let stored = directory.appendingPathComponent(image.extra["file"] ?? "")
        #expect(try inode(of: stored) == inode(of: disk))
        #expect(image.sha256 == (try FileCopy.digest(of: disk).sha256))

        _ = try await cloud.start(created.id)
        #expect(try inode(of: stored) != inode(of: disk))
        #expect(try FileCopy.digest(of: disk).sha256 == image.sha256)
        // The guest writes its disk: the image keeps what it had.
        let handle = try FileHandle(forWritingTo: disk)
        try handle.write(contentsOf: Data("written by the guest".utf8))
        try handle.close()
        #expect(try FileCopy.digest(of: stored).sha256 == image.sha256)
        #expect(try FileCopy.digest(of: disk).sha256 != image.sha256)
        // A running instance's snapshot is a copy.
        _ = try await cloud.waitFor(instance: created.id, state: .running, timeout: .seconds(10))
        let running = try await cloud.snapshot(instance: created.id, name: "snap2", progress: nil)
        #expect(try inode(of: directory.appendingPathComponent(running.extra["file"] ?? "")) != inode(of: disk))
    }

    @Test("an adopted import is checked, then linked into the store; a wrong digest leaves the file and creates nothing")
    func adoptedImport() async throws {
        let (cloud, directory) = try makeCloud()
        defer { try? FileManager.default.removeItem(at: directory) }
        let received = directory.appendingPathComponent("received.raw")
        try Data(repeating: 7, count: 3 << 20).write(to: received)
        let digest = try FileCopy.digest(of: received).sha256
        await #expect(throws: ProviderError.self) {
            _ = try await cloud.adoptImage(
                from: received, name: "bad", format: .raw, expectedSHA256: String(repeating: "0", count: 64), digestVerified: false, progress: nil)
        }
        #expect(FileManager.default.fileExists(atPath: received.path))
        #expect(try await cloud.listImages().count == 1)
        let inodeBefore = try inode(of: received)
        let image = try await cloud.adoptImage(from: received, name: "good", format: .raw, expectedSHA256: digest, digestVerified: false, progress: nil)
        #expect(image.sha256 == digest)
        #expect(!FileManager.default.fileExists(atPath: received.path))
        let stored = directory.appendingPathComponent(image.extra["file"] ?? "")
        #expect(try inode(of: stored) == inodeBefore)
        #expect(try FileCopy.digest(of: stored).sha256 == digest)
    }

    @Test("an import that fails after copying removes the copied file")
    func importCleanup() async throws {
        let (cloud, directory) = try makeCloud()
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = directory.appendingPathComponent("images/\(SimCloud.seedImageID).raw")
        await cloud.inject(.failAfterWork(.importImage))
        await #expect(throws: ProviderError.self) {
            _ = try await cloud.importImage(from: source, name: "copy", format: .raw, expectedSHA256: nil, progress: nil)
        }
        #expect(files(in: directory, "images") == ["\(SimCloud.seedImageID).raw"])
        #expect(try await cloud.listImages().count == 1)
    }

    @Test("a cancelled import removes its partial file")
    func cancelledImport() async throws {
        let (cloud, directory) = try makeCloud()
        defer { try? FileManager.default.removeItem(at: directory) }
        let big = directory.appendingPathComponent("big.raw")
        _ = FileManager.default.createFile(atPath: big.path, contents: nil)
        let handle = try FileHandle(forWritingTo: big)
        try handle.truncate(atOffset: 256 << 20)
        try handle.close()
        let task = Task {
            try await cloud.importImage(from: big, name: "big", format: .raw, expectedSHA256: nil) { event in
                if event.completed >= 8 << 20 { withUnsafeCurrentTask { $0?.cancel() } }
            }
        }
        let result = await task.result
        #expect(throws: ProviderError.self) { _ = try result.get() }
        if case .failure(let error as ProviderError) = result { #expect(error.code == .cancelled) }
        #expect(files(in: directory, "images") == ["\(SimCloud.seedImageID).raw"])
        #expect(try await cloud.listImages().count == 1)
    }

    @Test("invalid transitions are clear state errors")
    func invalidTransitions() async throws {
        let (cloud, directory) = try makeCloud()
        defer { try? FileManager.default.removeItem(at: directory) }
        let id = try await cloud.create(
            CreateInstanceRequest(name: "x", sizeID: "sim.small", imageID: SimCloud.seedImageID), progress: nil).id
        let error = await #expect(throws: ProviderError.self) { _ = try await cloud.resume(id) }
        #expect(error?.code == .invalidState)
        #expect(error?.description == "simcloud: resume failed (invalid-state): instance \(id) is running; cannot resume it")
        let badSize = await #expect(throws: ProviderError.self) {
            _ = try await cloud.create(CreateInstanceRequest(name: "y", sizeID: "huge", imageID: SimCloud.seedImageID), progress: nil)
        }
        #expect(badSize?.code == .invalidInput)
    }

    @Test("the schema is registered under simcloud.v1 and .v2 in a shared broker database")
    func sharedDatabase() async throws {
        let (pool, directory) = try Storage.IntercloudDatabase.temporary(schema: [SimCloudSchema.self])
        defer { try? FileManager.default.removeItem(at: directory) }
        let migrations = try await pool.read { db in try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations") }
        #expect(migrations == ["simcloud.v1", "simcloud.v2"])
        let cloud = try SimCloud(configuration: .init(dataDirectory: directory, delays: .instant), database: pool)
        #expect(try await cloud.listImages().count == 1)
    }
}

private func inode(of url: URL) throws -> UInt64 {
    let attributes = try FileManager.default.attributesOfItem(atPath: url.path)
    return (attributes[.systemFileNumber] as? NSNumber)?.uint64Value ?? 0
}

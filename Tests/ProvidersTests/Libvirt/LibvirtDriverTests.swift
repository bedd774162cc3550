import Foundation
import Testing
@testable import Providers

/// libvirt specifics on the in-process test driver (`test:///default`).
@Suite("libvirt driver")
struct LibvirtDriverTests {
    @Test("lifecycle events reach subscribers and update the cached state")
    func events() async throws {
        try await Backend.run(try await LibvirtFixture.testDriver()) { fixture in
            let driver = try #require(fixture.driver as? LibvirtDriver)
            let events = driver.lifecycleEvents()
            let created = try await driver.create(
                CreateInstanceRequest(name: "ev-\(UUID().uuidString.prefix(6))", sizeID: "lv.tiny", imageID: fixture.imageID), progress: nil)
            _ = try await driver.suspend(created.id)
            var seen: [String] = []
            let deadline = ContinuousClock().now.advanced(by: .seconds(10))
            for await event in events where event.instanceID == created.id {
                seen.append(event.event)
                if event.event == "suspended" || ContinuousClock().now > deadline { break }
            }
            #expect(seen.contains("started"))
            #expect(seen.last == "suspended")
            #expect(driver.cachedState(of: created.id)?.state == .paused)
            try await driver.terminate(instance: created.id)
        }
    }

    @Test("raw libvirt state and reason are kept beside the normalized state")
    func rawStates() async throws {
        try await Backend.run(try await LibvirtFixture.testDriver()) { fixture in
            let driver = fixture.driver
            let created = try await driver.create(
                CreateInstanceRequest(name: "raw-\(UUID().uuidString.prefix(6))", sizeID: "lv.tiny", imageID: fixture.imageID), progress: nil)
            #expect(created.rawState == "running:booted")
            let paused = try await driver.suspend(created.id)
            #expect(paused.state == .paused && paused.rawState == "paused:user")
            let destroyed = try await driver.destroy(created.id)
            #expect(destroyed.state == .stopped && destroyed.rawState == "shutoff:destroyed")
            _ = try await driver.start(created.id)
            let saved = try await driver.save(created.id)
            #expect(saved.state == .saved && saved.rawState.hasSuffix("+managedsave"))
            let restored = try await driver.restore(created.id)
            #expect(restored.state == .running && restored.rawState.hasPrefix("running:"))
            let error = await #expect(throws: ProviderError.self) { _ = try await driver.restore(created.id) }
            #expect(error?.code == .invalidState)
            try await driver.terminate(instance: created.id)
        }
    }

    @Test("a create that fails at define time removes its overlay disk")
    func createCleanup() async throws {
        try await Backend.run(try await LibvirtFixture.testDriver()) { fixture in
            let driver = try #require(fixture.driver as? LibvirtDriver)
            let name = "dup-\(UUID().uuidString.prefix(6))"
            let first = try await driver.create(CreateInstanceRequest(name: name, sizeID: "lv.tiny", imageID: fixture.imageID), progress: nil)
            let instances = try #require(driver.configuration.instanceDirectory)
            let before = try FileManager.default.contentsOfDirectory(atPath: instances.path)
            let error = await #expect(throws: ProviderError.self) {
                _ = try await driver.create(CreateInstanceRequest(name: name, sizeID: "lv.tiny", imageID: fixture.imageID), progress: nil)
            }
            #expect(error?.verb == .create && error?.driver == "libvirt")
            #expect(try FileManager.default.contentsOfDirectory(atPath: instances.path) == before)
            #expect(try await driver.listInstances().filter { $0.name == name }.count == 1)
            try await driver.terminate(instance: first.id)
            // Terminate removes the overlay disk too.
            #expect(try FileManager.default.contentsOfDirectory(atPath: instances.path).filter { $0.hasPrefix(name) }.isEmpty)
        }
    }

    @Test("an instance gone between list and act is a not-found error")
    func goneBetweenListAndAct() async throws {
        try await Backend.run(try await LibvirtFixture.testDriver()) { fixture in
            let driver = fixture.driver
            let created = try await driver.create(
                CreateInstanceRequest(name: "gone-\(UUID().uuidString.prefix(6))", sizeID: "lv.tiny", imageID: fixture.imageID), progress: nil)
            let listed = try #require(try await driver.listInstances().first { $0.id == created.id })
            // A second connection (another client of the same host) removes it.
            let other = try await LibvirtDriver.connect(.init(uri: "test:///default"))
            try await other.terminate(instance: listed.id)
            let error = await #expect(throws: ProviderError.self) { _ = try await driver.shutdown(listed.id) }
            #expect(error?.code == .notFound)
            #expect(error?.verb == .shutdown)
            #expect(error?.backendCode == "VIR_ERR_42")
        }
    }

    @Test("a daemon that is not there is an unavailable error")
    func backendDown() async throws {
        let error = await #expect(throws: ProviderError.self) {
            _ = try await LibvirtDriver.connect(.init(uri: "qemu+unix:///session?socket=/nonexistent/libvirt-sock"))
        }
        #expect(error?.code == .unavailable)
        #expect(error?.verb == .connect)
        #expect(error?.message.contains("/nonexistent/libvirt-sock") == true)
    }

    @Test("libvirt domain snapshots (checkpoints) are listed")
    func checkpoints() async throws {
        try await Backend.run(try await LibvirtFixture.testDriver()) { fixture in
            let driver = try #require(fixture.driver as? LibvirtDriver)
            let created = try await driver.create(
                CreateInstanceRequest(name: "cp-\(UUID().uuidString.prefix(6))", sizeID: "lv.tiny", imageID: fixture.imageID), progress: nil)
            #expect(try await driver.checkpoint(instance: created.id, name: "before-upgrade") == "before-upgrade")
            #expect(try await driver.checkpoints(instance: created.id) == ["before-upgrade"])
            try await driver.terminate(instance: created.id)
        }
    }

    @Test("images round-trip through every qemu-img format with the content checksum preserved",
          arguments: ImageFormat.allCases)
    func formats(_ format: ImageFormat) async throws {
        try await Backend.run(try await LibvirtFixture.testDriver()) { fixture in
            let driver = fixture.driver
            let original = try #require(try await driver.listImages().first { $0.id == fixture.imageID })
            let directory = try TemporaryDirectory.make("formats")
            defer { try? FileManager.default.removeItem(at: directory) }
            let file = try await driver.exportImage(
                id: original.id, to: directory.appendingPathComponent("disk.\(format)"), format: format, progress: nil)
            #expect(file.contentSHA256 == original.sha256)
            let imported = try await driver.importImage(
                from: file.url, name: "back-from-\(format)", format: format, expectedSHA256: file.fileSHA256, progress: nil)
            #expect(imported.sha256 == original.sha256)
            #expect(imported.sizeBytes == original.sizeBytes)
        }
    }
}

@Suite("libvirt without an image directory")
struct LibvirtNoImagesTests {
    @Test("image verbs are undeclared and fail as unsupported; instances without a disk still work")
    func undeclaredImageVerbs() async throws {
        let driver = try await LibvirtDriver.connect(.init(uri: "test:///default"))
        for verb in [Verb.listImages, .importImage, .exportImage, .snapshot, .registerImage] {
            #expect(!driver.capabilities.supports(verb))
        }
        let list = await #expect(throws: ProviderError.self) { _ = try await driver.listImages() }
        #expect(list?.code == .unsupported && list?.verb == .listImages)
        let importing = await #expect(throws: ProviderError.self) {
            _ = try await driver.importImage(
                from: URL(fileURLWithPath: "/dev/null"), name: "x", format: .raw, expectedSHA256: nil, progress: nil)
        }
        #expect(importing?.code == .unsupported && importing?.verb == .importImage)
        let instance = try await driver.create(
            CreateInstanceRequest(name: "diskless-\(UUID().uuidString.prefix(6))", sizeID: "lv.tiny", imageID: "none"), progress: nil)
        #expect(instance.state == .running)
        let snapshot = await #expect(throws: ProviderError.self) { _ = try await driver.snapshot(instance: instance.id, name: "s", progress: nil) }
        #expect(snapshot?.code == .unsupported)
        try await driver.terminate(instance: instance.id)
    }
}

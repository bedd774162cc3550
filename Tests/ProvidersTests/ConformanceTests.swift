import Foundation
import Testing
@testable import Providers

/// The same assertions for every driver, each against its real backend. A verb a driver does not
/// declare must fail with `.unsupported`; a verb it declares must do what the lifecycle table says.
@Suite("Driver conformance")
struct ConformanceTests {
    @Test("sizes and images are listed with normalized fields", arguments: Backend.selected)
    func catalog(_ backend: Backend) async throws {
        try await backend.withFixture { fixture in
            let driver = fixture.driver
            let sizes = try await driver.listSizes()
            #expect(!sizes.isEmpty)
            let size = try #require(sizes.first { $0.id == fixture.sizeID })
            #expect(size.vCPU >= 1 && size.memoryMiB >= 64)
            let images = try await driver.listImages()
            #expect(images.contains { $0.id == fixture.imageID })
            let capacity = try await driver.capacity()
            #expect(capacity.usedInstances >= 0)
        }
    }

    @Test("every cell of the lifecycle table: a supported operation works, an unsupported one fails naming driver and verb",
          arguments: Backend.selected)
    func lifecycleTable(_ backend: Backend) async throws {
        try await backend.withFixture { fixture in
            var walk = try LifecycleWalk(fixture)
            try await walk.run()
        }
    }

    @Test("every cell of the lifecycle table for libvirt without image-dir: the image operations fail as unsupported")
    func lifecycleTableWithoutImageDirectory() async throws {
        try await Backend.run(try await LibvirtFixture.testDriverWithoutImageDirectory()) { fixture in
            var walk = try LifecycleWalk(fixture)
            try await walk.run()
        }
    }

    @Test("unknown instance and image ids are not-found errors naming driver and verb", arguments: Backend.selected)
    func notFound(_ backend: Backend) async throws {
        try await backend.withFixture { fixture in
            let driver = fixture.driver
            let missing = backend == .ec2Moto ? "i-0123456789abcdef0" : "no-such-instance"
            let error = await #expect(throws: ProviderError.self) { _ = try await driver.describe(instance: missing) }
            #expect(error?.code == .notFound)
            #expect(error?.driver == driver.driverName)
            #expect(error?.verb == .describe)
            #expect(error?.description.contains(driver.driverName) == true)
            let createError = await #expect(throws: ProviderError.self) {
                _ = try await driver.create(
                    CreateInstanceRequest(
                        name: "bad", sizeID: fixture.sizeID, imageID: backend == .ec2Moto ? "ami-00000000" : "no-such-image"),
                    progress: nil)
            }
            #expect([.notFound, .invalidInput].contains(createError?.code), "\(String(describing: createError))")
            // Nothing half-made: no instance named "bad" remains.
            let leftovers = try await driver.listInstances().filter { $0.name == "bad" && $0.state != .terminated }
            #expect(leftovers.isEmpty)
        }
    }

    @Test("image export then import keeps the content checksum; corrupt input is refused", arguments: Backend.selected)
    func imageRoundTrip(_ backend: Backend) async throws {
        try await backend.withFixture { fixture in
            let driver = fixture.driver
            let directory = try TemporaryDirectory.make("conformance-images")
            defer { try? FileManager.default.removeItem(at: directory) }
            guard driver.capabilities.supports(.exportImage) else {
                let error = await #expect(throws: ProviderError.self) {
                    _ = try await driver.exportImage(
                        id: fixture.imageID, to: directory.appendingPathComponent("x"), format: .raw, progress: nil)
                }
                #expect(error?.code == .unsupported)
                #expect(error?.verb == .exportImage)
                return
            }
            let original = try #require(try await driver.listImages().first { $0.id == fixture.imageID })
            let exported = try await driver.exportImage(
                id: fixture.imageID, to: directory.appendingPathComponent("image.\(fixture.exportFormat)"),
                format: fixture.exportFormat, progress: nil)
            #expect(FileManager.default.fileExists(atPath: exported.url.path))
            if let sha = original.sha256 { #expect(exported.contentSHA256 == sha) }

            guard driver.capabilities.supports(.importImage) else { return }
            let before = try await driver.listImages().count
            // Corrupt: a wrong checksum is refused and nothing is registered.
            let corrupt = await #expect(throws: ProviderError.self) {
                _ = try await driver.importImage(
                    from: exported.url, name: "corrupt", format: fixture.exportFormat,
                    expectedSHA256: String(repeating: "0", count: 64), progress: nil)
            }
            #expect(corrupt?.code == .checksumMismatch)
            #expect(try await driver.listImages().count == before)
            // Wrong format claimed: refused before anything is stored (the file is never probed, so a
            // qcow2 declared VDI is not a VDI), or the driver does not take that format at all.
            let wrongFormat = await #expect(throws: ProviderError.self) {
                _ = try await driver.importImage(
                    from: exported.url, name: "wrong-format", format: fixture.exportFormat == .vdi ? .vmdk : .vdi,
                    expectedSHA256: nil, progress: nil)
            }
            #expect([.refusedImage, .unsupportedFormat].contains(wrongFormat?.code), "\(String(describing: wrongFormat))")
            if wrongFormat?.code == .refusedImage { #expect(wrongFormat?.backendCode == "not-declared-format") }
            #expect(try await driver.listImages().count == before)

            let imported = try await driver.importImage(
                from: exported.url, name: "round-trip", format: fixture.exportFormat, expectedSHA256: exported.fileSHA256,
                progress: nil)
            if let sha = original.sha256 { #expect(imported.sha256 == sha) }
            #expect(try await driver.listImages().contains { $0.id == imported.id })
            try await driver.deregisterImage(id: imported.id)
        }
    }
}

/// A thread-safe counter for progress callbacks.
final class Counter: @unchecked Sendable {
    // `@unchecked`: `count` is only touched while holding `lock`.
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}

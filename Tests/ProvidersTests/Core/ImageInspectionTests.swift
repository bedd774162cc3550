import Foundation
import Testing
@testable import Providers

/// Images from elsewhere, made hostile with the real `qemu-img` (Debian qemu-utils): every way an
/// image can name a file of this host is refused before anything is stored, and no byte of the host
/// file ever reaches the image store.
@Suite("Image admission: hostile disk images")
struct ImageInspectionTests {
    /// A host file the attacker wants, and a place to build images that point at it.
    struct Workspace {
        let directory: URL
        let secret: URL
        static let secretText = "HOST-SECRET-7c1f0e"

        static func make() throws -> Workspace {
            #expect(QemuImg.isAvailable, "qemu-img is missing: install Debian's qemu-utils (scripts/setup.sh does)")
            let directory = try TemporaryDirectory.make("hostile-images")
            let secret = directory.appendingPathComponent("host-secret.raw")
            var bytes = Data(secretText.utf8)
            bytes.append(Data(count: (1 << 20) - bytes.count))
            try bytes.write(to: secret)
            return Workspace(directory: directory, secret: secret)
        }

        func path(_ name: String) -> URL { directory.appendingPathComponent(name) }

        /// Where the SimCloud of `simCloud()` keeps its images (inside the workspace, removed with it).
        var store: URL { directory.appendingPathComponent("store") }

        /// A SimCloud storing into `store`: the image store the secret must never reach.
        func simCloud() throws -> SimCloud {
            try SimCloud(configuration: .init(dataDirectory: store, delays: .instant))
        }

        /// A qcow2 overlay whose backing file is the host secret.
        func backedBySecret(_ name: String) throws -> URL {
            let overlay = path(name)
            try qemuImg(["create", "-q", "-f", "qcow2", "-b", secret.path, "-F", "raw", overlay.path])
            return overlay
        }

        func qemuImg(_ arguments: [String]) throws {
            try runCommand(QemuImg.executable, arguments)
        }

        /// Writes the secret again: creating a qcow2 with `data_file` truncates that file.
        func restoreSecret() throws {
            var bytes = Data(Self.secretText.utf8)
            bytes.append(Data(count: (1 << 20) - bytes.count))
            try bytes.write(to: secret)
        }
    }

    /// Each hostile image, its declared format and the reason it must be refused for.
    static func hostileImages(_ w: Workspace) throws -> [(name: String, file: URL, format: ImageFormat, reason: ImageRefusal.Reason)] {
        let backing = try w.backedBySecret("backing.qcow2")
        let jsonBacking = w.path("json-backing.qcow2")
        try w.qemuImg([
            "create", "-q", "-f", "qcow2", "-b",
            "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"\(w.secret.path)\"}}", "-F", "raw",
            jsonBacking.path, "1M",
        ])
        let protocolBacking = w.path("nbd-backing.qcow2")
        try w.qemuImg(["create", "-q", "-f", "qcow2", "-u", "-b", "nbd://127.0.0.1:1/x", "-F", "raw", protocolBacking.path, "1M"])
        let dataFile = w.path("data-file.qcow2")
        try w.qemuImg(["create", "-q", "-f", "qcow2", "-o", "data_file=\(w.secret.path),data_file_raw=on", dataFile.path, "1M"])
        try w.restoreSecret()
        let flatDescriptor = w.path("flat.vmdk")
        try """
            # Disk DescriptorFile
            version=1
            CID=fffffffe
            parentCID=ffffffff
            createType="monolithicFlat"
            RW 2048 FLAT "\(w.secret.path)" 0
            ddb.adapterType = "ide"

            """.write(to: flatDescriptor, atomically: true, encoding: .utf8)
        // A qcow2 declared as VMDK: never probed, so it is not opened as the qcow2 it is.
        let disguised = w.path("disguised.vmdk")
        try FileManager.default.copyItem(at: backing, to: disguised)
        // A VHD whose footer says "differencing" (type 4): it names a parent file.
        let differencing = w.path("differencing.vhd")
        try w.qemuImg(["create", "-q", "-f", "vpc", differencing.path, "1M"])
        var vhd = try Data(contentsOf: differencing)
        vhd[63] = 4
        try vhd.write(to: differencing)
        return [
            ("qcow2 with a backing file", backing, .qcow2, .referencesOtherFile),
            ("qcow2 with a json: backing spec", jsonBacking, .qcow2, .referencesOtherFile),
            ("qcow2 with a protocol (nbd) backing", protocolBacking, .qcow2, .referencesOtherFile),
            ("qcow2 with an external data file", dataFile, .qcow2, .referencesOtherFile),
            ("VMDK descriptor with a FLAT extent", flatDescriptor, .vmdk, .referencesOtherFile),
            ("qcow2 declared as vmdk", disguised, .vmdk, .referencesOtherFile),
            ("differencing VHD", differencing, .vpc, .referencesOtherFile),
        ]
    }

    /// Every file under `directory`, recursively, does not contain the secret.
    static func containsSecret(under directory: URL) throws -> [String] {
        guard let walker = FileManager.default.enumerator(at: directory, includingPropertiesForKeys: [.isRegularFileKey]) else { return [] }
        var found: [String] = []
        let needle = Data(Workspace.secretText.utf8)
        for case let url as URL in walker where (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true {
            if let data = try? Data(contentsOf: url), data.range(of: needle) != nil { found.append(url.lastPathComponent) }
        }
        return found
    }

    @Test("the header check refuses what names another file, before any program opens it")
    func headerCheck() throws {
        let w = try Workspace.make()
        defer { try? FileManager.default.removeItem(at: w.directory) }
        for image in try Self.hostileImages(w) {
            let (head, tail) = try ImageInspection.readEnds(of: image.file, fileBytes: try ImageInspection.fileSize(image.file))
            #expect(throws: ImageRefusal.self, "\(image.name)") {
                try DiskImageHeader.check(format: image.format, head: head, tail: tail, fileBytes: Int64(head.count))
            }
        }
        // Clean images of every format pass.
        for format in ImageFormat.allCases where format != .raw {
            let clean = w.path("clean.\(format.rawValue)")
            try w.qemuImg(["create", "-q", "-f", format.rawValue, clean.path, "1M"])
            let bytes = try ImageInspection.fileSize(clean)
            let (head, tail) = try ImageInspection.readEnds(of: clean, fileBytes: bytes)
            try DiskImageHeader.check(format: format, head: head, tail: tail, fileBytes: bytes)
        }
    }

    @Test("qemu-img's own answer is refused when it names another file, even past the header check")
    func infoCheck() {
        let inspected = "/var/lib/images/x.vmdk"
        #expect(ImageInspection.otherFile(in: ["filename": inspected, "virtual-size": 1], inspected: inspected) == nil)
        let extents: [String: Any] = [
            "filename": inspected,
            "format-specific": ["type": "vmdk", "data": ["extents": [["filename": inspected], ["filename": "/etc/shadow"]]]],
        ]
        #expect(ImageInspection.otherFile(in: extents, inspected: inspected)?.contains("/etc/shadow") == true)
        #expect(ImageInspection.otherFile(in: ["filename": inspected, "backing-filename": "b"], inspected: inspected) != nil)
        #expect(ImageInspection.otherFile(
            in: ["format-specific": ["data": ["data-file": "/etc/passwd"]]], inspected: inspected) != nil)
    }

    @Test("SimCloud refuses every hostile image: a clear error, nothing stored, no host byte in the store")
    func simCloudRefuses() async throws {
        let w = try Workspace.make()
        defer { try? FileManager.default.removeItem(at: w.directory) }
        let driver = try w.simCloud()
        let before = try await driver.listImages()
        for image in try Self.hostileImages(w) {
            do {
                _ = try await driver.importImage(
                    from: image.file, name: "hostile", format: image.format, expectedSHA256: nil, progress: nil)
                Issue.record("\(image.name) was imported")
            } catch let error as ProviderError {
                #expect(error.code == .refusedImage, "\(image.name): \(error)")
                #expect(error.backendCode == image.reason.rawValue, "\(image.name): \(error)")
                #expect(error.message.contains("nothing was imported"))
            }
            // The adopt path a migration destination takes refuses the same way and keeps the file.
            await #expect(throws: ProviderError.self, "\(image.name) adopted") {
                _ = try await driver.adoptImage(
                    from: image.file, name: "hostile", format: image.format, expectedSHA256: nil, digestVerified: false,
                    admission: ImageAdmission(maxVirtualSizeBytes: 1 << 30), progress: nil)
            }
            #expect(FileManager.default.fileExists(atPath: image.file.path))
        }
        #expect(try await driver.listImages() == before)
        #expect(try Self.containsSecret(under: w.store) == [])
    }

    @Test("a tiny qcow2 declaring 8 TiB is refused at once against the reserved disk")
    func virtualSizeLimit() async throws {
        let w = try Workspace.make()
        defer { try? FileManager.default.removeItem(at: w.directory) }
        let huge = w.path("huge.qcow2")
        try w.qemuImg(["create", "-q", "-f", "qcow2", huge.path, "8T"])
        let driver = try w.simCloud()
        let clock = ContinuousClock()
        let started = clock.now
        do {
            _ = try await driver.importImage(
                from: huge, name: "huge", format: .qcow2, expectedSHA256: nil,
                admission: ImageAdmission(maxVirtualSizeBytes: 1 << 30), progress: nil)
            Issue.record("an 8 TiB disk was imported into a 1 GiB reservation")
        } catch let error as ProviderError {
            #expect(error.code == .refusedImage && error.backendCode == ImageRefusal.Reason.tooLarge.rawValue, "\(error)")
        }
        // Refused by inspection, not after minutes of conversion.
        #expect(clock.now - started < .seconds(10))
        // A raw file longer than the limit is refused the same way.
        let raw = w.path("big.raw")
        try Data(count: 2 << 20).write(to: raw)
        await #expect(throws: ProviderError.self) {
            _ = try await driver.importImage(
                from: raw, name: "big", format: .raw, expectedSHA256: nil, admission: ImageAdmission(maxVirtualSizeBytes: 1 << 20),
                progress: nil)
        }
        #expect(try await driver.listImages().filter { $0.name != "seed" }.allSatisfy { $0.name != "huge" && $0.name != "big" })
    }

    @Test("a clean qcow2 imports with the same content; a raw file holding a qcow2 is stored as its bytes")
    func cleanImagesImport() async throws {
        let w = try Workspace.make()
        defer { try? FileManager.default.removeItem(at: w.directory) }
        let driver = try w.simCloud()
        let raw = w.path("disk.raw")
        try Data((0..<(2 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }).write(to: raw)
        let qcow2 = w.path("disk.qcow2")
        try w.qemuImg(["convert", "-f", "raw", "-O", "qcow2", raw.path, qcow2.path])
        let fromQcow2 = try await driver.importImage(
            from: qcow2, name: "clean", format: .qcow2, expectedSHA256: nil,
            admission: ImageAdmission(maxVirtualSizeBytes: 2 << 20), progress: nil)
        let expected = try FileCopy.digest(of: raw).sha256
        #expect(fromQcow2.sha256 == expected)
        // Declared raw: the qcow2 with a backing file is just bytes, never opened as qcow2.
        let backing = try w.backedBySecret("backing.qcow2")
        let asRaw = try await driver.importImage(from: backing, name: "bytes", format: .raw, expectedSHA256: nil, progress: nil)
        #expect(asRaw.sha256 == (try FileCopy.digest(of: backing).sha256))
        #expect(try Self.containsSecret(under: w.store) == [])
    }

    @Test("the operator may override the reference checks for one call, and then the backing is followed")
    func operatorOverride() async throws {
        let w = try Workspace.make()
        defer { try? FileManager.default.removeItem(at: w.directory) }
        let backing = try w.backedBySecret("operator-backing.qcow2")
        let driver = try w.simCloud()
        let image = try await driver.importImage(
            from: backing, name: "operator", format: .qcow2, expectedSHA256: nil,
            admission: ImageAdmission(allowsReferences: true), progress: nil)
        #expect(image.sha256 == (try FileCopy.digest(of: w.secret).sha256))
    }

    @Test("inspection past its wall-time limit is killed and refused")
    func inspectionDeadline() async throws {
        let w = try Workspace.make()
        defer { try? FileManager.default.removeItem(at: w.directory) }
        let clean = w.path("clean.qcow2")
        try w.qemuImg(["create", "-q", "-f", "qcow2", clean.path, "1M"])
        // A 1 ms wall time cannot be met by any real qemu-img run.
        let admission = ImageAdmission(inspectionLimits: .init(addressSpaceBytes: 1 << 30, cpuSeconds: 30, wallTime: .milliseconds(1)))
        do {
            _ = try await ImageInspection.inspect(clean, format: .qcow2, admission: admission)
            Issue.record("inspection finished within 1 ms")
        } catch let refusal as ImageRefusal {
            #expect(refusal.reason == .inspectionLimit)
        }
    }
}

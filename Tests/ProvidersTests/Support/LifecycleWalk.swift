import Foundation
import Testing
@testable import Providers

/// Walks every row of the lifecycle table against one real backend, on one instance, in table order
/// (create first, terminate last), so QEMU guests boot as few times as the verbs need.
///
/// For each row it first checks the driver's column: `yes` must be supported by this instance, `no`
/// must not, `with OPTION` exactly when the fixture turned that option on. A supported operation is
/// then performed and its result checked; each verb of an unsupported one must fail with
/// `ProviderError` code `unsupported` naming the driver and that verb. The switch over
/// `LifecycleOperation` is exhaustive: a new row does not compile until it is walked here.
struct LifecycleWalk {
    let fixture: DriverFixture
    let column: LifecycleTable.Column
    /// Where exported and hand-made image files go; removed at the end.
    let directory: URL
    private var instanceID: String?
    /// Verbs already shown to work while walking an earlier row (start, after shutdown).
    private var exercised: Set<Verb> = []
    private var exportedFiles: [ImageFile] = []
    private var snapshotImageID: String?
    private var coldMigrationFile: ImageFile?
    private var imagesToRemove: [String] = []

    var driver: any CloudDriver { fixture.driver }

    init(_ fixture: DriverFixture) throws {
        self.fixture = fixture
        column = LifecycleTable.Column(type(of: fixture.driver))
        directory = try TemporaryDirectory.make("lifecycle-walk")
    }

    mutating func run() async throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let declaration = column.declaration
        #expect(declaration.driver == driver.driverName)
        // One source of truth: the instance's capabilities are its declaration under its options.
        #expect(driver.capabilities == declaration.capabilities(enabling: fixture.enabledConditions))
        #expect(column.liveMigration == (driver is any LiveMigrationDriver))
        var walked: [LifecycleOperation] = []
        for operation in LifecycleOperation.allCases {
            let supported = operation.isSupported(
                by: driver.capabilities, liveMigration: column.migratesLive(enabling: fixture.enabledConditions))
            let cell = column.cell(operation)
            switch cell.support {
            case .yes: #expect(supported, "\(driver.driverName) \(operation): the table says yes")
            case .no: #expect(!supported, "\(driver.driverName) \(operation): the table says no")
            case .conditional:
                let enabled = cell.condition.map(fixture.enabledConditions.contains) ?? false
                #expect(supported == enabled, "\(driver.driverName) \(operation): the table says \(cell.text)")
            }
            if supported {
                try await perform(operation)
            } else {
                try await expectUnsupported(operation)
            }
            walked.append(operation)
        }
        #expect(walked == LifecycleOperation.allCases)
        await removeImages()
    }

    private func instance() throws -> String {
        try #require(instanceID, "the create row comes first and made the instance every later row uses")
    }

    // MARK: Supported operations

    private mutating func perform(_ operation: LifecycleOperation) async throws {
        let timeout = fixture.timeout
        switch operation {
        case .create:
            let name = "\(fixture.namePrefix)\(UUID().uuidString.prefix(6).lowercased())"
            let created = try await driver.create(
                CreateInstanceRequest(name: name, sizeID: fixture.sizeID, imageID: fixture.imageID), progress: nil)
            #expect(created.name == name)
            #expect([.pending, .running].contains(created.state), "created as \(created.state) (\(created.rawState))")
            instanceID = created.id
            let running = try await driver.waitFor(instance: created.id, state: .running, timeout: timeout)
            try await fixture.afterBoot(running)
            #expect(running.sizeID == fixture.sizeID)
        case .poll:
            let id = try instance()
            let described = try await driver.describe(instance: id)
            #expect(described.state == .running)
            #expect(!described.rawState.isEmpty)
            #expect(try await driver.listInstances().contains { $0.id == id })
            #expect(try await driver.waitFor(instance: id, state: .running, timeout: timeout).id == id)
        case .shutdown:
            let id = try instance()
            _ = try await driver.shutdown(id)
            _ = try await driver.waitFor(instance: id, state: .stopped, timeout: timeout)
            try await startAgain(id)
        case .cancel:
            let id = try instance()
            _ = try await driver.destroy(id)
            _ = try await driver.waitFor(instance: id, state: .stopped, timeout: timeout)
            try await startAgain(id)
        case .start:
            // A stopped instance is only reached through shutdown or cancel, which start it again.
            #expect(exercised.contains(.start), "start was not reached: neither shutdown nor cancel stopped the instance")
        case .reboot:
            let id = try instance()
            let running = try await driver.describe(instance: id)
            let boots = await fixture.bootCount(running)
            _ = try await driver.reboot(id)
            let rebooted = try await driver.waitFor(instance: id, state: .running, timeout: timeout)
            try await fixture.waitForBoots(rebooted, boots)
        case .suspend:
            let id = try instance()
            _ = try await driver.suspend(id)
            let paused = try await driver.waitFor(instance: id, state: .paused, timeout: timeout)
            #expect(paused.rawState != "running")
            // Suspending a paused instance again is a clear state error.
            await #expect(throws: ProviderError.self) { _ = try await driver.suspend(id) }
            try #require(driver.capabilities.supports(.resume), "suspend without resume would leave the instance paused")
            _ = try await driver.resume(id)
            _ = try await driver.waitFor(instance: id, state: .running, timeout: timeout)
            exercised.insert(.resume)
        case .resume:
            #expect(exercised.contains(.resume), "resume was not reached: suspend is not supported")
        case .save:
            let id = try instance()
            _ = try await driver.save(id)
            _ = try await driver.waitFor(instance: id, state: .saved, timeout: timeout)
            try #require(driver.capabilities.supports(.restore), "save without restore would leave the instance saved")
            _ = try await driver.restore(id)
            _ = try await driver.waitFor(instance: id, state: .running, timeout: timeout)
            exercised.insert(.restore)
        case .restore:
            #expect(exercised.contains(.restore), "restore was not reached: save is not supported")
        case .snapshot:
            let image = try await driver.snapshot(instance: try instance(), name: "\(fixture.namePrefix)snap-\(UUID().uuidString.prefix(6))", progress: nil)
            #expect(try await driver.listImages().contains { $0.id == image.id })
            snapshotImageID = image.id
            imagesToRemove.append(image.id)
        case .imageExport:
            let original = try #require(try await driver.listImages().first { $0.id == fixture.imageID })
            for format in operation.formats(of: driver.capabilities) {
                let file = try await driver.exportImage(
                    id: fixture.imageID, to: directory.appendingPathComponent("image.\(format)"), format: format, progress: nil)
                #expect(file.format == format)
                #expect(FileManager.default.fileExists(atPath: file.url.path), "\(format)")
                if let sha = original.sha256 { #expect(file.contentSHA256 == sha, "\(format)") }
                exportedFiles.append(file)
            }
        case .imageImport:
            let original = try await driver.listImages().first { $0.id == fixture.imageID }
            for format in operation.formats(of: driver.capabilities) {
                let file = try exportedFiles.first { $0.format == format } ?? rawFile(format)
                let image = try await driver.importImage(
                    from: file.url, name: "\(fixture.namePrefix)import-\(format)", format: format,
                    expectedSHA256: file.fileSHA256, progress: nil)
                imagesToRemove.append(image.id)
                #expect(try await driver.listImages().contains { $0.id == image.id }, "\(format)")
                if exportedFiles.contains(where: { $0.format == format }), let sha = original?.sha256 {
                    #expect(image.sha256 == sha, "\(format): the imported content is the exported one")
                }
            }
        case .coldMigrationSource:
            // What the migration runner does at the source: snapshot the instance, export that image.
            let imageID = try #require(snapshotImageID, "the snapshot row made the image a cold migration exports")
            let format = operation.formats(of: driver.capabilities).contains(fixture.exportFormat)
                ? fixture.exportFormat : try #require(operation.formats(of: driver.capabilities).first)
            let file = try await driver.exportImage(
                id: imageID, to: directory.appendingPathComponent("migrating.\(format)"), format: format, progress: nil)
            #expect(file.fileBytes > 0)
            coldMigrationFile = file
        case .coldMigrationDestination:
            // What it does at the destination: adopt the received file, checked, no larger than reserved.
            let format = try #require(operation.formats(of: driver.capabilities).first)
            let file = try coldMigrationFile.flatMap { operation.formats(of: driver.capabilities).contains($0.format) ? $0 : nil }
                ?? rawFile(format)
            let image = try await driver.adoptImage(
                from: file.url, name: "\(fixture.namePrefix)arrived", format: file.format, expectedSHA256: file.fileSHA256,
                digestVerified: true, admission: ImageAdmission(maxVirtualSizeBytes: 10 << 30), progress: nil)
            imagesToRemove.append(image.id)
            #expect(try await driver.listImages().contains { $0.id == image.id })
            #expect(!FileManager.default.fileExists(atPath: file.url.path), "an adopted file is taken over")
        case .liveMigration:
            // Both sides' preparation on the real backend; moving a guest between two daemons is
            // BrokerLiveMigrationTests (integration).
            let live = try #require(driver as? any LiveMigrationDriver)
            let bytes = try await live.liveMigrationDiskBytes(instance: try instance())
            #expect(bytes > 0)
            let target = try await live.prepareLiveMigration(name: "\(fixture.namePrefix)arriving", virtualSizeBytes: bytes)
            #expect(FileManager.default.fileExists(atPath: target.disk.path))
            if let directory = live.liveTargetDirectory { #expect(target.disk.path.hasPrefix(directory.path)) }
            try? FileManager.default.removeItem(at: target.disk)
        case .terminate:
            let id = try instance()
            try await driver.terminate(instance: id)
            let final = try await driver.waitFor(instance: id, state: .terminated, timeout: timeout)
            #expect(final.state == .terminated)
            // Instance gone between list and act: a clear error, not a crash or a no-op.
            let startAgain = await #expect(throws: ProviderError.self) { _ = try await driver.start(id) }
            #expect([.notFound, .invalidState].contains(startAgain?.code), "\(String(describing: startAgain))")
        }
    }

    private mutating func startAgain(_ id: String) async throws {
        try #require(driver.capabilities.supports(.start), "stopping without start would leave the instance stopped")
        _ = try await driver.start(id)
        let running = try await driver.waitFor(instance: id, state: .running, timeout: fixture.timeout)
        try await fixture.afterBoot(running)
        exercised.insert(.start)
    }

    /// A small raw disk in `format` (raw itself, or converted by qemu-img), for an import with no
    /// exported file of that format at hand.
    private func rawFile(_ format: ImageFormat) throws -> ImageFile {
        let raw = directory.appendingPathComponent("made-\(UUID().uuidString.prefix(6)).raw")
        try Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) }).write(to: raw)
        var url = raw
        if format != .raw {
            url = directory.appendingPathComponent("made-\(UUID().uuidString.prefix(6)).\(format)")
            try runCommand(QemuImg.executable, ["convert", "-q", "-f", "raw", "-O", format.rawValue, raw.path, url.path])
        }
        let digest = try FileCopy.digest(of: url)
        return ImageFile(url: url, format: format, fileBytes: digest.bytes, fileSHA256: digest.sha256, contentSHA256: nil)
    }

    private func removeImages() async {
        guard driver.capabilities.supports(.deregisterImage) else { return }
        for id in imagesToRemove {
            do {
                try await driver.deregisterImage(id: id)
                #expect(try await !driver.listImages().contains { $0.id == id })
            } catch {
                Issue.record("deregistering \(id): \(error)")
            }
        }
    }

    // MARK: Unsupported operations

    /// Each verb of the row this instance lacks fails as unsupported, naming the driver and the verb.
    private func expectUnsupported(_ operation: LifecycleOperation) async throws {
        if operation == .liveMigration {
            // Not a verb but a protocol: the runner refuses a driver without it before anything starts.
            #expect(!(driver is any LiveMigrationDriver) || !column.migratesLive(enabling: fixture.enabledConditions))
            if let live = driver as? any LiveMigrationDriver {
                // Conforming, but its option is off: preparing fails as unsupported.
                let error = await #expect(throws: ProviderError.self) {
                    _ = try await live.prepareLiveMigration(name: "\(fixture.namePrefix)arriving", virtualSizeBytes: 1 << 20)
                }
                #expect(error?.code == .unsupported, "\(String(describing: error))")
                #expect(error?.driver == driver.driverName)
            }
            return
        }
        let missing = operation.verbs.filter { !driver.capabilities.supports($0) }
        #expect(!missing.isEmpty, "\(operation) has every verb but no format")
        for verb in missing {
            let error = await #expect(throws: ProviderError.self, "\(driver.driverName) \(verb)") { try await invoke(verb) }
            #expect(error?.code == .unsupported, "\(verb): \(String(describing: error))")
            #expect(error?.driver == driver.driverName)
            #expect(error?.verb == verb)
            #expect(error?.description.contains(driver.driverName) == true && error?.description.contains(verb.rawValue) == true)
        }
    }

    /// Calls `verb` with plausible arguments; only used for verbs the driver does not declare.
    private func invoke(_ verb: Verb) async throws {
        let id = instanceID ?? "no-such-instance"
        switch verb {
        case .listSizes: _ = try await driver.listSizes()
        case .listInstances: _ = try await driver.listInstances()
        case .describe: _ = try await driver.describe(instance: id)
        case .capacity: _ = try await driver.capacity()
        case .create:
            _ = try await driver.create(
                CreateInstanceRequest(name: "\(fixture.namePrefix)unsupported", sizeID: fixture.sizeID, imageID: fixture.imageID),
                progress: nil)
        case .start, .shutdown, .destroy, .reboot, .suspend, .resume, .save, .restore:
            _ = try await driver.perform(verb, instance: id)
        case .snapshot: _ = try await driver.snapshot(instance: id, name: "\(fixture.namePrefix)unsupported", progress: nil)
        case .terminate: try await driver.terminate(instance: id)
        case .listImages: _ = try await driver.listImages()
        case .registerImage: _ = try await driver.registerImage(name: "\(fixture.namePrefix)unsupported", options: [:])
        case .deregisterImage: try await driver.deregisterImage(id: fixture.imageID)
        case .exportImage:
            _ = try await driver.exportImage(
                id: fixture.imageID, to: directory.appendingPathComponent("unsupported.raw"), format: .raw, progress: nil)
        case .importImage:
            let file = try rawFile(.raw)
            _ = try await driver.importImage(
                from: file.url, name: "\(fixture.namePrefix)unsupported", format: .raw, expectedSHA256: nil, progress: nil)
        case .connect:
            Issue.record("connect is not a call of a connected driver")
        }
    }
}

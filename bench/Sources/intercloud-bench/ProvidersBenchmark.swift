import ArgumentParser
import BenchmarkHarness
import Foundation
import Providers

/// Per-verb latency of each driver against its real backend, and image import/export throughput
/// of SimCloud against `cp` + `sha256sum` of the same file in the same run (bench/providers/run.sh,
/// which starts moto and the libvirt session daemon and passes their addresses). SimCloud and
/// libvirt's in-process test driver always run; EC2 runs with --moto-endpoint, the QEMU guest with
/// --qemu-socket.
struct ProvidersBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "providers", abstract: "Per-verb latency of each driver, and SimCloud image throughput against cp + sha256sum.")

    @Option(help: "moto's endpoint (scripts/moto.sh), with signature checking on.") var motoEndpoint: String?
    @Option(help: "Access key of moto's IAM user (scripts/moto.sh user).") var motoAccessKey: String?
    @Option var motoSecretKey: String?
    @Option(help: "Socket of the private libvirt session daemon (scripts/libvirt-session.sh).") var qemuSocket: String?
    @Option(help: "The test guest (scripts/guest-build.sh): vmlinuz, initrd.gz, disk.qcow2.") var guestDirectory = "/tmp/intercloud-test-guest"
    @Option(help: "Owner of the QEMU guest's files: the session daemon's user.") var qemuUID: UInt32 = 65534
    @Option(help: "Full lifecycles per in-process backend (SimCloud, libvirt test).") var rounds = 30
    @Option(help: "Full lifecycles on moto.") var motoRounds = 15
    @Option(help: "Full lifecycles of the QEMU guest.") var qemuRounds = 3
    @Option(help: "Size of the image for the throughput table, MiB.") var imageMib = 1024
    @Option(help: "Imports and exports (and baselines), alternating.") var throughputRuns = 3
    @OptionGroup var output: ReportOptions

    func run() async throws {
        var report = Report(benchmark: "providers")
        var latency = Table(columns: ["driver", "verb", "median ms", "n"])
        let scratch = try ScratchDirectory("intercloud-providers-bench")
        defer { scratch.remove() }

        let simcloud = try SimCloud(configuration: .init(dataDirectory: scratch.url.appendingPathComponent("simcloud"), delays: .instant))
        try await Self.lifecycle("simcloud", simcloud, imageID: SimCloud.seedImageID, sizeID: "sim.small", rounds: rounds, into: &latency)

        let libvirtTest = try await LibvirtDriver.connect(.init(uri: "test:///default", imageDirectory: scratch.url.appendingPathComponent("libvirt-images")))
        let seed = scratch.url.appendingPathComponent("seed.raw")
        try Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }).write(to: seed)
        let seedImage = try await libvirtTest.importImage(from: seed, name: "seed", format: .raw, expectedSHA256: nil, progress: nil)
        try await Self.lifecycle("libvirt test:///", libvirtTest, imageID: seedImage.id, sizeID: "lv.small", rounds: rounds, into: &latency)

        if let motoEndpoint, let motoAccessKey, let motoSecretKey, let endpoint = URL(string: motoEndpoint) {
            let ec2 = EC2Driver(configuration: .init(
                endpoint: endpoint, region: "us-east-1",
                credentials: .init(accessKeyID: motoAccessKey, secretAccessKey: motoSecretKey),
                retry: RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(20)), pageSize: 5, imageImportExport: false))
            let image = try await ec2.registerImage(name: "bench-ami", options: ["description": "benchmark image"])
            try await Self.lifecycle("ec2 (moto, signed)", ec2, imageID: image.id, sizeID: "t2.micro", rounds: motoRounds, into: &latency)
        }

        if let qemuSocket {
            let (driver, imageID) = try await qemuDriver(socket: qemuSocket, scratch: scratch.url)
            try await Self.lifecycle(
                "libvirt qemu:///session (TCG guest)", driver, imageID: imageID, sizeID: "lv.small", rounds: qemuRounds,
                waitTimeout: .seconds(120), into: &latency)
        }
        report.text("## Per-verb latency (median, ms)")
        report.table(latency, alignments: ["---", "---", "---:", "---:"])
        report.blocks += try await throughput(scratch: scratch.url).blocks
        output.print(report)
    }

    /// A real QEMU guest under the private session daemon; "to running" waits for the guest's init
    /// to print its ready marker (the driver's boot marker), so the next ACPI request is handled.
    func qemuDriver(socket: String, scratch: URL) async throws -> (any CloudDriver, imageID: String) {
        let root = scratch.appendingPathComponent("libvirt-qemu")
        let images = root.appendingPathComponent("images")
        let instances = root.appendingPathComponent("instances")
        for directory in [root, images, instances] {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            // QEMU runs as the session user and writes overlays and console logs here.
            guard chown(directory.path, qemuUID, qemuUID) == 0 || directory == root else {
                throw BenchmarkFailure("cannot give \(directory.path) to uid \(qemuUID)")
            }
        }
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: root.path)
        let guest = URL(fileURLWithPath: guestDirectory)
        let driver = try await LibvirtDriver.connect(.init(
            uri: "qemu+unix:///session?socket=\(socket)", imageDirectory: images, instanceDirectory: instances, domainType: "qemu",
            directBoot: .init(
                kernel: guest.appendingPathComponent("vmlinuz"), initrd: guest.appendingPathComponent("initrd.gz"),
                commandLine: "console=ttyS0 quiet"),
            fileOwner: .init(uid: qemuUID, gid: qemuUID), bootMarker: "INTERCLOUD-GUEST-READY"))
        let image = try await driver.importImage(
            from: guest.appendingPathComponent("disk.qcow2"), name: "guest-disk", format: .qcow2, expectedSHA256: nil, progress: nil)
        return (driver, image.id)
    }

    /// Times each verb over `rounds` full lifecycles (create … terminate) and appends the medians.
    static func lifecycle(
        _ label: String, _ driver: any CloudDriver, imageID: String, sizeID: String, rounds: Int, waitTimeout: Duration = .seconds(10),
        into table: inout Table
    ) async throws {
        var samples: [String: [Duration]] = [:]
        func timed<T>(_ verb: String, _ body: () async throws -> T) async throws -> T {
            let (result, duration) = try await time(body)
            samples[verb, default: []].append(duration)
            return result
        }
        let verbs = driver.capabilities.verbs
        for round in 0..<rounds {
            let created = try await timed("create (to running)") {
                let name = "bench-\(round)-\(UUID().uuidString.prefix(4).lowercased())"
                let instance = try await driver.create(CreateInstanceRequest(name: name, sizeID: sizeID, imageID: imageID), progress: nil)
                return try await driver.waitFor(instance: instance.id, state: .running, timeout: waitTimeout)
            }
            _ = try await timed("describe") { try await driver.describe(instance: created.id) }
            _ = try await timed("list-instances") { try await driver.listInstances() }
            if verbs.contains(.suspend) {
                _ = try await timed("suspend") { try await driver.suspend(created.id) }
                _ = try await timed("resume") { try await driver.resume(created.id) }
            }
            if verbs.contains(.save) {
                _ = try await timed("save (to saved)") {
                    _ = try await driver.save(created.id)
                    return try await driver.waitFor(instance: created.id, state: .saved, timeout: waitTimeout)
                }
                _ = try await timed("restore (to running)") {
                    _ = try await driver.restore(created.id)
                    return try await driver.waitFor(instance: created.id, state: .running, timeout: waitTimeout)
                }
            }
            _ = try await timed("shutdown (to stopped)") {
                _ = try await driver.shutdown(created.id)
                return try await driver.waitFor(instance: created.id, state: .stopped, timeout: waitTimeout)
            }
            _ = try await timed("start (to running)") {
                _ = try await driver.start(created.id)
                return try await driver.waitFor(instance: created.id, state: .running, timeout: waitTimeout)
            }
            _ = try await timed("destroy (to stopped)") {
                _ = try await driver.destroy(created.id)
                return try await driver.waitFor(instance: created.id, state: .stopped, timeout: waitTimeout)
            }
            _ = try await timed("terminate (to gone)") {
                try await driver.terminate(instance: created.id)
                return try await driver.waitFor(instance: created.id, state: .terminated, timeout: waitTimeout)
            }
        }
        for verb in samples.keys.sorted() {
            let verbSamples = Samples(samples[verb]!)
            table.append([.text(label), .text(verb), .number(verbSamples.median.milliseconds, decimals: 2), .text("\(verbSamples.count)")])
        }
    }

    /// SimCloud image import and export of an N MiB raw image (checksum verified), durable and not,
    /// against `cp` + `sha256sum` of the same file, alternating.
    func throughput(scratch: URL) async throws -> Report {
        let source = scratch.appendingPathComponent("source.raw")
        // Non-zero, incompressible-looking data (not a sparse file).
        do {
            _ = FileManager.default.createFile(atPath: source.path, contents: nil)
            let handle = try FileHandle(forWritingTo: source)
            var block = [UInt8](repeating: 0, count: 1 << 20)
            var state: UInt64 = 0x9E37_79B9_7F4A_7C15
            for index in 0..<imageMib {
                for offset in stride(from: 0, to: block.count, by: 8) {
                    state = state &* 6364136223846793005 &+ 1442695040888963407
                    withUnsafeBytes(of: state ^ UInt64(index)) { bytes in
                        for byte in 0..<8 { block[offset + byte] = bytes[byte] }
                    }
                }
                try handle.write(contentsOf: block)
            }
            try handle.close()
        }
        let cloud = try SimCloud(configuration: .init(dataDirectory: scratch.appendingPathComponent("sim"), delays: .instant))
        var fast = SimCloud.Configuration(dataDirectory: scratch.appendingPathComponent("sim-nosync"), delays: .instant)
        fast.durableWrites = false
        let nosync = try SimCloud(configuration: fast)
        var baseline: [Duration] = [], imports: [Duration] = [], exports: [Duration] = [], fastImports: [Duration] = [], fastExports: [Duration] = []
        var imageID = "", fastImageID = ""
        let expected = String(try shell("sha256sum '\(source.path)'").prefix(64))
        for round in 0..<throughputRuns {
            // Baseline: copy, then checksum the copy (what an operator would do by hand).
            let copy = scratch.appendingPathComponent("cp-\(round).raw")
            let (sum, copied) = try time { try shell("cp '\(source.path)' '\(copy.path)' && sha256sum '\(copy.path)'") }
            baseline.append(copied)
            guard sum.hasPrefix(expected) else { throw BenchmarkFailure("cp made a different file") }
            try FileManager.default.removeItem(at: copy)

            let (image, imported) = try await time {
                try await cloud.importImage(from: source, name: "bench-\(round)", format: .raw, expectedSHA256: expected, progress: nil)
            }
            imports.append(imported)
            if round > 0 { try await cloud.deregisterImage(id: imageID) }
            imageID = image.id

            let destination = scratch.appendingPathComponent("export-\(round).raw")
            let (file, exported) = try await time { try await cloud.exportImage(id: image.id, to: destination, format: .raw, progress: nil) }
            exports.append(exported)
            guard file.fileSHA256 == expected else { throw BenchmarkFailure("SimCloud exported a different file") }
            try FileManager.default.removeItem(at: destination)

            let (fastImage, fastImported) = try await time {
                try await nosync.importImage(from: source, name: "bench-\(round)", format: .raw, expectedSHA256: expected, progress: nil)
            }
            fastImports.append(fastImported)
            if round > 0 { try await nosync.deregisterImage(id: fastImageID) }
            fastImageID = fastImage.id
            fastExports.append(try await time { _ = try await nosync.exportImage(id: fastImage.id, to: destination, format: .raw, progress: nil) }.duration)
            try FileManager.default.removeItem(at: destination)
        }
        let mebibytes = Double(imageMib)
        let base = Samples(baseline)
        func row(_ name: String, _ durations: [Duration]) -> [Cell] {
            let samples = Samples(durations)
            return [.text(name), .number(mebibytes / samples.median.seconds, decimals: 0), .text(format(base.median.ratio(to: samples.median), decimals: 2) + "×")]
        }
        var report = Report(benchmark: "providers throughput")
        report.text("## \(imageMib == 1024 ? "1 GiB" : "\(imageMib) MiB") raw image, checksum verified (median of \(throughputRuns), warm page cache)")
        report.table(Table(
            columns: ["operation", "MiB/s", "vs cp + sha256sum"],
            rows: [
                [.text("cp + sha256sum (baseline)"), .number(mebibytes / base.median.seconds, decimals: 0), .text("1.00×")],
                row("SimCloud importImage (copy + SHA-256 + verify)", imports),
                row("SimCloud exportImage (copy + SHA-256)", exports),
                row("same, without fsync (as cp): importImage", fastImports),
                row("same, without fsync (as cp): exportImage", fastExports),
            ]))
        report.text("The default (first two rows) fsyncs the file before renaming it into place; `cp` does not.")
        return report
    }
}

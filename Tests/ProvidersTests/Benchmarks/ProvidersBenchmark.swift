// Compiled only by bench/providers/run.sh (-DINTERCLOUD_BENCHMARKS): a measurement that reuses
// the test fixtures (moto, the libvirt session daemon, the QEMU guest), not a test, so it is not
// even listed in an ordinary `swift test` run.
#if INTERCLOUD_BENCHMARKS
import Foundation
import Testing
@testable import Providers

/// Per-verb latency and image throughput, run by bench/providers/run.sh in a release build with
/// `INTERCLOUD_BENCH_OUT` naming the file the results go to.
@Suite("Providers benchmark", .serialized)
struct ProvidersBenchmark {
    static var output: URL { URL(fileURLWithPath: ProcessInfo.processInfo.environment["INTERCLOUD_BENCH_OUT"]!) }

    static func append(_ line: String) throws {
        let url = output
        if !FileManager.default.fileExists(atPath: url.path) { _ = FileManager.default.createFile(atPath: url.path, contents: nil) }
        let handle = try FileHandle(forWritingTo: url)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data((line + "\n").utf8))
        try handle.close()
    }

    static func median(_ values: [Duration]) -> Duration {
        let sorted = values.sorted()
        return sorted[sorted.count / 2]
    }

    static func ms(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        return String(format: "%.2f", Double(seconds) * 1000 + Double(attoseconds) / 1e15)
    }

    /// Times each verb over `rounds` full lifecycles and records the medians.
    static func lifecycle(_ label: String, _ fixture: DriverFixture, rounds: Int, waitTimeout: Duration) async throws {
        let driver = fixture.driver
        let clock = ContinuousClock()
        var samples: [String: [Duration]] = [:]
        func time<T>(_ verb: String, _ body: () async throws -> T) async throws -> T {
            let start = clock.now
            let result = try await body()
            samples[verb, default: []].append(clock.now - start)
            return result
        }
        let verbs = driver.capabilities.verbs
        for round in 0..<rounds {
            let created = try await time("create (to running)") {
                let instance = try await driver.create(
                    CreateInstanceRequest(name: "bench-\(round)-\(UUID().uuidString.prefix(4).lowercased())", sizeID: fixture.sizeID,
                                          imageID: fixture.imageID), progress: nil)
                let running = try await driver.waitFor(instance: instance.id, state: .running, timeout: waitTimeout)
                try await fixture.afterBoot(running)
                return running
            }
            _ = try await time("describe") { try await driver.describe(instance: created.id) }
            _ = try await time("list-instances") { try await driver.listInstances() }
            if verbs.contains(.suspend) {
                _ = try await time("suspend") { try await driver.suspend(created.id) }
                _ = try await time("resume") { try await driver.resume(created.id) }
            }
            if verbs.contains(.save) {
                _ = try await time("save (to saved)") {
                    _ = try await driver.save(created.id)
                    return try await driver.waitFor(instance: created.id, state: .saved, timeout: waitTimeout)
                }
                _ = try await time("restore (to running)") {
                    _ = try await driver.restore(created.id)
                    return try await driver.waitFor(instance: created.id, state: .running, timeout: waitTimeout)
                }
            }
            _ = try await time("shutdown (to stopped)") {
                _ = try await driver.shutdown(created.id)
                return try await driver.waitFor(instance: created.id, state: .stopped, timeout: waitTimeout)
            }
            _ = try await time("start (to running)") {
                _ = try await driver.start(created.id)
                let running = try await driver.waitFor(instance: created.id, state: .running, timeout: waitTimeout)
                try await fixture.afterBoot(running)
                return running
            }
            _ = try await time("destroy (to stopped)") {
                _ = try await driver.destroy(created.id)
                return try await driver.waitFor(instance: created.id, state: .stopped, timeout: waitTimeout)
            }
            _ = try await time("terminate (to gone)") {
                try await driver.terminate(instance: created.id)
                return try await driver.waitFor(instance: created.id, state: .terminated, timeout: waitTimeout)
            }
        }
        for verb in samples.keys.sorted() {
            try append("| \(label) | \(verb) | \(ms(median(samples[verb]!))) | \(samples[verb]!.count) |")
        }
    }

    @Test("per-verb latency")
    func latency() async throws {
        try Self.append("## Per-verb latency (median, ms)\n\n| driver | verb | median ms | n |\n|---|---|---:|---:|")
        try await Backend.run(try SimCloudFixture.make()) { try await Self.lifecycle("simcloud", $0, rounds: 30, waitTimeout: .seconds(10)) }
        try await Backend.run(try await LibvirtFixture.testDriver()) {
            try await Self.lifecycle("libvirt test:///", $0, rounds: 30, waitTimeout: .seconds(10))
        }
        try await MotoServer.shared.withExclusiveAccess { session in
            try await Self.lifecycle("ec2 (moto, signed)", try await EC2Fixture.make(session), rounds: 15, waitTimeout: .seconds(10))
        }
        try await QemuSession.shared.withExclusiveAccess { session in
            try await Backend.run(try await LibvirtFixture.qemuSession(session)) {
                try await Self.lifecycle("libvirt qemu:///session (TCG guest)", $0, rounds: 3, waitTimeout: .seconds(120))
            }
        }
    }

    @Test("1 GiB image export/import throughput vs cp + sha256sum")
    func throughput() async throws {
        let directory = try TemporaryDirectory.make("bench-throughput")
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = directory.appendingPathComponent("source.raw")
        // 1 GiB of non-zero, incompressible-looking data (not a sparse file).
        do {
            _ = FileManager.default.createFile(atPath: source.path, contents: nil)
            let handle = try FileHandle(forWritingTo: source)
            var block = [UInt8](repeating: 0, count: 1 << 20)
            var state: UInt64 = 0x9E37_79B9_7F4A_7C15
            for index in 0..<1024 {
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
        let bytes = Double(1 << 30)
        let cloud = try SimCloud(configuration: .init(dataDirectory: directory.appendingPathComponent("sim"), delays: .instant))
        var fast = SimCloud.Configuration(dataDirectory: directory.appendingPathComponent("sim-nosync"), delays: .instant)
        fast.durableWrites = false
        let nosync = try SimCloud(configuration: fast)
        let clock = ContinuousClock()
        func mibps(_ duration: Duration) -> Double {
            let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
            return bytes / seconds / 1_048_576
        }
        var baseline: [Duration] = []
        var imports: [Duration] = []
        var exports: [Duration] = []
        var fastImports: [Duration] = []
        var fastExports: [Duration] = []
        var imageID = ""
        var fastImageID = ""
        let expected = try runCommand("/usr/bin/sha256sum", [source.path]).prefix(64)
        for round in 0..<3 {
            // Baseline: copy, then checksum the copy (what an operator would do by hand).
            let copy = directory.appendingPathComponent("cp-\(round).raw")
            var start = clock.now
            try runCommand("/bin/cp", [source.path, copy.path])
            let sum = try runCommand("/usr/bin/sha256sum", [copy.path])
            baseline.append(clock.now - start)
            #expect(sum.prefix(64) == expected)
            try FileManager.default.removeItem(at: copy)

            start = clock.now
            let image = try await cloud.importImage(
                from: source, name: "bench-\(round)", format: .raw, expectedSHA256: String(expected), progress: nil)
            imports.append(clock.now - start)
            #expect(image.sha256 == String(expected))
            if round > 0 { try await cloud.deregisterImage(id: imageID) }
            imageID = image.id

            let destination = directory.appendingPathComponent("export-\(round).raw")
            start = clock.now
            let file = try await cloud.exportImage(id: image.id, to: destination, format: .raw, progress: nil)
            exports.append(clock.now - start)
            #expect(file.fileSHA256 == String(expected))
            try FileManager.default.removeItem(at: destination)

            start = clock.now
            let fastImage = try await nosync.importImage(
                from: source, name: "bench-\(round)", format: .raw, expectedSHA256: String(expected), progress: nil)
            fastImports.append(clock.now - start)
            if round > 0 { try await nosync.deregisterImage(id: fastImageID) }
            fastImageID = fastImage.id
            start = clock.now
            _ = try await nosync.exportImage(id: fastImage.id, to: destination, format: .raw, progress: nil)
            fastExports.append(clock.now - start)
            try FileManager.default.removeItem(at: destination)
        }
        let base = mibps(Self.median(baseline))
        let importRate = mibps(Self.median(imports))
        let exportRate = mibps(Self.median(exports))
        try Self.append("""

            ## 1 GiB raw image, checksum verified (median of 3, warm page cache)

            | operation | MiB/s | vs cp + sha256sum |
            |---|---:|---:|
            | cp + sha256sum (baseline) | \(String(format: "%.0f", base)) | 1.00× |
            | SimCloud importImage (copy + SHA-256 + verify) | \(String(format: "%.0f", importRate)) | \(String(format: "%.2f", importRate / base))× |
            | SimCloud exportImage (copy + SHA-256) | \(String(format: "%.0f", exportRate)) | \(String(format: "%.2f", exportRate / base))× |
            | same, without fsync (as cp): importImage | \(String(format: "%.0f", mibps(Self.median(fastImports)))) | \(String(format: "%.2f", mibps(Self.median(fastImports)) / base))× |
            | same, without fsync (as cp): exportImage | \(String(format: "%.0f", mibps(Self.median(fastExports)))) | \(String(format: "%.2f", mibps(Self.median(fastExports)) / base))× |

            The default (first two rows) fsyncs the file before renaming it into place; `cp` does not.
            """)
    }
}
#endif

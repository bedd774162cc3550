import Foundation
import Testing
@testable import Providers

/// How qemu-img runs as a child process: output, exit status, the wall-time limit and cancellation.
/// The real qemu-img, and /bin/sh as a launcher standing in for prlimit where a test needs a child
/// that misbehaves (prints to both streams, fails, or never ends).
@Suite("qemu-img as a child process")
struct QemuImgTests {
    @Test("the real qemu-img's output comes back")
    func versionOutput() async throws {
        let output = try await QemuImg.run(["--version"])
        #expect(output.contains("qemu-img version"))
    }

    @Test("standard error is merged into the output, and a failure carries the exit status")
    func failureCarriesStatusAndBothStreams() async throws {
        let error = await #expect(throws: QemuImgError.self) {
            try await QemuImg.run(["info"], launcher: ["/bin/sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3", "sh"])
        }
        #expect(error?.status == 3)
        #expect(error?.output.contains("to-stdout") == true)
        #expect(error?.output.contains("to-stderr") == true)
    }

    @Test("a cancelled run kills its child at once instead of waiting for it")
    func cancellationKillsTheChild() async throws {
        let marker = "qemu-img-test-\(UUID().uuidString.prefix(8))"
        let run = Task {
            try await QemuImg.run(["info"], launcher: ["/bin/sh", "-c", "exec sleep 30 # \(marker)", "sh"])
        }
        try await Task.sleep(for: .milliseconds(300))
        let start = ContinuousClock.now
        run.cancel()
        let result = await run.result
        #expect(ContinuousClock.now - start < .seconds(5))
        guard case .failure = result else { Issue.record("a cancelled run returned \(result)"); return }
    }

    @Test("past its wall time a limited run is killed and reported as timed out")
    func wallTimeLimitKills() async throws {
        // The real qemu-img under prlimit, made to wait forever: it opens a named pipe nobody writes.
        let fifo = try Self.fifoNobodyWrites()
        defer { try? FileManager.default.removeItem(at: fifo) }
        let start = ContinuousClock.now
        let error = await #expect(throws: QemuImgError.self) {
            try await QemuImg.run(
                ["info", fifo.path], limits: .init(addressSpaceBytes: 1 << 30, cpuSeconds: 30, wallTime: .milliseconds(500)))
        }
        #expect(error?.timedOut == true)
        #expect(ContinuousClock.now - start < .seconds(10))
    }

    /// A named pipe with no writer: opening it for reading blocks forever.
    static func fifoNobodyWrites() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("qemu-img-fifo-\(UUID().uuidString.prefix(8))")
        guard mkfifo(url.path, 0o600) == 0 else { throw CocoaError(.fileWriteUnknown) }
        return url
    }
}

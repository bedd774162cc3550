import Foundation

/// The `intercloud` executable built next to the test bundle (same build folder), for tests that
/// run the CLI as operators do.
public enum IntercloudExecutable {
    public struct Run: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// Its path; the test runner may sit inside the bundle (`X.xctest/...`), so the search walks up
    /// to the build folder.
    public static func path() throws -> String {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var folder = executable.deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = folder.appendingPathComponent("intercloud").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            folder.deleteLastPathComponent()
        }
        throw TestServiceError(message: "no intercloud executable next to \(executable.path): build it in the same build folder (swift build --build-tests)")
    }

    /// Runs it to completion with `arguments`, capturing both outputs.
    public static func run(_ arguments: [String]) throws -> Run {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try path())
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Both pipes drained before waiting: a full pipe would block the child.
        let stderrData = Mutexed<Data>()
        let reader = Thread { stderrData.set(err.fileHandleForReading.readDataToEndOfFile()) }
        reader.start()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        while !reader.isFinished { Thread.sleep(forTimeInterval: 0.005) }
        return Run(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderrData.get() ?? Data(), as: UTF8.self))
    }
}

/// A value handed from one thread to another.
private final class Mutexed<Value: Sendable>: @unchecked Sendable {
    // @unchecked: `value` is only touched under `lock`.
    private let lock = NSLock()
    private var value: Value?
    func set(_ new: Value) { lock.withLock { value = new } }
    func get() -> Value? { lock.withLock { value } }
}

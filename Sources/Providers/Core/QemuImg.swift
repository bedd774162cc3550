import Foundation
import Subprocess
import SystemPackage

/// Runs `qemu-img` (Debian `qemu-utils`) for disk format conversion.
///
/// Converting between raw, qcow2, vmdk, vdi and vhdx keeps the raw content byte-identical, so the
/// SHA-256 of the raw content is the image's identity across formats. VHD (`vpc`) rounds the disk size
/// to its CHS geometry unless `-o force_size=on` is given, so we always pass it.
public enum QemuImg {
    public static var executable: String {
        ProcessInfo.processInfo.environment["QEMU_IMG"] ?? "/usr/bin/qemu-img"
    }

    public static var isAvailable: Bool { FileManager.default.isExecutableFile(atPath: executable) }

    /// Converts `source` (in `from`) to `destination` (in `to`), through a temporary file renamed into place.
    /// `followsBacking`: the source is one of our own instance disks, an overlay whose backing image is
    /// part of its content (a snapshot flattens both). Every other source is opened with no backing
    /// file at all (`"backing": null`), so nothing but the file itself is read.
    public static func convert(
        _ source: URL, from: ImageFormat, to destination: URL, format: ImageFormat, shareLock: Bool = false,
        followsBacking: Bool = false, progress: (@Sendable (Double) -> Void)? = nil
    ) async throws {
        let temporary = destination.deletingLastPathComponent()
            .appendingPathComponent(".\(destination.lastPathComponent).partial-\(UUID().uuidString.prefix(8))")
        // `-U` reads a disk a running QEMU holds open (crash-consistent copy) instead of failing on its lock.
        var arguments = ["convert", "-p"] + (shareLock ? ["-U"] : [])
        arguments += followsBacking ? ["-f", from.rawValue] : []
        arguments += ["-O", format.rawValue]
        if format == .vpc { arguments += ["-o", "force_size=on"] }
        arguments += [followsBacking ? source.path : isolatedSource(source, format: from), temporary.path]
        do {
            try await run(arguments, onOutput: { text in
                // `-p` prints "    (12.50/100%)" updates separated by carriage returns.
                for piece in text.split(whereSeparator: { $0 == "\r" || $0 == "\n" }) {
                    let trimmed = piece.trimmingCharacters(in: CharacterSet(charactersIn: " ()%"))
                    if let slash = trimmed.firstIndex(of: "/"), let value = Double(trimmed[..<slash]) {
                        progress?(value / 100)
                    }
                }
            })
            try FileManager.default.moveItemReplacing(temporary, with: destination)
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw error
        }
    }

    /// The source of a conversion that reads nothing but `file`, in `format` (never probed), with no
    /// backing file: a `json:` block-device spec. For raw, `"backing": null` is accepted and ignored.
    static func isolatedSource(_ file: URL, format: ImageFormat) -> String {
        let spec: [String: Any] = [
            "driver": format.rawValue, "backing": NSNull(), "file": ["driver": "file", "filename": file.path],
        ]
        let data = (try? JSONSerialization.data(withJSONObject: spec, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return "json:" + String(decoding: data, as: UTF8.self)
    }

    /// The format `qemu-img info` detects and the virtual size. For our own files only: a file from
    /// elsewhere is inspected by `ImageInspection` on its declared format.
    static func info(_ url: URL, shareLock: Bool = false) async throws -> (format: String, virtualSize: Int64) {
        let output = try await run(["info", "--output=json"] + (shareLock ? ["-U"] : []) + [url.path])
        guard let object = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
              let format = object["format"] as? String,
              let size = (object["virtual-size"] as? NSNumber)?.int64Value
        else { throw QemuImgError(arguments: ["info"], status: 0, output: "unparsable output: \(output)") }
        return (format, size)
    }

    /// Limits on one qemu-img process, for files from elsewhere: address space and CPU time through
    /// `prlimit` (util-linux), wall time through a deadline after which the process is killed.
    public struct Limits: Sendable, Equatable {
        public var addressSpaceBytes: Int64
        public var cpuSeconds: Int
        public var wallTime: Duration

        public init(addressSpaceBytes: Int64, cpuSeconds: Int, wallTime: Duration) {
            self.addressSpaceBytes = addressSpaceBytes
            self.cpuSeconds = cpuSeconds
            self.wallTime = wallTime
        }

        /// OpenStack's limits for `qemu-img info` on untrusted images (1 GiB, 30 s CPU), with a wall deadline.
        public static let inspection = Limits(addressSpaceBytes: 1 << 30, cpuSeconds: 30, wallTime: .seconds(60))
    }

    public static var prlimit: String {
        ProcessInfo.processInfo.environment["PRLIMIT"] ?? "/usr/bin/prlimit"
    }

    /// Runs qemu-img under `limits` (see `Limits`); past the wall time it is killed and
    /// `QemuImgError.timedOut` is thrown.
    static func run(_ arguments: [String], limits: Limits) async throws -> String {
        guard FileManager.default.isExecutableFile(atPath: prlimit) else {
            throw QemuImgError(arguments: arguments, status: -1, output: "\(prlimit) not found (install util-linux)")
        }
        let prefix = [prlimit, "--as=\(limits.addressSpaceBytes)", "--cpu=\(limits.cpuSeconds)", "--"]
        return try await withThrowingTaskGroup(of: String?.self) { group in
            group.addTask { try await run(arguments, launcher: prefix) }
            group.addTask {
                try await Task.sleep(for: limits.wallTime)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let output = first else {
                throw QemuImgError(arguments: arguments, status: -1, output: "killed after \(limits.wallTime)", timedOut: true)
            }
            return output
        }
    }

    /// Runs qemu-img, killing it if the task is cancelled. `launcher`: a program and its
    /// arguments to run qemu-img through (prlimit). Standard error is merged into the output.
    ///
    /// Through swift-subprocess rather than Foundation's `Process`: on Linux, `Process.run()` in
    /// this toolchain reads 256 bytes of every `/proc/self/fd` entry while closing descriptors for
    /// the child, past the end of glibc's directory buffer, which intermittently kills the whole
    /// broker with SIGSEGV (swift-corelibs-foundation #5472, seen in a test run here).
    /// swift-subprocess closes them with `posix_spawn_file_actions_addclosefrom_np` instead.
    @discardableResult
    static func run(_ arguments: [String], launcher: [String] = [], onOutput: (@Sendable (String) -> Void)? = nil) async throws -> String {
        guard isAvailable else {
            throw QemuImgError(arguments: arguments, status: -1, output: "\(executable) not found (install qemu-utils)")
        }
        let program = launcher.first ?? executable
        let programArguments = launcher.isEmpty ? arguments : Array(launcher.dropFirst()) + [executable] + arguments
        // A cancelled task kills the child (SIGKILL: it inherits this thread's blocked signal
        // mask, so it may not see SIGTERM); its output is a temporary file the caller removes.
        let result = try await Subprocess.run(
            .path(FilePath(program)), arguments: Arguments(programArguments),
            input: .none, output: .sequence, error: .combinedWithOutput
        ) { execution in
            var collected = ""
            for try await buffer in execution.standardOutput {
                let text = buffer.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
                collected += text
                onOutput?(text)
            }
            return collected
        }
        try Task.checkCancellation()
        let output = result.closureResult
        guard case .exited(let status) = result.terminationStatus else {
            throw QemuImgError(arguments: arguments, status: -1, output: "\(result.terminationStatus): " + output)
        }
        guard status == 0 else { throw QemuImgError(arguments: arguments, status: status, output: output) }
        return output
    }
}

struct QemuImgError: Error, CustomStringConvertible {
    var arguments: [String]
    var status: Int32
    var output: String
    /// Killed at the wall-time limit (`QemuImg.Limits`).
    var timedOut = false
    var description: String {
        "qemu-img \(arguments.first ?? "") exited \(status): \(output.trimmingCharacters(in: .whitespacesAndNewlines).suffix(400))"
    }
}

extension FileManager {
    /// Moves `source` over `destination`, replacing it (rename(2) semantics on one file system).
    func moveItemReplacing(_ source: URL, with destination: URL) throws {
        if fileExists(atPath: destination.path) { try removeItem(at: destination) }
        try moveItem(at: source, to: destination)
    }
}

import Crypto
import Foundation
import Providers

/// Converts staged disk files between formats with `qemu-img convert` (Debian `qemu-utils`).
/// Conversions between raw, qcow2, vmdk, vdi and vhdx keep the raw content byte-identical.
public enum ImageConverter {
    /// `QEMU_IMG` overrides the executable (as for the Providers drivers).
    public static var executable: String {
        ProcessInfo.processInfo.environment["QEMU_IMG"] ?? "/usr/bin/qemu-img"
    }

    public static var isAvailable: Bool { FileManager.default.isExecutableFile(atPath: executable) }

    /// Converts `source` (in `from`) into `destination` (in `to`) through a temporary file renamed into place.
    public static func convert(_ source: URL, from: ImageFormat, to destination: URL, format: ImageFormat) async throws {
        let temporary = destination.deletingLastPathComponent()
            .appendingPathComponent(".\(destination.lastPathComponent).partial")
        var arguments = ["convert", "-f", from.rawValue, "-O", format.rawValue]
        // VHD rounds the size to its disk geometry unless told not to.
        if format == .vpc { arguments += ["-o", "force_size=on"] }
        arguments += [source.path, temporary.path]
        do {
            try await run(arguments)
            if FileManager.default.fileExists(atPath: destination.path) { try FileManager.default.removeItem(at: destination) }
            try FileManager.default.moveItem(at: temporary, to: destination)
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw error
        }
    }

    /// Runs qemu-img without blocking a thread of the cooperative pool (the wait is a termination
    /// handler), killing it if the task is cancelled.
    static func run(_ arguments: [String]) async throws {
        guard isAvailable else { throw ConversionError("\(executable) not found (install qemu-utils)") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        let status: Int32 = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
                do { try process.run() } catch {
                    process.terminationHandler = nil
                    continuation.resume(throwing: error)
                }
            }
        } onCancel: {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        // qemu-img without `-p` writes only error text, which fits in the pipe buffer.
        let text = String(decoding: (try? output.fileHandleForReading.readToEnd()) ?? Data(), as: UTF8.self)
        try Task.checkCancellation()
        guard status == 0 else {
            throw ConversionError("qemu-img \(arguments.first ?? "") exited \(status): \(text.trimmingCharacters(in: .whitespacesAndNewlines).suffix(400))")
        }
    }

    public struct ConversionError: Error, Sendable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }
}

/// Chunked SHA-256 of files, off the cooperative thread pool.
public enum FileDigest {
    /// Size and SHA-256 (lowercase hex) of the file, read in 1 MiB chunks.
    public static func sha256(of url: URL) async throws -> (bytes: Int64, sha256: String) {
        try await onBlockingQueue {
            let handle = try FileHandle(forReadingFrom: url)
            defer { try? handle.close() }
            var hasher = SHA256()
            var bytes: Int64 = 0
            while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
                hasher.update(data: chunk)
                bytes += Int64(chunk.count)
            }
            return (bytes, hasher.finalize().map { String(format: "%02x", $0) }.joined())
        }
    }

    /// Runs blocking file IO on a dispatch queue so the cooperative pool's few threads stay free.
    public static func onBlockingQueue<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global(qos: .utility).async {
                continuation.resume(with: Result { try body() })
            }
        }
    }
}

import Crypto
import Foundation
import Providers

/// Converts staged disk files between formats with `qemu-img convert` (Debian `qemu-utils`), through
/// the Providers module's `QemuImg` (one implementation for drivers and migrations). Conversions
/// between raw, qcow2, vmdk, vdi and vhdx keep the raw content byte-identical.
public enum ImageConverter {
    public static var isAvailable: Bool { QemuImg.isAvailable }

    /// Converts `source` (in `from`) into `destination` (in `to`) through a temporary file renamed into place.
    public static func convert(_ source: URL, from: ImageFormat, to destination: URL, format: ImageFormat) async throws {
        try await QemuImg.convert(source, from: from, to: destination, format: format)
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

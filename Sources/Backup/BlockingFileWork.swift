import Foundation
import Providers

#if canImport(Glibc)
import Glibc
#endif

/// File work that blocks (copies of whole disks, fsyncs), run on a dispatch queue so the
/// cooperative pool's few threads stay free for the broker.
enum BlockingFileWork {
    static let chunkSize = 4 << 20

    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await BlockingWork.run(body)
    }

    /// Copies `source` to `destination` through a temporary file beside it that is fsynced and
    /// renamed into place, hashing as it copies (`FileCopy`, the drivers' copy). `noFollow`:
    /// refuse a symbolic link as source.
    static func copy(
        from source: URL, to destination: URL, noFollow: Bool = false, onChunk: ((Int64, Int64) -> Void)? = nil
    ) throws -> (bytes: Int64, sha256: String) {
        do {
            let result = try FileCopy.copy(from: source, to: destination, durable: true, followLinks: !noFollow, onChunk: onChunk)
            return (result.bytes, result.sha256)
        } catch let error as FileCopyError {
            throw BackupError.store(error.description)
        }
    }

    /// Writes a small file durably: temporary name, fsync, rename, fsync of the directory.
    static func writeDurably(_ data: Data, to destination: URL) throws {
        let temporary = destination.deletingLastPathComponent()
            .appendingPathComponent(".\(destination.lastPathComponent).partial-\(UUID().uuidString.prefix(8))")
        let output = open(temporary.path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard output >= 0 else { throw posixError("create \(temporary.path)") }
        let ok = data.withUnsafeBytes { bytes in
            var written = 0
            while written < bytes.count {
                let n = write(output, bytes.baseAddress! + written, bytes.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                written += n
            }
            return fsync(output) == 0
        }
        close(output)
        guard ok, rename(temporary.path, destination.path) == 0 else {
            let error = posixError("write \(destination.path)")
            unlink(temporary.path)
            throw error
        }
        try syncDirectory(destination.deletingLastPathComponent())
    }

    /// fsync of a directory, so a rename in it survives a power loss.
    static func syncDirectory(_ directory: URL) throws {
        let descriptor = open(directory.path, O_RDONLY | O_DIRECTORY)
        guard descriptor >= 0 else { throw posixError("open \(directory.path)") }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw posixError("fsync \(directory.path)") }
    }

    static func posixError(_ what: String) -> BackupError {
        .store("\(what): \(String(cString: strerror(errno)))")
    }

}

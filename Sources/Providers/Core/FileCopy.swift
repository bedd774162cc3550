import Crypto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Streaming file copy that hashes while it copies, so an export costs one read of the source instead
/// of `cp` plus `sha256sum` reading it twice.
///
/// The destination is written under a temporary name beside it and renamed into place only when complete,
/// so a failure, a cancellation or an injected crash never leaves a half-written file under the real name.
package enum FileCopy {
    package struct Result: Sendable {
        package var bytes: Int64
        package var sha256: String
    }

    static let chunkSize = 4 << 20

    /// Copies `source` to `destination` (replacing it), returning size and SHA-256 of the content.
    /// `failAfter` aborts after that many bytes (fault injection); `onChunk` reports bytes done.
    /// `durable` fsyncs before the rename, so a completed copy survives a power loss, not only a crash.
    /// `hashing: false` skips the digest (the result's `sha256` is then empty) for copies whose
    /// content is already known, such as an instance disk cloned from a recorded image.
    /// `followLinks: false` refuses a symbolic link as `source` (a file from a store we do not control).
    package static func copy(
        from source: URL, to destination: URL, failAfter: Int64? = nil, durable: Bool = true, hashing: Bool = true,
        followLinks: Bool = true, onChunk: ((Int64, Int64) -> Void)? = nil
    ) throws -> Result {
        let input = open(source.path, O_RDONLY | (followLinks ? 0 : O_NOFOLLOW))
        guard input >= 0 else { throw posixError("open \(source.path)") }
        defer { close(input) }
        var info = stat()
        guard fstat(input, &info) == 0 else { throw posixError("stat \(source.path)") }
        let total = Int64(info.st_size)
        let temporary = destination.deletingLastPathComponent()
            .appendingPathComponent(".\(destination.lastPathComponent).partial-\(UUID().uuidString.prefix(8))")
        let output = open(temporary.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard output >= 0 else { throw posixError("create \(temporary.path)") }
        var committed = false
        defer {
            if !committed {
                close(output)
                unlink(temporary.path)
            }
        }
        posix_fadvise(input, 0, 0, POSIX_FADV_SEQUENTIAL)
        var hasher = SHA256()
        var done: Int64 = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        while true {
            try Task.checkCancellation()
            let count = read(input, buffer.baseAddress, chunkSize)
            if count < 0 {
                if errno == EINTR { continue }
                throw posixError("read \(source.path)")
            }
            if count == 0 { break }
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<count])
            if hashing { hasher.update(bufferPointer: chunk) }
            var written = 0
            while written < count {
                let n = write(output, chunk.baseAddress! + written, count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw posixError("write \(temporary.path)")
                }
                written += n
            }
            done += Int64(count)
            if let failAfter, done >= failAfter {
                throw FileCopyError.injectedCrash(bytes: done)
            }
            onChunk?(done, total)
        }
        if durable {
            guard fsync(output) == 0 else { throw posixError("fsync \(temporary.path)") }
        }
        close(output)
        committed = true
        guard rename(temporary.path, destination.path) == 0 else {
            let error = posixError("rename to \(destination.path)")
            unlink(temporary.path)
            throw error
        }
        return Result(bytes: done, sha256: hashing ? hasher.finalize().hex : "")
    }

    /// Gives `source`'s content a second name at `destination` (replacing it) without copying: a hard
    /// link, made under a temporary name and renamed into place so `destination` never names a partial
    /// file. Returns false when the two are on different file systems (the caller copies instead).
    /// Only for files nobody writes again: both names share one inode.
    static func link(from source: URL, to destination: URL) throws -> Bool {
        let temporary = destination.deletingLastPathComponent()
            .appendingPathComponent(".\(destination.lastPathComponent).link-\(UUID().uuidString.prefix(8))")
        guard Glibc.link(source.path, temporary.path) == 0 else {
            if errno == EXDEV || errno == EPERM || errno == EMLINK { return false }
            throw posixError("link \(source.path)")
        }
        guard rename(temporary.path, destination.path) == 0 else {
            let error = posixError("rename \(temporary.path)")
            unlink(temporary.path)
            throw error
        }
        return true
    }

    /// SHA-256 and size of a file.
    static func digest(of url: URL, onChunk: ((Int64, Int64) -> Void)? = nil) throws -> Result {
        let input = open(url.path, O_RDONLY)
        guard input >= 0 else { throw posixError("open \(url.path)") }
        defer { close(input) }
        var info = stat()
        fstat(input, &info)
        posix_fadvise(input, 0, 0, POSIX_FADV_SEQUENTIAL)
        var hasher = SHA256()
        var done: Int64 = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        while true {
            try Task.checkCancellation()
            let count = read(input, buffer.baseAddress, chunkSize)
            if count < 0 {
                if errno == EINTR { continue }
                throw posixError("read \(url.path)")
            }
            if count == 0 { break }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            done += Int64(count)
            onChunk?(done, Int64(info.st_size))
        }
        return Result(bytes: done, sha256: hasher.finalize().hex)
    }

    static func posixError(_ what: String) -> FileCopyError {
        .posix(what: what, errno: errno, message: String(cString: strerror(errno)))
    }
}

package enum FileCopyError: Error, CustomStringConvertible {
    case posix(what: String, errno: Int32, message: String)
    case injectedCrash(bytes: Int64)

    package var description: String {
        switch self {
        case .posix(let what, _, let message): "\(what): \(message)"
        case .injectedCrash(let bytes): "injected crash after \(bytes) bytes"
        }
    }
}

extension Sequence where Element == UInt8 {
    /// Lowercase hex.
    var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for byte in self {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

import Crypto
import Foundation
import Glibc

/// What the sending broker puts in an offer before any byte moves: the file's size and
/// end-to-end SHA-256, and a fresh one-time token. (The XMPP side carries these in a signed
/// envelope; the receiver registers them as an `ExpectedTransfer`.)
public struct TransferOffer: Sendable, Equatable {
    public var fileSize: UInt64
    /// Lowercase hex.
    public var sha256: String
    public var token: String

    public init(fileSize: UInt64, sha256: String, token: String) {
        self.fileSize = fileSize
        self.sha256 = sha256
        self.token = token
    }

    /// Reads `file` once on a dedicated thread (1 MiB at a time) to size and hash it, and draws a
    /// token.
    public static func prepare(for file: URL) async throws(TransferError) -> TransferOffer {
        let path = file.path
        return try await runOnDedicatedThread(name: "transfer-digest") { () throws(TransferError) in
            let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw .fileError("cannot open \(path): \(Sockets.errnoText())") }
            let source = FileDescriptor(fd)
            let size = try source.size()
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
            defer { buffer.deallocate() }
            var hasher = SHA256()
            var offset: UInt64 = 0
            while offset < size {
                let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(UInt64(buffer.count), size - offset))])
                try source.readFully(into: slice, at: offset)
                hasher.update(bufferPointer: UnsafeRawBufferPointer(slice))
                offset += UInt64(slice.count)
            }
            return TransferOffer(fileSize: size, sha256: Hex.encode(hasher.finalize()), token: randomToken())
        }
    }

    /// 32 random bytes, hex: a one-time secret for one transfer.
    public static func randomToken() -> String {
        var generator = SystemRandomNumberGenerator()
        return Hex.encode((0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }
}

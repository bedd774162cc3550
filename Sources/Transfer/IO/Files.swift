import Foundation
import Glibc

/// A file descriptor closed when the last owner (thread) lets go of it.
final class FileDescriptor: Sendable {
    let fd: Int32
    init(_ fd: Int32) { self.fd = fd }
    deinit { close(fd) }

    /// Reads exactly `buffer.count` bytes at `offset`; a short file is an error.
    func readFully(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(TransferError) {
        var done = 0
        while done < buffer.count {
            let result = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if result < 0, errno == EINTR { continue }
            guard result > 0 else {
                throw .fileError(result == 0 ? "file ended at \(offset + UInt64(done))" : "read: \(Sockets.errnoText())")
            }
            done += result
        }
    }

    func writeFully(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws(TransferError) {
        var done = 0
        while done < buffer.count {
            let result = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if result < 0, errno == EINTR { continue }
            guard result > 0 else { throw .fileError("write: \(Sockets.errnoText())") }
            done += result
        }
    }

    func size() throws(TransferError) -> UInt64 {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .fileError("stat: \(Sockets.errnoText())") }
        return UInt64(info.st_size)
    }
}

/// The receiver's on-disk state for one transfer: the partial file (`<destination>.partial`),
/// written chunk by chunk at its offset, and a progress record (`<destination>.partial.chunks`):
/// a header naming the transfer, then the chained digest (see `ChainedDigest`) of each verified
/// chunk in order.
///
/// Nothing is fsync'd while streaming. On resume the receiver re-reads the chunks the record
/// lists and keeps the longest prefix that still hashes to the recorded digests: a crash that
/// lost written pages is caught by the re-hash instead of by syncing every few chunks, and the
/// same pass rebuilds the end-to-end hash state, which has to be computed over the prefix anyway.
final class PartialFileStore: @unchecked Sendable {
    // @unchecked: used by one connection: the network thread opens it, then only the store stage
    // writes to it until the network thread finalizes it after that stage has finished.
    let destination: URL
    let layout: ChunkLayout
    let partialPath: String
    let recordPath: String
    private let partial: FileDescriptor
    private let record: FileDescriptor
    private let recordHeaderLength: UInt64

    /// 2: chained digests (a record of plain chunk digests is discarded, not resumed).
    static let magic = Array("ICXFCHK2".utf8)

    private init(destination: URL, layout: ChunkLayout, partial: FileDescriptor, record: FileDescriptor, headerLength: Int) {
        self.destination = destination
        self.layout = layout
        self.partialPath = destination.path + ".partial"
        self.recordPath = destination.path + ".partial.chunks"
        self.partial = partial
        self.record = record
        self.recordHeaderLength = UInt64(headerLength)
    }

    struct Opened {
        var store: PartialFileStore
        var verifiedChunks: UInt64
        /// Hash state over the verified prefix.
        var prefixHasher: ChainedDigest
    }

    /// Opens (or creates) the partial file for `transfer`, keeping what a previous connection
    /// verified. `scratch` must hold one chunk.
    static func open(
        _ transfer: ExpectedTransfer, layout: ChunkLayout, scratch: UnsafeMutableRawBufferPointer
    ) throws(TransferError) -> Opened {
        let partialPath = transfer.destination.path + ".partial"
        let recordPath = transfer.destination.path + ".partial.chunks"
        let partialFD = Glibc.open(partialPath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard partialFD >= 0 else { throw .fileError("cannot open \(partialPath): \(Sockets.errnoText())") }
        let partial = FileDescriptor(partialFD)
        let recordFD = Glibc.open(recordPath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard recordFD >= 0 else { throw .fileError("cannot open \(recordPath): \(Sockets.errnoText())") }
        let record = FileDescriptor(recordFD)

        var header = magic
        header.appendBigEndian(layout.fileSize)
        header.appendBigEndian(layout.chunkSize)
        header += Hex.decode(transfer.sha256) ?? []
        header.appendString(transfer.transferID, limit: WireLimits.maximumIdentifierLength)
        let store = PartialFileStore(
            destination: transfer.destination, layout: layout, partial: partial, record: record, headerLength: header.count)

        var hasher = ChainedDigest()
        var verified: UInt64 = 0
        let recordSize = try record.size()
        var existingHeader = [UInt8](repeating: 0, count: header.count)
        let sameTransfer: Bool
        if recordSize >= UInt64(header.count) {
            try withBytes(&existingHeader) { (buffer) throws(TransferError) in try record.readFully(into: buffer, at: 0) }
            sameTransfer = existingHeader == header
        } else {
            sameTransfer = false
        }
        if sameTransfer {
            let recorded = min(layout.chunkCount, (recordSize - UInt64(header.count)) / UInt64(WireLimits.digestLength))
            var digest = [UInt8](repeating: 0, count: WireLimits.digestLength)
            while verified < recorded {
                try withBytes(&digest) { (buffer) throws(TransferError) in
                    try record.readFully(into: buffer, at: store.recordOffset(of: verified))
                }
                let length = layout.length(of: verified)
                let chunk = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<length])
                do throws(TransferError) {
                    try partial.readFully(into: chunk, at: layout.offset(of: verified))
                } catch {
                    break  // shorter than recorded: the tail was lost
                }
                // One pass per resume: the chained check and the end-to-end state are the same hash.
                var extended = hasher
                extended.update(UnsafeRawBufferPointer(chunk))
                guard extended.chunkDigest(isLast: verified + 1 == layout.chunkCount) == digest else { break }
                hasher = extended
                verified += 1
            }
            guard ftruncate(record.fd, off_t(store.recordOffset(of: verified))) == 0 else {
                throw .fileError("truncate \(recordPath): \(Sockets.errnoText())")
            }
        } else {
            guard ftruncate(record.fd, 0) == 0, ftruncate(partial.fd, 0) == 0 else {
                throw .fileError("truncate: \(Sockets.errnoText())")
            }
            try withBytes(header) { (buffer) throws(TransferError) in try record.writeFully(buffer, at: 0) }
        }
        return Opened(store: store, verifiedChunks: verified, prefixHasher: hasher)
    }

    private func recordOffset(of index: UInt64) -> UInt64 { recordHeaderLength + index * UInt64(WireLimits.digestLength) }

    /// Writes part of a verified chunk at its place in the file.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(TransferError) {
        precondition(offset + UInt64(bytes.count) <= layout.fileSize)
        try partial.writeFully(bytes, at: offset)
    }

    /// Records chunk `index` as verified and written (after all its bytes are).
    func recordVerified(index: UInt64, digest: [UInt8]) throws(TransferError) {
        try withBytes(digest) { (buffer) throws(TransferError) in try record.writeFully(buffer, at: recordOffset(of: index)) }
    }

    /// Makes the file durable (when asked) and renames it to the destination; the progress record
    /// goes away.
    func finalize(sync: Bool) throws(TransferError) {
        if sync, fsync(partial.fd) != 0 { throw .fileError("fsync \(partialPath): \(Sockets.errnoText())") }
        guard rename(partialPath, destination.path) == 0 else {
            throw .fileError("rename to \(destination.path): \(Sockets.errnoText())")
        }
        unlink(recordPath)
        if sync {
            let directory = Glibc.open(destination.deletingLastPathComponent().path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if directory >= 0 {
                fsync(directory)
                close(directory)
            }
        }
    }

    func discard() {
        unlink(partialPath)
        unlink(recordPath)
    }
}

/// `withUnsafe(Mutable)Bytes` with a typed-throwing body (the standard library's are untyped).
func withBytes<T>(
    _ bytes: inout [UInt8], _ body: (UnsafeMutableRawBufferPointer) throws(TransferError) -> T
) throws(TransferError) -> T {
    try bytes.withUnsafeMutableBytes { buffer in Result { () throws(TransferError) in try body(buffer) } }.get()
}

func withBytes<T>(
    _ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws(TransferError) -> T
) throws(TransferError) -> T {
    try bytes.withUnsafeBytes { buffer in Result { () throws(TransferError) in try body(buffer) } }.get()
}

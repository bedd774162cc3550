import Foundation
import Glibc
import Synchronization

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
    /// The same file opened with `O_DIRECT`, when it could be and chunks are page multiples.
    private let directPartial: FileDescriptor?
    private let record: FileDescriptor
    private let recordHeaderLength: UInt64
    /// Direct IO needs offset, length and memory aligned to the device's block size; a page is a
    /// multiple of every common one.
    static let directAlignment = 4096

    /// 2: chained digests (a record of plain chunk digests is discarded, not resumed).
    static let magic = Array("ICXFCHK2".utf8)

    private init(
        destination: URL, layout: ChunkLayout, partial: FileDescriptor, directPartial: FileDescriptor?,
        record: FileDescriptor, headerLength: Int
    ) {
        self.destination = destination
        self.layout = layout
        self.partialPath = destination.path + ".partial"
        self.recordPath = destination.path + ".partial.chunks"
        self.partial = partial
        self.directPartial = directPartial
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
    /// verified. `scratch` must hold one chunk. With `direct`, chunk writes bypass the page cache
    /// where the file system supports it (see `TransferServer.Options.directWrites`).
    static func open(
        _ transfer: ExpectedTransfer, layout: ChunkLayout, direct: Bool, scratch: UnsafeMutableRawBufferPointer
    ) throws(TransferError) -> Opened {
        let partialPath = transfer.destination.path + ".partial"
        let recordPath = transfer.destination.path + ".partial.chunks"
        let partialFD = Glibc.open(partialPath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard partialFD >= 0 else { throw .fileError("cannot open \(partialPath): \(Sockets.errnoText())") }
        let partial = FileDescriptor(partialFD)
        let recordFD = Glibc.open(recordPath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard recordFD >= 0 else { throw .fileError("cannot open \(recordPath): \(Sockets.errnoText())") }
        let record = FileDescriptor(recordFD)
        var directPartial: FileDescriptor? = nil
        if direct, openDirectFlag != 0, layout.chunkSize % UInt64(directAlignment) == 0 {
            // Refused by file systems without direct IO (EINVAL): then the buffered path it is.
            let directFD = Glibc.open(partialPath, O_WRONLY | O_CLOEXEC | O_NOFOLLOW | openDirectFlag)
            if directFD >= 0 { directPartial = FileDescriptor(directFD) }
        }

        var header = magic
        header.appendBigEndian(layout.fileSize)
        header.appendBigEndian(layout.chunkSize)
        header += Hex.decode(transfer.sha256) ?? []
        header.appendString(transfer.transferID, limit: WireLimits.maximumIdentifierLength)
        let store = PartialFileStore(
            destination: transfer.destination, layout: layout, partial: partial, directPartial: directPartial,
            record: record, headerLength: header.count)

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

    var writesDirectly: Bool { directPartial != nil }
    private let directRefused = Atomic<Bool>(false)

    /// Writes with `O_DIRECT`; returns how much was written before the file system answered
    /// EINVAL (direct IO not supported after all), throws on any other error.
    private func writeDirect(
        _ buffer: UnsafeRawBufferPointer, at offset: UInt64, to file: FileDescriptor
    ) throws(TransferError) -> Int {
        var done = 0
        while done < buffer.count {
            let result = pwrite(file.fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if result < 0, errno == EINTR { continue }
            if result < 0, errno == EINVAL { return done }
            guard result > 0 else { throw .fileError("write: \(Sockets.errnoText())") }
            done += result
        }
        return done
    }

    /// Writes (part of) a chunk at its place in the file: past the page cache when opened for it
    /// and `bytes` and `offset` are aligned (a whole chunk from a chunk buffer is, but for the
    /// short tail of the last chunk, which goes through the page cache).
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(TransferError) {
        precondition(offset + UInt64(bytes.count) <= layout.fileSize)
        let alignment = Self.directAlignment
        guard let directPartial, !directRefused.load(ordering: .relaxed), offset % UInt64(alignment) == 0,
            let base = bytes.baseAddress, Int(bitPattern: base) % alignment == 0
        else {
            try partial.writeFully(bytes, at: offset)
            return
        }
        let aligned = bytes.count - bytes.count % alignment
        if aligned > 0 {
            let written = try writeDirect(UnsafeRawBufferPointer(rebasing: bytes[0..<aligned]), at: offset, to: directPartial)
            if written < aligned {
                // The file system opened the file for direct IO but refuses the writes: buffered
                // from here on.
                directRefused.store(true, ordering: .relaxed)
                try partial.writeFully(UnsafeRawBufferPointer(rebasing: bytes[written...]), at: offset + UInt64(written))
                return
            }
        }
        if aligned < bytes.count {
            try partial.writeFully(UnsafeRawBufferPointer(rebasing: bytes[aligned...]), at: offset + UInt64(aligned))
        }
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

/// Linux's `O_DIRECT`, which Glibc's module does not export (it is behind _GNU_SOURCE in C).
#if arch(x86_64) || arch(i386)
let openDirectFlag: Int32 = 0o40000
#elseif arch(arm64) || arch(arm)
let openDirectFlag: Int32 = 0o200000
#else
let openDirectFlag: Int32 = 0  // unknown layout: plain buffered writes
#endif

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

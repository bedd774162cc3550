import Foundation

/// Wire format, inside the TLS stream. Every frame is `type (1 byte) | length (4 bytes, big
/// endian) | payload`. Integers are big endian.
///
/// - hello (sender → receiver): version u8, file size u64, chunk size u32, transfer id (u16 length
///   + UTF-8), token (u16 length + UTF-8).
/// - accept (receiver → sender): index of the first chunk the receiver still needs, u64, then the
///   SHA-256 chaining value over the chunks before it (32 bytes; see `ChainedDigest`).
/// - chunk (sender → receiver): index u64, the chunk's chained digest (32 bytes: the SHA-256
///   chaining value through this chunk, the whole file's SHA-256 for the last chunk), then the
///   chunk bytes; the chunk length is the frame length minus 40.
/// - ack (receiver → sender): number of chunks verified and stored so far, u64 (cumulative).
/// - complete (receiver → sender): file size u64, end-to-end SHA-256 (32 bytes).
/// - error (either way): refusal code u8, reason (u16 length + UTF-8).
enum FrameType: UInt8, Sendable {
    case hello = 1
    case accept = 2
    case chunk = 3
    case ack = 4
    case complete = 5
    case error = 6
}

enum WireLimits {
    /// 2: chained chunk digests (1 hashed each chunk on its own).
    static let protocolVersion: UInt8 = 2
    static let frameHeaderLength = 5
    /// index + digest in front of a chunk's bytes.
    static let chunkHeaderLength = 40
    static let digestLength = 32
    /// Every frame but a chunk is small; anything bigger is refused before it is read.
    static let maximumControlFrameLength = 4096
    static let maximumIdentifierLength = 256
    static let maximumReasonLength = 1024
    static let minimumChunkSize: UInt32 = 4096
    static let maximumChunkSize: UInt32 = 64 << 20
}

struct Hello: Equatable, Sendable {
    var version: UInt8 = WireLimits.protocolVersion
    var fileSize: UInt64
    var chunkSize: UInt32
    var transferID: String
    var token: String
}

/// Control frames (everything but chunk data, which is read straight into a chunk buffer).
enum ControlFrame: Equatable, Sendable {
    case hello(Hello)
    case accept(resumeFrom: UInt64, chainingValue: [UInt8])
    case ack(storedChunks: UInt64)
    case complete(fileSize: UInt64, sha256: [UInt8])
    case error(RefusalCode, String)

    var type: FrameType {
        switch self {
        case .hello: .hello
        case .accept: .accept
        case .ack: .ack
        case .complete: .complete
        case .error: .error
        }
    }

    func encoded() -> [UInt8] {
        var payload = [UInt8]()
        switch self {
        case .hello(let hello):
            payload.append(hello.version)
            payload.appendBigEndian(hello.fileSize)
            payload.appendBigEndian(hello.chunkSize)
            payload.appendString(hello.transferID, limit: WireLimits.maximumIdentifierLength)
            payload.appendString(hello.token, limit: WireLimits.maximumIdentifierLength)
        case .accept(let resumeFrom, let chainingValue):
            payload.appendBigEndian(resumeFrom)
            payload += chainingValue
        case .ack(let stored):
            payload.appendBigEndian(stored)
        case .complete(let size, let digest):
            payload.appendBigEndian(size)
            payload += digest
        case .error(let code, let reason):
            payload.append(code.rawValue)
            payload.appendString(reason, limit: WireLimits.maximumReasonLength)
        }
        var frame = [UInt8]()
        frame.reserveCapacity(WireLimits.frameHeaderLength + payload.count)
        frame.append(type.rawValue)
        frame.appendBigEndian(UInt32(payload.count))
        return frame + payload
    }

    /// Parses a control frame's payload; every length is checked against what remains.
    static func decode(type: FrameType, payload: ArraySlice<UInt8>) throws(FrameError) -> ControlFrame {
        var reader = ByteReader(payload)
        let frame: ControlFrame
        switch type {
        case .hello:
            let version = try reader.u8()
            let size = try reader.u64()
            let chunkSize = try reader.u32()
            let id = try reader.string(limit: WireLimits.maximumIdentifierLength)
            let token = try reader.string(limit: WireLimits.maximumIdentifierLength)
            frame = .hello(Hello(version: version, fileSize: size, chunkSize: chunkSize, transferID: id, token: token))
        case .accept:
            let resumeFrom = try reader.u64()
            frame = .accept(resumeFrom: resumeFrom, chainingValue: try reader.bytes(WireLimits.digestLength))
        case .ack:
            frame = .ack(storedChunks: try reader.u64())
        case .complete:
            let size = try reader.u64()
            frame = .complete(fileSize: size, sha256: try reader.bytes(WireLimits.digestLength))
        case .error:
            let code = RefusalCode(rawValue: try reader.u8())
            frame = .error(code, try reader.string(limit: WireLimits.maximumReasonLength))
        case .chunk:
            throw FrameError("a chunk is not a control frame")
        }
        guard reader.isAtEnd else { throw FrameError("\(type) frame has trailing bytes") }
        return frame
    }
}

struct FrameError: Error, Equatable, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A frame header read off the wire, checked before any payload byte is read.
struct FrameHeader: Equatable, Sendable {
    var type: FrameType
    var length: Int

    /// `maximumChunkFrameLength` is 40 + the negotiated chunk size once known, 0 before (no chunk
    /// may come before the hello is accepted).
    static func parse(_ bytes: some Collection<UInt8>, maximumChunkFrameLength: Int) throws(FrameError) -> FrameHeader {
        var reader = ByteReader(ArraySlice(bytes))
        let rawType = try reader.u8()
        guard let type = FrameType(rawValue: rawType) else { throw FrameError("unknown frame type \(rawType)") }
        let length = Int(try reader.u32())
        let limit = type == .chunk ? maximumChunkFrameLength : WireLimits.maximumControlFrameLength
        guard length <= limit else { throw FrameError("\(type) frame of \(length) bytes exceeds \(limit)") }
        if type == .chunk, length <= WireLimits.chunkHeaderLength {
            throw FrameError("chunk frame of \(length) bytes has no data")
        }
        return FrameHeader(type: type, length: length)
    }
}

/// Bounds-checked big-endian reader over a payload.
struct ByteReader {
    private var bytes: ArraySlice<UInt8>
    init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }

    var isAtEnd: Bool { bytes.isEmpty }

    mutating func bytes(_ count: Int) throws(FrameError) -> [UInt8] {
        guard count >= 0, bytes.count >= count else { throw FrameError("frame too short") }
        let out = Array(bytes.prefix(count))
        bytes = bytes.dropFirst(count)
        return out
    }

    mutating func u8() throws(FrameError) -> UInt8 { try bytes(1)[0] }
    mutating func u16() throws(FrameError) -> UInt16 { UInt16(try integer(2)) }
    mutating func u32() throws(FrameError) -> UInt32 { UInt32(try integer(4)) }
    mutating func u64() throws(FrameError) -> UInt64 { try integer(8) }

    private mutating func integer(_ width: Int) throws(FrameError) -> UInt64 {
        try bytes(width).reduce(0) { $0 << 8 | UInt64($1) }
    }

    mutating func string(limit: Int) throws(FrameError) -> String {
        let length = Int(try u16())
        guard length <= limit else { throw FrameError("string of \(length) bytes exceeds \(limit)") }
        guard let text = String(validating: try bytes(length), as: UTF8.self) else {
            throw FrameError("string is not UTF-8")
        }
        return text
    }
}

extension [UInt8] {
    mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.bigEndian) { append(contentsOf: $0) }
    }

    /// Appends a u16-length-prefixed UTF-8 string, cut (on a character boundary) to `limit` bytes.
    mutating func appendString(_ text: String, limit: Int) {
        var utf8 = Array(text.utf8)
        if utf8.count > limit {
            var cut = String(decoding: utf8.prefix(limit), as: UTF8.self)
            while cut.utf8.count > limit { cut.removeLast() }
            utf8 = Array(cut.utf8)
        }
        appendBigEndian(UInt16(utf8.count))
        append(contentsOf: utf8)
    }
}

/// Writes a chunk frame header (type, length, index, digest) into the 45 bytes in front of the
/// chunk's data, so a chunk goes out in one write.
enum ChunkFrameHeader {
    static let length = WireLimits.frameHeaderLength + WireLimits.chunkHeaderLength

    static func write(into destination: UnsafeMutableRawBufferPointer, index: UInt64, digest: [UInt8], dataLength: Int) {
        precondition(destination.count >= length && digest.count == WireLimits.digestLength)
        var header = [UInt8]()
        header.reserveCapacity(length)
        header.append(FrameType.chunk.rawValue)
        header.appendBigEndian(UInt32(WireLimits.chunkHeaderLength + dataLength))
        header.appendBigEndian(index)
        header += digest
        header.withUnsafeBytes { destination.copyMemory(from: $0) }
    }
}

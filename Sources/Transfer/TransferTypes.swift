import Foundation

/// How far a transfer has got, as the receiver has verified and stored it.
public struct TransferProgress: Sendable, Equatable {
    /// Bytes the receiver has verified (chunk hash) and written.
    public var bytesDone: UInt64
    public var totalBytes: UInt64
    /// Recent rate, bytes per second (0 until two samples exist).
    public var bytesPerSecond: Double
    /// Estimated time to completion at `bytesPerSecond`; `nil` while the rate is unknown.
    public var eta: TimeInterval?

    public init(bytesDone: UInt64, totalBytes: UInt64, bytesPerSecond: Double, eta: TimeInterval?) {
        self.bytesDone = bytesDone
        self.totalBytes = totalBytes
        self.bytesPerSecond = bytesPerSecond
        self.eta = eta
    }

    public var fractionDone: Double { totalBytes == 0 ? 1 : Double(bytesDone) / Double(totalBytes) }
}

/// What a completed transfer looked like, on either side.
public struct TransferReceipt: Sendable, Equatable {
    public var transferID: String
    public var fileSize: UInt64
    /// End-to-end SHA-256 of the whole file, lowercase hex, as verified by the receiver.
    public var sha256: String
    /// Chunk bytes put on the wire by this side over all attempts (sender), or received (server),
    /// including chunks re-sent after a break.
    public var chunkBytesTransferred: UInt64
    /// Connections used (1 when nothing broke).
    public var attempts: Int
    /// First chunk of each attempt, as the receiver asked for it (resume points).
    public var resumePoints: [UInt64]
    public var duration: TimeInterval

    public var averageBytesPerSecond: Double { duration > 0 ? Double(chunkBytesTransferred) / duration : 0 }
}

/// Why a receiver refused a transfer or a connection. Travels in error frames, so unknown codes
/// from a newer peer are kept as they are.
public struct RefusalCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// No registered transfer with that id and token.
    public static let unknownTransfer = RefusalCode(rawValue: 1)
    /// The peer's certificate is not the one pinned for this transfer.
    public static let peerCertificateNotAccepted = RefusalCode(rawValue: 2)
    /// The hello does not match the registration (size) or the protocol limits (chunk size).
    public static let offerMismatch = RefusalCode(rawValue: 3)
    public static let unsupportedVersion = RefusalCode(rawValue: 4)
    public static let malformedFrame = RefusalCode(rawValue: 5)
    /// A chunk's bytes do not hash to the digest sent with it.
    public static let chunkDigestMismatch = RefusalCode(rawValue: 6)
    /// All chunks verified but the whole file does not hash to the expected SHA-256.
    public static let endToEndDigestMismatch = RefusalCode(rawValue: 7)
    /// Another connection is already carrying this transfer; retry later.
    public static let busy = RefusalCode(rawValue: 8)
    public static let storageFailure = RefusalCode(rawValue: 9)
    public static let cancelled = RefusalCode(rawValue: 10)

    public var description: String {
        switch self {
        case .unknownTransfer: "unknown transfer or token"
        case .peerCertificateNotAccepted: "peer certificate not accepted"
        case .offerMismatch: "offer mismatch"
        case .unsupportedVersion: "unsupported protocol version"
        case .malformedFrame: "malformed frame"
        case .chunkDigestMismatch: "chunk digest mismatch"
        case .endToEndDigestMismatch: "end-to-end digest mismatch"
        case .busy: "busy"
        case .storageFailure: "storage failure"
        case .cancelled: "cancelled"
        default: "refusal \(rawValue)"
        }
    }

    /// Refusals a sender may retry after a pause (the others will not change by retrying).
    public var isRetryable: Bool { self == .busy }
}

public enum TransferError: Error, Equatable, CustomStringConvertible {
    case invalidArgument(String)
    /// Local file problem (missing, unreadable, unwritable).
    case fileError(String)
    case connectionFailed(String)
    /// The connection broke after it was set up (reset, EOF in the middle of a frame).
    case connectionLost(String)
    case timedOut(String)
    /// TLS could not be set up (handshake error, bad key material).
    case tlsFailure(String)
    /// The peer presented a certificate whose leaf fingerprint is not the expected one.
    case peerCertificateMismatch(expected: String, presented: String)
    /// The peer's TLS stack refused our certificate (alert during or right after the handshake).
    case certificateRefusedByPeer(String)
    /// The peer sent an error frame.
    case peerRefused(RefusalCode, String)
    /// This side refused the transfer (server side: reported by `completion(of:)`).
    case refused(RefusalCode, String)
    /// The peer broke the protocol (malformed or unexpected frame).
    case protocolViolation(String)
    case cancelled

    public var description: String {
        switch self {
        case .invalidArgument(let why): "invalid argument: \(why)"
        case .fileError(let why): "file error: \(why)"
        case .connectionFailed(let why): "connection failed: \(why)"
        case .connectionLost(let why): "connection lost: \(why)"
        case .timedOut(let why): "timed out: \(why)"
        case .tlsFailure(let why): "TLS failure: \(why)"
        case .peerCertificateMismatch(let expected, let presented):
            "peer certificate fingerprint \(presented) is not the expected \(expected)"
        case .certificateRefusedByPeer(let why): "peer refused our certificate: \(why)"
        case .peerRefused(let code, let why): "peer refused (\(code)): \(why)"
        case .refused(let code, let why): "refused (\(code)): \(why)"
        case .protocolViolation(let why): "protocol violation: \(why)"
        case .cancelled: "cancelled"
        }
    }

    /// Worth reconnecting for: the break is in the network, not in what either side decided.
    public var isRetryable: Bool {
        switch self {
        case .connectionFailed, .connectionLost, .timedOut: true
        case .peerRefused(let code, _): code.isRetryable
        default: false
        }
    }
}

/// Reconnection after a break: `maximumAttempts` connections in all, waiting `initialBackoff`,
/// then twice as long each time, up to `maximumBackoff`.
public struct RetryPolicy: Sendable, Equatable {
    public var maximumAttempts: Int
    public var initialBackoff: TimeInterval
    public var maximumBackoff: TimeInterval

    public init(maximumAttempts: Int = 5, initialBackoff: TimeInterval = 0.2, maximumBackoff: TimeInterval = 5) {
        self.maximumAttempts = max(1, maximumAttempts)
        self.initialBackoff = initialBackoff
        self.maximumBackoff = maximumBackoff
    }

    public static let none = RetryPolicy(maximumAttempts: 1)

    func backoff(afterAttempt attempt: Int) -> TimeInterval {
        min(maximumBackoff, initialBackoff * pow(2, Double(max(0, attempt - 1))))
    }
}

/// Lowercase hex, the form fingerprints and digests take in offers and receipts.
enum Hex {
    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(chars.count / 2)
        var index = 0
        while index < chars.count {
            guard let high = nibble(chars[index]), let low = nibble(chars[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

import COpenSSL

/// SHA-256 over a whole file, fed chunk by chunk, whose state after each chunk serves as that
/// chunk's digest.
///
/// A chunk's digest on the wire is the SHA-256 chaining value (the eight state words, big endian)
/// after absorbing the file from its first byte through the end of that chunk; the last chunk's
/// digest is the SHA-256 of the whole file. Checking a chunk is then one step of the end-to-end
/// hash instead of a second hash over the same bytes: each side reads every byte through SHA-256
/// once. Matching a chaining value with different bytes takes a second preimage of SHA-256's
/// compression function, as matching a plain digest would. Chunks must be a whole number of
/// 64-byte blocks, so the state after a chunk has no bytes pending.
struct ChainedDigest: Sendable, Equatable {
    static let blockLength = 64

    private var context = SHA256_CTX()

    /// A hash over nothing yet.
    init() { ic_SHA256_Init(&context) }

    /// A hash that has absorbed `absorbedBytes` bytes (a multiple of 64) ending in `chainingValue`,
    /// as a peer reported it.
    init?(chainingValue: [UInt8], absorbedBytes: UInt64) {
        guard chainingValue.count == WireLimits.digestLength, absorbedBytes % UInt64(Self.blockLength) == 0 else {
            return nil
        }
        ic_SHA256_Init(&context)
        withUnsafeMutableBytes(of: &context.h) { words in
            for index in 0..<8 {
                let word = chainingValue[index * 4..<index * 4 + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                words.storeBytes(of: word, toByteOffset: index * 4, as: UInt32.self)
            }
        }
        let bits = absorbedBytes &* 8
        context.Nl = UInt32(truncatingIfNeeded: bits)
        context.Nh = UInt32(truncatingIfNeeded: bits >> 32)
    }

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        ic_SHA256_Update(&context, base, bytes.count)
    }

    /// The state words, big endian. Only meaningful on a block boundary (checked).
    var chainingValue: [UInt8] {
        precondition(context.num == 0, "chaining value read between blocks")
        var out = [UInt8]()
        out.reserveCapacity(WireLimits.digestLength)
        withUnsafeBytes(of: context.h) { words in
            for index in 0..<8 {
                let word = words.load(fromByteOffset: index * 4, as: UInt32.self)
                out.append(contentsOf: [UInt8(word >> 24), UInt8(word >> 16 & 0xff), UInt8(word >> 8 & 0xff), UInt8(word & 0xff)])
            }
        }
        return out
    }

    /// The SHA-256 of everything absorbed so far (the hash itself can go on absorbing).
    var finalDigest: [UInt8] {
        var copy = context
        var out = [UInt8](repeating: 0, count: WireLimits.digestLength)
        out.withUnsafeMutableBufferPointer { ic_SHA256_Final($0.baseAddress, &copy) }
        return out
    }

    /// Same state words, length and pending bytes.
    static func == (a: ChainedDigest, b: ChainedDigest) -> Bool {
        guard a.context.Nl == b.context.Nl, a.context.Nh == b.context.Nh, a.context.num == b.context.num else { return false }
        let pending = Int(a.context.num)
        return withUnsafeBytes(of: a.context.h) { x in withUnsafeBytes(of: b.context.h) { y in x.elementsEqual(y) } }
            && withUnsafeBytes(of: a.context.data) { x in
                withUnsafeBytes(of: b.context.data) { y in x.prefix(pending).elementsEqual(y.prefix(pending)) }
            }
    }

    /// A chunk's digest: the chaining value, or for the file's last chunk the final digest.
    func chunkDigest(isLast: Bool) -> [UInt8] { isLast ? finalDigest : chainingValue }
}

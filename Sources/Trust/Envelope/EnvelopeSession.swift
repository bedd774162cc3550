import Crypto
import Foundation
import Synchronization

/// A symmetric key two pinned brokers agreed in a signed session exchange (`SessionExchange`,
/// docs/protocol/session.md), with which either of them may authenticate envelopes to the other by
/// HMAC-SHA256 instead of a signature.
///
/// Why: a signed request costs two P-256 signatures and two verifications (request and answer),
/// about as much as the rest of the request put together. The exchange that makes a session is
/// itself two signed envelopes, so a MAC under its key proves what a signature proves to the
/// receiver: the pinned peer sent these bytes. What it does not give is proof to a third party;
/// nothing in the protocol relies on an envelope for that (agreements and usage records carry
/// signatures of their own inside their payloads).
public struct EnvelopeSession: Sendable {
    /// The peer's bare JID.
    public var peer: String
    /// Names the session on the wire (`session` attribute); derived with the key.
    public var id: [UInt8]
    /// The fingerprint of the peer's pinned leaf when the session was made: an envelope under the
    /// session is accepted only while the pin still has this fingerprint and is trusted.
    public var fingerprint: String
    public var key: SymmetricKey { didSet { keyed = HMAC(key: key) } }
    public var established: Date
    public var expires: Date
    /// HMAC already keyed (its two padded key blocks hashed): each tag copies it (hashers are
    /// values) instead of keying again, about half the cost of a tag on short envelopes.
    private var keyed: HMAC<SHA256>

    public init(peer: String, id: [UInt8], key: SymmetricKey, fingerprint: String, established: Date, expires: Date) {
        self.peer = peer
        self.id = id
        self.key = key
        self.fingerprint = fingerprint
        self.established = established
        self.expires = expires
        self.keyed = HMAC(key: key)
    }

    public func tag(_ bytes: [UInt8]) -> [UInt8] {
        var mac = keyed
        mac.update(data: bytes)
        return Array(mac.finalize())
    }

    /// Compares in constant time: every byte is looked at whatever the first difference.
    public func isValid(tag: [UInt8], for bytes: [UInt8]) -> Bool {
        let expected = self.tag(bytes)
        guard tag.count == expected.count else { return false }
        var difference: UInt8 = 0
        for index in expected.indices { difference |= expected[index] ^ tag[index] }
        return difference == 0
    }
}

/// The sessions a broker holds, in memory only: a restart forgets them, and a peer that sends
/// under a forgotten session is refused `unknownSession` and falls back to a signature.
///
/// Bounded: at most `perPeer` sessions per peer (the newest; a renewal or a peer making one from
/// each side needs two) and `total` in all (then expired ones go, then the oldest). Sessions are
/// only made with pinned peers after a signed exchange, so no stranger can add one.
public final class EnvelopeSessions: Sendable {
    /// The longest a session lives; the responder may say less (`seconds` on `<accept/>`).
    public static let maxLifetime: TimeInterval = 3600
    /// A requester makes a new session once its current one is this old, before it expires.
    public static let renewAfter: TimeInterval = 3000

    public let perPeer: Int
    public let total: Int
    private let sessions = Mutex<[String: [EnvelopeSession]]>([:])

    public init(perPeer: Int = 2, total: Int = 10_000) {
        self.perPeer = max(1, perPeer)
        self.total = max(1, total)
    }

    /// Keeps `session`, newest first for its peer.
    public func install(_ session: EnvelopeSession, now: Date) {
        sessions.withLock { sessions in
            var mine = (sessions[session.peer] ?? []).filter { $0.expires > now && $0.id != session.id }
            mine.insert(session, at: 0)
            sessions[session.peer] = Array(mine.prefix(perPeer))
            var count = sessions.values.reduce(0) { $0 + $1.count }
            guard count > total else { return }
            for (peer, list) in sessions {
                let live = list.filter { $0.expires > now }
                count -= list.count - live.count
                sessions[peer] = live.isEmpty ? nil : live
            }
            while count > total, let oldest = sessions.min(by: { $0.value.last!.established < $1.value.last!.established }) {
                var list = oldest.value
                list.removeLast()
                sessions[oldest.key] = list.isEmpty ? nil : list
                count -= 1
            }
        }
    }

    /// The session to seal requests to `peer` with: its newest unexpired one.
    public func current(for peer: String, now: Date) -> EnvelopeSession? {
        sessions.withLock { $0[peer]?.first { $0.expires > now } }
    }

    /// The session `id` with `peer`, if held and unexpired.
    public func session(peer: String, id: [UInt8], now: Date) -> EnvelopeSession? {
        sessions.withLock { $0[peer]?.first { $0.id == id && $0.expires > now } }
    }

    /// Forgets one session (`id`), or every session with `peer`.
    public func forget(peer: String, id: [UInt8]? = nil) {
        sessions.withLock { sessions in
            guard let id else { sessions[peer] = nil; return }
            let left = (sessions[peer] ?? []).filter { $0.id != id }
            sessions[peer] = left.isEmpty ? nil : left
        }
    }

    public var count: Int { sessions.withLock { $0.values.reduce(0) { $0 + $1.count } } }
}

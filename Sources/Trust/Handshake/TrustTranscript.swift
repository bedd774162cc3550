import Crypto
import Foundation
import X509

/// The bytes each side signs to prove possession of its leaf key, bound to this one exchange.
///
/// Fields, each as a 4-byte big-endian length followed by the bytes (so no field boundary can be
/// moved to forge another transcript):
/// 1. the context label `urn:intercloud:trust:0 proof` (a signature made here cannot be replayed in
///    another protocol that signs with the same key, e.g. envelopes),
/// 2. the signer's role, `initiator` or `responder` (A's signature can't be reflected as B's),
/// 3. initiator bare JID and 4. responder bare JID, as routed by the XMPP server,
/// 5. initiator nonce and 6. responder nonce (freshness: an old signature can't be replayed),
/// 7. SHA-256 of the initiator leaf and 8. of the responder leaf (each signature commits to the
///    certificates the signer saw, so a chain swapped in transit is detected).
public struct TrustTranscript: Sendable, Hashable {
    public enum Role: String, Sendable, Hashable { case initiator, responder }

    public var initiatorJID: String
    public var responderJID: String
    public var initiatorNonce: [UInt8]
    public var responderNonce: [UInt8]
    public var initiatorLeaf: Certificate
    public var responderLeaf: Certificate

    public static let label = "urn:intercloud:trust:0 proof"

    public func bytes(signer: Role) -> [UInt8] {
        var out: [UInt8] = []
        func field(_ bytes: some Collection<UInt8>) {
            let count = UInt32(bytes.count)
            out += [UInt8(count >> 24), UInt8(count >> 16 & 0xff), UInt8(count >> 8 & 0xff), UInt8(count & 0xff)]
            out += bytes
        }
        field(Array(Self.label.utf8))
        field(Array(signer.rawValue.utf8))
        field(Array(XmppAddr.bare(initiatorJID).utf8))
        field(Array(XmppAddr.bare(responderJID).utf8))
        field(initiatorNonce)
        field(responderNonce)
        field(Array(SHA256.hash(data: (try? initiatorLeaf.derBytes()) ?? [])))
        field(Array(SHA256.hash(data: (try? responderLeaf.derBytes()) ?? [])))
        return out
    }
}

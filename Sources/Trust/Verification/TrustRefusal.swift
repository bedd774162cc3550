/// Why a peer, a chain, a handshake message or an envelope was refused. The raw value is the
/// machine-readable code: it goes on the wire (`<refused reason='…'/>`), into the audit log and into
/// metrics, so existing raw values never change.
public enum TrustRefusalReason: String, Sendable, Codable, CaseIterable, Hashable {
    // Chain verification
    /// No chain to a configured anchor (also: an intermediate's signature does not verify).
    case unknownCA
    case expired
    case notYetValid
    /// Listed on a CRL of its issuer.
    case revoked
    /// The leaf's XmppAddr names another JID than the one the server routed the stanza from.
    case xmppAddrMismatch
    case missingXmppAddr
    /// Leaf key usage lacks digitalSignature, or the extended key usage excludes our use.
    case wrongKeyUsage
    /// Some other RFC 5280 rule failed (basic constraints, name constraints, version, critical
    /// extension we do not understand).
    case invalidChain
    case unsupportedKey
    // Proof of possession / envelopes
    case badSignature
    /// The peer's signature is bound to a nonce that is not this exchange's (a replayed handshake),
    /// or a nonce was seen before.
    case replayedNonce
    // Protocol and operator
    case malformed
    case unexpectedMessage
    /// The operator marked this JID as not to be trusted.
    case distrusted
    /// The operator revoked the pin of this peer.
    case pinRevoked
    /// The peer refused us; the detail carries its reason.
    case peerRefused
    case timeout
    /// The chain ends at an anchor the operator limited to other JID domains.
    case anchorOutOfScope
    /// A pinned peer presented another key that the key-change policy does not accept on its own
    /// (another anchor, or the policy asks the operator): the old pin stays.
    case keyChangeRefused
}

/// A refusal with its machine-readable reason and a human-readable detail for logs.
public struct TrustRefusal: Error, Sendable, Hashable, CustomStringConvertible {
    public var reason: TrustRefusalReason
    public var detail: String

    public init(_ reason: TrustRefusalReason, _ detail: String = "") {
        self.reason = reason
        self.detail = detail
    }

    public var description: String { detail.isEmpty ? reason.rawValue : "\(reason.rawValue): \(detail)" }
}

// The Trust module (guide: Docs.docc/Trust.md): broker identity (key + X.509 chain carrying an XmppAddr), trust store (anchors,
// CRLs, pinned peers), chain verification with composable policies, the mutual trust handshake
// (`urn:intercloud:trust:0`) as a pure state machine plus an orchestrator, signed envelopes with a
// persisted replay window, and the audit log every module writes its refusals to.
//
// Nothing here does network IO: the broker carries the payloads (XMLModel elements) over XMPP.

/// Namespaces and labels shared by the trust wire formats.
public enum TrustNamespace {
    /// IQ payload namespace of the trust handshake.
    public static let handshake = "urn:intercloud:trust:0"
    /// Element namespace of a signed envelope wrapping any federation payload.
    public static let envelope = "urn:intercloud:envelope:0"
    /// Payload namespace of the session exchange, whose keys authenticate envelopes by MAC.
    public static let session = "urn:intercloud:session:0"
}

import Foundation
import SwiftASN1
@_spi(FixedExpiryValidationTime) import X509

/// A peer whose chain passed every policy.
public struct VerifiedPeer: Sendable, Hashable {
    /// Bare JID, as routed by the server and certified by the leaf's XmppAddr.
    public var jid: String
    public var leaf: Certificate
    /// The validated chain, leaf first, ending with the anchor.
    public var chain: [Certificate]
    public var fingerprint: String { CertificateFingerprint.sha256(leaf) }
}

/// Verifies a peer's chain against the operator's anchors and CRLs with composable policies.
///
/// Chain building and signature checks are swift-certificates' `Verifier`; policies (in order):
/// `ValidityPeriodPolicy` (expired / notYetValid at the time passed in), `RFC5280Policy` with the
/// same fixed time, `BrokerKeyUsagePolicy`, `XmppAddrPolicy` (bare JID as routed), and
/// `CRLRevocationPolicy`. The time is an argument so the handshake machine stays pure and tests can
/// verify at any instant.
public struct PeerVerifier: Sendable {
    public var anchors: [Certificate]
    public var crls: [CertificateRevocationList]
    /// Anchors limited to some JID domains (see `TrustAnchors.scopes`).
    public var configuration: TrustAnchors

    public init(anchors: [Certificate], crls: [CertificateRevocationList] = []) {
        self.init(configuration: TrustAnchors(anchors: anchors, crls: crls))
    }

    public init(configuration: TrustAnchors) {
        self.anchors = configuration.anchors
        self.crls = configuration.crls
        self.configuration = configuration
    }

    /// Critical extensions our policy set as a whole enforces. A leaf with any other critical
    /// extension is refused up front, so it is reported as `invalidChain` and not as `unknownCA`
    /// (the library's Verifier returns no chain at all in that case).
    static let handledCriticalExtensions: Set<ASN1ObjectIdentifier> = [
        .X509ExtensionID.basicConstraints, .X509ExtensionID.nameConstraints, .X509ExtensionID.keyUsage,
        .X509ExtensionID.extendedKeyUsage, .X509ExtensionID.subjectAlternativeName,
    ]

    public func verify(chain: [Certificate], peerJID: String, at now: Date) async -> Result<VerifiedPeer, TrustRefusal> {
        guard let leaf = chain.first else { return .failure(TrustRefusal(.malformed, "empty chain")) }
        if let unhandled = leaf.extensions.first(where: { $0.critical && !Self.handledCriticalExtensions.contains($0.oid) }) {
            return .failure(TrustRefusal(.invalidChain, "leaf has unhandled critical extension \(unhandled.oid)"))
        }
        guard (try? SignatureScheme.algorithm(for: leaf.publicKey)) != nil else {
            return .failure(TrustRefusal(.unsupportedKey, "leaf key \(leaf.publicKey) cannot sign"))
        }
        let bareJID = XmppAddr.bare(peerJID)
        var verifier = Verifier(rootCertificates: CertificateStore(anchors)) {
            ValidityPeriodPolicy(validationTime: now)
            RFC5280Policy(fixedExpiryValidationTime: now)
            BrokerKeyUsagePolicy()
            XmppAddrPolicy(expectedJID: bareJID)
            CRLRevocationPolicy(crls: crls)
        }
        let result = await verifier.validate(leaf: leaf, intermediates: CertificateStore(chain.dropFirst()))
        switch result {
        case .validCertificate(let validated):
            let domain = bareJID.split(separator: "@").last.map(String.init) ?? bareJID
            if let anchor = validated.last, !configuration.allows(anchor: anchor, domain: domain) {
                return .failure(TrustRefusal(
                    .anchorOutOfScope, "the chain ends at \(anchor.subject), which the operator limited to \(configuration.scopes[anchor]?.joined(separator: ", ") ?? ""), not \(domain)"))
            }
            return .success(VerifiedPeer(jid: bareJID, leaf: leaf, chain: Array(validated)))
        case .couldNotValidate(let failures):
            guard let first = failures.first else {
                return .failure(TrustRefusal(.unknownCA, "no chain from \(leaf.issuer) to a configured anchor"))
            }
            return .failure(TrustRefusal(policyFailure: first.policyFailureReason))
        }
    }
}

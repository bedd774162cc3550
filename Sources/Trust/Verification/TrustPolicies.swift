import Foundation
import SwiftASN1
import X509

// Our policies report failures through swift-certificates' string-based `PolicyFailureReason`.
// To keep the reason machine-readable, each failure string starts with `[code]` where code is a
// `TrustRefusalReason` raw value; `PeerVerifier` parses it back. Failures from the library's own
// policies (RFC5280Policy) carry no code and map to `.invalidChain`.
extension PolicyEvaluationResult {
    static func refuse(_ reason: TrustRefusalReason, _ detail: String) -> PolicyEvaluationResult {
        .failsToMeetPolicy(reason: "[\(reason.rawValue)] \(detail)")
    }
}

extension TrustRefusal {
    /// Inverse of `PolicyEvaluationResult.refuse`.
    init(policyFailure: PolicyFailureReason) {
        let text = policyFailure.description
        if text.hasPrefix("["), let close = text.firstIndex(of: "]"),
            let reason = TrustRefusalReason(rawValue: String(text[text.index(after: text.startIndex)..<close]))
        {
            self.init(reason, String(text[text.index(after: close)...]).trimmingCharacters(in: .whitespaces))
        } else {
            self.init(.invalidChain, text)
        }
    }
}

/// Validity period of every certificate in the chain at a time passed in (the handshake machine's
/// `now`), reported as `expired` / `notYetValid`. It runs before RFC5280Policy so these two common
/// cases get their own codes; RFC5280Policy is configured with the same fixed time as a backstop.
public struct ValidityPeriodPolicy: VerifierPolicy, Sendable {
    public let verifyingCriticalExtensions: [ASN1ObjectIdentifier] = []
    public var validationTime: Date

    public init(validationTime: Date) { self.validationTime = validationTime }

    public func chainMeetsPolicyRequirements(chain: UnverifiedCertificateChain) -> PolicyEvaluationResult {
        for (index, certificate) in chain.enumerated() {
            let role = index == 0 ? "leaf" : "CA \(certificate.subject)"
            if validationTime < certificate.notValidBefore {
                return .refuse(.notYetValid, "\(role) valid from \(certificate.notValidBefore)")
            }
            if validationTime > certificate.notValidAfter {
                return .refuse(.expired, "\(role) expired at \(certificate.notValidAfter)")
            }
        }
        return .meetsPolicy
    }
}

/// The identity binding of RFC 6120 §13.7.1.4 applied to brokers: the leaf must carry an XmppAddr
/// equal to the bare JID the XMPP server routed the peer's stanzas from. A certificate valid for
/// another broker must not let its holder speak as this one, so the expected JID comes from the
/// routing layer, never from the peer's own claims.
public struct XmppAddrPolicy: VerifierPolicy, Sendable {
    /// SAN may be critical when the subject is empty (RFC 5280 §4.2.1.6); we do enforce it.
    public let verifyingCriticalExtensions: [ASN1ObjectIdentifier] = [.X509ExtensionID.subjectAlternativeName]
    public var expectedJID: String

    public init(expectedJID: String) { self.expectedJID = XmppAddr.bare(expectedJID) }

    public func chainMeetsPolicyRequirements(chain: UnverifiedCertificateChain) -> PolicyEvaluationResult {
        let addresses = XmppAddr.values(in: chain.leaf)
        if addresses.isEmpty { return .refuse(.missingXmppAddr, "leaf has no XmppAddr subjectAltName") }
        if addresses.contains(where: { XmppAddr.bare($0) == expectedJID }) { return .meetsPolicy }
        return .refuse(.xmppAddrMismatch, "leaf is for \(addresses.joined(separator: ",")), peer is \(expectedJID)")
    }
}

/// The leaf must be usable for signatures: key usage (if present) has digitalSignature, and
/// extended key usage (if present) allows clientAuth or serverAuth or any. Brokers prove possession
/// and sign envelopes with this key, so a key-encipherment-only certificate must not pass.
/// A leaf without a keyUsage extension is refused too: our profile requires it.
public struct BrokerKeyUsagePolicy: VerifierPolicy, Sendable {
    public let verifyingCriticalExtensions: [ASN1ObjectIdentifier] = [
        .X509ExtensionID.keyUsage, .X509ExtensionID.extendedKeyUsage,
    ]

    public init() {}

    public func chainMeetsPolicyRequirements(chain: UnverifiedCertificateChain) -> PolicyEvaluationResult {
        let leaf = chain.leaf
        guard let keyUsage = try? leaf.extensions.keyUsage else {
            return .refuse(.wrongKeyUsage, "leaf has no (valid) keyUsage extension")
        }
        guard keyUsage.digitalSignature else {
            return .refuse(.wrongKeyUsage, "leaf keyUsage \(keyUsage) lacks digitalSignature")
        }
        if let extended = try? leaf.extensions.extendedKeyUsage {
            let allowed: [ExtendedKeyUsage.Usage] = [.clientAuth, .serverAuth, .any]
            guard extended.contains(where: { allowed.contains($0) }) else {
                return .refuse(.wrongKeyUsage, "leaf extendedKeyUsage \(extended) allows neither clientAuth nor serverAuth")
            }
        }
        return .meetsPolicy
    }
}

/// Revocation against configured CRLs. For each certificate in the chain below the anchor, every
/// CRL whose issuer is that certificate's issuer *and* whose signature verifies with the issuer's
/// key is consulted; a CRL that does not verify is ignored (it could be forged), not trusted.
/// Stale CRLs (past nextUpdate) are still applied: a revocation stays a revocation, and refusing
/// everything when an operator forgets to refresh a CRL would be worse. Missing CRLs mean
/// "not revoked" (soft-fail), as no OCSP/CRL fetching exists between clouds.
public struct CRLRevocationPolicy: VerifierPolicy, Sendable {
    public let verifyingCriticalExtensions: [ASN1ObjectIdentifier] = []
    public var crls: [CertificateRevocationList]

    public init(crls: [CertificateRevocationList]) { self.crls = crls }

    public func chainMeetsPolicyRequirements(chain: UnverifiedCertificateChain) -> PolicyEvaluationResult {
        guard !crls.isEmpty else { return .meetsPolicy }
        let certificates = Array(chain)
        for index in certificates.indices.dropLast() {
            let certificate = certificates[index]
            let issuer = certificates[index + 1]
            for crl in crls where crl.isRevoked(certificate) && crl.isSigned(by: issuer) {
                let role = index == 0 ? "leaf" : "CA \(certificate.subject)"
                return .refuse(.revoked, "\(role) serial \(certificate.serialNumber) revoked by \(crl.issuer)")
            }
        }
        return .meetsPolicy
    }
}

import Foundation
import Policy
import Trust

/// An agreement as a self-contained file anyone can check offline (`intercloud agreement export`
/// writes it, `intercloud agreement verify` checks it): the exact signed text, both detached
/// signatures and both certificate chains.
///
/// ```json
/// { "format": "urn:intercloud:signed-agreement:0",
///   "canonical": "format=urn:intercloud:agreement:0\nid=agr-…\n…",   // the bytes both signed
///   "agreement": { … },                                              // the same, as a record
///   "provider": { "jid": "…", "signature": "BASE64 (DER ECDSA)", "chain": "PEM, leaf first" },
///   "consumer": { … } }
/// ```
/// Verification never trusts the `agreement` record alone: it must re-encode to `canonical`
/// exactly, and the signatures are checked over `canonical`.
public struct SignedAgreementDocument: Codable, Sendable, Hashable {
    public static let formatName = "urn:intercloud:signed-agreement:0"

    public struct Party: Codable, Sendable, Hashable {
        public var jid: String
        public var signature: String
        public var chain: String
    }

    public var format: String
    public var canonical: String
    public var agreement: Agreement
    public var provider: Party
    public var consumer: Party

    /// One line of `agreement verify`.
    public struct Check: Sendable, Hashable, Codable {
        public var name: String
        public var passed: Bool
        public var detail: String
    }

    public struct NotSigned: Error, CustomStringConvertible {
        public var description: String
    }

    public init(stored: NegotiationStore.StoredAgreement) throws {
        guard let consumerSignature = stored.consumerSignature, let consumerChain = stored.consumerChainPEM else {
            throw NotSigned(description: "agreement \(stored.agreement.id) is \(stored.state.rawValue): the consumer has not countersigned it")
        }
        format = Self.formatName
        canonical = String(decoding: stored.canonical, as: UTF8.self)
        agreement = stored.agreement
        provider = Party(jid: stored.agreement.provider, signature: Data(stored.providerSignature).base64EncodedString(), chain: stored.providerChainPEM)
        consumer = Party(jid: stored.agreement.consumer, signature: Data(consumerSignature).base64EncodedString(), chain: consumerChain)
    }

    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .secondsSince1970
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self)
    }

    public static func decode(_ data: Data) throws -> SignedAgreementDocument {
        guard data.count <= 1 << 20 else { throw NotSigned(description: "file larger than 1 MiB") }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .secondsSince1970
        return try decoder.decode(SignedAgreementDocument.self, from: data)
    }

    /// Every check, in order; the document is valid when all pass. With `anchors`, both chains must
    /// also validate to them (RFC 5280, XmppAddr = party) at the agreement's creation time.
    public func verify(anchors: TrustAnchors? = nil) async -> [Check] {
        var checks: [Check] = []
        checks.append(Check(name: "format", passed: format == Self.formatName, detail: format))
        let reencoded = String(decoding: agreement.canonicalBytes(), as: UTF8.self)
        checks.append(Check(
            name: "canonical text matches the agreement record", passed: reencoded == canonical,
            detail: reencoded == canonical ? "\(canonical.utf8.count) bytes" : "the record and the signed text differ"))
        let bytes = Array(canonical.utf8)
        for (role, party, named) in [("provider", provider, agreement.provider), ("consumer", consumer, agreement.consumer)] {
            checks.append(Check(name: "\(role) is \(named)", passed: party.jid == named, detail: party.jid))
            guard let chain = try? PEMFiles.certificates(fromPEM: party.chain) else {
                checks.append(Check(name: "\(role) certificate", passed: false, detail: "unreadable PEM chain"))
                continue
            }
            guard let leaf = chain.first else {
                checks.append(Check(name: "\(role) certificate", passed: false, detail: "empty chain"))
                continue
            }
            let names = XmppAddr.values(in: leaf)
            checks.append(Check(
                name: "\(role) certificate names \(named)", passed: names.contains(XmppAddr.bare(named)),
                detail: "XmppAddr \(names.joined(separator: ", ")); fingerprint \(CertificateFingerprint.sha256(leaf))"))
            let signature = Data(base64Encoded: party.signature).map(Array.init) ?? []
            let valid = !signature.isEmpty && DetachedSignature.isValid(signature, for: bytes, signedBy: leaf)
            checks.append(Check(name: "\(role) signature", passed: valid, detail: valid ? "verifies with the \(role)'s leaf key" : "does not verify"))
            if let anchors {
                let verifier = PeerVerifier(configuration: anchors)
                switch await verifier.verify(chain: chain, peerJID: named, at: agreement.createdAt) {
                case .success: checks.append(Check(name: "\(role) chain", passed: true, detail: "valid to a trust anchor at \(agreement.createdAt)"))
                case .failure(let refusal): checks.append(Check(name: "\(role) chain", passed: false, detail: refusal.description))
                }
            }
        }
        return checks
    }
}

import Foundation
import Testing
import X509

@testable import Trust

/// Interop with the `openssl` CLI: it accepts the chains we make, and we accept chains (and CRLs)
/// it makes with `certs/openssl.cnf`. These use the real clock, since openssl does.
@Suite struct OpenSSLInteropTests {
    @Test func opensslVerifiesChainsWeMake() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = { (name: String) in directory.appendingPathComponent(name).path }
        try CertificateFiles.initCA(directory: path("root"), commonName: "Intercloud Root", organization: "Intercloud")
        try CertificateFiles.initCA(directory: path("cloud1-ca"), commonName: "cloud1 CA", parentDirectory: path("root"))
        let identity = try CertificateFiles.issue(caDirectory: path("cloud1-ca"), jid: "broker@cloud1.test", outputDirectory: path("broker"))

        let (status, output) = try run([
            "openssl", "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", path("root/ca.pem"),
            "-untrusted", path("broker/broker-chain.pem"), path("broker/broker-chain.pem"),
        ])
        #expect(status == 0, "\(output)")
        #expect(output.contains(": OK"))

        let (_, text) = try run(["openssl", "x509", "-in", path("broker/broker-chain.pem"), "-noout", "-text"])
        #expect(text.contains("othername: XmppAddr::broker@cloud1.test"))
        #expect(text.contains("Digital Signature"))

        let (_, fingerprint) = try run(["openssl", "x509", "-in", path("broker/broker-chain.pem"), "-noout", "-fingerprint", "-sha256"])
        #expect(fingerprint.replacingOccurrences(of: ":", with: "").lowercased().contains(identity.fingerprint))

        // The private key is readable by openssl and matches the certificate.
        let (keyStatus, keyOutput) = try run(["openssl", "pkey", "-in", path("broker/broker.key"), "-pubout"])
        #expect(keyStatus == 0, "\(keyOutput)")
        let (_, certKey) = try run(["openssl", "x509", "-in", path("broker/broker-chain.pem"), "-noout", "-pubkey"])
        #expect(keyOutput == certKey)
    }

    @Test func opensslVerifiesCRLsWeMake() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let now = Date()
        let root = try CertificateAuthority.makeRoot(commonName: "Intercloud Root", notBefore: now - 3600)
        let ca = try root.makeIntermediate(commonName: "cloud1 CA", notBefore: now - 3600)
        let identity = try ca.issueBrokerIdentity(jid: "broker@cloud1.test", notBefore: now - 3600)
        let crl = try CertificateRevocationList.make(
            issuer: ca, revoked: [(identity.leaf.serialNumber, now - 60)], thisUpdate: now - 60, nextUpdate: now + 86_400)
        try PEMFiles.writeCertificates([root.certificate], toPath: directory.appendingPathComponent("root.pem").path)
        try PEMFiles.writeCertificates(identity.chain, toPath: directory.appendingPathComponent("chain.pem").path)
        try Data(crl.pemString.utf8).write(to: directory.appendingPathComponent("ca.crl"))
        let (crlStatus, crlText) = try run([
            "openssl", "crl", "-in", directory.appendingPathComponent("ca.crl").path, "-noout", "-text",
            "-CAfile", directory.appendingPathComponent("chain.pem").path,
        ])
        #expect(crlStatus == 0, "\(crlText)")
        let (status, output) = try run([
            "openssl", "verify", "-crl_check", "-CAfile", directory.appendingPathComponent("root.pem").path,
            "-untrusted", directory.appendingPathComponent("chain.pem").path,
            "-CRLfile", directory.appendingPathComponent("ca.crl").path, directory.appendingPathComponent("chain.pem").path,
        ])
        #expect(status != 0)
        #expect(output.contains("certificate revoked"), "\(output)")
    }

    /// The README's OpenSSL recipe, run for real; our verifier must accept the result, then refuse
    /// it once `openssl ca` revoked it.
    @Test func weAcceptChainsAndCRLsMadeByOpenSSL() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = certsDirectory.appendingPathComponent("openssl.cnf").path
        let env = ["JID": "broker@cloud1.test", "CA_DIR": "cloud1-ca"]
        let steps: [[String]] = [
            ["mkdir", "-p", "cloud1-ca/newcerts"], ["touch", "cloud1-ca/index.txt"],
            ["sh", "-c", "echo 1000 > cloud1-ca/serial && echo 01 > cloud1-ca/crlnumber"],
            ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "root.key"],
            ["openssl", "req", "-x509", "-new", "-key", "root.key", "-subj", "/O=Intercloud/CN=Intercloud Root", "-days", "30",
             "-config", config, "-extensions", "intercloud_root", "-out", "root.pem"],
            ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "cloud1-ca/ca.key"],
            ["openssl", "req", "-new", "-key", "cloud1-ca/ca.key", "-subj", "/O=cloud1/CN=cloud1 CA", "-config", config, "-out", "ca.csr"],
            ["openssl", "x509", "-req", "-in", "ca.csr", "-CA", "root.pem", "-CAkey", "root.key", "-days", "30",
             "-extfile", config, "-extensions", "cloud_ca", "-out", "cloud1-ca/ca.pem"],
            ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "broker.key"],
            ["openssl", "req", "-new", "-key", "broker.key", "-subj", "/CN=broker@cloud1.test", "-config", config, "-out", "broker.csr"],
            ["openssl", "ca", "-batch", "-config", config, "-in", "broker.csr", "-out", "broker.pem", "-notext"],
            ["sh", "-c", "cat broker.pem cloud1-ca/ca.pem > broker-chain.pem"],
        ]
        for step in steps {
            let (status, output) = try run(step, environment: env, in: directory)
            try #require(status == 0, "\(step.joined(separator: " ")): \(output)")
        }
        let path = { (name: String) in directory.appendingPathComponent(name).path }
        // PKCS#8 key from openssl loads as a broker identity.
        let identity = try BrokerIdentity.load(keyPath: path("broker.key"), chainPath: path("broker-chain.pem"))
        #expect(identity.jids == ["broker@cloud1.test"])
        let anchors = try TrustAnchors.load(anchorPaths: [path("root.pem")])
        let verified = await PeerVerifier(configuration: anchors).verify(chain: identity.chain, peerJID: "broker@cloud1.test", at: Date())
        #expect(try verified.get().fingerprint == identity.fingerprint)

        // And a full handshake with a broker whose chain we made ourselves.
        let now = Date()
        let ourRoot = try CertificateAuthority.makeRoot(commonName: "cloud2 root", notBefore: now - 3600)
        let ours = try ourRoot.issueBrokerIdentity(jid: "broker@cloud2.test", notBefore: now - 3600)
        let a = try TestBroker(jid: "broker@cloud1.test", identity: identity, anchors: [ourRoot.certificate], now: now)
        let b = try TestBroker(jid: "broker@cloud2.test", identity: ours, anchors: anchors.anchors, now: now)
        defer { a.remove(); b.remove() }
        _ = try await runHandshake(a, b).get()
        #expect(try b.store.pin(for: "broker@cloud1.test")?.fingerprint == identity.fingerprint)

        // Revoke with openssl; our CRL parser and policy refuse the chain.
        for step in [["openssl", "ca", "-config", config, "-revoke", "broker.pem"],
                     ["openssl", "ca", "-config", config, "-gencrl", "-out", "cloud1-ca.crl"]] {
            let (status, output) = try run(step, environment: env, in: directory)
            try #require(status == 0, "\(output)")
        }
        let withCRL = try TrustAnchors.load(anchorPaths: [path("root.pem")], crlPaths: [path("cloud1-ca.crl")])
        #expect(withCRL.crls.count == 1)
        #expect(withCRL.crls[0].isSigned(by: try PEMFiles.certificates(atPath: path("cloud1-ca/ca.pem"))[0]))
        let refused = await PeerVerifier(configuration: withCRL).verify(chain: identity.chain, peerJID: "broker@cloud1.test", at: Date())
        guard case .failure(let refusal) = refused else { Issue.record("revoked chain accepted"); return }
        #expect(refusal.reason == .revoked)

        // DER form of the same CRL.
        let (derStatus, _) = try run(["openssl", "crl", "-in", "cloud1-ca.crl", "-outform", "DER", "-out", "cloud1-ca.der.crl"], in: directory)
        #expect(derStatus == 0)
        let der = try CertificateRevocationList(fileContents: try Data(contentsOf: directory.appendingPathComponent("cloud1-ca.der.crl")))
        #expect(der.revokedSerialNumbers == withCRL.crls[0].revokedSerialNumbers)
    }
}

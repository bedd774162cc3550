import Foundation
import SwiftASN1
import Testing
import Trust
import X509

@testable import Transfer

@Suite struct IdentityLoadingTests {
    @Test func loadsTheFilesTrustWritesAndTheSameDER() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let root = try CertificateAuthority.makeRoot(commonName: "root", notBefore: Date() - 86_400)
        let identity = try root.issueBrokerIdentity(jid: "broker@cloud9.test", notBefore: Date() - 3600)
        let keyPath = directory.appendingPathComponent("broker.key").path
        let chainPath = directory.appendingPathComponent("broker-chain.pem").path
        try identity.save(keyPath: keyPath, chainPath: chainPath)

        let fromFiles = try TransferIdentity(
            certificateChainFile: URL(fileURLWithPath: chainPath), privateKeyFile: URL(fileURLWithPath: keyPath))
        #expect(fromFiles.fingerprint == identity.fingerprint)
        let fromDER = try TransferIdentity(
            certificateChainDER: fromFiles.certificateChainDER, privateKeyDER: fromFiles.privateKeyDER)
        #expect(fromDER == fromFiles)
    }

    @Test func refusesAKeyThatIsNotTheLeafs() throws {
        let root = try CertificateAuthority.makeRoot(commonName: "root", notBefore: Date() - 86_400)
        let one = try root.issueBrokerIdentity(jid: "a@cloud9.test", notBefore: Date() - 3600)
        let other = try root.issueBrokerIdentity(jid: "b@cloud9.test", notBefore: Date() - 3600)
        #expect(throws: TransferError.self) {
            try TransferIdentity(
                certificateChainPEM: try PEMFiles.pem(one.chain), privateKeyPEM: try other.privateKey.serializeAsPEM().pemString)
        }
        #expect(throws: TransferError.self) {
            try TransferIdentity(certificateChainPEM: "not a certificate", privateKeyPEM: "nor a key")
        }
    }

    @Test func offerCarriesSizeHashAndAFreshToken() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("image.raw")
        let digest = try makeFile(at: file, size: 3 * 1024 * 1024 + 7)
        let offer = try await TransferOffer.prepare(for: file)
        #expect(offer.fileSize == 3 * 1024 * 1024 + 7)
        #expect(offer.sha256 == digest)
        #expect(offer.token.count == 64)
        #expect(offer.token != (try await TransferOffer.prepare(for: file)).token)
    }

    @Test func senderGivesUpAfterItsAttempts() async throws {
        let brokers = try TestBrokers.make()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("image.raw")
        _ = try makeFile(at: file, size: 4096)
        // A port nobody listens on: bind one, note it, close it.
        let (fd, port) = try Sockets.listen(host: "127.0.0.1", port: 0)
        close(fd)
        let sender = TransferSender(
            identity: brokers.source, options: .init(retry: RetryPolicy(maximumAttempts: 3, initialBackoff: 0.01)))
        let started = Date()
        let error = await #expect(throws: TransferError.self) {
            try await sender.send(
                file: file, host: "127.0.0.1", port: port, transferID: "t", token: "x",
                expectedPeerFingerprint: brokers.destination.fingerprint)
        }
        guard case .connectionFailed = error else {
            Issue.record("expected connectionFailed, got \(String(describing: error))")
            return
        }
        #expect(Date().timeIntervalSince(started) >= 0.03)  // two backoffs: 0.01 + 0.02
    }
}

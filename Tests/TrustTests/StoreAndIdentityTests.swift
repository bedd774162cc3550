import Foundation
import Testing
import X509

@testable import Trust

@Suite struct IdentityTests {
    @Test func leafCarriesXmppAddrAndSignsWithItsKey() throws {
        let cloud = try TestPKI.cloud("cloud1")
        #expect(cloud.identity.jids == ["broker@cloud1.test"])
        #expect(XmppAddr.values(in: cloud.identity.leaf) == ["broker@cloud1.test"])
        let signature = try cloud.identity.sign(Array("hello".utf8))
        #expect(SignatureScheme.isValid(signature: signature, for: Array("hello".utf8), key: cloud.identity.leaf.publicKey))
        #expect(!SignatureScheme.isValid(signature: signature, for: Array("hellO".utf8), key: cloud.identity.leaf.publicKey))
        #expect(XmppAddr.bare("Broker@Cloud1.TEST/res") == "broker@cloud1.test")
    }

    @Test func filesRoundTripWithPrivateKeyMode0600() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let root = try CertificateFiles.initCA(directory: directory.appendingPathComponent("root").path, commonName: "Intercloud Root", now: TestPKI.now)
        let ca = try CertificateFiles.initCA(
            directory: directory.appendingPathComponent("cloud1-ca").path, commonName: "cloud1 CA",
            parentDirectory: directory.appendingPathComponent("root").path, now: TestPKI.now)
        #expect(ca.chain.count == 2)
        let issued = try CertificateFiles.issue(
            caDirectory: directory.appendingPathComponent("cloud1-ca").path, jid: "broker@cloud1.test",
            outputDirectory: directory.appendingPathComponent("broker").path, now: TestPKI.now)
        let keyPath = directory.appendingPathComponent("broker/broker.key").path
        let attributes = try FileManager.default.attributesOfItem(atPath: keyPath)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        let caKeyAttributes = try FileManager.default.attributesOfItem(atPath: directory.appendingPathComponent("root/ca.key").path)
        #expect((caKeyAttributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)

        let loaded = try BrokerIdentity.load(keyPath: keyPath, chainPath: directory.appendingPathComponent("broker/broker-chain.pem").path)
        #expect(loaded.chain == issued.chain)
        #expect(loaded.privateKey.publicKey == issued.privateKey.publicKey)
        #expect(throws: TrustSetupError.self) {
            try CertificateFiles.issue(
                caDirectory: directory.appendingPathComponent("cloud1-ca").path, jid: "broker@cloud1.test",
                outputDirectory: directory.appendingPathComponent("broker").path)
        }

        let summaries = try CertificateFiles.show(path: directory.appendingPathComponent("broker/broker-chain.pem").path)
        #expect(summaries.count == 2)
        #expect(summaries[0].xmppAddrs == ["broker@cloud1.test"])
        #expect(summaries[0].sha256Fingerprint == issued.fingerprint)
        #expect(!summaries[0].isCertificateAuthority && summaries[1].isCertificateAuthority)
        #expect(summaries[0].text.contains("XmppAddr:    broker@cloud1.test"))
        _ = root
    }
}

@Suite struct RevocationListTests {
    @Test func madeCRLParsesAndVerifies() throws {
        let cloud = try TestPKI.cloud("cloud1")
        let other = try TestPKI.cloud("cloud2")
        let crl = try CertificateRevocationList.make(
            issuer: cloud.ca, revoked: [(cloud.identity.leaf.serialNumber, TestPKI.now)], thisUpdate: TestPKI.now,
            nextUpdate: TestPKI.now + TestPKI.day)
        let parsed = try CertificateRevocationList(fileContents: Data(crl.pemString.utf8))
        #expect(parsed == crl)
        #expect(parsed.thisUpdate == TestPKI.now)
        #expect(parsed.nextUpdate == TestPKI.now + TestPKI.day)
        #expect(parsed.isSigned(by: cloud.ca.certificate))
        #expect(!parsed.isSigned(by: other.ca.certificate))
        #expect(parsed.isRevoked(cloud.identity.leaf))
        #expect(!parsed.isRevoked(other.identity.leaf))
        #expect(throws: (any Error).self) { try CertificateRevocationList(derEncoded: [0x30, 0x03, 0x02, 0x01, 0x01]) }
    }
}

@Suite struct AuditLogTests {
    @Test func filtersByPeerKindOutcomeAndTime() async throws {
        let cloud = try TestPKI.cloud("cloud1")
        let broker = try TestBroker(jid: cloud.jid, identity: cloud.identity, anchors: [])
        defer { broker.remove() }
        let log = broker.audit
        let t0 = TestPKI.now
        try await log.offPool.record(AuditEvent(at: t0, module: "trust", kind: "trust.handshake", peer: "a@x.test", action: "respond", outcome: .refused, reason: "unknownCA"))
        try await log.offPool.record(AuditEvent(at: t0 + 10, module: "catalog", kind: "catalog.query", peer: "a@x.test", action: "query", outcome: .refused, reason: "notEntitled"))
        try await log.offPool.refused(module: "trust", kind: "trust.envelope", peer: "b@y.test/res", action: "urn:intercloud:catalog:0", reason: "replayed", at: t0 + 20)
        try await log.offPool.record(AuditEvent(at: t0 + 30, module: "trust", kind: "trust.handshake", peer: "b@y.test", action: "initiate", outcome: .accepted, reason: "trusted"))

        #expect(try log.events().map(\.reason) == ["trusted", "replayed", "notEntitled", "unknownCA"])
        #expect(try log.events(matching: AuditQuery(peer: "a@x.test")).count == 2)
        #expect(try log.events(matching: AuditQuery(peer: "b@y.test")).count == 2)
        #expect(try log.events(matching: AuditQuery(kind: "trust.")).count == 3)
        #expect(try log.events(matching: AuditQuery(kind: "trust.handshake", outcome: .refused)).map(\.peer) == ["a@x.test"])
        #expect(try log.events(matching: AuditQuery(since: t0 + 15)).count == 2)
        #expect(try log.events(matching: AuditQuery(module: "catalog")).first?.reason == "notEntitled")
        #expect(try log.events(matching: AuditQuery(limit: 1)).count == 1)

        let json = try AuditReport.json(try log.events(matching: AuditQuery(peer: "a@x.test")))
        let decoded = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]]
        #expect(decoded?.count == 2)
        #expect(AuditReport.table(try log.events()).split(separator: "\n").count == 5)
        #expect(AuditQuery.parseTime("2h", now: t0) == t0 - 7200)
        #expect(AuditQuery.parseTime("1970-01-01T00:01:00Z", now: t0) == Date(timeIntervalSince1970: 60))
        #expect(AuditQuery.parseTime("yesterday", now: t0) == nil)
    }

    @Test func operatorTableListsPins() async throws {
        let cloud1 = try TestPKI.cloud("cloud1")
        let cloud2 = try TestPKI.cloud("cloud2")
        let a = try TestBroker(jid: cloud1.jid, identity: cloud1.identity, anchors: [cloud2.root.certificate])
        let b = try TestBroker(jid: cloud2.jid, identity: cloud2.identity, anchors: [cloud1.root.certificate])
        defer { a.remove(); b.remove() }
        _ = try await runHandshake(a, b).get()
        let ops = TrustOperator(store: a.store, audit: a.audit)
        try ops.distrust("eve@cloud9.test", at: TestPKI.now)
        let table = TrustOperator.table(try ops.list())
        #expect(table.contains("broker@cloud2.test  trusted"))
        #expect(table.contains("eve@cloud9.test"))
        #expect(try ops.list(state: .distrusted).map(\.jid) == ["eve@cloud9.test"])
        #expect(try ops.allow("eve@cloud9.test", at: TestPKI.now) == nil)
        #expect(try ops.list().count == 1)
    }
}

import Foundation
import GRDB
import Storage
import Testing
import X509

@testable import Trust
import XMLModel

/// PKI generated in code for every test run: two clouds with their own roots and per-cloud
/// intermediates, at a fixed instant so validity cases are deterministic.
enum TestPKI {
    static let now = Date(timeIntervalSince1970: 1_790_000_000)  // 2026-09-21
    static let day: TimeInterval = 86_400

    struct Cloud: Sendable {
        var jid: String
        var root: CertificateAuthority
        var ca: CertificateAuthority
        var identity: BrokerIdentity
    }

    static func cloud(_ name: String, jid: String? = nil) throws -> Cloud {
        let jid = jid ?? "broker@\(name).test"
        let root = try CertificateAuthority.makeRoot(commonName: "\(name) root", organization: name, notBefore: now - 30 * day)
        let ca = try root.makeIntermediate(commonName: "\(name) CA", organization: name, notBefore: now - 30 * day)
        let identity = try ca.issueBrokerIdentity(jid: jid, notBefore: now - day)
        return Cloud(jid: jid, root: root, ca: ca, identity: identity)
    }
}

/// A broker's trust side with its own temporary database.
struct TestBroker: Sendable {
    var jid: String
    var service: TrustService
    var database: DatabasePool
    var directory: URL

    init(
        jid: String, identity: BrokerIdentity, anchors: [Certificate], crls: [CertificateRevocationList] = [],
        scopes: [Certificate: [String]] = [:], keyChange: KeyChangePolicy = .sameAnchor, now: Date = TestPKI.now
    ) throws {
        let (pool, directory) = try IntercloudDatabase.temporary(schema: [TrustSchema.self, AuditSchema.self])
        self.jid = jid
        self.database = pool
        self.directory = directory
        self.service = TrustService(
            myJID: jid, identity: identity, anchors: TrustAnchors(anchors: anchors, crls: crls, scopes: scopes, keyChange: keyChange),
            database: pool,
            clock: { now })
    }

    var store: TrustStore { service.store }
    var audit: AuditLog { service.audit }

    func auditEvents(_ query: AuditQuery = AuditQuery()) throws -> [AuditEvent] { try audit.events(matching: query) }

    func remove() {
        service.close()
        try? FileManager.default.removeItem(at: directory)
    }
}

/// `body` must throw the envelope refusal `code`, and `broker` must have audited it (latest first).
func expectEnvelopeRefused(
    _ code: EnvelopeError.Code, at broker: TestBroker, _ body: () async throws -> Void,
    sourceLocation: SourceLocation = #_sourceLocation
) async throws {
    do {
        try await body()
        Issue.record("envelope accepted", sourceLocation: sourceLocation)
    } catch let error as EnvelopeError {
        #expect(error.code == code, sourceLocation: sourceLocation)
        #expect(error.stanzaErrorCondition == "not-authorized", sourceLocation: sourceLocation)
    }
    let audited = try broker.auditEvents(AuditQuery(kind: "trust.envelope"))
    #expect(audited.first?.reason == code.rawValue, sourceLocation: sourceLocation)
    #expect(audited.first?.outcome == .refused, sourceLocation: sourceLocation)
}

/// Wires `initiator`'s handshake straight to `responder.handleRequest`, as two brokers talking over
/// XMPP would, and records every payload crossing the wire.
final class WireLog: @unchecked Sendable {
    // @unchecked: test-only recorder; accessed under `lock`.
    private let lock = NSLock()
    private var _entries: [(request: String, answer: String)] = []
    var entries: [(request: String, answer: String)] { lock.withLock { _entries } }
    func append(_ request: String, _ answer: String) { lock.withLock { _entries.append((request, answer)) } }
}

func runHandshake(
    _ initiator: TestBroker, _ responder: TestBroker, log: WireLog = WireLog()
) async -> Result<PeerPin, TrustRefusal> {
    let responderService = responder.service
    let initiatorJID = initiator.jid
    return await initiator.service.handshake(with: responder.jid) { payload in
        let answer: XMLElement?
        switch await responderService.handleRequest(from: initiatorJID, payload: payload) {
        case .result(let reply): answer = reply
        case .error(_, let reply): answer = reply
        }
        log.append(payload.serialized(), answer?.serialized() ?? "")
        return answer
    }
}

/// Runs a command, returning (status, stdout+stderr).
@discardableResult
func run(_ arguments: [String], environment: [String: String] = [:], in directory: URL? = nil) throws -> (Int32, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    env.merge(environment) { $1 }
    process.environment = env
    if let directory { process.currentDirectoryURL = directory }
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("trust-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// The repository's `certs/` directory, found from this source file.
let certsDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("certs")

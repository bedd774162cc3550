import Broker
import Discovery
import Foundation
import TestSupport
import Trust
import XMPP

/// PKI made in code with the Trust library and written to PEM files next to the broker
/// configurations, as an operator would lay them out (paths in [trust] relative to the config).
struct TrustFixture {
    let brokers: BrokerFixture
    var directory: URL { brokers.directory }
    static let day: TimeInterval = 86_400

    /// A root CA, written as `<name>.pem` (what peers list in their anchors).
    func root(_ name: String) throws -> (ca: CertificateAuthority, path: String) {
        let ca = try CertificateAuthority.makeRoot(commonName: "\(name) root", notBefore: Date() - Self.day)
        let path = directory.appendingPathComponent("\(name)-root.pem").path
        try PEMFiles.writeCertificates([ca.certificate], toPath: path)
        return (ca, path)
    }

    /// A broker account plus its configuration with a [trust] section: a leaf for the account's
    /// JID issued by `issuer`, trusting the `anchors` files.
    func broker(
        cloud: String, host: String, rooms: [String] = [], issuer: CertificateAuthority, anchors: [String],
        crls: [String] = [], retrySeconds: Double = 300, account: (jid: String, password: String)? = nil,
        leafFile: String? = nil
    ) throws -> (config: BrokerConfiguration, jid: String, identity: BrokerIdentity) {
        let account = try account ?? brokers.server.freshAccount(prefix: "broker-\(cloud)", host: host)
        let identity = try issuer.issueBrokerIdentity(jid: account.jid, notBefore: Date() - Self.day)
        let (config, jid) = try configuration(
            cloud: cloud, host: host, rooms: rooms, identity: identity, anchors: anchors, crls: crls,
            retrySeconds: retrySeconds, account: account, leafFile: leafFile)
        return (config, jid, identity)
    }

    /// Writes `identity` and a configuration using it (relative paths, as an operator would).
    func configuration(
        cloud: String, host: String, rooms: [String] = [], identity: BrokerIdentity, anchors: [String],
        crls: [String] = [], retrySeconds: Double = 300, account: (jid: String, password: String), leafFile: String? = nil
    ) throws -> (BrokerConfiguration, jid: String) {
        let name = leafFile ?? "\(cloud)-\(UUID().uuidString.prefix(6))"
        try identity.save(
            keyPath: directory.appendingPathComponent("\(name).key").path,
            chainPath: directory.appendingPathComponent("\(name)-chain.pem").path)
        let list = { (values: [String]) in values.map { "\"\($0)\"" }.joined(separator: ", ") }
        let toml = """
            [trust]
            key = "\(name).key"
            chain = "\(name)-chain.pem"
            anchors = [\(list(anchors))]
            crls = [\(list(crls))]
            retry_seconds = \(retrySeconds)
            """
        return try brokers.configuration(cloud: cloud, host: host, rooms: rooms, account: account, extraTOML: toml)
    }
}

extension RunningBroker {
    var trust: BrokerTrust { node.trust! }

    func pin(_ jid: String) -> PeerPin? { (try? trust.service.store.pin(for: jid)) ?? nil }

    func isTrusted(_ jid: String) -> Bool { pin(jid)?.state == .trusted }

    func trustStatus(_ jid: String) -> String {
        guard let record = peer(jid) else { return "(unknown peer)" }
        return (try? node.registry.trustStatus(of: record).description) ?? "(error)"
    }

    /// Audit events, newest first, after writing the summaries of refusals still counted in open
    /// aggregation windows (a summary row's `count` says how many refusals it stands for).
    func auditEvents(peer: String? = nil, kind: String? = nil) -> [AuditEvent] {
        _ = try? node.audit.drainAggregated()
        return (try? node.audit.events(matching: AuditQuery(peer: peer, kind: kind))) ?? []
    }

    /// The full JID brokers use in these tests (`jid/broker`).
    static func full(_ jid: String) throws -> JID { try JID(jid + "/broker") }
}

/// An XMPP client that is not a broker: a stranger on the same server.
func strangerClient(_ server: TestProsody, host: String) async throws -> (XMPPClient, jid: String) {
    let account = try server.freshAccount(prefix: "stranger", host: host)
    let client = XMPPClient(configuration: .init(
        jid: try JID(account.jid + "/s"), password: account.password, host: "127.0.0.1", port: server.port,
        tls: .required(caFile: server.caFile)))
    client.start()
    try await client.waitUntilOnline()
    return (client, account.jid)
}

/// The stanza error condition an IQ failed with, or nil if it succeeded / failed otherwise.
func stanzaCondition(_ body: () async throws -> Void) async -> String? {
    do {
        try await body()
        return nil
    } catch XMPPError.stanza(let error) {
        return error.condition
    } catch {
        return "\(error)"
    }
}

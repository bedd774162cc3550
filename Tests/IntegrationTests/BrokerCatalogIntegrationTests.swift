import Broker
import Catalog
import CatalogQueries
import Foundation
import TestSupport
import Testing
import Trust
import XMPP
import XMLModel

/// Catalog queries between trusted brokers over a real Prosody (issue 4, parts 6 and 7), with the
/// in-code PKI of the trust tests. Serialized for the same reason as `BrokerTrustIntegrationTests`:
/// several TLS + SCRAM clients per test overload the shared server when run in parallel.
@Suite(.serialized, .timeLimit(.minutes(3))) struct BrokerCatalogIntegrationTests {
    let server: TestProsody

    init() throws { server = try TestProsody.shared() }
    static let prefixes = "PREFIX ic: <https://intercloud.example.org/ontology#>\n"
    static let offeringNames = prefixes + "SELECT ?name ?price WHERE { ?o a ic:Offering ; ic:name ?name ; ic:pricePerHour ?price } ORDER BY ?name"

    func uniqueRoom() -> String { "exchange-\(UUID().uuidString.prefix(8).lowercased())@conference.cloud1.test" }

    static func turtle(cloud: String, offerings: [(name: String, vcpu: Int, price: String)]) -> String {
        var text = "@prefix ic: <https://intercloud.example.org/ontology#> .\n"
        for offering in offerings {
            text += """
                <urn:intercloud:cloud:\(cloud)/offering/\(offering.name)> a ic:Offering ;
                    ic:name "\(offering.name)" ; ic:vcpu \(offering.vcpu) ; ic:pricePerHour \(offering.price) ;
                    ic:currency "EUR" ; ic:operatedBy <urn:intercloud:cloud:\(cloud)> .

                """
        }
        return text
    }

    /// A broker with [trust] (leaf from `ca`, anchored at `anchor`) and a [catalog] holding one
    /// Turtle file (relative path, as an operator would write it).
    func broker(
        _ fixture: TrustFixture, cloud: String, host: String, room: String, ca: CertificateAuthority, anchor: String,
        offerings: [(name: String, vcpu: Int, price: String)], maxResults: Int = 5
    ) throws -> (config: BrokerConfiguration, jid: String) {
        let account = try server.freshAccount(prefix: "broker-\(cloud)", host: host)
        let identity = try ca.issueBrokerIdentity(jid: account.jid, notBefore: Date() - TrustFixture.day)
        let name = "\(cloud)-\(UUID().uuidString.prefix(6))"
        try identity.save(
            keyPath: fixture.directory.appendingPathComponent("\(name).key").path,
            chainPath: fixture.directory.appendingPathComponent("\(name)-chain.pem").path)
        try Self.turtle(cloud: cloud, offerings: offerings)
            .write(to: fixture.directory.appendingPathComponent("\(name).ttl"), atomically: true, encoding: .utf8)
        let toml = """
            [trust]
            key = "\(name).key"
            chain = "\(name)-chain.pem"
            anchors = ["\(anchor)"]

            [catalog]
            files = ["\(name).ttl"]
            timeout_ms = 5000
            max_results = \(maxResults)
            """
        return try fixture.brokers.configuration(cloud: cloud, host: host, rooms: [room], account: account, extraTOML: toml)
    }

    /// Brokers for cloud2 and cloud3 (and cloud1) under one root, all trusting it: every pair pins.
    func trustedBrokers(_ clouds: [String]) async throws -> (TrustFixture, [(broker: RunningBroker, jid: String, config: BrokerConfiguration)]) {
        let fixture = TrustFixture(brokers: BrokerFixture(server: server))
        let room = uniqueRoom()
        let root = try fixture.root("root")
        var running: [(broker: RunningBroker, jid: String, config: BrokerConfiguration)] = []
        for cloud in clouds {
            let (config, jid) = try broker(
                fixture, cloud: cloud, host: cloud == "cloud2" ? "cloud2.test" : "cloud1.test", room: room, ca: root.ca, anchor: root.path,
                offerings: [("\(cloud)-small", 2, "0.05"), ("\(cloud)-large", 8, "0.40")])
            running.append((try RunningBroker(configuration: config), jid, config))
        }
        #expect(await eventually(timeout: .seconds(30)) {
            running.allSatisfy { a in running.allSatisfy { b in a.jid == b.jid || (a.broker.isTrusted(b.jid) && a.broker.trustStatus(b.jid) == "trusted") } }
        })
        return (fixture, running)
    }

    /// A peer whose query keeps the engine busy holds one of the two query slots, never both: a
    /// second query of its own is refused at once while another peer's still runs.
    @Test func onePeerHoldsAtMostItsShareOfTheQuerySlots() async throws {
        let fixture = TrustFixture(brokers: BrokerFixture(server: server))
        let root = try fixture.root("root")
        let (config, _) = try broker(
            fixture, cloud: "cloud1", host: "cloud1.test", room: uniqueRoom(), ca: root.ca, anchor: root.path,
            offerings: [("m1", 4, "0.10"), ("m2", 8, "0.20")])
        let catalog = try BrokerCatalog(configuration: config)
        // A polynomially backtracking match on 20 000 characters: runs until its time limit.
        let endless = "SELECT ?m WHERE { BIND(REGEX(\"\(String(repeating: "a", count: 20_000))\", \".*.*.*.*.*.*x\") AS ?m) }"
        let limits = QueryLimits(timeout: .seconds(3), maxResults: 5, maxQueryBytes: CatalogProtocol.maxQueryBytes)
        let busy = Task { await catalog.run(endless, limits: limits, for: "mallory@cloud3.test") }
        // The endless query must hold its slot before the second one asks.
        #expect(await eventually(timeout: .seconds(2)) { catalog.runningQueries == 1 })
        let second = await catalog.run(Self.offeringNames, for: "mallory@cloud3.test")
        guard case .failure(.busyForPeer) = second else { Issue.record("second query of the same peer was not refused: \(second)"); return }
        // Another peer still gets the other slot, and the operator too.
        guard case .success = await catalog.run(Self.offeringNames, for: "broker@cloud2.test") else { Issue.record("other peer not served"); return }
        guard case .success = await catalog.run(Self.offeringNames) else { Issue.record("operator not served"); return }
        guard case .failure(.query) = await busy.value else { Issue.record("the endless query did not end at its limit"); return }
        // Its slot is free again.
        guard case .success = await catalog.run(Self.offeringNames, for: "mallory@cloud3.test") else { Issue.record("slot not released"); return }
    }

    @Test func localCatalogHoldsTheFilesAndTheGeneratedSelfDescription() async throws {
        let fixture = TrustFixture(brokers: BrokerFixture(server: server))
        let root = try fixture.root("root")
        let (config, jid) = try broker(
            fixture, cloud: "cloud1", host: "cloud1.test", room: uniqueRoom(), ca: root.ca, anchor: root.path,
            offerings: [("m1", 4, "0.10")])
        let catalog = try BrokerCatalog(configuration: config)
        guard case .success(let offerings) = await catalog.run(Self.offeringNames) else { Issue.record("query failed"); return }
        #expect(offerings.serializedXML().contains("<literal>m1</literal>"))
        let selfQuery = Self.prefixes + "SELECT ?name ?xmpp ?region WHERE { GRAPH <urn:intercloud:graph:self> { ?c a ic:Cloud ; ic:name ?name ; ic:xmppAddress ?xmpp ; ic:hasRegion/ic:name ?region } }"
        guard case .success(.solutions(let table)) = await catalog.run(selfQuery) else { Issue.record("self query failed"); return }
        #expect(table.rows.map { $0.map(CatalogProtocol.cell) } == [["cloud1", jid, "cloud1-a"]])
        // Limits from [catalog]: max_results = 5.
        guard case .failure(.query(let error)) = await catalog.run("SELECT * WHERE { ?s ?p ?o }") else {
            Issue.record("unbounded query was not refused"); return
        }
        #expect("\(error)".contains("limit"))
        // Results XML read back (what a querying broker does with an answer).
        let parsed = try CatalogProtocol.parseAnswer(Array(offerings.serializedXML().utf8))
        #expect(parsed == offerings)
    }

    @Test func trustedPeerQueriesTheCatalogAndBadOrOverLimitQueriesAreRefusedWithAudit() async throws {
        let (_, brokers) = try await trustedBrokers(["cloud1", "cloud2"])
        let (a, b) = (brokers[0], brokers[1])
        let target = try RunningBroker.full(b.jid)

        let result = try await a.broker.node.catalogQueries.query(Self.offeringNames, peer: target)
        guard case .solutions(let table) = result else { Issue.record("not solutions: \(result)"); return }
        #expect(table.variables == ["name", "price"])
        #expect(table.rows.map { $0.map(CatalogProtocol.cell) } == [["cloud2-large", "0.40"], ["cloud2-small", "0.05"]])

        // Malformed SPARQL: bad-request with the position, audited.
        let syntax = await stanzaError { _ = try await a.broker.node.catalogQueries.query("SELECT ?x WHERE { ?x ?y }", peer: target) }
        #expect(syntax?.condition == "bad-request")
        #expect(syntax?.text?.hasPrefix("line 1, column ") == true)
        #expect(await eventually { b.broker.auditEvents(peer: a.jid, kind: "catalog.query").contains { $0.reason == "syntax" } })

        // Over the limits (max_results = 5): not-acceptable, audited.
        let over = await stanzaError { _ = try await a.broker.node.catalogQueries.query("SELECT * WHERE { ?s ?p ?o }", peer: target) }
        #expect(over?.condition == "not-acceptable")
        #expect(over?.text?.contains("limit") == true)
        #expect(b.broker.auditEvents(peer: a.jid, kind: "catalog.query").contains { $0.reason == "limitExceeded" })

        // Unsigned: the same request without an envelope.
        let unsigned = XMLElement("query", namespace: CatalogProtocol.namespace, text: Self.offeringNames)
        #expect(await stanzaCondition { _ = try await a.broker.node.client.iq(.get, to: target, payload: unsigned) } == "not-authorized")
        #expect(await eventually {
            b.broker.auditEvents(peer: a.jid, kind: "trust.envelope").contains { $0.outcome == .refused && $0.reason == "unsigned" }
        })

        // Untrusted: a stranger signs with its own certificate.
        let (stranger, strangerJID) = try await strangerClient(server, host: "cloud1.test")
        let strangerCA = try CertificateAuthority.makeRoot(commonName: "stranger root", notBefore: Date() - 3600)
        let strangerIdentity = try strangerCA.issueBrokerIdentity(jid: strangerJID, notBefore: Date() - 3600)
        let forged = try SignedEnvelope.seal(
            Array("<query xmlns='\(CatalogProtocol.namespace)'>ASK {}</query>".utf8), namespace: CatalogProtocol.namespace,
            from: strangerJID, to: b.jid, identity: strangerIdentity, now: Date())
        #expect(await stanzaCondition {
            _ = try await stranger.iq(.get, to: target, payload: forged.element)
        } == "not-authorized")
        #expect(b.broker.auditEvents(peer: strangerJID, kind: "trust.envelope").contains { $0.reason == "untrustedSender" })
        await stranger.stop()
        await a.broker.stop()
        await b.broker.stop()
    }

    @Test func cliResourceFansOutToAllTrustedPeersAndMergesRowsWithSource() async throws {
        let (_, brokers) = try await trustedBrokers(["cloud1", "cloud2", "cloud3"])
        let a = brokers[0]
        // What `intercloud catalog query --config cloud1.toml` does: cloud1's account, another
        // resource, cloud1's key and database. Peers verify its envelopes against cloud1's pin.
        let cli = try await CatalogRequester.connect(configuration: a.config, resource: "cli-test")
        #expect(await eventually { ((try? cli.querier.trustedOnlinePeers()) ?? []).count == 2 })
        let single = try await cli.querier.query(Self.offeringNames, peer: try cli.querier.target(for: try JID(brokers[1].jid)).jid)
        #expect(single.serializedXML().contains("cloud2-small"))

        let merged = try await cli.querier.fanOut(Self.offeringNames, timeout: .seconds(5))
        #expect(merged.table.variables == ["source", "name", "price"])
        #expect(!merged.isPartial)
        #expect(Set(merged.cells) == [
            ["cloud2", "cloud2-large", "0.40"], ["cloud2", "cloud2-small", "0.05"],
            ["cloud3", "cloud3-large", "0.40"], ["cloud3", "cloud3-small", "0.05"],
        ])

        // A peer that is gone (no such resource) and a query one peer refuses: partial result.
        var targets = try cli.querier.trustedOnlinePeers()
        targets.append(CatalogTarget(jid: try JID("nobody@cloud2.test/broker"), cloud: "ghost"))
        let partial = await cli.querier.fanOut(Self.offeringNames, to: targets, timeout: .seconds(3))
        #expect(partial.isPartial)
        #expect(Set(partial.answered) == ["cloud2", "cloud3"])
        #expect(partial.failures.map(\.cloud) == ["ghost"])
        #expect(partial.cells.count == 4)

        let refused = try await cli.querier.fanOut("SELECT * WHERE { ?s ?p ?o }", timeout: .seconds(5))
        #expect(refused.answered.isEmpty)
        #expect(Set(refused.failures.map(\.cloud)) == ["cloud2", "cloud3"])
        #expect(refused.failures.allSatisfy { $0.reason.hasPrefix("not-acceptable") })
        await cli.close()
        for broker in brokers { await broker.broker.stop() }
    }
}

/// The stanza error an IQ failed with, or nil.
func stanzaError(_ body: () async throws -> Void) async -> StanzaError? {
    do {
        try await body()
        return nil
    } catch XMPPError.stanza(let error) {
        return error
    } catch {
        return nil
    }
}

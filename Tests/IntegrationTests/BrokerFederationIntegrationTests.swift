import Broker
import Catalog
import CatalogQueries
import Federation
import Foundation
import GRDB
import Metering
import Negotiation
import Policy
import Providers
import TestSupport
import Testing
import Trust
import XMPP

/// Service federation between two brokers over a real Prosody (issue 7): cloud2 provides a server
/// template from its SimCloud, cloud1 selects it under an agreement; signed envelopes both ways.
@Suite(.serialized, .timeLimit(.minutes(4))) struct BrokerFederationIntegrationTests {
    let negotiation: BrokerNegotiationIntegrationTests

    init() throws { negotiation = try BrokerNegotiationIntegrationTests() }

    static let providerSection = """
        [provider]
        driver = "simcloud"
        options = { data-dir = "sim-%@", boot-delay-ms = "%d" }
        """

    static let template = """
        version = 1
        name = "web-server"
        description = "Static web server serving a generated index page over HTTP."
        image = "seed-linux"
        size = "sim.small"
        boot_script = \"\"\"
        #!/bin/sh
        echo "<h1>{{site_name}}</h1>" > /srv/index.html
        exec httpd -f -p 8080 -h /srv -M {{max_connections}}
        \"\"\"

        [interface]
        protocol = "http"
        port = 8080
        path = "/"
        description = "Static files; GET / returns the index page."

        [metering]
        count_calls = true

        [[parameter]]
        name = "site_name"
        description = "Title shown on the index page."
        default = "intercloud"
        pattern = "[A-Za-z0-9_-]{1,40}"

        [[parameter]]
        name = "max_connections"
        description = "Largest number of concurrent connections."
        default = "64"
        allowed = ["16", "64", "256"]
        """

    /// Both brokers with their own federation services (`BrokerNode.federation`), the provider
    /// offering `web-server` from a template folder named in its `[federation]` section.
    struct Federated {
        var pair: BrokerNegotiationIntegrationTests.Pair
        var consumer: FederationService
        var provider: FederationService
        var tasks: [Task<Void, Never>]
        var driver: any CloudDriver
        var templates: URL
    }

    /// `bootDelayMilliseconds`: how long the provider's SimCloud instances take to run.
    func federated(federationTOML: String = "", bootDelayMilliseconds: Int = 0) async throws -> Federated {
        let templates = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-templates-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: templates, withIntermediateDirectories: true)
        try Self.template.write(to: templates.appendingPathComponent("web-server.toml"), atomically: true, encoding: .utf8)
        let pair = try await negotiation.trustedPair(
            providerSection: Self.providerSection.replacingOccurrences(of: "%@", with: "p-\(UUID().uuidString.prefix(6))")
                .replacingOccurrences(of: "%d", with: String(bootDelayMilliseconds)) + """

                [federation]
                templates = ["\(templates.path)"]
                credential_ttl_seconds = 600
                boot_timeout_seconds = 30
                \(federationTOML)
                """)
        let provider = pair.provider.node.federation
        let consumer = pair.consumer.node.federation
        #expect(await eventually(timeout: .seconds(20)) { provider.isReady })
        let driver = try await #require(pair.provider.node.provider).driver()
        return Federated(pair: pair, consumer: consumer, provider: provider, tasks: [], driver: driver, templates: templates)
    }

    func stop(_ federated: Federated) async {
        for task in federated.tasks { task.cancel() }
        for task in federated.tasks { await task.value }
        await negotiation.stop(federated.pair)
    }

    func agree(_ pair: BrokerNegotiationIntegrationTests.Pair, entitlements: Set<Entitlement>, instances: Int = 2, seconds: Double? = nil) async throws -> Agreement {
        var terms = agreementTerms(entitlements: entitlements, days: (seconds ?? 30 * 86_400) / 86_400)
        terms.resources.instances = instances
        let outcome = try await pair.consumer.node.negotiation.negotiate(with: try JID(pair.providerJID), terms: terms)
        #expect(outcome.state == .finalized, "\(outcome.reason ?? "")")
        #expect(await eventually { await pair.provider.node.negotiation.state(of: outcome.negotiationID) == .finalized })
        return try #require(outcome.agreement)
    }

    /// Terminated, or no longer listed (SimCloud takes a moment to terminate).
    static func isGone(_ instanceID: String, _ driver: any CloudDriver) async -> Bool {
        guard let instance = try? await driver.describe(instance: instanceID) else { return true }
        return instance.state == .terminated
    }

    func select(_ service: FederationService, peer: String, agreementID: String, template: String = "web-server", parameters: [String: String] = [:]) -> FederationMessage {
        FederationMessage(
            serviceID: "svc-\(UUID().uuidString.prefix(8).lowercased())",
            body: .select(ServiceSelection(templateName: template, parameters: parameters, agreementID: agreementID)))
    }

    @Test func selectedTemplateRunsAtTheProviderWithValidCredentialsAndBothSidesMeterItUntilTeardown() async throws {
        let federated = try await federated()
        let pair = federated.pair
        // The template is in the provider's catalog, as `intercloud catalog query` sees it.
        let found = try await pair.consumer.node.catalogQueries.query(
            """
            PREFIX ic: <\(TemplateCatalog.namespace)>
            SELECT ?name ?port WHERE { GRAPH <urn:intercloud:graph:templates> { ?o a ic:Offering ; ic:name ?name ; ic:service ?s . ?s ic:port ?port } }
            """, peer: try RunningBroker.full(pair.providerJID))
        guard case .solutions(let table) = found else { Issue.record("expected solutions, got \(found)"); return }
        #expect(table.rows.map { $0.map(CatalogProtocol.cell) } == [["web-server", "8080"]])

        let agreement = try await agree(pair, entitlements: [.query, .federate])
        let selected = try await federated.consumer.select(
            peer: pair.providerJID, templateName: "web-server", parameters: ["site_name": "shop"])
        #expect(selected.phase == "active")
        let token = try #require(selected.token)

        // The endpoint is the provider's instance address with the template's port.
        let snapshot = try #require(try federated.provider.journal.snapshot(selected.serviceID))
        #expect(snapshot.phase == .active && snapshot.consumer == pair.consumerJID && snapshot.agreementID == agreement.id)
        let instanceID = try #require(snapshot.instanceID)
        let instance = try await federated.driver.describe(instance: instanceID)
        #expect(instance.state == .running)
        let host = try #require(instance.addresses.first)
        #expect(selected.endpoint == "http://\(host):8080/")
        #expect(selected.protocolName == "http" && selected.interfaceDescription == "Static files; GET / returns the index page.")
        // The parameter reached the boot script; nothing else did.
        #expect(snapshot.request.extra["userData"]?.contains("<h1>shop</h1>") == true)

        // Credentials: valid, counted; a wrong token is refused and counted too.
        #expect(try await federated.provider.validateCall(serviceID: selected.serviceID, token: token).isValid)
        #expect(try await federated.provider.validateCall(serviceID: selected.serviceID, token: String(repeating: "A", count: 43)) == .invalid)
        #expect(try await federated.provider.validateCall(serviceID: selected.serviceID, token: token).isValid)
        let calls = try FederationStore.callCount(database: federated.provider.database, serviceID: selected.serviceID)
        #expect(calls.valid == 2 && calls.refused == 1)
        #expect(try FederationStore.validCalls(database: federated.provider.database, agreementID: agreement.id) == 2)

        // Both sides record the placement under the agreement.
        let providerPlacements = try pair.provider.node.metering.store.placements(agreementID: agreement.id, role: .provider)
        #expect(providerPlacements.map(\.instanceID) == [instanceID])
        #expect(providerPlacements.first?.instanceType == "sim.small" && providerPlacements.first?.peer == pair.consumerJID)
        let consumerPlacements = try pair.consumer.node.metering.store.placements(agreementID: agreement.id, role: .consumer)
        #expect(consumerPlacements.map(\.instanceID) == [selected.serviceID])
        #expect(consumerPlacements.first?.instanceType == "sim.small" && consumerPlacements.first?.vcpu == 1)
        let stored = try #require(try FederationStore.consumed(database: federated.consumer.database, serviceID: selected.serviceID))
        #expect(stored.phase == "active" && stored.endpoint == selected.endpoint && stored.peer == pair.providerJID)
        #expect(pair.provider.auditEvents(kind: "federation.provisioned").count == 1)

        // Renew: the old token stops working at once.
        let renewed = try await federated.consumer.renew(serviceID: selected.serviceID)
        let newToken = try #require(renewed.token)
        #expect(newToken != token)
        #expect(try await federated.provider.validateCall(serviceID: selected.serviceID, token: token) == .invalid)
        #expect(try await federated.provider.validateCall(serviceID: selected.serviceID, token: newToken).isValid)
        #expect(try await federated.consumer.status(serviceID: selected.serviceID).phase == "active")

        // Teardown: the instance and both placements end; the credentials no longer work.
        let ended = try await federated.consumer.teardown(serviceID: selected.serviceID)
        #expect(ended.phase == "ended")
        #expect(await eventually { await Self.isGone(instanceID, federated.driver) })
        #expect(try pair.provider.node.metering.store.placements(agreementID: agreement.id, role: .provider).first?.removedAt != nil)
        #expect(try pair.consumer.node.metering.store.placements(agreementID: agreement.id, role: .consumer).first?.removedAt != nil)
        #expect(try await federated.provider.validateCall(serviceID: selected.serviceID, token: newToken) == .serviceNotActive)
        #expect(try FederationStore.consumed(database: federated.consumer.database, serviceID: selected.serviceID)?.phase == "ended")

        // Metering: the provider's usage record for the period counts the valid calls (3; the
        // refused ones are not billed), a count only the provider sees and the consumer accepts.
        let start = try #require(agreement.terms.period.from)
        let period = MeteringPeriod(from: start, until: Date().addingTimeInterval(2))
        #expect(try FederationStore.validCalls(database: federated.provider.database, agreementID: agreement.id, in: period) == 3)
        #expect(try FederationStore.validCalls(
            database: federated.provider.database, agreementID: agreement.id, in: MeteringPeriod(from: start.addingTimeInterval(-3600), until: start)) == 0)
        let entry = try await pair.provider.node.metering.closePeriod(agreementID: agreement.id, period: period, now: period.until)
        let record = try entry.record()
        #expect(record.usage.calls == 3)
        #expect(!entry.disputeReasons.contains { $0.hasPrefix("calls") }, "\(entry.disputeReasons)")
        await stop(federated)
    }

    /// A free TCP port on loopback (asked of the kernel; closed again before use).
    static func freePort() throws -> UInt16 {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) == 0 && getsockname(socket, $0, &length) == 0 }
        }
        guard bound else { throw POSIXError(.EADDRNOTAVAIL) }
        return UInt16(bigEndian: address.sin_port)
    }

    /// HTTP status of `curl` against `url` with `headers`.
    @Test func nginxInFrontOfAServiceChecksEveryCallAtTheCallGateAndTheValidOnesAreBilled() async throws {
        let federated = try await federated(federationTOML: "call_gate = \"127.0.0.1:0\"")
        let pair = federated.pair
        let gatePort = try #require(try await federated.provider.callGatePort())
        let agreement = try await agree(pair, entitlements: [.query, .federate])
        let selected = try await federated.consumer.select(peer: pair.providerJID, templateName: "web-server", parameters: [:])
        let token = try #require(selected.token)

        // Debian's nginx as the service's front: every request asks the gate first (auth_request).
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("gate-nginx-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("www"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try "hello from the federated service\n".write(to: directory.appendingPathComponent("www/index.html"), atomically: true, encoding: .utf8)
        let port = try Self.freePort()
        let d = directory.path
        try """
            user root;
            worker_processes 1;
            pid \(d)/nginx.pid;
            error_log \(d)/error.log;
            events { worker_connections 64; }
            http {
                access_log off;
                client_body_temp_path \(d)/body; proxy_temp_path \(d)/proxy; fastcgi_temp_path \(d)/fcgi;
                uwsgi_temp_path \(d)/uwsgi; scgi_temp_path \(d)/scgi;
                server {
                    listen 127.0.0.1:\(port);
                    root \(d)/www;
                    location = /_check {
                        internal;
                        proxy_pass http://127.0.0.1:\(gatePort)\(FederationCallGate.path);
                        proxy_http_version 1.1;
                        proxy_pass_request_body off;
                        proxy_set_header Content-Length "";
                        proxy_set_header \(FederationCallGate.serviceHeader) \(selected.serviceID);
                    }
                    location / { auth_request /_check; }
                }
            }
            """.write(to: directory.appendingPathComponent("nginx.conf"), atomically: true, encoding: .utf8)
        try runShell("nginx -p \(shellQuoted(d)) -c \(shellQuoted(d + "/nginx.conf")) -e \(shellQuoted(d + "/error.log"))")
        defer { try? runShell("kill $(cat \(shellQuoted(d + "/nginx.pid")))") }
        // The file itself: "/" would be an internal redirect to it, and nginx checks access again.
        let url = "http://127.0.0.1:\(port)/index.html"
        #expect(await eventually(timeout: .seconds(10)) { (try? curlStatus(url)) == 401 || (try? curlStatus(url)) == 500 })

        // The current token passes (counted); none, a wrong one, or a renewed-away one does not.
        #expect(try curlStatus(url, headers: ["Authorization: Bearer \(token)"]) == 200)
        #expect(try curlStatus(url, headers: ["Authorization: Bearer \(token)"]) == 200)
        #expect(try curlStatus(url, headers: ["Authorization: Bearer \(String(repeating: "A", count: 43))"]) == 401)
        #expect(try curlStatus(url, headers: ["Authorization: Bearer \(String(repeating: "A", count: 4000))"]) != 200)
        #expect(try curlStatus(url) != 200)
        let calls = try FederationStore.callCount(database: federated.provider.database, serviceID: selected.serviceID)
        #expect(calls.valid == 2 && calls.refused == 1, "\(calls)")
        // Straight at the gate: a request without the service header is a 400, other paths 404.
        #expect(try curlStatus("http://127.0.0.1:\(gatePort)\(FederationCallGate.path)", headers: ["Authorization: Bearer \(token)"]) == 400)
        #expect(try curlStatus("http://127.0.0.1:\(gatePort)/other") == 404)

        // After teardown the service is not active: the front refuses (403 from the gate).
        _ = try await federated.consumer.teardown(serviceID: selected.serviceID)
        #expect(try curlStatus(url, headers: ["Authorization: Bearer \(token)"]) == 403)

        // The two valid calls are in the period's usage record.
        let start = try #require(agreement.terms.period.from)
        let entry = try await pair.provider.node.metering.closePeriod(
            agreementID: agreement.id, period: MeteringPeriod(from: start, until: Date().addingTimeInterval(2)), now: Date().addingTimeInterval(2))
        #expect(try entry.record().usage.calls == 2)
        await stop(federated)
    }

    @Test func templateFilesAreReadAgainWhenTheyChangeAndAnInvalidSetKeepsTheTemplatesInUse() async throws {
        let federated = try await federated()
        let pair = federated.pair
        let runner = try #require(federated.provider.runner)
        func offered() -> [String] { ((try? runner.journal.templates()) ?? []).map(\.name) }
        func inCatalog() async throws -> [String] {
            let found = try await pair.consumer.node.catalogQueries.query(
                """
                PREFIX ic: <\(TemplateCatalog.namespace)>
                SELECT ?name WHERE { GRAPH <urn:intercloud:graph:templates> { ?o a ic:Offering ; ic:name ?name } } ORDER BY ?name
                """, peer: try RunningBroker.full(pair.providerJID))
            guard case .solutions(let table) = found else { return [] }
            return table.rows.map { $0.map(CatalogProtocol.cell).joined() }
        }
        #expect(offered() == ["web-server"])

        // A second template appears in the journal and in the catalog peers query.
        let second = Self.template.replacingOccurrences(of: "name = \"web-server\"", with: "name = \"web-server-2\"")
        try second.write(to: federated.templates.appendingPathComponent("web-server-2.toml"), atomically: true, encoding: .utf8)
        #expect(await eventually(timeout: .seconds(15)) { offered() == ["web-server", "web-server-2"] })
        // The catalog graph is replaced right after the journal: wait for it too.
        #expect(try await eventually(timeout: .seconds(5)) { try await inCatalog() == ["web-server", "web-server-2"] })
        #expect(pair.provider.auditEvents(kind: "federation.templates").map(\.reason) == ["reloaded"])

        // A broken file: refused as a whole with its file:line, audited; both templates stay offered.
        let broken = federated.templates.appendingPathComponent("broken.toml")
        try "version = 1\nname = \"broken\"\nsize = 3\n".write(to: broken, atomically: true, encoding: .utf8)
        #expect(await eventually(timeout: .seconds(15)) { pair.provider.auditEvents(kind: "federation.templates").count == 2 })
        let refused = try #require(pair.provider.auditEvents(kind: "federation.templates").first { $0.reason == "invalid-templates" })
        #expect(refused.outcome == .refused && refused.detail.contains("broken.toml:"))
        #expect(offered() == ["web-server", "web-server-2"])

        // Fixed by removing it: the set is read again.
        try FileManager.default.removeItem(at: broken)
        #expect(await eventually(timeout: .seconds(15)) { pair.provider.auditEvents(kind: "federation.templates").count == 3 })
        #expect(offered() == ["web-server", "web-server-2"])
        await stop(federated)
    }

    @Test func everyRefusalIsAStanzaErrorAuditedAtTheProviderAndCreatesNothing() async throws {
        let federated = try await federated()
        let pair = federated.pair
        let before = try await federated.driver.listInstances().count

        func refusal(_ message: FederationMessage) async -> FederationService.RequestError? {
            do {
                let answer = try await federated.consumer.exchange(message, with: pair.providerJID)
                Issue.record("expected a refusal, got \(answer.kind)")
                return nil
            } catch let error as FederationService.RequestError {
                return error
            } catch {
                Issue.record("expected a stanza error, got \(error)")
                return nil
            }
        }
        func lastRefusalReason() -> String? {
            pair.provider.auditEvents(kind: "federation.request").filter { $0.outcome == .refused }.first?.reason
        }

        // No agreement at all (a made-up id).
        let none = await refusal(select(federated.consumer, peer: pair.providerJID, agreementID: "agr-0000000000000000"))
        #expect(none?.condition == "forbidden", "\(String(describing: none))")
        #expect(lastRefusalReason() == "no-agreement")
        // Without an agreement the consumer does not even ask.
        await #expect(throws: FederationService.RequestError.self) {
            try await federated.consumer.select(peer: pair.providerJID, templateName: "web-server")
        }

        // An agreement without federate.
        let migrationOnly = try await agree(pair, entitlements: [.query, .migrateIn])
        let notEntitled = await refusal(select(federated.consumer, peer: pair.providerJID, agreementID: migrationOnly.id))
        #expect(notEntitled?.condition == "forbidden" && notEntitled?.description.contains("federate") == true, "\(String(describing: notEntitled))")
        #expect(lastRefusalReason() == "not-entitled")

        // An agreement granting federate, but a template the provider does not have.
        let agreement = try await agree(pair, entitlements: [.query, .federate], instances: 1)
        let unknown = await refusal(select(federated.consumer, peer: pair.providerJID, agreementID: agreement.id, template: "mail-server"))
        #expect(unknown?.condition == "item-not-found", "\(String(describing: unknown))")
        #expect(lastRefusalReason() == "unknown-template")

        // Injection attempts in parameters: shell through the pattern, a value outside the list.
        for parameters in [["site_name": "x</h1>\"; rm -rf / #"], ["site_name": "$(reboot)"], ["max_connections": "64\nexec /bin/sh"]] {
            let injected = await refusal(select(federated.consumer, peer: pair.providerJID, agreementID: agreement.id, parameters: parameters))
            #expect(injected?.condition == "bad-request", "\(parameters): \(String(describing: injected))")
            #expect(lastRefusalReason() == "bad-parameter")
        }

        // Status of a service that does not exist (or is not the asker's).
        let stranger = await refusal(FederationMessage(serviceID: "svc-unknown", body: .status))
        #expect(stranger?.condition == "item-not-found")
        #expect(lastRefusalReason() == "unknown-service")

        // A service id the provider itself uses as a consumer elsewhere: ids are unique across roles.
        try await federated.provider.database.write { db in
            try db.execute(sql: """
                INSERT INTO federation_consumed (service_id, peer, agreement_id, template, phase, agreement_ends_at, created_at, updated_at)
                VALUES ('svc-taken', 'broker@cloud9.test', 'agr-elsewhere', 'web-server', 'active', NULL, '2026-01-01 00:00:00.000', '2026-01-01 00:00:00.000')
                """)
        }
        var squatting = select(federated.consumer, peer: pair.providerJID, agreementID: agreement.id)
        squatting.serviceID = "svc-taken"
        let taken = await refusal(squatting)
        #expect(taken?.condition == "conflict", "\(String(describing: taken))")
        #expect(lastRefusalReason() == "service-id-in-use")
        try await federated.provider.database.write { db in
            try db.execute(sql: "DELETE FROM federation_consumed WHERE service_id = 'svc-taken'")
        }

        // Nothing was created anywhere, and every refusal is in the audit log.
        #expect(try await federated.driver.listInstances().count == before)
        #expect(try federated.provider.journal.services().isEmpty)
        #expect(try pair.provider.node.metering.store.placements(agreementID: agreement.id, role: .provider).isEmpty)
        #expect(try FederationStore.consumed(database: federated.consumer.database).isEmpty)
        #expect(pair.provider.auditEvents(kind: "federation.request").filter { $0.outcome == .refused }.map(\.count).reduce(0, +) == 8)

        // Beyond quota: the agreement allows one instance; the second select is refused.
        _ = try await federated.consumer.select(peer: pair.providerJID, templateName: "web-server", agreementID: agreement.id)
        let beyond = await refusal(select(federated.consumer, peer: pair.providerJID, agreementID: agreement.id))
        #expect(beyond?.condition == "forbidden", "\(String(describing: beyond))")
        #expect(lastRefusalReason() == "quota-exceeded")
        #expect(try await federated.driver.listInstances().count == before + 1)
        #expect(try federated.provider.journal.services().count == 1)
        await stop(federated)
    }

    @Test func servicesEndWithTheirAgreementOnBothSides() async throws {
        let federated = try await federated()
        let pair = federated.pair
        let agreement = try await agree(pair, entitlements: [.query, .federate], seconds: 12)
        let selected = try await federated.consumer.select(peer: pair.providerJID, templateName: "web-server", agreementID: agreement.id)
        let instanceID = try #require(try federated.provider.journal.snapshot(selected.serviceID)?.instanceID)
        #expect(await eventually(timeout: .seconds(25)) {
            (try? federated.provider.journal.snapshot(selected.serviceID))??.phase == .ended
        })
        #expect(await eventually { await Self.isGone(instanceID, federated.driver) })
        #expect(try pair.provider.node.metering.store.placements(agreementID: agreement.id, role: .provider).first?.removedAt != nil)
        #expect(await eventually(timeout: .seconds(5)) {
            (try? FederationStore.consumed(database: federated.consumer.database, serviceID: selected.serviceID))??.phase == "ended"
        })
        #expect(try pair.consumer.node.metering.store.placements(agreementID: agreement.id, role: .consumer).first?.removedAt != nil)
        await stop(federated)
    }

    /// What `intercloud federate` and `intercloud services` do: queue requests in the broker
    /// database for the running broker and read the outcome once.
    @Test func operatorRequestsQueuedInTheDatabaseShowTheTokenOnceAndListBothRoles() async throws {
        let federated = try await federated()
        let pair = federated.pair
        let agreement = try await agree(pair, entitlements: [.query, .federate])

        func outcome(_ database: GRDB.DatabasePool, _ request: FederationStore.QueuedRequest) async throws -> FederationStore.RequestOutcome? {
            let id = try FederationStore.enqueue(database: database, request, now: Date())
            var result: FederationStore.RequestState?
            _ = await eventually(timeout: .seconds(30)) {
                result = try? FederationStore.takeOutcome(database: database, id: id)
                if case .done = result { return true }
                if case .failed = result { return true }
                return false
            }
            guard case .done(let value)? = result else { Issue.record("request \(request.kind): \(String(describing: result))"); return nil }
            // Read once: the token is gone from the database afterwards.
            if case .done(let again)? = try FederationStore.takeOutcome(database: database, id: id) { #expect(again.token == nil) }
            return value
        }

        let consumerDB = federated.consumer.database
        let selected = try #require(try await outcome(
            consumerDB, .init(kind: .select, peer: pair.providerJID, template: "web-server", parameters: ["max_connections": "16"])))
        #expect(selected.phase == "active" && selected.token != nil && selected.endpoint?.hasSuffix(":8080/") == true)
        let token = try #require(selected.token)
        #expect(try await federated.provider.validateCall(serviceID: selected.serviceID, token: token).isValid)

        // Each side lists the service in its role, with the metered calls at the provider.
        let atProvider = try FederationStore.summaries(database: federated.provider.database)
        #expect(atProvider.map(\.role) == ["provider"] && atProvider.first?.validCalls == 1 && atProvider.first?.agreementID == agreement.id)
        #expect(try FederationStore.summaries(database: consumerDB).map(\.role) == ["consumer"])
        #expect(!(try FederationStore.steps(database: federated.provider.database, serviceID: selected.serviceID)).isEmpty)

        // A refused request reports the provider's reason.
        let id = try FederationStore.enqueue(
            database: consumerDB, .init(kind: .select, peer: pair.providerJID, template: "no-such-template"), now: Date())
        var refused: FederationStore.RequestState?
        #expect(await eventually(timeout: .seconds(30)) {
            refused = try? FederationStore.takeOutcome(database: consumerDB, id: id)
            if case .failed = refused { return true }
            return false
        })
        if case .failed(let reason)? = refused { #expect(reason.contains("item-not-found"), "\(reason)") }

        // The provider's operator ends the service from its side; the consumer learns it on status.
        let ended = try #require(try await outcome(federated.provider.database, .init(kind: .teardown, serviceID: selected.serviceID)))
        #expect(ended.role == "provider" && ended.phase == "ended")
        let status = try #require(try await outcome(consumerDB, .init(kind: .status, serviceID: selected.serviceID)))
        #expect(status.phase == "ended")
        #expect(try pair.consumer.node.metering.store.placements(agreementID: agreement.id, role: .consumer).first?.removedAt != nil)
        await stop(federated)
    }
}

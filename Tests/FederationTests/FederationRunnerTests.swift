import Foundation
import GRDB
import Providers
import Testing

@testable import Federation

@Suite("Federation runner on SimCloud")
struct FederationRunnerTests {
    @Test("provision: active with endpoint = instance address + template port, user-data substituted, credentials valid until the TTL")
    func provision() async throws {
        let f = try FederationFixture()
        let service = try await f.provisionWeb()
        let instances = try await f.instances(of: "svc-1")
        let instance = try #require(instances.first)
        #expect(instances.count == 1)
        #expect(instance.state == .running)
        #expect(instance.sizeID == "sim.small")
        #expect(instance.imageID == "sim-img-seed")
        #expect(service.endpoint == ServiceEndpoint(host: try #require(instance.addresses.first), port: 8080, protocolName: "http", path: "/"))
        #expect(service.interfaceDescription == "Static files; GET / returns the index page.")
        #expect(service.credentials.expiresAt == f.t0.addingTimeInterval(600))
        #expect(try FederationMessage(serviceID: "svc-1", body: .provisioned(service)).validate() == ())

        let snapshot = try #require(try f.journal.snapshot("svc-1"))
        #expect(snapshot.request.extra["userData"]?.contains("echo \"<h1>shop</h1>\"") == true)
        #expect(snapshot.request.extra["userData"]?.contains("-M 64") == true)

        let token = service.credentials.token
        #expect(try f.journal.validate(token: token, serviceID: "svc-1", now: f.t0.addingTimeInterval(599)).isValid)
        #expect(try f.journal.validate(token: token, serviceID: "svc-1", now: f.t0.addingTimeInterval(600)) == .expired(at: f.t0.addingTimeInterval(600)))
        #expect(try f.journal.validate(token: token + "x", serviceID: "svc-1", now: f.t0) == .invalid)
        #expect(try f.journal.validate(token: token, serviceID: "svc-other", now: f.t0) == .invalid)
        // Only the hash is stored.
        let stored = try await f.journal.database.read { db in try String.fetchAll(db, sql: "SELECT token_sha256 FROM federation_credential") }
        #expect(stored == [FederationJournal.hash(token: token)])
        #expect(!stored.contains(token))

        let status = try await f.runner.status(serviceID: "svc-1")
        #expect(status.phase == .active)
        #expect(status.endpoint == service.endpoint)
    }

    @Test("renew: new token valid for another TTL, the old one invalid at once; never past the agreement")
    func renew() async throws {
        let f = try FederationFixture()
        let first = try await f.provisionWeb().credentials
        let later = f.t0.addingTimeInterval(700)
        #expect(try f.journal.validate(token: first.token, serviceID: "svc-1", now: later) == .expired(at: first.expiresAt))
        let renewed = try await f.runner.renew(serviceID: "svc-1", now: later)
        #expect(renewed.username == first.username)
        #expect(renewed.token != first.token)
        #expect(renewed.expiresAt == later.addingTimeInterval(600))
        #expect(try f.journal.validate(token: renewed.token, serviceID: "svc-1", now: later.addingTimeInterval(1)).isValid)
        #expect(try f.journal.validate(token: first.token, serviceID: "svc-1", now: f.t0) == .invalid)
        // Close to the agreement's end, credentials end with it.
        let nearEnd = f.agreementEndsAt.addingTimeInterval(-60)
        #expect(try await f.runner.renew(serviceID: "svc-1", now: nearEnd).expiresAt == f.agreementEndsAt)
    }

    @Test("teardown on request: the instance is gone, credentials revoked, metering saw place then remove")
    func teardown() async throws {
        let f = try FederationFixture()
        let service = try await f.provisionWeb()
        let instanceID = try #require(try await f.instances(of: "svc-1").first?.id)
        let placements = await f.metering.placements
        #expect(placements == [FederationPlacement(
            serviceID: "svc-1", agreementID: "agr-1", consumer: "broker@cloud2.test", instanceID: instanceID,
            instanceType: "sim.small", vCPU: 1, memoryMiB: 2048, diskGiB: 20, placedAt: f.t0)])

        let end = f.t0.addingTimeInterval(120)
        let status = try await f.runner.teardown(serviceID: "svc-1", now: end)
        #expect(status.phase == .ended)
        #expect(status.reason == "requested by the consumer")
        #expect(try await f.instances(of: "svc-1").isEmpty)
        #expect(try await f.cloud.listInstances().isEmpty)
        #expect(try f.journal.validate(token: service.credentials.token, serviceID: "svc-1", now: end) == .serviceNotActive)
        #expect(await f.metering.removals == [FederationRemoval(
            serviceID: "svc-1", agreementID: "agr-1", consumer: "broker@cloud2.test", instanceID: instanceID, removedAt: end)])
        // Idempotent: a second teardown changes nothing and reports nothing.
        #expect(try await f.runner.teardown(serviceID: "svc-1", now: end.addingTimeInterval(5)).phase == .ended)
        #expect(await f.metering.removals.count == 1)
        #expect(try f.journal.unfinished().isEmpty)
        let steps = try f.journal.steps("svc-1").map(\.step)
        #expect(steps == ["create", "await-running", "activate", "terminate", "locate", "finished"])
    }

    @Test("the agreement's end tears the service down at tick")
    func agreementEnd() async throws {
        let f = try FederationFixture()
        _ = try await f.provisionWeb()
        #expect(try await f.runner.nextDeadline() == f.agreementEndsAt)
        #expect(try await f.runner.tick(now: f.agreementEndsAt.addingTimeInterval(-1)).isEmpty)
        #expect(try await f.instances(of: "svc-1").count == 1)
        let changed = try await f.runner.tick(now: f.agreementEndsAt)
        #expect(changed["svc-1"]?.phase == .ended)
        #expect(changed["svc-1"]?.reason == "the agreement ended")
        #expect(try await f.instances(of: "svc-1").isEmpty)
        #expect(await f.metering.removals.first?.removedAt == f.agreementEndsAt)
        #expect(try await f.runner.nextDeadline() == nil)
    }

    @Test("refusals leave nothing behind: unknown template, bad parameters, injection, ended agreement, reused id")
    func refusals() async throws {
        let f = try FederationFixture()
        func refusal(_ id: String, _ selection: ServiceSelection, endsAt: Date? = nil) async -> String? {
            do {
                _ = try await f.runner.provision(
                    serviceID: id, selection: selection, consumer: "c@x.test", agreementEndsAt: endsAt ?? f.agreementEndsAt, now: f.t0)
                return nil
            } catch {
                guard case .refused(let reason) = error else { return "unexpected \(error)" }
                return reason
            }
        }
        #expect(await refusal("a", ServiceSelection(templateName: "nope", agreementID: "agr")) == "no template named nope")
        #expect(await refusal("b", ServiceSelection(templateName: "postgres-db", agreementID: "agr"))?.contains("parameter 'database' is required") == true)
        #expect(await refusal("c", f.webSelection(site: "x;reboot"))?.contains("value must be") == true)
        #expect(await refusal("d", f.webSelection(), endsAt: f.t0)?.contains("has ended") == true)
        #expect(await refusal("bad id!", f.webSelection())?.contains("service id") == true)
        #expect(try await f.cloud.listInstances().isEmpty)
        #expect(try f.journal.services().isEmpty)
        _ = try await f.provisionWeb("e")
        #expect(await refusal("e", f.webSelection()) == "service id e is already used")
        #expect(try await f.cloud.listInstances().count == 1)
    }

    @Test("two concurrent selects with the same service id: one provisions, the other is refused")
    func concurrentSelects() async throws {
        let f = try FederationFixture()
        let first = Task { try await f.provisionWeb("same") }
        let second = Task { try await f.provisionWeb("same") }
        let results = [await first.result, await second.result]
        let refused = results.compactMap { result -> String? in
            guard case .failure(let error) = result, case .refused(let reason) = error as? FederationError else { return nil }
            return reason
        }
        #expect(results.filter { (try? $0.get()) != nil }.count == 1)
        #expect(refused == ["service id same is already used"])
        #expect(try await f.instances(of: "same").count == 1)
    }

    @Test("the database template provisions on sim.medium with the peer's database name")
    func database() async throws {
        let f = try FederationFixture()
        let service = try await f.runner.provision(
            serviceID: "db-1", selection: ServiceSelection(templateName: "postgres-db", parameters: ["database": "orders"], agreementID: "agr-2"),
            consumer: "c@x.test", agreementEndsAt: f.agreementEndsAt, now: f.t0)
        #expect(service.endpoint.port == 5432)
        #expect(service.endpoint.protocolName == "postgresql")
        let instance = try #require(try await f.instances(of: "db-1").first)
        #expect(instance.sizeID == "sim.medium")
        #expect(try f.journal.snapshot("db-1")?.request.extra["userData"]?.contains("createdb --encoding=UTF8 orders") == true)
        #expect(await f.metering.placements.first?.memoryMiB == 4096)
    }

    @Test("a SimCloud fault during create: failed, nothing left running, nothing metered", arguments: [false, true])
    func createFault(afterWork: Bool) async throws {
        let f = try FederationFixture()
        await f.cloud.inject(afterWork ? .failAfterWork(.create) : .fail(.create))
        await #expect(throws: FederationError.self) { _ = try await f.provisionWeb() }
        let status = try await f.runner.status(serviceID: "svc-1")
        #expect(status.phase == .failed)
        #expect(status.reason?.contains("injected failure") == true)
        #expect(try await f.cloud.listInstances().isEmpty)
        #expect(await f.metering.placements.isEmpty)
        #expect(try f.journal.unfinished().isEmpty)
    }

    @Test("the instance never runs (describe keeps failing): failed, and the created instance is terminated")
    func startFault() async throws {
        let f = try FederationFixture()
        await f.cloud.inject(.fail(.describe, times: 1000))
        await #expect(throws: FederationError.self) { _ = try await f.provisionWeb() }
        await f.cloud.clearFaults()
        #expect(try await f.runner.status(serviceID: "svc-1").phase == .failed)
        #expect(try await f.cloud.listInstances().isEmpty)
    }

    @Test("a failing terminate is retried at tick until the instance is gone")
    func terminateRetry() async throws {
        let f = try FederationFixture()
        _ = try await f.provisionWeb()
        await f.cloud.inject(.fail(.terminate))
        let status = try await f.runner.teardown(serviceID: "svc-1", now: f.t0.addingTimeInterval(60))
        #expect(status.phase == .tearingDown)
        #expect(try await f.instances(of: "svc-1").count == 1)
        #expect(try await f.runner.nextDeadline() == f.t0.addingTimeInterval(70))
        #expect(try await f.runner.tick(now: f.t0.addingTimeInterval(65)).isEmpty)
        let changed = try await f.runner.tick(now: f.t0.addingTimeInterval(70))
        #expect(changed["svc-1"]?.phase == .ended)
        #expect(try await f.instances(of: "svc-1").isEmpty)
    }

    @Test("templates are stored per broker, replaced on import, and published from the runner")
    func templates() async throws {
        let f = try FederationFixture()
        #expect(try f.journal.templates().map(\.name) == ["postgres-db", "web-server"])
        let turtle = try await f.runner.catalogTurtle(cloudIRI: "https://cloud1.test")
        #expect(turtle.contains("<https://cloud1.test/template/web-server> a ic:Offering"))
        let only = try await f.runner.importTemplates(paths: [templatesDirectory + "/web-server.toml"], now: f.t0)
        #expect(only.map(\.name) == ["web-server"])
        #expect(try f.journal.templates().map(\.name) == ["web-server"])
        #expect(try f.journal.template(named: "postgres-db") == nil)
    }
    @Test("handle: requests answered as messages; another peer cannot see, renew or end the service")
    func handle() async throws {
        let f = try FederationFixture()
        let owner = "broker@cloud2.test"
        let select = FederationMessage(serviceID: "svc-1", body: .select(f.webSelection()))
        #expect(await f.runner.handle(select, from: owner, agreementEndsAt: nil, now: f.t0).body == .refused(reason: "no agreement agr-1 in force"))
        let provisioned = await f.runner.handle(select, from: owner, agreementEndsAt: f.agreementEndsAt, now: f.t0)
        guard case .provisioned(let service) = provisioned.body else { Issue.record("\(provisioned)"); return }
        #expect(provisioned.serviceID == "svc-1")
        #expect(try f.journal.validate(token: service.credentials.token, serviceID: "svc-1", now: f.t0).isValid)

        for request in [FederationMessage.Body.status, .renew, .teardown] {
            let answer = await f.runner.handle(FederationMessage(serviceID: "svc-1", body: request), from: "intruder@evil.test", agreementEndsAt: f.agreementEndsAt, now: f.t0)
            #expect(answer.body == .refused(reason: "unknown service svc-1"))
        }
        #expect(try await f.instances(of: "svc-1").count == 1)

        let state = await f.runner.handle(FederationMessage(serviceID: "svc-1", body: .status), from: owner, agreementEndsAt: nil, now: f.t0)
        #expect(state.body == .state(ServiceStatus(phase: .active, endpoint: service.endpoint, credentialsExpireAt: service.credentials.expiresAt)))
        let renewed = await f.runner.handle(FederationMessage(serviceID: "svc-1", body: .renew), from: owner, agreementEndsAt: nil, now: f.t0)
        guard case .renewed(let credentials) = renewed.body else { Issue.record("\(renewed)"); return }
        #expect(try f.journal.validate(token: credentials.token, serviceID: "svc-1", now: f.t0).isValid)
        let done = await f.runner.handle(FederationMessage(serviceID: "svc-1", body: .teardown), from: owner, agreementEndsAt: nil, now: f.t0)
        #expect(done.body == .done)
        #expect(try await f.cloud.listInstances().isEmpty)
        let answerAsRequest = await f.runner.handle(FederationMessage(serviceID: "svc-1", body: .done), from: owner, agreementEndsAt: nil, now: f.t0)
        #expect(answerAsRequest.body == .refused(reason: "done is an answer, not a request"))
        let hostile = await f.runner.handle(FederationMessage(serviceID: "a b", body: .status), from: owner, agreementEndsAt: nil, now: f.t0)
        guard case .refused(let reason) = hostile.body else { Issue.record("\(hostile)"); return }
        #expect(reason.contains("service id"))
    }

    @Test("a teardown arriving while the instance boots ends the service once the boot step returns, with nothing left")
    func teardownWhileBooting() async throws {
        let directory = try TemporaryDirectory()
        var cloudConfiguration = SimCloud.Configuration(
            dataDirectory: directory.url.appendingPathComponent("sim"),
            delays: SimCloud.Delays(boot: .milliseconds(400), shutdown: .zero, reboot: .zero, save: .zero, terminate: .zero))
        cloudConfiguration.durableWrites = false
        let cloud = try SimCloud(configuration: cloudConfiguration)
        let journal = try FederationJournal.open(path: directory.url.appendingPathComponent("broker.sqlite").path)
        try journal.importTemplates(try TemplateLoader.load(directory: templatesDirectory), now: Date())
        let runner = FederationRunner(
            driver: cloud, journal: journal,
            configuration: .init(service: FederationFixture.serviceConfiguration, pollInterval: .milliseconds(10)))
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let provisioning = Task {
            try await runner.provision(
                serviceID: "slow", selection: ServiceSelection(templateName: "web-server", agreementID: "agr"), consumer: "c@x.test",
                agreementEndsAt: now.addingTimeInterval(3600), now: now)
        }
        var phase = FederatedService.Phase.requested
        for _ in 0..<200 where phase != .starting {
            try await Task.sleep(for: .milliseconds(5))
            phase = (try? await runner.status(serviceID: "slow").phase) ?? .requested
        }
        #expect(phase == .starting)
        let during = try await runner.teardown(serviceID: "slow", now: now)
        #expect(during.phase == .starting)  // marked; the boot step in flight finishes first
        let result = await provisioning.result
        guard case .failure(let error) = result, case .refused(let reason) = error as? FederationError else {
            Issue.record("provisioning did not fail: \(result)")
            return
        }
        #expect(reason.contains("requested by the consumer"))
        #expect(try await runner.status(serviceID: "slow").phase == .ended)
        #expect(try await cloud.listInstances().isEmpty)
        #expect(try journal.unfinished().isEmpty)
    }
}

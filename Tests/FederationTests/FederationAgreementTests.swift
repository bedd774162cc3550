import Foundation
import Policy
import Providers
import Testing

@testable import Federation

@Suite("Federation under an agreement")
struct FederationAgreementTests {
    func agreement(
        _ f: FederationFixture, consumer: String = "broker@cloud2.test", entitlements: Set<Entitlement> = [.federate],
        instanceTypes: [String] = [], until: Date? = nil
    ) -> Agreement {
        let terms = Terms(
            resources: ResourceAmount(instances: 2, vcpu: 4), instanceTypes: instanceTypes,
            period: ValidityPeriod(from: f.t0.addingTimeInterval(-60), until: until ?? f.agreementEndsAt),
            rates: RateCard(currency: "EUR"), sla: ServiceLevel(availabilityPercent: 99, maxMigrationDowntimeSeconds: 0, support: "none"),
            entitlements: entitlements)
        return Agreement(id: "agr-1", negotiationID: "n-1", consumer: consumer, provider: "broker@cloud1.test", terms: terms, createdAt: f.t0)
    }

    func answer(_ f: FederationFixture, _ agreement: Agreement?, serviceID: String = "svc-1", now: Date? = nil) async -> FederationMessage.Body {
        await f.runner.handle(
            FederationMessage(serviceID: serviceID, body: .select(f.webSelection())), from: "broker@cloud2.test", agreement: agreement,
            now: now ?? f.t0
        ).body
    }

    @Test("select is refused without a matching agreement in force that grants federate and covers the size")
    func refusals() async throws {
        let f = try FederationFixture()
        #expect(await answer(f, nil) == .refused(reason: "no agreement agr-1"))
        #expect(await answer(f, agreement(f, consumer: "other@cloud3.test")) == .refused(reason: "agreement agr-1 is not with broker@cloud2.test"))
        #expect(await answer(f, agreement(f), now: f.agreementEndsAt) == .refused(reason: "agreement agr-1 is not in force"))
        #expect(await answer(f, agreement(f, entitlements: [.query])) == .refused(reason: "agreement agr-1 does not grant federate"))
        #expect(await answer(f, agreement(f, instanceTypes: ["sim.large"]))
            == .refused(reason: "agreement agr-1 does not cover instance type sim.small (covers sim.large)"))
        #expect(try await f.cloud.listInstances().isEmpty)
    }

    @Test("an agreement that covers the service provisions it, and the service ends with the agreement's period")
    func provisions() async throws {
        let f = try FederationFixture()
        let until = f.t0.addingTimeInterval(120)
        guard case .provisioned(let service) = await answer(f, agreement(f, instanceTypes: ["sim.small"], until: until)) else {
            Issue.record("not provisioned")
            return
        }
        #expect(service.credentials.expiresAt == until)  // TTL 600 s, but the agreement ends first
        #expect(try await f.runner.tick(now: until)["svc-1"]?.phase == .ended)
        #expect(try await f.cloud.listInstances().isEmpty)
    }
}

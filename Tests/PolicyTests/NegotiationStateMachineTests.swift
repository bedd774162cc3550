import Foundation
import Testing
@testable import Policy

typealias Machine = NegotiationStateMachine

let t0 = Date(timeIntervalSince1970: 1_780_000_000)

func terms(vcpu: Int = 8, price: String = "0.0230") -> Terms {
    Terms(
        resources: ResourceAmount(instances: 2, vcpu: vcpu, memoryGiB: 16, storageGiB: 100, transferGB: Decimal(string: "50.5")!),
        instanceTypes: ["m1.small"],
        period: ValidityPeriod(from: t0, until: t0.addingTimeInterval(86_400 * 30)),
        rates: RateCard(currency: "EUR", instanceHour: ["m1.small": Decimal(string: price)!], perGBTransferred: Decimal(string: "0.02")!, perGBMonthStored: Decimal(string: "0.04")!),
        sla: ServiceLevel(availabilityPercent: Decimal(string: "99.9")!, maxMigrationDowntimeSeconds: 300, support: "24x7"),
        entitlements: [.migrateIn, .query],
        placement: Placement(regions: ["eu-west-1"], jurisdictions: ["EU"]))
}

/// Two machines and a perfect link between them: `step` delivers a `.send` to the other side and
/// feeds the IQ result back, as the broker's `run(action)` would.
struct Pair {
    var consumer = Machine(negotiationID: "n1", role: .consumer, local: "broker@cloud1.example", peer: "broker@cloud2.example", now: t0)
    var provider = Machine(negotiationID: "n1", role: .provider, local: "broker@cloud2.example", peer: "broker@cloud1.example", now: t0)
    var now = t0

    subscript(role: NegotiationRole) -> Machine {
        get { role == .consumer ? consumer : provider }
        set { if role == .consumer { consumer = newValue } else { provider = newValue } }
    }

    /// Delivers `action` (from `sender`) and returns the receiver's action.
    @discardableResult
    mutating func step(_ action: Machine.Action, from sender: NegotiationRole) -> Machine.Action {
        now += 0.01
        let message: NegotiationMessage
        switch action {
        case .send(let m): message = m
        case .terminated(_, let notice?, _): message = notice
        default: Issue.record("nothing to deliver: \(action)"); return .none
        }
        let answer = self[sender.peer].received(message, now: now)
        if case .acknowledge(let id) = answer, case .send = action {
            #expect(self[sender].acknowledged(messageID: id, now: now) == .persist)
        }
        return answer
    }

    var states: [NegotiationState] { [consumer.state, provider.state] }
}

@Suite struct NegotiationStateMachineTests {
    @Test func happyPath() throws {
        var p = Pair()
        p.step(try p.consumer.request(terms(), now: p.now), from: .consumer)
        #expect(p.states == [.requested, .requested])
        p.step(try p.provider.offer(terms(), now: p.now), from: .provider)
        #expect(p.states == [.offered, .offered])
        p.step(try p.consumer.accept(now: p.now), from: .consumer)
        #expect(p.states == [.accepted, .accepted])
        p.step(try p.provider.agree(agreementID: "a1", now: p.now), from: .provider)
        #expect(p.states == [.agreed, .agreed])
        #expect(p.consumer.agreement == p.provider.agreement)
        #expect(p.consumer.agreement?.consumer == "broker@cloud1.example")
        p.step(try p.consumer.verify(now: p.now), from: .consumer)
        #expect(p.states == [.verified, .verified])
        p.step(try p.provider.finalize(now: p.now), from: .provider)
        #expect(p.states == [.finalized, .finalized])
        #expect(p.consumer.nextDeadline == nil)
    }

    @Test func counterOfferAccepted() throws {
        var p = Pair()
        p.step(try p.consumer.request(terms(vcpu: 16), now: p.now), from: .consumer)
        p.step(try p.provider.offer(terms(vcpu: 8), now: p.now), from: .provider)  // counter: fewer vCPUs
        p.step(try p.consumer.request(terms(vcpu: 12), now: p.now), from: .consumer)  // counter again
        #expect(p.states == [.requested, .requested])
        p.step(try p.provider.offer(terms(vcpu: 10), now: p.now), from: .provider)
        p.step(try p.consumer.accept(now: p.now), from: .consumer)
        p.step(try p.provider.agree(agreementID: "a1", now: p.now), from: .provider)
        #expect(p.states == [.agreed, .agreed])
        #expect(p.consumer.agreement?.terms.resources.vcpu == 10)
        #expect(p.provider.snapshot.rounds == 4)
    }

    @Test func providerAgreesDirectlyToARequest() throws {
        var p = Pair()
        p.step(try p.consumer.request(terms(), now: p.now), from: .consumer)
        p.step(try p.provider.agree(agreementID: "a1", now: p.now), from: .provider)
        #expect(p.states == [.agreed, .agreed])
    }

    @Test func rejectionWithReason() throws {
        var p = Pair()
        p.step(try p.consumer.request(terms(vcpu: 500), now: p.now), from: .consumer)
        let action = p.provider.terminate(reason: "quota-exceeded: vcpu 500 > 64", now: p.now)
        guard case .terminated(let reason, _, nil) = action else { Issue.record("\(action)"); return }
        #expect(reason == "quota-exceeded: vcpu 500 > 64")
        #expect(p.step(action, from: .provider) == .acknowledge(messageID: "n1/provider/1"))
        #expect(p.states == [.terminated, .terminated])
        #expect(p.consumer.terminationReason == "peer terminated: quota-exceeded: vcpu 500 > 64")
    }

    @Test func timeoutRetriesThenTerminates() throws {
        var m = Pair().consumer
        let first = try m.request(terms(), now: t0)
        #expect(m.nextDeadline == t0 + 5)
        #expect(m.tick(now: t0 + 4) == .none)
        #expect(m.tick(now: t0 + 5) == first)  // same message ID: the peer can deduplicate
        #expect(m.pending?.attempts == 2)
        #expect(m.tick(now: t0 + 10) == first)
        let last = m.tick(now: t0 + 15)
        guard case .terminated(let reason, let notice?, nil) = last else { Issue.record("\(last)"); return }
        #expect(reason == "no result for request after 3 attempts")
        #expect(notice.body == .terminate(reason: reason))
        #expect(m.state == .terminated)
        #expect(m.tick(now: t0 + 100) == .none)
    }

    @Test func lateAcknowledgementOfAnEarlierAttemptCounts() throws {
        var p = Pair()
        let send = try p.consumer.request(terms(), now: t0)
        #expect(p.consumer.tick(now: t0 + 5) == send)
        guard case .send(let m) = send else { return }
        #expect(p.consumer.acknowledged(messageID: m.messageID, now: t0 + 6) == .persist)
        #expect(p.consumer.state == .requested)
    }

    @Test func decisionTimeoutTerminates() throws {
        var p = Pair()
        p.step(try p.consumer.request(terms(), now: p.now), from: .consumer)
        // The provider never decides.
        #expect(p.provider.tick(now: p.now + 30) == .none)
        let action = p.provider.tick(now: p.now + 61)
        guard case .terminated(let reason, _, _) = action else { Issue.record("\(action)"); return }
        #expect(reason == "no progress in REQUESTED for 60 s")
    }

    @Test func unexpectedMessageTerminatesWithReason() throws {
        var p = Pair()
        p.step(try p.consumer.request(terms(), now: p.now), from: .consumer)
        let bogus = NegotiationMessage(negotiationID: "n1", messageID: "x", body: .finalize)
        let action = p.consumer.received(bogus, now: p.now)
        guard case .terminated(let reason, .some, let refusing) = action else { Issue.record("\(action)"); return }
        #expect(reason == "unexpected finalize in state REQUESTED")
        #expect(refusing == "x")
        #expect(p.consumer.state == .terminated)
        // The provider learns of it through the notice.
        #expect(p.step(action, from: .consumer) == .acknowledge(messageID: "n1/consumer/2"))
        #expect(p.provider.state == .terminated)
    }

    @Test func messageFromTheWrongRoleTerminates() throws {
        var p = Pair()
        let offer = NegotiationMessage(negotiationID: "n1", messageID: "x", body: .offer(terms()))
        let action = p.provider.received(offer, now: t0)
        guard case .terminated(let reason, _, "x") = action else { Issue.record("\(action)"); return }
        #expect(reason == "a consumer cannot send offer")
    }

    @Test func agreementOverOtherTermsTerminates() throws {
        var p = Pair()
        p.step(try p.consumer.request(terms(), now: p.now), from: .consumer)
        let forged = Agreement(id: "a", negotiationID: "n1", consumer: "broker@cloud1.example", provider: "broker@cloud2.example", terms: terms(price: "0.5"), createdAt: t0)
        let action = p.consumer.received(NegotiationMessage(negotiationID: "n1", messageID: "f", body: .agreement(forged)), now: p.now)
        guard case .terminated(let reason, _, "f") = action else { Issue.record("\(action)"); return }
        #expect(reason == "agreement does not match: terms differ from those on the table")
    }

    @Test func messageForAnotherNegotiationIsRefusedWithoutChange() throws {
        var p = Pair()
        p.step(try p.consumer.request(terms(), now: p.now), from: .consumer)
        let other = NegotiationMessage(negotiationID: "n2", messageID: "y", body: .offer(terms()))
        #expect(p.consumer.received(other, now: p.now) == .refuse(messageID: "y", reason: "unknown negotiation n2"))
        #expect(p.consumer.state == .requested)
    }

    @Test func duplicateIsAcknowledgedOnce() throws {
        var p = Pair()
        let send = try p.consumer.request(terms(), now: t0)
        guard case .send(let m) = send else { return }
        #expect(p.provider.received(m, now: t0) == .acknowledge(messageID: m.messageID))
        let before = p.provider.snapshot
        #expect(p.provider.received(m, now: t0 + 1) == .acknowledge(messageID: m.messageID))
        #expect(p.provider.snapshot == before)
    }

    @Test func peerMovingOnActsAsTheLostAcknowledgement() throws {
        var p = Pair()
        guard case .send(let request) = try p.consumer.request(terms(), now: t0) else { return }
        _ = p.provider.received(request, now: t0)  // its IQ result is lost
        guard case .send(let offer) = try p.provider.offer(terms(vcpu: 4), now: t0 + 1) else { return }
        #expect(p.consumer.received(offer, now: t0 + 2) == .acknowledge(messageID: offer.messageID))
        #expect(p.consumer.state == .offered)
        #expect(p.consumer.pending == nil)
    }

    @Test func bothSidesOpeningAtOnceTerminatesBoth() throws {
        var p = Pair()
        guard case .send(let request) = try p.consumer.request(terms(), now: t0),
              case .send(let offer) = try p.provider.offer(terms(vcpu: 4), now: t0)
        else { return }
        let atProvider = p.provider.received(request, now: t0)
        let atConsumer = p.consumer.received(offer, now: t0)
        guard case .terminated(let reason, _, _) = atConsumer, case .terminated = atProvider else {
            Issue.record("\(atConsumer) \(atProvider)"); return
        }
        #expect(reason == "received offer while waiting for the result of request")
        #expect(p.states == [.terminated, .terminated])
    }

    @Test func peerRefusalTerminates() throws {
        var p = Pair()
        guard case .send(let m) = try p.consumer.request(terms(), now: t0) else { return }
        let action = p.consumer.peerRefused(messageID: m.messageID, reason: "not entitled", now: t0)
        guard case .terminated(let reason, _, nil) = action else { Issue.record("\(action)"); return }
        #expect(reason == "peer refused request: not entitled")
    }

    @Test func localMisuseThrowsAndChangesNothing() throws {
        var p = Pair()
        #expect(throws: NegotiationError.self) { try p.provider.accept(now: t0) }
        #expect(throws: NegotiationError.self) { try p.consumer.verify(now: t0) }
        _ = try p.consumer.request(terms(), now: t0)
        #expect(throws: NegotiationError.self) { try p.consumer.request(terms(), now: t0) }  // still waiting
        #expect(p.provider.snapshot.sent == 0)
    }

    @Test func counterOfferRoundsAreLimited() throws {
        var p = Pair()
        p.consumer = Machine(
            negotiationID: "n1", role: .consumer, local: "broker@cloud1.example", peer: "broker@cloud2.example",
            configuration: .init(maxRounds: 2), now: t0)
        p.step(try p.consumer.request(terms(), now: p.now), from: .consumer)
        p.step(try p.provider.offer(terms(vcpu: 4), now: p.now), from: .provider)
        #expect(throws: NegotiationError.self) { try p.consumer.request(terms(vcpu: 6), now: p.now) }
    }

    // MARK: restart

    /// Stores and reloads through JSON, as SQLite would hold it.
    func reload(_ m: Machine) throws -> Machine {
        let data = try JSONEncoder().encode(m.snapshot)
        let restored = Machine(resuming: try JSONDecoder().decode(Machine.Snapshot.self, from: data))
        #expect(restored.snapshot == m.snapshot)
        return restored
    }

    /// The six protocol steps, each as (who acts, what they do).
    static let steps: [(NegotiationRole, @Sendable (inout Machine, Date) throws -> Machine.Action)] = [
        (.consumer, { try $0.request(terms(), now: $1) }),
        (.provider, { try $0.offer(terms(vcpu: 4), now: $1) }),
        (.consumer, { try $0.accept(now: $1) }),
        (.provider, { try $0.agree(agreementID: "a1", now: $1) }),
        (.consumer, { try $0.verify(now: $1) }),
        (.provider, { try $0.finalize(now: $1) }),
    ]

    /// Both sides restart after every step (stored state, nothing pending) and carry on.
    @Test func restartAfterEveryStateResumes() throws {
        var p = Pair()
        for (role, act) in Self.steps {
            var actor = p[role]
            let action = try act(&actor, p.now)
            p[role] = actor
            p.step(action, from: role)
            p.consumer = try reload(p.consumer)
            p.provider = try reload(p.provider)
            #expect(p.consumer.resume(now: p.now) == .none)
            #expect(p.provider.resume(now: p.now) == .none)
            #expect(p.consumer.state == p.provider.state)
        }
        #expect(p.states == [.finalized, .finalized])
    }

    /// The sender crashes after storing a pending message, at every step: on resume it sends
    /// the same message again; whether or not the peer got it the first time, both move on.
    @Test(arguments: 0..<6, [false, true])
    func restartWithPendingMessageResumes(upTo index: Int, peerGotIt: Bool) throws {
        var p = Pair()
        for (role, act) in Self.steps[..<index] {
            var actor = p[role]
            let action = try act(&actor, p.now)
            p[role] = actor
            p.step(action, from: role)
        }
        let (role, act) = Self.steps[index]
        var actor = p[role]
        guard case .send(let message) = try act(&actor, p.now) else { Issue.record("no send"); return }
        if peerGotIt { _ = p[role.peer].received(message, now: p.now) }  // delivered, result lost
        var restarted = try reload(actor)
        let resumed = restarted.resume(now: p.now + 1)
        #expect(resumed == .send(message))
        p[role] = restarted
        p.step(resumed, from: role)
        #expect(p.consumer.state == message.targetForTesting)
        #expect(p.provider.state == message.targetForTesting)
    }

    /// A side restarting after its deadline terminates and tells the peer; both end TERMINATED.
    @Test(arguments: 0..<5)
    func restartAfterDeadlineTerminatesBothSides(after index: Int) throws {
        var p = Pair()
        for (role, act) in Self.steps[...index] {
            var actor = p[role]
            let action = try act(&actor, p.now)
            p[role] = actor
            p.step(action, from: role)
        }
        var restarted = try reload(p.consumer)
        let action = restarted.resume(now: p.now + 3600)
        guard case .terminated(let reason, .some, nil) = action else { Issue.record("\(action)"); return }
        #expect(reason.hasPrefix("restarted after the"))
        p.consumer = restarted
        p.step(action, from: .consumer)
        #expect(p.states == [.terminated, .terminated])
    }

    @Test func restartWithRetriesExhaustedTerminates() throws {
        var m = Pair().consumer
        _ = try m.request(terms(), now: t0)
        _ = m.tick(now: t0 + 5)
        _ = m.tick(now: t0 + 10)
        var restarted = try reload(m)
        guard case .terminated(let reason, _, _) = restarted.resume(now: t0 + 11) else { Issue.record("did not terminate"); return }
        #expect(reason == "restarted with request unacknowledged after 3 attempts")
    }

    @Test func finalStatesStayAfterRestart() throws {
        var m = Pair().consumer
        _ = m.terminate(reason: "operator", now: t0)
        var restarted = try reload(m)
        #expect(restarted.resume(now: t0 + 10_000) == .none)
        #expect(restarted.state == .terminated)
        #expect(restarted.terminationReason == "operator")
    }
}

extension NegotiationMessage {
    var targetForTesting: NegotiationState { target }
}

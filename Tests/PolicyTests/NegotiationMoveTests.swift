import Foundation
import Testing
@testable import Policy

/// The policy engine's part of a negotiation, decided without a broker: each case is what
/// `NegotiationService` then performs.
@Suite struct NegotiationMoveTests {
    let cloud2 = "broker@cloud2.example"

    func good() -> Terms {
        var good = terms()
        good.period = ValidityPeriod(from: june, until: june.addingTimeInterval(86_400))
        return good
    }

    func move(_ role: NegotiationRole, _ state: NegotiationState, _ terms: Terms?, peer: String? = nil, rounds: Int = 0,
              policies: PolicySet? = nil) throws -> NegotiationMove {
        NegotiationMove.decide(
            role: role, state: state, terms: terms, peer: peer ?? cloud2, rounds: rounds, maxRounds: 8,
            policies: try policies ?? exampleSet(), now: june)
    }

    @Test func providerAgreesToAllowedTerms() throws {
        #expect(try move(.provider, .requested, good()) == .agree)
        #expect(try move(.provider, .accepted, good()) == .agree)
        #expect(try move(.provider, .verified, good()) == .finalize)
    }

    @Test func providerCountersCheapTermsWithItsRateCard() throws {
        var cheap = good()
        cheap.rates.instanceHour["m1.small"] = Decimal(string: "0.0229")
        guard case .counter(let counter, let reasons) = try move(.provider, .requested, cheap) else {
            Issue.record("expected a counter-offer")
            return
        }
        #expect(reasons.map(\.code) == ["price-too-low"])
        #expect(counter != cheap)
        #expect(try exampleSet().policy(for: cloud2, at: june)?.evaluate(terms: counter, as: .provider) == .allowed)
    }

    @Test func providerTerminatesWhenNoRoundIsLeft() throws {
        var cheap = good()
        cheap.rates.instanceHour["m1.small"] = Decimal(string: "0.0229")
        guard case .terminate(let reason) = try move(.provider, .requested, cheap, rounds: 8) else {
            Issue.record("expected a termination once the rounds are used up")
            return
        }
        #expect(reason.hasPrefix("price-too-low: m1.small costs "))
    }

    @Test func providerTerminatesWithoutPolicyEntry() throws {
        let only = PolicySet(peers: [PeerPolicy(name: "only", match: [JIDPattern("a@b.example")!], entitlements: [.query])])
        #expect(try move(.provider, .requested, good(), policies: only)
            == .terminate(reason: "no-policy: this cloud has no policy entry for \(cloud2)"))
    }

    @Test func consumerAcceptsOrRefusesAnOffer() throws {
        #expect(try move(.consumer, .offered, good()) == .accept)
        var endless = good()
        endless.period.until = nil
        guard case .terminate = try move(.consumer, .offered, endless) else {
            Issue.record("expected the consumer to refuse an offer its policy denies")
            return
        }
        var empty = good()
        empty.entitlements = []
        #expect(try move(.consumer, .offered, empty, policies: PolicySet()) == .terminate(reason: "the offer grants no entitlement"))
        #expect(try move(.consumer, .agreed, good()) == .countersign)
    }

    @Test func waitsWhenItIsThePeersTurn() throws {
        #expect(try move(.consumer, .requested, good()) == .wait)
        #expect(try move(.provider, .offered, good()) == .wait)
        #expect(try move(.provider, .requested, nil) == .wait)
        #expect(try move(.provider, .finalized, good()) == .wait)
    }
}

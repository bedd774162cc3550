import Foundation

/// This broker's next move in a negotiation when it is its turn, as its policy files decide it.
///
/// `NegotiationStateMachine` checks the protocol; this decides what to say. Pure: the negotiation
/// service performs the move (signs, journals, sends).
/// - provider, on a request: agree if `PeerPolicy.evaluate(terms:as: .provider)` allows it;
///   otherwise counter with `PeerPolicy.counterOffer(to:)` if that differs, is allowed, and a round
///   is left; otherwise terminate with the policy's reasons. No policy entry for the peer: terminate.
/// - provider, on accept: agree; on verify: finalize.
/// - consumer, on an offer: accept unless its entry for the provider denies it (SLA, validity), or
///   the offer grants nothing; on an agreement: countersign.
public enum NegotiationMove: Sendable, Hashable {
    /// Provider: conclude and sign an agreement over the terms on the table.
    case agree
    /// Provider: offer these terms instead; the request was denied for `reasons`.
    case counter(Terms, reasons: [PolicyReason])
    /// Provider: finalize the countersigned agreement.
    case finalize
    /// Consumer: accept the offer on the table.
    case accept
    /// Consumer: countersign the provider's agreement.
    case countersign
    case terminate(reason: String)
    /// Not this side's turn (or nothing on the table).
    case wait

    /// The move for a negotiation in `state` with `terms` on the table, with `peer`, at `now`.
    public static func decide(
        role: NegotiationRole, state: NegotiationState, terms: Terms?, peer: String, rounds: Int, maxRounds: Int,
        policies: PolicySet, now: Date
    ) -> NegotiationMove {
        switch (role, state) {
        case (.provider, .requested):
            guard let terms else { return .wait }
            guard let policy = policies.policy(for: peer, at: now) else {
                return .terminate(reason: "no-policy: this cloud has no policy entry for \(peer)")
            }
            switch policy.evaluate(terms: terms, as: .provider) {
            case .allowed:
                return .agree
            case .denied(let reasons):
                if let counter = policy.counterOffer(to: terms), counter != terms,
                    policy.evaluate(terms: counter, as: .provider) == .allowed, rounds < maxRounds
                {
                    return .counter(counter, reasons: reasons)
                }
                return .terminate(reason: text(of: reasons))
            }
        case (.provider, .accepted):
            return .agree
        case (.provider, .verified):
            return .finalize
        case (.consumer, .offered):
            guard let terms else { return .wait }
            if let policy = policies.policy(for: peer, at: now), case .denied(let reasons) = policy.evaluate(terms: terms, as: .consumer) {
                return .terminate(reason: text(of: reasons))
            }
            if terms.entitlements.isEmpty { return .terminate(reason: "the offer grants no entitlement") }
            return .accept
        case (.consumer, .agreed):
            return .countersign
        default:
            return .wait
        }
    }

    /// Policy reasons as one line, as they travel in a termination reason and the log.
    public static func text(of reasons: [PolicyReason]) -> String {
        reasons.map { "\($0.code): \($0.message)" }.joined(separator: "; ")
    }
}

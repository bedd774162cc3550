import Foundation
import Policy

extension BrokerSettings {
    /// `[negotiation]`: timers and limits of contract negotiations. The defaults are the Policy
    /// module's (`NegotiationStateMachine.Configuration`, `NegotiationAdmission`).
    enum Negotiation {
        static let defaults = NegotiationStateMachine.Configuration()

        static let stepTimeoutSeconds = Setting<Double>(
            "negotiation", "step_timeout_seconds", default: defaults.stepTimeout, rule: .above(0),
            "Wait for the peer's IQ result of one attempt.")
        static let maxAttempts = Setting<Int>(
            "negotiation", "max_attempts", default: defaults.maxAttempts, rule: .atLeast(1), "Attempts per message, including the first.")
        static let decisionTimeoutSeconds = Setting<Double>(
            "negotiation", "decision_timeout_seconds", default: defaults.decisionTimeout, rule: .above(0),
            "A state without progress from either side for this long terminates.")
        static let maxRounds = Setting<Int>(
            "negotiation", "max_rounds", default: defaults.maxRounds, rule: .atLeast(1), "Requests plus offers in one negotiation.")
        static let maxOpenPerPeer = Setting<Int>(
            "negotiation", "max_open_per_peer", default: NegotiationAdmission.defaultMaxOpenPerPeer, rule: .atLeast(1),
            "Negotiations one peer may hold open with this broker as provider (beyond: resource-constraint).")
        static let maxOpen = Setting<Int>(
            "negotiation", "max_open", default: NegotiationAdmission.defaultMaxOpen, rule: .atLeast(1),
            "Negotiations all peers together may hold open with this broker as provider; at least max_open_per_peer.")

        static let section = SettingsSection("negotiation", "Optional.", [
            stepTimeoutSeconds.erased, maxAttempts.erased, decisionTimeoutSeconds.erased, maxRounds.erased,
            maxOpenPerPeer.erased, maxOpen.erased,
        ])
    }
}

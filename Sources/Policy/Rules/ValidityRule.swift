import Foundation

/// Denies when the governing entry is not valid at `context.now`. `PolicySet.policy(for:at:)`
/// already skips invalid entries; this rule protects callers that pass an entry in themselves
/// (e.g. one taken from an agreement negotiated earlier).
public struct ValidityRule: PolicyRule {
    public init() {}

    public func evaluate(_ request: PolicyRequest, context: PolicyContext) -> PolicyDecision {
        guard let policy = context.policy, !policy.validity.contains(context.now) else { return .allowed }
        let iso = ISO8601DateFormatter()
        let from = policy.validity.from.map { iso.string(from: $0) } ?? "-"
        let until = policy.validity.until.map { iso.string(from: $0) } ?? "-"
        return .denied("outside-validity", "policy '\(policy.name)' is valid from \(from) until \(until), not at \(iso.string(from: context.now))")
    }
}

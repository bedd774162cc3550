import Foundation

/// What `intercloud policy explain` prints: which entry governs the peer, and the decision
/// with every reason. Kept here (not in the CLI) so the broker can log the same text.
public struct PolicyExplanation: Sendable, Hashable, CustomStringConvertible {
    public var peer: String
    public var request: PolicyRequest
    /// The governing entry's name and origin (`file#peer[n]`), nil when no entry covers the peer.
    public var entryName: String?
    public var entrySource: String?
    public var decision: PolicyDecision

    public var description: String {
        var lines = ["peer: \(peer)", "request: \(request.entitlement.rawValue)"]
        if let entryName { lines.append("policy: \(entryName) (\(entrySource ?? "?"))") } else { lines.append("policy: none") }
        switch decision {
        case .allowed:
            lines.append("decision: allowed")
        case .denied(let reasons):
            lines.append("decision: denied")
            lines += reasons.map { "  - \($0)" }
        }
        return lines.joined(separator: "\n")
    }
}

extension PolicySet {
    public func explain(
        _ request: PolicyRequest, peer: String, usage: ResourceAmount = .zero, now: Date,
        rules: any PolicyRule = PolicySet.defaultRules
    ) -> PolicyExplanation {
        let entry = policy(for: peer, at: now)
        let decision = rules.evaluate(request, context: PolicyContext(peer: peer, now: now, usage: usage, policy: entry))
        return PolicyExplanation(peer: peer, request: request, entryName: entry?.name, entrySource: entry?.source, decision: decision)
    }
}

import Foundation

/// Why a rule refused. `code` is stable for programs and tests; `message` is for operators.
public struct PolicyReason: Codable, Sendable, Hashable, CustomStringConvertible {
    public var code: String
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}

/// The result of evaluating a rule: a refusal always says why.
public enum PolicyDecision: Codable, Sendable, Hashable {
    case allowed
    case denied([PolicyReason])

    public var isAllowed: Bool { if case .allowed = self { true } else { false } }

    public var reasons: [PolicyReason] {
        if case .denied(let reasons) = self { reasons } else { [] }
    }

    public static func denied(_ code: String, _ message: String) -> PolicyDecision {
        .denied([PolicyReason(code: code, message: message)])
    }
}

/// One check, small enough to read in a minute (modelled on swift-certificates' `VerifierPolicy`).
/// Rules are pure: everything they need is in the request and the context.
public protocol PolicyRule: Sendable {
    func evaluate(_ request: PolicyRequest, context: PolicyContext) -> PolicyDecision
}

/// Allowed only if every rule allows. Evaluates all rules rather than stopping at the first
/// refusal so that `policy explain` can show every reason at once.
public struct AllOf: PolicyRule {
    public var rules: [any PolicyRule]

    public init(_ rules: [any PolicyRule]) { self.rules = rules }
    public init(@PolicyRuleBuilder _ build: () -> [any PolicyRule]) { self.rules = build() }

    public func evaluate(_ request: PolicyRequest, context: PolicyContext) -> PolicyDecision {
        let reasons = rules.flatMap { $0.evaluate(request, context: context).reasons }
        return reasons.isEmpty ? .allowed : .denied(reasons)
    }
}

/// Allowed if any rule allows; otherwise denied with every rule's reasons.
/// An empty `AnyOf` denies: nothing vouched for the request.
public struct AnyOf: PolicyRule {
    public var rules: [any PolicyRule]

    public init(_ rules: [any PolicyRule]) { self.rules = rules }
    public init(@PolicyRuleBuilder _ build: () -> [any PolicyRule]) { self.rules = build() }

    public func evaluate(_ request: PolicyRequest, context: PolicyContext) -> PolicyDecision {
        var reasons: [PolicyReason] = []
        for rule in rules {
            let decision = rule.evaluate(request, context: context)
            if decision.isAllowed { return .allowed }
            reasons += decision.reasons
        }
        if rules.isEmpty { return .denied("no-rule", "no rule allows this request") }
        return .denied(reasons)
    }
}

@resultBuilder
public enum PolicyRuleBuilder {
    public static func buildExpression(_ rule: any PolicyRule) -> [any PolicyRule] { [rule] }
    public static func buildBlock(_ parts: [any PolicyRule]...) -> [any PolicyRule] { parts.flatMap { $0 } }
    public static func buildOptional(_ part: [any PolicyRule]?) -> [any PolicyRule] { part ?? [] }
    public static func buildEither(first: [any PolicyRule]) -> [any PolicyRule] { first }
    public static func buildEither(second: [any PolicyRule]) -> [any PolicyRule] { second }
    public static func buildArray(_ parts: [[any PolicyRule]]) -> [any PolicyRule] { parts.flatMap { $0 } }
}

extension PolicySet {
    /// The default rule set applied to every peer request: a governing entry must exist and be
    /// valid now, grant the entitlement, keep the peer within quota, and allow the placement.
    public static let defaultRules = AllOf {
        PeerKnownRule()
        ValidityRule()
        EntitlementRule()
        QuotaRule()
        PlacementRule()
        InstanceTypePricedRule()
    }

    /// Finds the entry governing `peer` and evaluates `rules` (default: `defaultRules`).
    public func evaluate(
        _ request: PolicyRequest, peer: String, usage: ResourceAmount = .zero, now: Date,
        rules: any PolicyRule = PolicySet.defaultRules
    ) -> PolicyDecision {
        let context = PolicyContext(peer: peer, now: now, usage: usage, policy: policy(for: peer, at: now))
        return rules.evaluate(request, context: context)
    }
}

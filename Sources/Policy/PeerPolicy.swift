import Foundation

/// A bare-JID pattern from a policy file: an exact JID (`broker@cloud2.example`), every local part
/// at a domain (`*@cloud2.example`), or everyone (`*`). Patterns stay this simple on purpose: an
/// operator must be able to see at a glance which peers a rule covers.
public struct JIDPattern: Codable, Sendable, Hashable, CustomStringConvertible {
    public let pattern: String

    public init?(_ pattern: String) {
        let p = pattern.lowercased()
        if p == "*" { self.pattern = p; return }
        let parts = p.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[1].isEmpty, !parts[1].contains("*"), !parts[1].contains("/"),
              !parts[0].isEmpty, parts[0] == "*" || !parts[0].contains("*")
        else { return nil }
        self.pattern = p
    }

    public var description: String { pattern }

    /// Higher is more specific; the most specific matching entry wins.
    public var specificity: Int {
        if pattern == "*" { return 0 }
        return pattern.hasPrefix("*@") ? 1 : 2
    }

    /// Matches a bare or full JID; the resource is ignored because policies are per broker account.
    public func matches(_ jid: String) -> Bool {
        var bare = jid.lowercased()
        if let slash = bare.firstIndex(of: "/") { bare = String(bare[..<slash]) }
        if pattern == "*" { return true }
        if pattern.hasPrefix("*@") { return bare.hasSuffix(pattern.dropFirst(1)) && bare.split(separator: "@").count == 2 }
        return bare == pattern
    }
}

/// Everything one policy file says about one peer or peer group (`[[peer]]`).
public struct PeerPolicy: Codable, Sendable, Hashable {
    /// Human name for reasons and `policy explain`.
    public var name: String
    public var match: [JIDPattern]
    public var validity: ValidityPeriod
    public var entitlements: Set<Entitlement>
    public var quota: Quota
    public var rates: RateCard?
    public var slaOffered: ServiceLevel?
    public var slaRequired: ServiceLevel?
    /// What we pay this peer at most when we consume (`[peer.max_rates]`).
    public var maxRates: PriceCeiling?
    public var placement: Placement
    /// Where this entry came from, for diagnostics (`file:line`).
    public var source: String

    public init(
        name: String, match: [JIDPattern], validity: ValidityPeriod = .always, entitlements: Set<Entitlement> = [],
        quota: Quota = .unlimited, rates: RateCard? = nil, slaOffered: ServiceLevel? = nil, slaRequired: ServiceLevel? = nil,
        placement: Placement = .anywhere, source: String = "", maxRates: PriceCeiling? = nil
    ) {
        self.maxRates = maxRates
        self.name = name
        self.match = match
        self.validity = validity
        self.entitlements = entitlements
        self.quota = quota
        self.rates = rates
        self.slaOffered = slaOffered
        self.slaRequired = slaRequired
        self.placement = placement
        self.source = source
    }

    /// The specificity of the best pattern matching `jid`, or nil if none matches.
    public func matchSpecificity(for jid: String) -> Int? {
        match.filter { $0.matches(jid) }.map(\.specificity).max()
    }
}

/// All peer entries loaded from one or more policy files.
public struct PolicySet: Codable, Sendable, Hashable {
    public var peers: [PeerPolicy]

    public init(peers: [PeerPolicy] = []) { self.peers = peers }

    /// The entry that governs `jid` at `now`: among entries valid at `now`, the one with the most
    /// specific matching pattern (exact JID over `*@domain` over `*`). Loading refuses files where
    /// two entries with the same pattern overlap in time, so there is no tie at the same specificity
    /// from the same pattern; across different patterns of equal specificity the first entry wins.
    public func policy(for jid: String, at now: Date) -> PeerPolicy? {
        var best: (PeerPolicy, Int)?
        for peer in peers where peer.validity.contains(now) {
            guard let s = peer.matchSpecificity(for: jid) else { continue }
            if best == nil || s > best!.1 { best = (peer, s) }
        }
        return best?.0
    }
}

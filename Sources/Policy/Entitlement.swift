/// What a peer may ask this broker to do; the four verbs of the federation protocol.
public enum Entitlement: String, Codable, Sendable, Hashable, CaseIterable, Comparable {
    case query
    case federate
    case migrateIn = "migrate-in"
    case migrateOut = "migrate-out"

    public static func < (lhs: Entitlement, rhs: Entitlement) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// What a peer may ask this broker to do: the four verbs of the federation protocol, and
/// `migrate-live`, which refines the migration verbs.
public enum Entitlement: String, Codable, Sendable, Hashable, CaseIterable, Comparable {
    case query
    case federate
    case migrateIn = "migrate-in"
    case migrateOut = "migrate-out"
    /// A migration may be live (the guest keeps running while its memory and disk move, between two
    /// libvirt clouds) instead of cold. It adds to `migrate-in`/`migrate-out`, never replaces them:
    /// an agreement grants it next to `migrate-in`, and a policy entry that lets a peer migrate in
    /// (or lets our instances go out to it) allows the live mode only when it lists it too.
    case migrateLive = "migrate-live"

    public static func < (lhs: Entitlement, rhs: Entitlement) -> Bool { lhs.rawValue < rhs.rawValue }
}

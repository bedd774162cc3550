import Foundation

/// What a peer asks for, as the policy engine sees it (no protocol details).
public enum PolicyRequest: Codable, Sendable, Hashable {
    /// A catalog query beyond the default answer.
    case query
    /// Provision `service` from the catalog for the peer, needing `size` resources here.
    case federate(service: String, size: ResourceAmount)
    /// The peer moves an instance into this cloud.
    case migrateIn(MigrationSpec)
    /// An instance of ours moves to the peer (checked against what we allow that peer to receive).
    case migrateOut(MigrationSpec)

    public var entitlement: Entitlement {
        switch self {
        case .query: .query
        case .federate: .federate
        case .migrateIn: .migrateIn
        case .migrateOut: .migrateOut
        }
    }

    /// The resources this request would add to the peer's usage; a query uses none.
    public var demand: ResourceAmount {
        switch self {
        case .query: .zero
        case .federate(_, let size): size
        case .migrateIn(let m), .migrateOut(let m): m.demand
        }
    }
}

/// One instance to migrate.
public struct MigrationSpec: Codable, Sendable, Hashable {
    public var instanceType: String
    public var vcpu: Int
    public var memoryGiB: Decimal
    public var diskGiB: Decimal
    /// Destination region.
    public var region: String
    /// Jurisdiction of `region`, when the caller knows it (from the catalog).
    public var jurisdiction: String?
    public var transferGB: Decimal

    public init(instanceType: String, vcpu: Int, memoryGiB: Decimal, diskGiB: Decimal, region: String, jurisdiction: String? = nil, transferGB: Decimal) {
        self.instanceType = instanceType
        self.vcpu = vcpu
        self.memoryGiB = memoryGiB
        self.diskGiB = diskGiB
        self.region = region
        self.jurisdiction = jurisdiction
        self.transferGB = transferGB
    }

    public var demand: ResourceAmount {
        ResourceAmount(instances: 1, vcpu: vcpu, memoryGiB: memoryGiB, storageGiB: diskGiB, transferGB: transferGB)
    }
}

/// What the caller knows when it asks: who, when, and how much the peer already uses. Time and
/// usage are passed in so evaluation is a pure function (testable, and cheap to benchmark).
public struct PolicyContext: Sendable, Hashable {
    public var peer: String
    public var now: Date
    public var usage: ResourceAmount
    /// The entry that governs `peer`, if any (see `PolicySet.policy(for:at:)`).
    public var policy: PeerPolicy?

    public init(peer: String, now: Date, usage: ResourceAmount = .zero, policy: PeerPolicy?) {
        self.peer = peer
        self.now = now
        self.usage = usage
        self.policy = policy
    }
}

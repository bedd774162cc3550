import Foundation

/// Where the broker records metering for federated services: an instance placed for a peer under
/// an agreement, and its removal. Both calls may repeat for the same instance (after a restart the
/// runner reports an active service's placement again), so implementations must be idempotent
/// (the broker's metering store ignores a placement it already has).
public protocol FederationMeteringHook: Sendable {
    func placed(_ placement: FederationPlacement) async throws
    func removed(_ removal: FederationRemoval) async throws
}

/// An instance running a federated service, from the moment it was handed to the peer.
public struct FederationPlacement: Codable, Sendable, Hashable {
    public var serviceID: String
    public var agreementID: String
    /// The consumer (its broker's bare JID).
    public var consumer: String
    public var instanceID: String
    /// The template's size: the instance type metering bills.
    public var instanceType: String
    public var vCPU: Int
    public var memoryMiB: Int
    public var diskGiB: Int
    public var placedAt: Date

    public init(
        serviceID: String, agreementID: String, consumer: String, instanceID: String, instanceType: String, vCPU: Int,
        memoryMiB: Int, diskGiB: Int, placedAt: Date
    ) {
        self.serviceID = serviceID
        self.agreementID = agreementID
        self.consumer = consumer
        self.instanceID = instanceID
        self.instanceType = instanceType
        self.vCPU = vCPU
        self.memoryMiB = memoryMiB
        self.diskGiB = diskGiB
        self.placedAt = placedAt
    }
}

/// The end of a placement: the instance was terminated.
public struct FederationRemoval: Codable, Sendable, Hashable {
    public var serviceID: String
    public var agreementID: String
    public var consumer: String
    public var instanceID: String
    public var removedAt: Date

    public init(serviceID: String, agreementID: String, consumer: String, instanceID: String, removedAt: Date) {
        self.serviceID = serviceID
        self.agreementID = agreementID
        self.consumer = consumer
        self.instanceID = instanceID
        self.removedAt = removedAt
    }
}

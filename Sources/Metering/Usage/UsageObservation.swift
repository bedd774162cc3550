import Foundation

/// An instance's state as metering sees it. Raw values are those of `Providers.InstanceState`, so a
/// driver's state maps with `MeteredInstanceState(rawValue: state.rawValue)`.
public enum MeteredInstanceState: String, Codable, Sendable, Hashable, CaseIterable {
    case pending, running, rebooting, stopping, stopped, paused, saved, terminating, terminated, error, unknown

    /// Whether time in this state is charged. Running and rebooting (the instance keeps its host,
    /// as with the large providers); pending, stopping, paused and the rest are not.
    public var isBillable: Bool {
        switch self {
        case .running, .rebooting: true
        default: false
        }
    }
}

/// One of the consumer's instances at the provider, as seen at one instant.
public struct ObservedInstance: Codable, Sendable, Hashable {
    public var id: String
    public var instanceType: String
    public var vcpu: Int
    public var memoryGiB: Decimal
    public var state: MeteredInstanceState

    public init(id: String, instanceType: String, vcpu: Int, memoryGiB: Decimal, state: MeteredInstanceState) {
        self.id = id
        self.instanceType = instanceType
        self.vcpu = vcpu
        self.memoryGiB = memoryGiB
        self.state = state
    }
}

/// What a broker sees at one instant for one agreement.
public struct UsageObservation: Codable, Sendable, Hashable {
    public var time: Date
    public var agreementID: String
    /// The peer's instances under the agreement, whatever their state.
    public var instances: [ObservedInstance]
    /// Cumulative bytes transferred for the agreement since the counter started. It may restart from
    /// zero (a broker restart, a replaced network device): `UsageMeter` treats a decrease as a reset.
    public var bytesTransferred: UInt64
    /// Bytes stored for the peer at this instant (images, volumes).
    public var bytesStored: UInt64

    public init(time: Date, agreementID: String, instances: [ObservedInstance], bytesTransferred: UInt64, bytesStored: UInt64) {
        self.time = time
        self.agreementID = agreementID
        self.instances = instances
        self.bytesTransferred = bytesTransferred
        self.bytesStored = bytesStored
    }

    /// Upper bound on instances in one observation.
    public static let maximumInstances = 10_000
}

/// How many negotiations other brokers may hold open with this broker as provider. Each open
/// negotiation is a machine in memory, a journal row and a decision to make, and a request is all
/// it takes to open one: without a bound a peer (trusted, but lying or broken) could open them
/// faster than they time out. The per-peer bound keeps one peer from using the global one up.
///
/// Negotiations this broker starts as consumer are the operator's own and are not counted.
public struct NegotiationAdmission: Sendable, Hashable {
    public var maxOpenPerPeer: Int
    public var maxOpen: Int

    public static let defaultMaxOpenPerPeer = 8
    public static let defaultMaxOpen = 128

    public init(maxOpenPerPeer: Int = defaultMaxOpenPerPeer, maxOpen: Int = defaultMaxOpen) {
        self.maxOpen = max(1, maxOpen)
        self.maxOpenPerPeer = min(max(1, maxOpenPerPeer), self.maxOpen)
    }

    public enum Refusal: Sendable, Hashable, CustomStringConvertible {
        /// The peer already holds `maxOpenPerPeer` open negotiations with us.
        case peer(limit: Int)
        /// `maxOpen` negotiations are open with all peers together.
        case global(limit: Int)

        public var description: String {
            switch self {
            case .peer(let limit): "\(limit) negotiations with this peer are already open"
            case .global(let limit): "\(limit) negotiations are already open"
            }
        }
    }

    /// Whether a new negotiation requested by a peer may open, given the provider-side
    /// negotiations open with that peer and with everyone.
    public func admit(openWithPeer: Int, openInAll: Int) -> Refusal? {
        if openInAll >= maxOpen { return .global(limit: maxOpen) }
        if openWithPeer >= maxOpenPerPeer { return .peer(limit: maxOpenPerPeer) }
        return nil
    }
}

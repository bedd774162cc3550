/// Denies peers no policy entry covers at this time. Other rules allow when there is no entry
/// (they have nothing to check), so this one carries the "unknown peer" refusal alone.
public struct PeerKnownRule: PolicyRule {
    public init() {}

    public func evaluate(_ request: PolicyRequest, context: PolicyContext) -> PolicyDecision {
        context.policy == nil ? .denied("unknown-peer", "no policy entry covers \(context.peer) now") : .allowed
    }
}

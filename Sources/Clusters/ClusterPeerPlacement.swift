import Federation
import Foundation

/// How the cluster runner places a member at a peer broker and ends it there: service federation
/// (`FederationService`'s consumer side) behind two calls, so the runner needs no XMPP, and the CLI
/// can place through the running broker's request queue instead.
public protocol ClusterPeerPlacement: Sendable {
    /// Selects `selection.template` at `selection.peer` as service `serviceID` and returns once it
    /// is active, with its endpoint URL. Idempotent: when `serviceID` was selected before (a restart
    /// after the select went out), the existing service is answered for, never a second one.
    func place(serviceID: String, selection: Cluster.PeerSelection, timeout: Duration) async throws -> PeerPlacementOutcome

    /// Ends `serviceID` at `peer`. A service this broker never selected, or one already ended,
    /// counts as ended; one the peer is still tearing down is an error (retried later).
    func release(serviceID: String, peer: String) async throws
}

/// A service selected at a peer.
public struct PeerPlacementOutcome: Sendable, Hashable {
    public var endpoint: String?
    /// The service's token when it was just issued (never stored: shown to the operator once).
    public var token: String?

    public init(endpoint: String?, token: String? = nil) {
        self.endpoint = endpoint
        self.token = token
    }
}

/// A placement request the peer side could not carry out.
public struct PeerPlacementError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Places peer members with this broker's federation service (inside `intercloud serve`).
public struct FederationPeerPlacement: ClusterPeerPlacement {
    public let federation: FederationService

    public init(federation: FederationService) {
        self.federation = federation
    }

    public func place(serviceID: String, selection: Cluster.PeerSelection, timeout: Duration) async throws -> PeerPlacementOutcome {
        if let consumed = try FederationStore.consumed(database: federation.database, serviceID: serviceID) {
            // Selected before this attempt (a restart after the select went out): answer for that
            // service, asking the peer until it is active or over.
            let deadline = ContinuousClock.now.advanced(by: timeout)
            var current = consumed
            while current.phase != "active" {
                let outcome = try await federation.status(serviceID: serviceID)
                if outcome.phase == "active" { return PeerPlacementOutcome(endpoint: outcome.endpoint) }
                guard !["ended", "failed"].contains(outcome.phase), ContinuousClock.now < deadline else {
                    throw PeerPlacementError("service \(serviceID) at \(consumed.peer) is \(outcome.phase)")
                }
                try await Task.sleep(for: .seconds(1))
                current = try FederationStore.consumed(database: federation.database, serviceID: serviceID) ?? current
            }
            return PeerPlacementOutcome(endpoint: current.endpoint)
        }
        let outcome = try await federation.select(
            peer: selection.peer, templateName: selection.template, parameters: selection.parameters, agreementID: selection.agreementID,
            serviceID: serviceID)
        return PeerPlacementOutcome(endpoint: outcome.endpoint, token: outcome.token)
    }

    public func release(serviceID: String, peer: String) async throws {
        guard let consumed = try FederationStore.consumed(database: federation.database, serviceID: serviceID) else { return }
        if ["ended", "failed"].contains(consumed.phase) { return }
        let outcome: FederationStore.RequestOutcome
        do { outcome = try await federation.teardown(serviceID: serviceID) } catch let error as FederationService.RequestError
            where error.condition == "item-not-found" {
            // The peer never provisioned it (the select was lost before it arrived): nothing to end.
            return
        }
        guard ["ended", "failed"].contains(outcome.phase) else {
            throw PeerPlacementError("service \(serviceID) at \(peer) is \(outcome.phase)")
        }
    }
}

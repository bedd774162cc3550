import Foundation
import GRDB
import Logging
import Policy
import Trust

/// What every protocol service of one broker is built from: who we are, how we sign, where we
/// store, how we reach peers, what we audit. Broker composes it once; each service takes it and
/// its own settings, instead of ten-odd constructor arguments repeated per service.
public struct BrokerContext: Sendable {
    /// This broker's bare JID, as peers pin and name it.
    public var local: String
    /// The broker key and chain that sign agreements, bills and envelopes (nil without `[trust]`).
    public var identity: BrokerIdentity?
    /// Pinned peer certificates: what a peer's signature is checked against (nil without `[trust]`).
    public var trustStore: TrustStore?
    /// The broker's one database; every service keeps its store in it.
    public var database: DatabasePool
    /// Signed requests to and from peers.
    public var transport: any SignedTransport
    /// Every trust decision and refused request.
    public var audit: AuditLog
    /// The peer policy files' entries (empty without `[policy]`).
    public var policies: PolicySet
    public var logger: Logger
    /// The wall clock deadlines and journal times are read from (tests pass one set ahead, to
    /// restart a broker after a deadline without waiting for it).
    public var now: @Sendable () -> Date

    public init(
        local: String, identity: BrokerIdentity?, trustStore: TrustStore?, database: DatabasePool, transport: any SignedTransport,
        audit: AuditLog, policies: PolicySet, logger: Logger, now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.local = local
        self.identity = identity
        self.trustStore = trustStore
        self.database = database
        self.transport = transport
        self.audit = audit
        self.policies = policies
        self.logger = logger
        self.now = now
    }
}

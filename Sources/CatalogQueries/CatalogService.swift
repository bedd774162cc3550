import Catalog
import Foundation
import Logging
import Peering
import Synchronization
import Trust
import XMPP

/// Serves `urn:intercloud:catalog:0` through `SignedRequests`: only envelopes signed by a trusted
/// (pinned) peer reach `answer`; unsigned or untrusted requests are refused `not-authorized` and
/// audited there. Everything refused here is audited too (kind `catalog.query`) before the error
/// leaves.
public final class CatalogService: Sendable {
    /// Decides whether a trusted peer (bare JID) may query the catalog.
    public typealias EntitlementCheck = @Sendable (_ peer: String) async -> Bool

    public let catalog: BrokerCatalog
    let audit: AuditLog
    let logger: Logger
    /// For now every trusted peer holds the query entitlement: entitlements come from signed
    /// agreements (DESIGN.md "Negotiate"), which land in a later issue; that policy will replace
    /// this check through `setEntitlementCheck`.
    private let entitlement = Mutex<EntitlementCheck>({ _ in true })

    public init(catalog: BrokerCatalog, audit: AuditLog, logger: Logger) {
        self.catalog = catalog
        self.audit = audit
        self.logger = logger
    }

    public func setEntitlementCheck(_ check: @escaping EntitlementCheck) {
        entitlement.withLock { $0 = check }
    }

    public func install(on signed: any SignedTransport) {
        // The envelope carries base64 of the <query/> payload; bound it by the query size limit.
        signed.serve(namespace: CatalogProtocol.namespace, maxPayloadBytes: CatalogProtocol.maxQueryBytes * 6 + 256) {
            [self] request throws(StanzaError) in
            try await answer(request)
        }
    }

    /// Runs in a task spawned by `SignedRequests` (off the XMPP loop thread); the query itself
    /// runs on a dispatch thread (`BrokerCatalog.run`).
    func answer(_ request: SignedRequest) async throws(StanzaError) -> [UInt8] {
        let peer = request.peer
        guard let query = CatalogProtocol.parseRequest(request.payload) else {
            throw await refuse(peer, "malformedRequest", "not a <query/> of at most \(CatalogProtocol.maxQueryBytes) bytes",
                         .badRequest("expected <query xmlns='\(CatalogProtocol.namespace)'>SPARQL</query> of at most \(CatalogProtocol.maxQueryBytes) bytes"))
        }
        let check = entitlement.withLock { $0 }
        guard await check(peer) else {
            throw await refuse(peer, "notEntitled", "no query entitlement", .forbidden("\(peer) holds no catalog query entitlement"))
        }
        let started = ContinuousClock.now
        switch await catalog.run(query, for: peer) {
        case .success(let result):
            let xml = Array(result.serializedXML().utf8)
            guard xml.count <= CatalogProtocol.maxAnswerBytes else {
                throw await refuse(peer, "answerTooLarge", "\(xml.count) bytes",
                             .notAcceptable("query limit exceeded: answer of \(xml.count) bytes is over the \(CatalogProtocol.maxAnswerBytes)-byte limit; add LIMIT or select fewer variables"))
            }
            logger.debug("catalog query from \(peer) answered in \(ContinuousClock.now - started) (\(xml.count) bytes)")
            return xml
        case .failure(.busy):
            throw await refuse(peer, "busy", "\(BrokerCatalog.maxConcurrentQueries) queries running",
                         .resourceConstraint("too many catalog queries running; retry later"))
        case .failure(.busyForPeer):
            throw await refuse(peer, "busyForPeer", "\(BrokerCatalog.maxConcurrentQueriesPerPeer) of this peer's queries running",
                         .resourceConstraint("\(BrokerCatalog.maxConcurrentQueriesPerPeer) of your catalog queries already running; wait for its answer"))
        case .failure(.query(let error)):
            switch error {
            case .syntax(let message, let line, let column):
                // Position first, in a fixed form, so tools can point at it: "line 1, column 8: …".
                throw await refuse(peer, "syntax", "line \(line), column \(column): \(message)",
                             .badRequest("line \(line), column \(column): \(message)"))
            case .limitExceeded(let what):
                throw await refuse(peer, "limitExceeded", what,
                             .notAcceptable("query limit exceeded: \(what) (limits: \(catalog.limits.timeout), \(catalog.limits.maxResults) results)"))
            case .unsupported(let what):
                throw await refuse(peer, "unsupported", what, .featureNotImplemented("unsupported: \(what)"))
            case .cancelled:
                throw await refuse(peer, "cancelled", "broker shutting down", .serviceUnavailable("query cancelled"))
            }
        }
    }

    private func refuse(_ peer: String, _ reason: String, _ detail: String, _ error: StanzaError) async -> StanzaError {
        logger.notice("refused catalog query from \(peer): \(reason): \(detail)")
        do {
            _ = try await audit.offPool.refused(
                module: "broker", kind: "catalog.query", peer: peer, action: CatalogProtocol.namespace, reason: reason,
                detail: String(detail.prefix(500)), at: Date())
        } catch {
            logger.error("cannot audit refused catalog query from \(peer): \(error)")
        }
        return error
    }
}

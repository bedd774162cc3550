import Catalog
import Foundation
import Peering
import Synchronization
import XMPP

/// This broker's service catalog: the static description files named in `[catalog] files`, in the
/// default graph, plus a description of the broker itself (`ic:Cloud` with its name, XMPP address
/// and regions) generated from the configuration into the named graph `selfGraph`, so it can be
/// regenerated (`replaceGraph`) without touching the files' triples. Live inventory from provider
/// drivers will get a named graph of its own the same way once drivers feed the broker.
///
/// Not persisted: the files are read again at every start (they are the source of truth and small),
/// so `CatalogStore` is not used here; a catalog fed by live inventory would persist through it.
public final class BrokerCatalog: Sendable {
    /// Named graph holding the generated self-description. Queries see it with
    /// `GRAPH <urn:intercloud:graph:self> { … }` (or `GRAPH ?g`); the default graph is the files.
    public static let selfGraph = IRI("urn:intercloud:graph:self")
    /// Queries evaluated at once; more are refused `resource-constraint`. Each runs on a thread of
    /// its own, outside Swift's cooperative pool (2 threads on this 2-core machine): a query may
    /// compute for its whole time budget, and must not stall handshakes and other requests.
    public static let maxConcurrentQueries = 2
    /// Queries one peer may have evaluated at once: a peer that keeps the engine busy (every query
    /// runs to its time limit) holds at most this many of the slots, so the others still get one.
    public static let maxConcurrentQueriesPerPeer = 1

    public let store: TripleStore
    public let limits: QueryLimits
    public let cloudIRI: IRI
    private let running = Mutex(RequestSlots(global: maxConcurrentQueries, perPeer: maxConcurrentQueriesPerPeer))
    private static let queue = DispatchQueue(label: "intercloud.catalog.query", qos: .utility, attributes: .concurrent)

    public struct LoadError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Loads the description `files` (an unreadable or invalid file is an error: a broker should
    /// not silently serve half its catalog) and generates the self-description of `cloud` (named
    /// `cloudIRI`, reached at `xmppAddress`, in `regions`).
    public init(
        files: [String], timeout: Duration, maxResults: Int, cloudIRI: String, cloud: String, xmppAddress: String, regions: [String]
    ) throws {
        store = TripleStore()
        limits = QueryLimits(timeout: timeout, maxResults: maxResults, maxQueryBytes: CatalogProtocol.maxQueryBytes)
        self.cloudIRI = IRI(cloudIRI)
        for path in files {
            do { try store.load(file: URL(fileURLWithPath: path)) } catch {
                throw LoadError(description: "catalog file \(path): \(error)")
            }
        }
        store.replaceGraph(
            Self.selfGraph, with: Self.selfDescription(cloud: self.cloudIRI, name: cloud, xmppAddress: xmppAddress, regions: regions))
    }

    /// `ic:Cloud` (name, XMPP address, regions) and one `ic:Region` per configured region.
    static func selfDescription(cloud: IRI, name: String, xmppAddress: String, regions regionNames: [String]) -> [Triple] {
        let separator = cloud.value.hasSuffix("/") || cloud.value.hasSuffix("#") ? "" : "/"
        let regions = regionNames.map { (name: $0, iri: IRI(cloud.value + separator + "region/" + $0)) }
        var triples = CatalogDescription.cloud(cloud, name: name, xmppAddress: xmppAddress, regions: regions.map(\.iri))
        for region in regions {
            // CatalogDescription.region also wants a country, which the configuration does not
            // know; the static files may add it for the same IRI.
            triples.append(Triple(.iri(region.iri), .iri(Vocabulary.rdfType), IntercloudOntology.region))
            triples.append(Triple(.iri(region.iri), IntercloudOntology.iri("name"), .string(region.name)))
        }
        return triples
    }

    /// Queries being evaluated now (for status and tests).
    public var runningQueries: Int { running.withLock { $0.total } }

    public enum RunError: Error {
        /// `maxConcurrentQueries` are running.
        case busy
        /// `maxConcurrentQueriesPerPeer` of this peer's queries are running.
        case busyForPeer
        case query(QueryError)
    }

    /// Runs `query` with `limits` (the configured ones unless given) on a dispatch thread and
    /// returns its result, or `.busy` when `maxConcurrentQueries` are already running, or
    /// `.busyForPeer` when `peer` (a bare JID; nil for the operator's own queries, which only the
    /// global bound limits) has `maxConcurrentQueriesPerPeer` running.
    /// The engine stops at its deadline; cancelling the awaiting task does not reach it (it checks
    /// `Task.isCancelled`, which is false off a task), so a cancelled query ends at its time limit.
    public func run(_ query: String, limits: QueryLimits? = nil, for peer: String? = nil) async -> Result<QueryResult, RunError> {
        // The operator's queries take a key no peer can have (bare JIDs contain no space).
        let slot = peer ?? "local operator"
        let refusal = running.withLock { $0.acquire(slot, perPeerBound: peer != nil) }
        switch refusal {
        case .global: return .failure(.busy)
        case .peer: return .failure(.busyForPeer)
        case nil: break
        }
        let engine = SPARQLEngine(store)
        let limits = limits ?? self.limits
        return await withCheckedContinuation { continuation in
            Self.queue.async { [self] in
                let result: Result<QueryResult, RunError>
                do throws(QueryError) { result = .success(try engine.execute(query: query, limits: limits)) } catch {
                    result = .failure(.query(error))
                }
                running.withLock { $0.release(slot) }
                continuation.resume(returning: result)
            }
        }
    }
}

import Catalog
import Foundation
import Logging
import Peering
import Trust
import XMPP

/// A peer that could not contribute to a federated answer, and why.
public struct CatalogPeerFailure: Error, Sendable, Hashable, Codable {
    public var peer: String
    public var cloud: String
    /// `timeout after 10 s`, `not-authorized: …`, `bad-request: line 1, column 8: …`, …
    public var reason: String
}

/// The merged answer of a federated query: one table whose first column, `source`, names the cloud
/// each row came from. ASK answers become one row per peer (`source`, `boolean`); CONSTRUCT and
/// DESCRIBE answers one row per triple (`source`, `subject`, `predicate`, `object`).
public struct FederatedCatalogAnswer: Sendable {
    public static let sourceColumn = "source"
    public var table: SolutionTable
    /// Clouds that answered, in the order of `table`'s rows.
    public var answered: [String]
    /// Peers that timed out, refused or failed: when not empty the answer is partial.
    public var failures: [CatalogPeerFailure]
    public var isPartial: Bool { !failures.isEmpty }

    /// `table` with every cell rendered for display (`CatalogProtocol.cell`).
    public var cells: [[String]] { table.rows.map { $0.map(CatalogProtocol.cell) } }
}

/// A trusted, online peer broker to query.
public struct CatalogTarget: Sendable, Hashable {
    /// Full JID (IQs to a bare JID are answered by the peer's server, not by the broker).
    public var jid: JID
    public var cloud: String

    public init(jid: JID, cloud: String) {
        self.jid = jid
        self.cloud = cloud
    }
}

/// Sends catalog queries to peers (signed, answers verified) and merges fan-out answers. Used by the
/// broker itself (`BrokerNode.catalogQueries`) and by `intercloud catalog query` (`CatalogRequester`).
public struct CatalogQuerier: Sendable {
    let signed: any SignedTransport
    public let peers: any PeerDirectory

    public init(signed: any SignedTransport, peers: any PeerDirectory) {
        self.signed = signed
        self.peers = peers
    }

    /// Queries one peer; throws `XMPPError` (`.timeout`, `.stanza` with the peer's refusal),
    /// `EnvelopeError` (answer not signed by the pinned peer) or `CatalogProtocol.ProtocolError`.
    public func query(_ sparql: String, peer: JID, timeout: Duration = .seconds(10)) async throws -> QueryResult {
        let answer = try await signed.request(
            .get, to: peer, namespace: CatalogProtocol.namespace, payload: CatalogProtocol.request(sparql), timeout: timeout)
        return try CatalogProtocol.parseAnswer(answer)
    }

    /// Peers shown online whose trust status is `trusted`, with the full JID their presence came from.
    public func trustedOnlinePeers() throws -> [CatalogTarget] {
        try peers.knownPeers().compactMap { peer in
            guard peer.online, peer.trusted, let full = peer.fullJID else { return nil }
            return CatalogTarget(jid: full, cloud: peer.cloud ?? peer.jid)
        }
    }

    /// The full JID to query for `jid`: as given if it has a resource, else the one the peer was
    /// last seen at.
    public func target(for jid: JID) throws -> CatalogTarget {
        let known = try peers.knownPeer(jid)
        if !jid.isBare { return CatalogTarget(jid: jid, cloud: known?.cloud ?? jid.bare.description) }
        guard let known, let full = known.fullJID else {
            throw CatalogProtocol.ProtocolError(description: "\(jid) is not a known peer (give a full JID, or see `intercloud peers`)")
        }
        return CatalogTarget(jid: full, cloud: known.cloud ?? known.jid)
    }

    /// Fans `sparql` out to every trusted online peer concurrently.
    public func fanOut(_ sparql: String, timeout: Duration = .seconds(10)) async throws -> FederatedCatalogAnswer {
        await fanOut(sparql, to: try trustedOnlinePeers(), timeout: timeout)
    }

    /// Fans `sparql` out to `targets` concurrently, each with its own `timeout`, and merges what
    /// comes back; peers that time out, refuse or fail are listed in `failures`.
    public func fanOut(_ sparql: String, to targets: [CatalogTarget], timeout: Duration = .seconds(10)) async -> FederatedCatalogAnswer {
        // Child tasks return a plain struct: with a (Int, Result<QueryResult, CatalogPeerFailure>)
        // tuple the release build lost the results (and once trapped writing them into an array),
        // while the debug build was fine.
        struct PeerOutcome: Sendable {
            var index: Int
            var result: QueryResult?
            var failure: CatalogPeerFailure?
        }
        var outcomes: [Int: PeerOutcome] = [:]
        await withTaskGroup(of: PeerOutcome.self) { group in
            for (index, target) in targets.enumerated() {
                group.addTask {
                    do {
                        return PeerOutcome(index: index, result: try await query(sparql, peer: target.jid, timeout: timeout))
                    } catch {
                        return PeerOutcome(index: index, failure: CatalogPeerFailure(
                            peer: target.jid.bare.description, cloud: target.cloud, reason: Self.reason(error, timeout: timeout)))
                    }
                }
            }
            for await outcome in group { outcomes[outcome.index] = outcome }
        }
        var answers: [(cloud: String, result: QueryResult)] = []
        var failures: [CatalogPeerFailure] = []
        for (index, target) in targets.enumerated() {
            if let result = outcomes[index]?.result {
                answers.append((target.cloud, result))
            } else {
                failures.append(outcomes[index]?.failure
                    ?? CatalogPeerFailure(peer: target.jid.bare.description, cloud: target.cloud, reason: "no answer"))
            }
        }
        return Self.merge(answers, failures: failures)
    }

    /// A one-line reason for a failed peer query (also what `failures` hold).
    public static func reason(_ error: any Error, timeout: Duration) -> String {
        switch error {
        case XMPPError.timeout: return "timeout after \(timeout)"
        case XMPPError.stanza(let stanza): return stanza.condition + (stanza.text.map { ": \($0)" } ?? "")
        case let error as EnvelopeError: return "answer refused: \(error)"
        default: return "\(error)"
        }
    }

    /// One table with a leading `source` column; variables in order of first appearance.
    static func merge(_ answers: [(cloud: String, result: QueryResult)], failures: [CatalogPeerFailure]) -> FederatedCatalogAnswer {
        var variables = [FederatedCatalogAnswer.sourceColumn]
        for (_, result) in answers {
            let names: [String]
            switch result {
            case .solutions(let table): names = table.variables
            case .boolean: names = ["boolean"]
            case .graph: names = ["subject", "predicate", "object"]
            }
            // A peer variable named `source` would be hidden by ours; the column keeps its meaning.
            for name in names where !variables.contains(name) { variables.append(name) }
        }
        var rows: [[Term?]] = []
        var answered: [String] = []
        for (cloud, result) in answers {
            answered.append(cloud)
            func add(_ bindings: [String: Term]) {
                rows.append(variables.map { $0 == FederatedCatalogAnswer.sourceColumn ? .string(cloud) : bindings[$0] })
            }
            switch result {
            case .solutions(let table):
                for row in table.rows {
                    var bindings: [String: Term] = [:]
                    for (name, value) in zip(table.variables, row) where name != FederatedCatalogAnswer.sourceColumn {
                        if let value { bindings[name] = value }
                    }
                    add(bindings)
                }
            case .boolean(let value): add(["boolean": .boolean(value)])
            case .graph(let triples):
                for triple in triples { add(["subject": triple.subject, "predicate": triple.predicate, "object": triple.object]) }
            }
        }
        return FederatedCatalogAnswer(table: SolutionTable(variables: variables, rows: rows), answered: answered, failures: failures)
    }
}

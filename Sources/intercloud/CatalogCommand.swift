import ArgumentParser
import Broker
import Catalog
import CatalogQueries
import Foundation
import Logging
import Peering
import XMPP

struct CatalogCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "catalog",
        abstract: "Query this cloud's service catalog or its trusted peers' catalogs (SPARQL).",
        discussion: """
            The catalog is the RDF in [catalog] files (Turtle .ttl, N-Triples .nt, RDF/XML
            .rdf/.owl/.xml; paths relative to the configuration file), read at every start,
            plus a description of the broker itself (ic:Cloud, its regions) generated from
            [broker] into the named graph <urn:intercloud:graph:self>.

              [catalog]
              files = ["catalog/offerings.ttl"]
              timeout_ms = 5000          # per peer query (default 5000)
              max_results = 10000        # per answer (default 10000)
              # cloud_iri = "https://cloud1.example/"   (default urn:intercloud:cloud:<cloud>)

            Peers query it over XMPP (urn:intercloud:catalog:0, signed envelopes, trusted
            peers only). `catalog query` connects as the broker's own account with the
            resource cli-<pid>, signs with the broker's key and reads its registry (the
            broker does not need to be running, but peers must be online and trusted).
            """,
        subcommands: [Query.self, Local.self])

    struct Query: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Ask one trusted peer (--peer) or all trusted online peers (--all-peers).",
            discussion: """
                With --all-peers the query goes to every trusted online peer at once, each
                with its own --timeout; rows are merged with a leading `source` column naming
                the cloud. Peers that time out or refuse are listed after the table and the
                result is marked PARTIAL (exit status 0; 1 if no peer answered).
                  intercloud catalog query --config cloud1.toml --all-peers \\
                    'PREFIX ic: <https://intercloud.example.org/ontology#>
                     SELECT ?o ?price WHERE { ?o a ic:Offering ; ic:pricePerHour ?price }'
                """)

        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).")
        var config: String

        @Option(help: "Peer broker JID (bare: the full JID from the registry is used).")
        var peer: String?

        @Flag(help: "Fan out to every trusted online peer and merge the answers.")
        var allPeers = false

        @Option(help: "Output format: table or json.")
        var output: OutputFormat = .table

        @Option(help: "Seconds to wait for each peer.")
        var timeout: Double = 10

        @Argument(help: "SPARQL query.")
        var sparql: String

        func validate() throws {
            guard (peer != nil) != allPeers else { throw ValidationError("give either --peer JID or --all-peers") }
            guard timeout > 0, timeout.isFinite else { throw ValidationError("--timeout must be a positive number of seconds") }
        }

        func run() async throws {
            let configuration = try loadConfiguration(config)
            // Quiet by default: this is an interactive tool; connection problems surface as errors.
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = .error
                return handler
            }
            let requester: CatalogRequester
            do { requester = try await CatalogRequester.connect(configuration: configuration) } catch let error as BrokerTrustSetupError {
                throw ValidationError("\(config): \(error)")
            }
            // No `requester.close()`: it would broadcast an unavailable presence from the broker's
            // account (see CatalogRequester); the process exits and the server drops the session.
            let perPeer = Duration.milliseconds(Int64(timeout * 1000))
            if let peer {
                let target = try requester.querier.target(for: try JID(peer))
                let result: QueryResult
                do { result = try await requester.querier.query(sparql, peer: target.jid, timeout: perPeer) } catch {
                    throw CatalogCommandFailure("\(target.jid.bare) (\(target.cloud)): \(CatalogQuerier.reason(error, timeout: perPeer))")
                }
                print(render(result))
            } else {
                let answer = try await requester.querier.fanOut(sparql, timeout: perPeer)
                print(render(answer))
                if answer.answered.isEmpty {
                    throw CatalogCommandFailure(answer.failures.isEmpty ? "no trusted peer is online" : "no peer answered")
                }
            }
        }

        func render(_ result: QueryResult) -> String {
            switch output {
            case .json: return result.serializedJSON()
            case .table: return CatalogTable.render(result)
            }
        }

        func render(_ answer: FederatedCatalogAnswer) -> String {
            switch output {
            case .json:
                // Standard SPARQL results JSON plus an `intercloud` member saying who answered.
                var object = (try? JSONSerialization.jsonObject(with: Data(QueryResult.solutions(answer.table).serializedJSON().utf8))) as? [String: Any] ?? [:]
                object["intercloud"] = [
                    "partial": answer.isPartial, "answered": answer.answered,
                    "failures": answer.failures.map { ["peer": $0.peer, "cloud": $0.cloud, "reason": $0.reason] },
                ] as [String: Any]
                let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])) ?? Data()
                return String(decoding: data, as: UTF8.self)
            case .table:
                var text = CatalogTable.render(.solutions(answer.table))
                if answer.isPartial {
                    text += "\nPARTIAL: \(answer.answered.count) of \(answer.answered.count + answer.failures.count) peers answered"
                    for failure in answer.failures { text += "\n  \(failure.peer) (\(failure.cloud)): \(failure.reason)" }
                }
                return text
            }
        }
    }

    struct Local: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Query this broker's own catalog (the files and self-description), without XMPP.")

        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).")
        var config: String

        @Option(help: "Output format: table or json.")
        var output: OutputFormat = .table

        @Argument(help: "SPARQL query.")
        var sparql: String

        func run() async throws {
            let configuration = try loadConfiguration(config)
            let catalog = try BrokerCatalog(configuration: configuration)
            switch await catalog.run(sparql) {
            case .success(let result):
                print(output == .json ? result.serializedJSON() : CatalogTable.render(result))
            case .failure(.busy), .failure(.busyForPeer):
                throw CatalogCommandFailure("busy")
            case .failure(.query(let error)):
                throw CatalogCommandFailure("\(error)")
            }
        }
    }
}

enum CatalogTable {
    static func render(_ result: QueryResult) -> String {
        switch result {
        case .boolean(let value): return String(value)
        case .graph(let triples):
            return table(headers: ["subject", "predicate", "object"], rows: triples.map {
                [CatalogProtocol.cell($0.subject), CatalogProtocol.cell($0.predicate), CatalogProtocol.cell($0.object)]
            })
        case .solutions(let solutions):
            let text = table(headers: solutions.variables, rows: solutions.rows.map { $0.map(CatalogProtocol.cell) })
            return text + "\n(\(solutions.rows.count) row\(solutions.rows.count == 1 ? "" : "s"))"
        }
    }

    static func table(headers: [String], rows: [[String]]) -> String {
        var widths = headers.map(\.count)
        for row in rows {
            for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { index, cell in
                index == cells.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
        return ([line(headers)] + rows.map(line)).joined(separator: "\n")
    }
}

struct CatalogCommandFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

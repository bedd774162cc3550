@testable import Catalog
import Foundation
import Testing

@Suite struct TripleStoreTests {
    @Test func indexesAnswerEveryPatternShape() throws {
        let store = try Fixtures.store()
        let snapshot = store.snapshot()
        let graph = snapshot.defaultGraph
        let d = snapshot.dictionary
        let small = d.id(of: .iri("https://catalog.example.org/small"))!
        let vcpu = d.id(of: .iri("https://intercloud.example.org/ontology#vcpu"))!
        let two = d.id(of: .integer(2))!
        #expect(graph.count(small, 0, 0) == 6)
        #expect(graph.count(0, vcpu, 0) == 4)
        #expect(graph.count(0, 0, two) == 1)
        #expect(graph.count(small, vcpu, 0) == 1)
        #expect(graph.count(small, 0, two) == 1)
        #expect(graph.count(0, vcpu, two) == 1)
        #expect(graph.count(small, vcpu, two) == 1)
        #expect(graph.count(0, 0, 0) == store.count)
    }

    @Test func packedAndWideIdsIndexAlike() {
        // Small ids take the packed 64-bit sort, ids over 2^21 the three-field sort.
        for offset in [Int32(0), Int32(1 << 22)] {
            var keys = Set<IndexKey>()
            for i in Int32(0)..<200 {
                let subject: Int32 = offset + i % 7 + 1
                let predicate: Int32 = offset + i % 3 + 1
                let object: Int32 = offset + i + 1
                keys.insert(IndexKey(first: subject, second: predicate, third: object))
            }
            let graph = IndexedGraph(triples: keys)
            #expect(graph.count(Int(offset) + 1, 0, 0) == keys.filter { $0.first == offset + 1 }.count)
            #expect(graph.count(0, Int(offset) + 2, 0) == keys.filter { $0.second == offset + 2 }.count)
            #expect(graph.count(0, 0, Int(offset) + 5) == 1)
            #expect(graph.spo == graph.spo.sorted(by: IndexKey.less))
            var seen: [IndexKey] = []
            graph.match(0, Int(offset) + 3, 0) { s, p, o in
                seen.append(IndexKey(first: Int32(s), second: Int32(p), third: Int32(o)))
                return true
            }
            #expect(Set(seen) == keys.filter { $0.second == offset + 3 })
        }
    }

    @Test func deduplicatesAndRemoves() {
        let store = TripleStore()
        let triple = Triple(.iri("http://s"), .iri("http://p"), .string("o"))
        store.insert([triple, triple])
        #expect(store.count == 1)
        #expect(store.remove([triple]) == 1)
        #expect(store.count == 0)
    }

    @Test func blankNodesOfTwoDocumentsStayApart() throws {
        let store = TripleStore()
        try store.load(nTriples: "_:x <http://p> \"1\" .\n")
        try store.load(nTriples: "_:x <http://p> \"2\" .\n")
        let subjects = Set(store.triples().map(\.subject))
        #expect(subjects.count == 2)
    }

    @Test func snapshotsAreIsolatedFromLaterLoads() throws {
        let store = try Fixtures.store()
        let engine = SPARQLEngine(store)
        try store.load(nTriples: "<https://catalog.example.org/new> <http://www.w3.org/1999/02/22-rdf-syntax-ns#type> <https://intercloud.example.org/ontology#Offering> .\n")
        let before = try engine.execute(query: Fixtures.prefixes + "SELECT ?o WHERE { ?o a ic:Offering }")
        let after = try SPARQLEngine(store).execute(query: Fixtures.prefixes + "SELECT ?o WHERE { ?o a ic:Offering }")
        guard case .solutions(let a) = before, case .solutions(let b) = after else { Issue.record("not solutions"); return }
        #expect(a.rows.count == 4 && b.rows.count == 5)
    }

    @Test func namedGraphsAreSeparate() throws {
        let store = TripleStore()
        try store.load(nTriples: "<http://s> <http://p> \"g\" .\n", graph: IRI("http://graph/1"))
        #expect(store.triples().isEmpty)
        #expect(store.triples(graph: IRI("http://graph/1")).count == 1)
        #expect(store.graphNames == [IRI("http://graph/1")])
    }

    @Test func writesNTriples() throws {
        let store = TripleStore()
        store.insert(Triple(.iri("http://s"), .iri("http://p"), .literal(Literal("x", language: "en"))))
        #expect(store.serializedNTriples() == "<http://s> <http://p> \"x\"@en .\n")
    }

    @Test func loadsTheOntology() throws {
        let store = TripleStore()
        let count = try store.load(file: Fixtures.projectRoot.appendingPathComponent("ontology/intercloud.ttl"))
        #expect(count > 100)
        let classes = try Fixtures.column("c", "PREFIX owl: <http://www.w3.org/2002/07/owl#> SELECT ?c WHERE { ?c a owl:Class }", store: store)
        for name in ["Cloud", "Region", "Offering", "InstanceType", "Image", "Service", "SLA", "Capacity"] {
            #expect(classes.contains("<https://intercloud.example.org/ontology#\(name)>"))
        }
    }
}

@testable import Catalog
import Foundation
import GRDB
import Testing

@Suite struct CatalogStoreTests {
    @Test func savesAndRestoresEveryKindOfTerm() throws {
        let queue = try DatabaseQueue()
        var migrator = DatabaseMigrator()
        CatalogStore.registerMigrations(in: &migrator)
        try migrator.migrate(queue)

        let store = try Fixtures.store()
        store.insert([
            Triple(.blank("b1"), .iri("http://p"), .string("quote \" backslash \\ newline \n tab \t é 日本")),
            Triple(.iri("http://s"), .iri("http://p"), .typed("2020-01-01T00:00:00Z", Vocabulary.xsdDateTime)),
        ])
        store.insert([Triple(.iri("http://s"), .iri("http://p"), .string("in a named graph"))], graph: IRI("http://g"))
        let persistence = CatalogStore(queue)
        try persistence.save(store)

        let restored = TripleStore()
        let count = try persistence.restore(into: restored)
        #expect(count == store.count)
        #expect(Set(restored.triples()) == Set(store.triples()))
        #expect(restored.triples(graph: IRI("http://g")).count == 1)

        // Saving again replaces, not appends.
        try persistence.save(restored)
        let again = TripleStore()
        try persistence.restore(into: again)
        #expect(again.count == store.count)
    }

    @Test func survivesARestartWithADatabasePool() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("catalog-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("broker.sqlite").path
        var migrator = DatabaseMigrator()
        CatalogStore.registerMigrations(in: &migrator)
        do {
            let pool = try DatabasePool(path: path)
            try migrator.migrate(pool)
            try CatalogStore(pool).save(try Fixtures.store())
        }
        // "Restart": a new pool on the same file, a new empty store.
        let pool = try DatabasePool(path: path)
        try migrator.migrate(pool)
        let store = TripleStore()
        try CatalogStore(pool).restore(into: store)
        let cheapest = try Fixtures.select("SELECT ?o WHERE { ?o ic:pricePerHour ?p } ORDER BY ?p LIMIT 1", store: store)
        #expect(cheapest.first?["o"] == "<https://catalog.example.org/small>")
    }

    @Test func migrationIdentifierIsCatalogV1() throws {
        var migrator = DatabaseMigrator()
        CatalogStore.registerMigrations(in: &migrator)
        #expect(migrator.migrations == ["catalog.v1"])
    }
}

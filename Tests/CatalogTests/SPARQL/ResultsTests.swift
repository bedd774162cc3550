@testable import Catalog
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing

@Suite struct ResultsTests {
    let table = QueryResult.solutions(SolutionTable(variables: ["s", "o"], rows: [
        [.iri("http://ex/a&b"), .literal(Literal("<chat>", language: "fr"))],
        [.blank("b0"), nil],
        [.iri("http://ex/c"), .integer(3)],
    ]))

    @Test func xmlResultsAreWellFormedAndEscaped() throws {
        let xml = table.serializedXML()
        #expect(xml.contains("<variable name=\"s\"/>"))
        #expect(xml.contains("<uri>http://ex/a&amp;b</uri>"))
        #expect(xml.contains("<literal xml:lang=\"fr\">&lt;chat&gt;</literal>"))
        #expect(xml.contains("<bnode>b0</bnode>"))
        #expect(xml.contains("<literal datatype=\"http://www.w3.org/2001/XMLSchema#integer\">3</literal>"))
        #expect(XMLParser(data: Data(xml.utf8)).parse())
        #expect(QueryResult.boolean(true).serializedXML().contains("<boolean>true</boolean>"))
    }

    /// "&" or "<" followed by a combining mark is one Character but still markup: a catalog
    /// literal with one must come out escaped (and well-formed), not as a raw "&".
    @Test func markupFollowedByACombiningMarkIsEscaped() throws {
        let xml = QueryResult.solutions(SolutionTable(variables: ["o"], rows: [[.string("a&\u{301}b<\u{308}")]])).serializedXML()
        #expect(xml.contains("<literal>a&amp;\u{301}b&lt;\u{308}</literal>"))
        #expect(XMLParser(data: Data(xml.utf8)).parse())
    }

    @Test func jsonResultsFollowTheFormat() throws {
        let json = try #require(JSONSerialization.jsonObject(with: Data(table.serializedJSON().utf8)) as? [String: Any])
        let vars = (json["head"] as? [String: Any])?["vars"] as? [String]
        #expect(vars == ["s", "o"])
        let bindings = try #require((json["results"] as? [String: Any])?["bindings"] as? [[String: [String: String]]])
        #expect(bindings.count == 3)
        #expect(bindings[0]["o"]?["xml:lang"] == "fr")
        #expect(bindings[1]["o"] == nil)
        #expect(bindings[1]["s"]?["type"] == "bnode")
        #expect(bindings[2]["o"]?["datatype"] == Vocabulary.xsdInteger)
        #expect(QueryResult.boolean(false).serializedJSON() == "{\"head\":{},\"boolean\":false}")
    }

    @Test func graphResultsAsRDFXMLRoundTrip() throws {
        let triples = [Triple(.iri("http://ex/a"), .iri("http://ex/ns#p"), .string("v")),
                       Triple(.iri("http://ex/a"), .iri("http://ex/ns#q"), .iri("http://ex/b"))]
        let xml = QueryResult.graph(triples).serializedXML()
        #expect(Set(try RDFLoader.parse(xml, format: .rdfXML)) == Set(triples))
        #expect(QueryResult.graph(triples).serializedNTriples().split(separator: "\n").count == 2)
    }

    @Test func csvAndTSV() {
        #expect(table.serializedCSV().hasPrefix("s,o\r\nhttp://ex/a&b,<chat>\r\n"))
        #expect(table.serializedTSV().hasPrefix("?s\t?o\n<http://ex/a&b>\t\"<chat>\"@fr\n"))
    }
}

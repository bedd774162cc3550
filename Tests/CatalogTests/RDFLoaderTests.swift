@testable import Catalog
import Foundation
import Testing

@Suite struct RDFLoaderTests {
    @Test func loadsTurtleNTriplesAndRDFXML() throws {
        let turtle = try RDFLoader.parse("@prefix ex: <http://ex/> . ex:a ex:p \"v\"@en , 3 .", format: .turtle)
        #expect(turtle.count == 2)
        #expect(turtle.contains(Triple(.iri("http://ex/a"), .iri("http://ex/p"), .literal(Literal("v", language: "en")))))
        let nt = try RDFLoader.parse("<http://a> <http://p> _:x .\n", format: .nTriples)
        #expect(nt.count == 1 && nt[0].object.isBlank)
        let xml = """
        <?xml version="1.0"?>
        <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:ex="http://ex/">
          <rdf:Description rdf:about="http://ex/a"><ex:p>v</ex:p></rdf:Description>
        </rdf:RDF>
        """
        #expect(try RDFLoader.parse(xml, format: .rdfXML) == [Triple(.iri("http://ex/a"), .iri("http://ex/p"), .string("v"))])
    }

    @Test func resolvesRelativeIRIsAgainstTheBase() throws {
        let triples = try RDFLoader.parse("<a> <p> <../b> .", format: .turtle, baseIRI: "http://ex/dir/doc")
        #expect(triples.first?.subject == .iri("http://ex/dir/a"))
        #expect(triples.first?.object == .iri("http://ex/b"))
    }

    @Test func reportsSyntaxErrorsWithLine() {
        #expect {
            _ = try RDFLoader.parse("@prefix ex: <http://ex/> .\nex:a ex:p .\n", format: .turtle)
        } throws: { error in
            guard case .syntax(_, let line, _) = error as? RDFLoadError else { return false }
            return line == 2
        }
    }

    @Test func refusesBillionLaughs() {
        let xml = """
        <?xml version="1.0"?>
        <!DOCTYPE rdf:RDF [
          <!ENTITY lol "lol">
          <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
          <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
        ]>
        <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:ex="http://ex/">
          <rdf:Description rdf:about="http://ex/a"><ex:p>&lol3;</ex:p></rdf:Description>
        </rdf:RDF>
        """
        #expect(throws: RDFLoadError.self) { try RDFLoader.parse(xml, format: .rdfXML) }
    }

    @Test func refusesExternalEntities() {
        let xml = """
        <?xml version="1.0"?>
        <!DOCTYPE rdf:RDF [ <!ENTITY secret SYSTEM "file:///etc/passwd"> ]>
        <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:ex="http://ex/">
          <rdf:Description rdf:about="http://ex/a"><ex:p>&secret;</ex:p></rdf:Description>
        </rdf:RDF>
        """
        #expect(throws: RDFLoadError.self) { try RDFLoader.parse(xml, format: .rdfXML) }
    }

    @Test func allowsNamespaceShortcutEntities() throws {
        let xml = """
        <?xml version="1.0"?>
        <!DOCTYPE rdf:RDF [ <!ENTITY ex "http://ex/"> ]>
        <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:ex="http://ex/">
          <rdf:Description rdf:about="&ex;a"><ex:p>v</ex:p></rdf:Description>
        </rdf:RDF>
        """
        #expect(try RDFLoader.parse(xml, format: .rdfXML).first?.subject == .iri("http://ex/a"))
    }

    @Test func refusesHugeLiteralsTooManyTriplesAndDeepNesting() throws {
        let limits = LoadLimits(maxTriples: 3, maxLiteralBytes: 100, maxNestingDepth: 10)
        let huge = "<http://a> <http://p> \"\(String(repeating: "x", count: 1000))\" .\n"
        #expect(throws: RDFLoadError.refused("literal of 1000 bytes is over the 100-byte limit")) {
            try RDFLoader.parse(huge, format: .nTriples, limits: limits)
        }
        let many = (0..<10).map { "<http://a> <http://p> \"\($0)\" ." }.joined(separator: "\n")
        #expect(throws: RDFLoadError.refused("more than 3 triples")) { try RDFLoader.parse(many, format: .nTriples, limits: limits) }
        let deep = "<http://a> <http://p> " + String(repeating: "[ <http://p> ", count: 50) + "<http://o>" + String(repeating: " ]", count: 50) + " ."
        #expect(throws: RDFLoadError.self) { try RDFLoader.parse(deep, format: .turtle, limits: limits) }
        let deepXML = "<?xml version=\"1.0\"?><rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\" xmlns:ex=\"http://ex/\">"
            + String(repeating: "<rdf:Description><ex:p>", count: 20) + String(repeating: "</ex:p></rdf:Description>", count: 20) + "</rdf:RDF>"
        #expect(throws: RDFLoadError.refused("XML nested deeper than 10")) { try RDFLoader.parse(deepXML, format: .rdfXML, limits: limits) }
        #expect(try RDFLoader.parse(deepXML, format: .rdfXML).count == 20)  // one ex:p per level
        let big = LoadLimits(maxInputBytes: 10)
        #expect(throws: RDFLoadError.self) { try RDFLoader.parse(huge, format: .nTriples, limits: big) }
    }
}

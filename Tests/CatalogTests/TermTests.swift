@testable import Catalog
import Testing

@Suite struct TermTests {
    @Test func nTriplesEscapesStringsAndIRIs() {
        #expect(Term.string("a\"b\\c\nd").nTriples == #""a\"b\\c\nd""#)
        #expect(Term.literal(Literal("chat", language: "FR")).nTriples == "\"chat\"@fr")
        #expect(Term.integer(42).nTriples == "\"42\"^^<http://www.w3.org/2001/XMLSchema#integer>")
        #expect(Term.iri("http://x/a b").nTriples == "<http://x/a\\u0020b>")
        #expect(Term.blank("b1").nTriples == "_:b1")
    }

    @Test func simpleLiteralsEqualXSDStringLiterals() {
        #expect(Term.string("x") == Term.typed("x", Vocabulary.xsdString))
        #expect(Term.string("x") != Term.literal(Literal("x", language: "en")))
    }

    @Test func serializesTriplesLineByLine() {
        let triples = [Triple(.iri("http://s"), .iri("http://p"), .string("o"))]
        #expect(serializeNTriples(triples) == "<http://s> <http://p> \"o\" .\n")
    }
}

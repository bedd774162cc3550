import Foundation
import Providers
import TestSupport
import Testing

@testable import Federation

@Suite("Template catalog")
struct TemplateCatalogTests {
    /// Parses Turtle with Raptor's `rapper` and returns the N-Triples it produced.
    func rapper(_ turtle: String) throws -> (status: Int32, ntriples: [String], errors: String) {
        let directory = try TemporaryDirectory()
        let path = try directory.file("catalog.ttl", turtle)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try RequiredProgram.path("/usr/bin/rapper", package: "Debian's raptor2-utils"))
        process.arguments = ["-q", "-i", "turtle", "-o", "ntriples", path, "https://cloud1.test/"]
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        // Small documents: rapper finishes in milliseconds, so reading to the end here is brief.
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let lines = String(decoding: out, as: UTF8.self).split(separator: "\n").map(String.init)
        return (process.terminationStatus, lines, String(decoding: err, as: UTF8.self))
    }

    @Test("the example templates are valid Turtle (Raptor) with the offering, service, image, size and parameters")
    func examplesParse() throws {
        let templates = try TemplateLoader.load(directory: templatesDirectory)
        let sizes = SimCloud.defaultSizes
        let images = [Image(id: "sim-img-seed", name: "seed-linux", format: .raw)]
        let turtle = TemplateCatalog.turtle(templates: templates, cloudIRI: "https://cloud1.test", sizes: sizes, images: images)
        let parsed = try rapper(turtle)
        #expect(parsed.status == 0, "\(parsed.errors)")
        let ic = "https://intercloud.example.org/ontology#"
        let web = "<https://cloud1.test/template/web-server>"
        let triples = Set(parsed.ntriples)
        #expect(triples.contains("\(web) <http://www.w3.org/1999/02/22-rdf-syntax-ns#type> <\(ic)Offering> ."))
        #expect(triples.contains("\(web) <\(ic)operatedBy> <https://cloud1.test> ."))
        // Image given by name in the file, published under the id the inventory uses.
        #expect(triples.contains("\(web) <\(ic)image> <https://cloud1.test/image/sim-img-seed> ."))
        #expect(triples.contains("\(web) <\(ic)instanceType> <https://cloud1.test/instance-type/sim.small> ."))
        #expect(triples.contains("\(web) <\(ic)vcpu> \"1\"^^<http://www.w3.org/2001/XMLSchema#integer> ."))
        #expect(triples.contains("\(web) <\(ic)pricePerHour> \"0.023\"^^<http://www.w3.org/2001/XMLSchema#decimal> ."))
        let service = "<https://cloud1.test/template/web-server/service>"
        #expect(triples.contains("\(web) <\(ic)service> \(service) ."))
        #expect(triples.contains("\(service) <\(ic)protocol> \"http\" ."))
        #expect(triples.contains("\(service) <\(ic)port> \"8080\"^^<http://www.w3.org/2001/XMLSchema#integer> ."))
        let db = "<https://cloud1.test/template/postgres-db/service>"
        #expect(triples.contains("\(db) <\(ic)interfaceDescription> <https://www.postgresql.org/docs/15/protocol.html> ."))
        // Two parameters per template, each a blank node with a name.
        let parameterLinks = parsed.ntriples.filter { $0.contains("<\(ic)parameter>") }
        #expect(parameterLinks.count == 4)
        #expect(parsed.ntriples.contains { $0.hasSuffix("<\(ic)pattern> \"[a-z][a-z0-9_]{0,30}\" .") })
    }

    @Test("text with quotes, backslashes, newlines and control characters is escaped; odd image names are percent-encoded")
    func escaping() throws {
        let template = ServerTemplate(
            name: "odd", description: "say \"hi\"\\\nnext line\u{1}", image: "my image>1", size: "s",
            parameters: [TemplateParameter(name: "p", description: "\"", pattern: "[\"\\\\]")],
            interface: ServiceInterface(protocolName: "tcp", port: 9, description: "not a url <script>"))
        let parsed = try rapper(TemplateCatalog.turtle(templates: [template], cloudIRI: "https://cloud1.test/"))
        #expect(parsed.status == 0, "\(parsed.errors)")
        #expect(parsed.ntriples.contains { $0.contains("<https://cloud1.test/image/my%20image%3E1>") })
        #expect(parsed.ntriples.contains { $0.contains("\"say \\\"hi\\\"\\\\\\nnext line\\u0001\"") })
        #expect(parsed.ntriples.contains { $0.contains("<http://purl.org/dc/terms/description> \"not a url <script>\"") })
        #expect(!parsed.ntriples.contains { $0.contains("interfaceDescription") })
    }
}

import Foundation
import TOMLParsing
import Testing

@testable import Federation

@Suite("Template loader")
struct TemplateLoaderTests {
    /// A valid template to break one field at a time; `script` and `extra` are spliced in.
    static func document(
        name: String = "web", protocolName: String = "http", port: String = "8080", script: String = "echo {{greeting}}",
        parameter: String = "pattern = \"[a-z]{1,10}\"", extraTop: String = "", extraInterface: String = ""
    ) -> String {
        """
        version = 1
        name = "\(name)"
        description = "A web server"
        image = "seed-linux"
        size = "sim.small"
        \(extraTop)
        boot_script = \"\"\"
        #!/bin/sh
        \(script)
        \"\"\"

        [interface]
        protocol = "\(protocolName)"
        port = \(port)
        \(extraInterface)

        [[parameter]]
        name = "greeting"
        description = "What to say"
        default = "hello"
        \(parameter)
        """
    }

    func diagnostics(_ text: String, file: String = "t.toml") -> [TemplateDiagnostic] {
        do {
            _ = try TemplateLoader.parse(text, file: file)
            return []
        } catch {
            return error.diagnostics
        }
    }

    /// The 1-based line of the first line of `text` containing `needle`.
    func line(of needle: String, in text: String) -> Int {
        (text.split(separator: "\n", omittingEmptySubsequences: false).firstIndex { $0.contains(needle) } ?? -1) + 1
    }

    @Test("the shipped example templates load, with every field read")
    func examples() throws {
        let templates = try TemplateLoader.load(directory: templatesDirectory)
        #expect(templates.map(\.name) == ["postgres-db", "web-server"])
        let web = try #require(templates.first { $0.name == "web-server" })
        #expect(web.image == "seed-linux")
        #expect(web.size == "sim.small")
        #expect(web.interface == ServiceInterface(protocolName: "http", port: 8080, path: "/", description: "Static files; GET / returns the index page."))
        #expect(web.metering.countCalls)
        #expect(web.parameters.map(\.name) == ["site_name", "max_connections"])
        #expect(web.parameters[1].allowedValues == ["16", "64", "256"])
        #expect(web.bootScript?.contains("{{site_name}}") == true)
        let db = try #require(templates.first { $0.name == "postgres-db" })
        #expect(db.size == "sim.medium")
        #expect(db.interface.protocolName == "postgresql")
        #expect(db.parameters.first?.required == true)
    }

    @Test("a valid document parses")
    func valid() throws {
        let template = try TemplateLoader.parse(Self.document(), file: "t.toml")
        #expect(template.name == "web")
        #expect(template.parameters.first?.defaultValue == "hello")
        #expect(template.source == "t.toml")
    }

    @Test("syntax errors carry the line and column")
    func syntax() {
        let text = "version = 1\nname = \"web\nport = 3\n"
        let found = diagnostics(text)
        #expect(found.count == 1)
        #expect(found.first?.line == 2)
        #expect(found.first?.column != nil)
        #expect(found.first?.description.hasPrefix("t.toml:2:") == true)
        #expect(found.first?.message.hasPrefix("syntax error") == true)
    }

    @Test("unknown fields are errors at their own line, at every level")
    func unknownFields() {
        let text = Self.document(parameter: "pattern = \"[a-z]+\"\ncolour = \"red\"", extraTop: "owner = \"ops\"", extraInterface: "tls = true")
        let found = diagnostics(text)
        let byField = Dictionary(found.map { ($0.field, $0) }, uniquingKeysWith: { a, _ in a })
        #expect(byField["owner"]?.line == line(of: "owner", in: text))
        #expect(byField["interface.tls"]?.line == line(of: "tls = true", in: text))
        #expect(byField["parameter[0].colour"]?.line == line(of: "colour", in: text))
        #expect(found.count == 3)
        #expect(found.allSatisfy { $0.message.hasPrefix("unknown field") })
    }

    @Test("missing fields, wrong types and out-of-range values are all reported at once")
    func allAtOnce() {
        let text = """
            version = 2
            name = "9lives"
            description = ""
            size = 3
            boot_script = "echo {{nobody}}"

            [interface]
            protocol = "gopher"
            port = 70000
            path = "no-slash"

            [[parameter]]
            name = "x"
            description = "no check"
            """
        let found = diagnostics(text)
        let fields = Set(found.map(\.field))
        #expect(fields == [
            "version", "name", "description", "image", "size", "boot_script", "interface.protocol", "interface.port",
            "interface.path", "parameter[0]",
        ])
        func diagnostic(_ field: String) -> TemplateDiagnostic? { found.first { $0.field == field } }
        #expect(diagnostic("version")?.line == 1)
        #expect(diagnostic("image")?.message == "missing")
        #expect(diagnostic("size")?.message == "expected a string, found integer")
        #expect(diagnostic("size")?.line == 4)
        #expect(diagnostic("interface.port")?.line == 9)
        #expect(diagnostic("interface.protocol")?.message.contains("unknown protocol 'gopher'") == true)
        #expect(diagnostic("boot_script")?.message == "placeholder {{nobody}} names no declared parameter")
        #expect(diagnostic("parameter[0]")?.message.contains("needs `pattern` or `allowed`") == true)
        #expect(diagnostic("parameter[0]")?.line == 12)
        #expect(diagnostic("description")?.message == "must not be empty")
    }

    @Test("a missing [interface] is an error")
    func missingInterface() {
        let text = "version = 1\nname = \"a\"\ndescription = \"d\"\nimage = \"i\"\nsize = \"s\"\n"
        let found = diagnostics(text)
        #expect(found.map(\.field) == ["interface"])
    }

    @Test("parameter checks: invalid pattern, default that does not match, required with default, unsafe allowed values, duplicates")
    func parameterChecks() {
        let badPattern = diagnostics(Self.document(parameter: "pattern = \"[a-z\""))
        #expect(badPattern.map(\.field) == ["parameter[0].pattern"])
        #expect(badPattern.first?.message == "not a valid regular expression")

        let badDefault = diagnostics(Self.document(parameter: "pattern = \"[0-9]+\""))
        #expect(badDefault.map(\.field) == ["parameter[0].default"])
        #expect(badDefault.first?.message.contains("does not match") == true)

        let requiredWithDefault = diagnostics(Self.document(parameter: "pattern = \"[a-z]+\"\nrequired = true"))
        #expect(requiredWithDefault.map(\.field) == ["parameter[0].default"])

        let unsafeAllowed = diagnostics(Self.document(parameter: "allowed = [\"hello\", \"a;b\"]"))
        #expect(unsafeAllowed.map(\.field) == ["parameter[0].allowed"])
        #expect(unsafeAllowed.first?.message.contains("'a;b'") == true)

        let duplicated = Self.document() + "\n\n[[parameter]]\nname = \"greeting\"\ndescription = \"again\"\npattern = \"x\"\n"
        let found = diagnostics(duplicated)
        #expect(found.map(\.field) == ["parameter[1].name"])
        #expect(found.first?.line == line(of: "description = \"again\"", in: duplicated) - 1)
    }

    @Test("lines inside a multi-line boot script are never taken for keys")
    func scriptLinesAreNotKeys() {
        // The script has lines `[interface]` and `port = 1` before the real table and its (wrongly
        // typed) port: the errors must point at the real lines, not at the script's.
        let text = Self.document(port: "\"eighty\"", script: "[interface]\nport = 1\ncolour = 2", extraInterface: "colour = 1")
        let found = diagnostics(text)
        #expect(found.first { $0.field == "interface.port" }?.line == line(of: "port = \"eighty\"", in: text))
        #expect(found.first { $0.field == "interface.colour" }?.line == line(of: "colour = 1", in: text))
        #expect(found.count == 2)
    }

    @Test("files: unreadable files and duplicate template names across files, with the other file named")
    func files() throws {
        let directory = try TemporaryDirectory()
        let a = try directory.file("a.toml", Self.document(name: "same"))
        let b = try directory.file("b.toml", Self.document(name: "same"))
        let missing = directory.url.appendingPathComponent("missing.toml").path
        do {
            _ = try TemplateLoader.load(paths: [a, b, missing])
            Issue.record("loaded duplicates")
        } catch {
            #expect(error.diagnostics.count == 2)
            #expect(error.diagnostics[0].file == b)
            #expect(error.diagnostics[0].field == "name")
            #expect(error.diagnostics[0].line == 2)
            #expect(error.diagnostics[0].message.contains(a))
            #expect(error.diagnostics[1].file == missing)
            #expect(error.description.contains("\(b):2: name: template 'same' is already defined in \(a)"))
        }
    }
}

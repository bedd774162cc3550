import Foundation
import TOMLParsing

/// One problem in a template file, located for the operator: `file:line: field: message`.
public typealias TemplateDiagnostic = TOMLDiagnostic

/// Loading templates failed; every problem found in every file is listed.
public typealias TemplateLoadError = TOMLLoadError

/// Reads server templates: one TOML file per template, schema in `templates/README.md`.
public enum TemplateLoader {
    /// The schema version this loader understands.
    public static let version = 1
    /// Largest boot script accepted (EC2's user-data limit).
    public static let maximumBootScriptBytes = 16 * 1024
    /// Largest template file read.
    public static let maximumFileBytes = 64 * 1024

    /// Loads several files; template names must be unique across all of them.
    public static func load(paths: [String]) throws(TemplateLoadError) -> [ServerTemplate] {
        var templates: [ServerTemplate] = []
        var diagnostics: [TemplateDiagnostic] = []
        var firstSeen: [String: String] = [:]
        for path in paths {
            let text: String
            do {
                let attributes = try FileManager.default.attributesOfItem(atPath: path)
                if let size = attributes[.size] as? NSNumber, size.intValue > maximumFileBytes {
                    diagnostics.append(TemplateDiagnostic(file: path, line: 1, field: "", message: "larger than \(maximumFileBytes) bytes"))
                    continue
                }
                text = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                diagnostics.append(TemplateDiagnostic(file: path, line: 1, field: "", message: "cannot read: \(error.localizedDescription)"))
                continue
            }
            var parser = Parser(file: path, text: text)
            let template = parser.parse()
            diagnostics += parser.diagnostics
            guard let template else { continue }
            if let other = firstSeen[template.name] {
                diagnostics.append(TemplateDiagnostic(
                    file: path, line: parser.locator.line(of: "name"), field: "name",
                    message: "template '\(template.name)' is already defined in \(other)"))
                continue
            }
            firstSeen[template.name] = path
            templates.append(template)
        }
        guard diagnostics.isEmpty else { throw TemplateLoadError(diagnostics: diagnostics) }
        return templates
    }

    /// Loads every `*.toml` file of `directory`, in name order.
    public static func load(directory: String) throws(TemplateLoadError) -> [ServerTemplate] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw TemplateLoadError(diagnostics: [
                TemplateDiagnostic(file: directory, line: 1, field: "", message: "cannot list: \(error.localizedDescription)"),
            ])
        }
        let paths = names.filter { $0.hasSuffix(".toml") }.sorted().map { (directory as NSString).appendingPathComponent($0) }
        return try load(paths: paths)
    }

    /// Parses one document held in memory; `file` names it in diagnostics.
    public static func parse(_ text: String, file: String) throws(TemplateLoadError) -> ServerTemplate {
        var parser = Parser(file: file, text: text)
        let template = parser.parse()
        guard let template, parser.diagnostics.isEmpty else { throw TemplateLoadError(diagnostics: parser.diagnostics) }
        return template
    }

    /// Template and parameter names: what a catalog IRI and a placeholder can carry unescaped.
    static func isName(_ value: String, maxBytes: Int) -> Bool {
        guard !value.isEmpty, value.utf8.count <= maxBytes, let first = value.unicodeScalars.first,
              CharacterSet.letters.contains(first) else { return false }
        return value.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "._-".unicodeScalars.contains($0)) }
    }
}

extension TemplateLoader {
    struct Parser: TOMLFieldReader {
        let file: String
        let text: String
        let locator: TOMLSourceLocator
        var diagnostics: [TemplateDiagnostic] = []

        init(file: String, text: String) {
            self.file = file
            self.text = text
            self.locator = TOMLSourceLocator(text: text)
        }

        mutating func error(_ field: String, _ message: String) {
            diagnostics.append(TemplateDiagnostic(file: file, line: locator.line(of: field), field: field, message: message))
        }

        mutating func parse() -> ServerTemplate? {
            let root: TOMLTable
            do {
                root = try SerializedTOML.table(from: text)
            } catch {
                diagnostics.append(.syntax(error, file: file))
                return nil
            }
            checkKeys(root, path: "", allowed: [
                "version", "name", "description", "image", "size", "boot_script", "interface", "metering", "parameter",
            ])
            if let v = root["version"] {
                if v.int != TemplateLoader.version { error("version", "expected \(TemplateLoader.version), found \(v.debugDescription)") }
            } else {
                error("version", "missing; write `version = \(TemplateLoader.version)` at the top")
            }
            let name = requiredString(root, "name", "")
            if let name, !TemplateLoader.isName(name, maxBytes: 64) {
                error("name", "'\(name.prefix(64))' must be 1...64 letters, digits and ._- starting with a letter")
            }
            let description = requiredString(root, "description", "")
            let image = requiredString(root, "image", "")
            if let image, image.utf8.count > 128 { error("image", "longer than 128 bytes") }
            let size = requiredString(root, "size", "")
            if let size, size.utf8.count > 64 { error("size", "longer than 64 bytes") }
            let interface = parseInterface(root)
            var metering = MeteringHints()
            if let table = table(root, "metering", "") {
                checkKeys(table, path: "metering", allowed: ["count_calls"])
                metering.countCalls = bool(table, "count_calls", "metering") ?? false
            }
            var parameters: [TemplateParameter] = []
            if let value = root["parameter"] {
                if let array = value.array {
                    for i in 0..<array.count {
                        let path = "parameter[\(i)]"
                        guard let table = array[i].table else {
                            error(path, "expected a table, found \(array[i].type)")
                            continue
                        }
                        if let parameter = parseParameter(table, path: path) {
                            if parameters.contains(where: { $0.name == parameter.name }) {
                                error(path + ".name", "parameter '\(parameter.name)' is declared twice")
                            } else {
                                parameters.append(parameter)
                            }
                        }
                    }
                } else {
                    error("parameter", "expected an array of tables ([[parameter]]), found \(value.type)")
                }
            }
            let bootScript = string(root, "boot_script", "")
            if let bootScript {
                if bootScript.utf8.count > TemplateLoader.maximumBootScriptBytes {
                    error("boot_script", "longer than \(TemplateLoader.maximumBootScriptBytes) bytes")
                }
                // Names of parameters that failed their own checks count too: one mistake, one error.
                var declared = Set(parameters.map(\.name))
                if let array = root["parameter"]?.array {
                    for i in 0..<array.count { if let name = array[i].table?["name"]?.string { declared.insert(name) } }
                }
                for placeholder in ServerTemplate.placeholders(in: bootScript) where !declared.contains(placeholder) {
                    error("boot_script", "placeholder {{\(placeholder)}} names no declared parameter")
                }
            }
            guard diagnostics.isEmpty, let name, let description, let image, let size, let interface else { return nil }
            return ServerTemplate(
                name: name, description: description, image: image, size: size, parameters: parameters,
                bootScript: bootScript, interface: interface, metering: metering, source: file)
        }

        mutating func parseInterface(_ root: TOMLTable) -> ServiceInterface? {
            guard root["interface"] != nil else {
                error("interface", "missing; a template must say how the service is reached ([interface] protocol, port)")
                return nil
            }
            guard let t = table(root, "interface", "") else { return nil }
            let path = "interface"
            checkKeys(t, path: path, allowed: ["protocol", "port", "path", "description"])
            let before = diagnostics.count
            let protocolName = requiredString(t, "protocol", path)
            if let protocolName, !ServiceInterface.knownProtocols.contains(protocolName) {
                error(path + ".protocol", "unknown protocol '\(protocolName.prefix(32))' (one of \(ServiceInterface.knownProtocols.sorted().joined(separator: ", ")))")
            }
            var port: Int?
            if let value = t["port"] {
                if let n = value.int {
                    if (1...65535).contains(n) { port = n } else { error(path + ".port", "must be in 1...65535 (found \(n))") }
                } else {
                    error(path + ".port", "expected an integer, found \(value.type)")
                }
            } else {
                error(path + ".port", "missing")
            }
            let servicePath = string(t, "path", path)
            if let servicePath, !servicePath.hasPrefix("/") || servicePath.utf8.count > 256 || servicePath.contains(where: \.isWhitespace) {
                error(path + ".path", "must start with / and have no spaces (at most 256 bytes)")
            }
            let description = string(t, "description", path)
            if let description, description.utf8.count > 1024 { error(path + ".description", "longer than 1024 bytes") }
            guard diagnostics.count == before, let protocolName, let port else { return nil }
            return ServiceInterface(protocolName: protocolName, port: port, path: servicePath, description: description)
        }

        mutating func parseParameter(_ t: TOMLTable, path: String) -> TemplateParameter? {
            checkKeys(t, path: path, allowed: ["name", "description", "default", "required", "pattern", "allowed"])
            let before = diagnostics.count
            let name = requiredString(t, "name", path)
            if let name, !TemplateLoader.isName(name, maxBytes: 40) || name.contains(".") || name.contains("-") {
                error(path + ".name", "'\(name.prefix(40))' must be 1...40 letters, digits and _ starting with a letter")
            }
            let description = requiredString(t, "description", path)
            let required = bool(t, "required", path) ?? false
            let defaultValue = string(t, "default", path)
            var pattern = string(t, "pattern", path)
            if let p = pattern, TemplateParameter.compile(p) == nil {
                error(path + ".pattern", "not a valid regular expression")
                pattern = nil
            }
            let allowed = strings(t, "allowed", path)
            if let allowed {
                if allowed.isEmpty { error(path + ".allowed", "must list at least one value") }
                for value in allowed where !ServerTemplate.isSafeValue(value) {
                    error(path + ".allowed", "'\(value.prefix(40))' has characters other than letters, digits and ._:/@+,=- (or starts with -)")
                }
            }
            if t["pattern"] == nil && t["allowed"] == nil {
                error(path, "needs `pattern` or `allowed`: every value a peer sends must be checked")
            }
            if required && defaultValue != nil {
                error(path + ".default", "a required parameter cannot have a default")
            }
            guard diagnostics.count == before, let name, let description else { return nil }
            let parameter = TemplateParameter(
                name: name, description: description, defaultValue: defaultValue, required: required, pattern: pattern,
                allowedValues: allowed)
            if let defaultValue, let problem = parameter.problem(with: defaultValue) {
                error(path + ".default", "the default is not valid: \(problem)")
                return nil
            }
            return parameter
        }
    }
}

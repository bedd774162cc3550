import Foundation
/// One problem in a TOML file we load (a policy file, a server template), located for the operator:
/// `file:line: field: message`.
public struct TOMLDiagnostic: Error, Sendable, Hashable, CustomStringConvertible {
    public var file: String
    /// 1-based; for semantic errors, the line where the field's key (or its nearest enclosing
    /// table) is written (see `TOMLSourceLocator`).
    public var line: Int
    public var column: Int?
    /// Dotted path, e.g. `peer[0].quota.vcpu` or `parameter[0].pattern`; empty for syntax errors
    /// and for problems with the file itself.
    public var field: String
    public var message: String

    public init(file: String, line: Int, column: Int? = nil, field: String, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        self.message = message
    }

    /// A parse failure, at the position TOMLKit reports when it reports one.
    public static func syntax(_ error: any Error, file: String) -> TOMLDiagnostic {
        if let error = error as? TOMLText.Invalid {
            return TOMLDiagnostic(file: file, line: error.line, column: error.column, field: "", message: "syntax error: \(error.message)")
        }
        if let error = error as? TOMLParseError {
            return TOMLDiagnostic(
                file: file, line: error.source.begin.line, column: error.source.begin.column, field: "",
                message: "syntax error: \(error.description)")
        }
        return TOMLDiagnostic(file: file, line: 1, field: "", message: "syntax error: \(error)")
    }

    public var description: String {
        let position = column.map { "\(line):\($0)" } ?? "\(line)"
        return field.isEmpty ? "\(file):\(position): \(message)" : "\(file):\(position): \(field): \(message)"
    }
}

/// Loading failed; every problem found in every file is listed, not only the first.
public struct TOMLLoadError: Error, Sendable, Hashable, CustomStringConvertible {
    public var diagnostics: [TOMLDiagnostic]

    public init(diagnostics: [TOMLDiagnostic]) { self.diagnostics = diagnostics }

    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

extension TOMLLoadError {
    /// Reads a configuration-like file of at most `maximumBytes`, as every loader does: a file too
    /// large or unreadable is one diagnostic at its line 1.
    public static func readFile(_ path: String, maximumBytes: Int) throws(TOMLLoadError) -> String {
        do {
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            if let size = attributes[.size] as? NSNumber, size.intValue > maximumBytes {
                throw TOMLLoadError(diagnostics: [TOMLDiagnostic(file: path, line: 1, field: "", message: "larger than \(maximumBytes) bytes")])
            }
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch let error as TOMLLoadError {
            throw error
        } catch {
            throw TOMLLoadError(diagnostics: [TOMLDiagnostic(file: path, line: 1, field: "", message: "cannot read: \(error.localizedDescription)")])
        }
    }
}

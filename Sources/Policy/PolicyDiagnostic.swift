/// One problem in a policy file, located for the operator: `file:line: field: message`.
public struct PolicyDiagnostic: Error, Sendable, Hashable, CustomStringConvertible {
    public var file: String
    /// 1-based; for semantic errors, the line where the field's key (or its nearest enclosing
    /// table) is written.
    public var line: Int
    public var column: Int?
    /// Dotted path, e.g. `peer[0].quota.vcpu`; empty for syntax errors that have no field.
    public var field: String
    public var message: String

    public init(file: String, line: Int, column: Int? = nil, field: String, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        self.message = message
    }

    public var description: String {
        let position = column.map { "\(line):\($0)" } ?? "\(line)"
        return field.isEmpty ? "\(file):\(position): \(message)" : "\(file):\(position): \(field): \(message)"
    }
}

/// Loading failed; every problem found is listed, not only the first.
public struct PolicyLoadError: Error, Sendable, Hashable, CustomStringConvertible {
    public var diagnostics: [PolicyDiagnostic]

    public init(diagnostics: [PolicyDiagnostic]) { self.diagnostics = diagnostics }

    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

import TOMLParsing

/// One problem in a policy file, located for the operator: `file:line: field: message`.
public typealias PolicyDiagnostic = TOMLDiagnostic

/// Loading policy files failed; every problem found is listed, not only the first.
public typealias PolicyLoadError = TOMLLoadError

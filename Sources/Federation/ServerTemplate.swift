import Foundation

/// A service a broker can provision for a peer: which image to boot at which size, the boot script
/// (user-data) with its parameters, and the interface the peer reaches once it runs.
///
/// Templates are written as TOML files (schema in `templates/README.md`), read by `TemplateLoader`,
/// stored per broker by `FederationJournal` and published in the catalog by `TemplateCatalog`.
public struct ServerTemplate: Codable, Sendable, Hashable, Identifiable {
    /// Letters, digits and `.-_`; the catalog IRI and the peer's `select` name it.
    public var name: String
    public var description: String
    /// An image id or image name in the local driver (resolved when a service is provisioned).
    public var image: String
    /// An instance size id in the local driver; it is also the instance type metering records.
    public var size: String
    public var parameters: [TemplateParameter]
    /// User-data handed to the instance at boot (`CreateInstanceRequest.extra["userData"]`), with
    /// `{{name}}` placeholders for validated parameter values.
    public var bootScript: String?
    public var interface: ServiceInterface
    public var metering: MeteringHints
    /// Where the template was read from (`file`), for operators.
    public var source: String

    public var id: String { name }

    public init(
        name: String, description: String, image: String, size: String, parameters: [TemplateParameter] = [],
        bootScript: String? = nil, interface: ServiceInterface, metering: MeteringHints = MeteringHints(), source: String = ""
    ) {
        self.name = name
        self.description = description
        self.image = image
        self.size = size
        self.parameters = parameters
        self.bootScript = bootScript
        self.interface = interface
        self.metering = metering
        self.source = source
    }
}

/// One value a peer may (or must) pass when it selects a template.
public struct TemplateParameter: Codable, Sendable, Hashable {
    public var name: String
    public var description: String
    /// Used when the peer passes no value; must itself be valid.
    public var defaultValue: String?
    public var required: Bool
    /// A regular expression the whole value must match (anchored at both ends).
    public var pattern: String?
    /// The only values accepted, when given.
    public var allowedValues: [String]?

    public init(
        name: String, description: String, defaultValue: String? = nil, required: Bool = false, pattern: String? = nil,
        allowedValues: [String]? = nil
    ) {
        self.name = name
        self.description = description
        self.defaultValue = defaultValue
        self.required = required
        self.pattern = pattern
        self.allowedValues = allowedValues
    }
}

/// How a peer reaches a provisioned service.
public struct ServiceInterface: Codable, Sendable, Hashable {
    /// `http`, `https`, `tcp`, `ssh`, ... (see `ServiceInterface.knownProtocols`).
    public var protocolName: String
    public var port: Int
    /// Path under the endpoint (`/api/v1`), for URL-based protocols.
    public var path: String?
    /// Free text, or the URL of an interface description (an OpenAPI document).
    public var description: String?

    public init(protocolName: String, port: Int, path: String? = nil, description: String? = nil) {
        self.protocolName = protocolName
        self.port = port
        self.path = path
        self.description = description
    }

    /// Protocols a template may name. A closed list so peers can rely on the names.
    public static let knownProtocols: Set<String> = [
        "http", "https", "tcp", "udp", "ssh", "postgresql", "mysql", "redis", "amqp", "mqtt", "grpc", "xmpp", "s3",
    ]
}

/// How the service is metered. The instance type recorded is always the template's size.
public struct MeteringHints: Codable, Sendable, Hashable {
    /// Whether the broker counts calls made with the service's credentials against the agreement
    /// (in addition to instance-hours of the size).
    public var countCalls: Bool

    public init(countCalls: Bool = false) {
        self.countCalls = countCalls
    }
}

/// A peer's parameter values were refused; nothing was provisioned.
public struct TemplateParameterError: Error, Sendable, Hashable, CustomStringConvertible {
    public var problems: [String]
    public init(_ problems: [String]) { self.problems = problems }
    public var description: String { problems.joined(separator: "; ") }
}

/// A template with the peer's parameters applied: what the driver is asked to boot.
public struct RenderedTemplate: Sendable, Hashable, Codable {
    /// Every declared parameter with a value (the peer's, or the default).
    public var parameters: [String: String]
    /// The boot script with placeholders replaced, or nil when the template has none.
    public var userData: String?
}

extension ServerTemplate {
    /// Longest parameter value accepted from a peer.
    public static let maximumParameterValueBytes = 256
    /// Most parameters a peer may pass in one selection.
    public static let maximumParameterCount = 32

    /// Validates `values` (from a peer: hostile) and substitutes them into the boot script.
    ///
    /// Every value must be declared, match its parameter's pattern or allowed values, and use only
    /// the characters of `ServerTemplate.isSafeValue` whatever the pattern allows, so a value can
    /// never break out of the script it is written into (no quotes, `$`, `;`, backticks, spaces
    /// or newlines). Placeholders are replaced in a single pass, so a value that looks like a
    /// placeholder is not expanded again.
    public func render(parameters values: [String: String]) throws(TemplateParameterError) -> RenderedTemplate {
        var problems: [String] = []
        if values.count > Self.maximumParameterCount {
            throw TemplateParameterError(["more than \(Self.maximumParameterCount) parameters"])
        }
        let declared = Set(parameters.map(\.name))
        for name in values.keys.sorted() where !declared.contains(name) {
            problems.append("unknown parameter '\(name.prefix(40))' (declared: \(parameters.map(\.name).joined(separator: ", ")))")
        }
        var resolved: [String: String] = [:]
        for parameter in parameters {
            guard let value = values[parameter.name] ?? parameter.defaultValue else {
                if parameter.required { problems.append("parameter '\(parameter.name)' is required") }
                continue
            }
            if let problem = parameter.problem(with: value) {
                problems.append(problem)
            } else {
                resolved[parameter.name] = value
            }
        }
        guard problems.isEmpty else { throw TemplateParameterError(problems) }
        return RenderedTemplate(parameters: resolved, userData: bootScript.map { Self.substitute($0, resolved) })
    }

    /// Values may hold letters, digits and `._:/@+,=-` only, never start with `-` (it would read as
    /// an option), and are 1...256 bytes long.
    public static func isSafeValue(_ value: String) -> Bool {
        guard !value.isEmpty, value.utf8.count <= maximumParameterValueBytes, !value.hasPrefix("-") else { return false }
        return value.unicodeScalars.allSatisfy { scalar in
            scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || "._:/@+,=-".unicodeScalars.contains(scalar))
        }
    }

    /// The `{{name}}` placeholders in `script`, in order of appearance.
    static func placeholders(in script: String) -> [String] {
        var names: [String] = []
        var rest = script[...]
        while let open = rest.range(of: "{{") {
            guard let close = rest[open.upperBound...].range(of: "}}") else { break }
            names.append(String(rest[open.upperBound..<close.lowerBound]).trimmingCharacters(in: .whitespaces))
            rest = rest[close.upperBound...]
        }
        return names
    }

    /// One left-to-right pass: text inserted for a placeholder is never scanned again.
    static func substitute(_ script: String, _ values: [String: String]) -> String {
        var output = ""
        var rest = script[...]
        while let open = rest.range(of: "{{") {
            guard let close = rest[open.upperBound...].range(of: "}}") else { break }
            output += rest[..<open.lowerBound]
            let name = String(rest[open.upperBound..<close.lowerBound]).trimmingCharacters(in: .whitespaces)
            // The loader refuses placeholders that name no parameter; an optional parameter with
            // no value and no default becomes empty.
            output += values[name] ?? ""
            rest = rest[close.upperBound...]
        }
        output += rest
        return output
    }
}

extension TemplateParameter {
    /// Why `value` is not acceptable, or nil.
    func problem(with value: String) -> String? {
        guard ServerTemplate.isSafeValue(value) else {
            return "parameter '\(name)': value must be 1...\(ServerTemplate.maximumParameterValueBytes) characters of letters, digits and ._:/@+,=- (not starting with -)"
        }
        if let allowedValues, !allowedValues.contains(value) {
            return "parameter '\(name)': '\(value)' is not one of \(allowedValues.joined(separator: ", "))"
        }
        if let pattern {
            guard let regex = Self.compile(pattern) else { return "parameter '\(name)': its pattern does not compile" }
            let range = NSRange(value.startIndex..., in: value)
            guard let match = regex.firstMatch(in: value, options: [.anchored], range: range), match.range == range else {
                return "parameter '\(name)': '\(value)' does not match \(pattern)"
            }
        }
        return nil
    }

    /// Anchored at both ends whatever the pattern says: `[a-z]+` must not accept `abc;rm -rf /`.
    static func compile(_ pattern: String) -> NSRegularExpression? {
        try? NSRegularExpression(pattern: "^(?:\(pattern))$", options: [])
    }
}

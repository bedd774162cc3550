import Foundation

/// A message of `urn:intercloud:federation:0` between a consumer's broker and the provider broker
/// that runs a service for it. Every request gets exactly one answer:
///
/// | consumer sends | provider answers                                                    |
/// |----------------|---------------------------------------------------------------------|
/// | `select`       | `provisioned` (endpoint + credentials), or `refused`                |
/// | `status`       | `state`, or `refused` (unknown service)                             |
/// | `renew`        | `renewed` (new credentials; the old token stops working), `refused` |
/// | `teardown`     | `done` (the instance is gone), or `state` while it is going         |
///
/// The service id is chosen by the consumer and names the service in every later message; a
/// repeated `select` with the same id is refused rather than provisioning twice.
public struct FederationMessage: Codable, Sendable, Hashable {
    /// The XML namespace / protocol identifier of these messages.
    public static let namespace = "urn:intercloud:federation:0"
    /// Largest encoded message accepted from a peer.
    public static let maximumEncodedBytes = 16 * 1024

    public var serviceID: String
    public var body: Body

    public init(serviceID: String, body: Body) {
        self.serviceID = serviceID
        self.body = body
    }

    public enum Body: Codable, Sendable, Hashable {
        /// Consumer: provision this template for me under this agreement.
        case select(ServiceSelection)
        /// Provider: the service runs; here is how to reach it.
        case provisioned(ProvisionedService)
        /// Consumer: what state is the service in?
        case status
        /// Provider: the service's state.
        case state(ServiceStatus)
        /// Consumer: new credentials, please (before or after the old ones expire).
        case renew
        /// Provider: the new credentials.
        case renewed(ServiceCredentials)
        /// Consumer: end the service now.
        case teardown
        /// Provider: the service ended and its instance is gone.
        case done
        /// Provider: the request was not carried out.
        case refused(reason: String)
    }

    /// A short name for logs and errors.
    public var kind: String {
        switch body {
        case .select: "select"
        case .provisioned: "provisioned"
        case .status: "status"
        case .state: "state"
        case .renew: "renew"
        case .renewed: "renewed"
        case .teardown: "teardown"
        case .done: "done"
        case .refused: "refused"
        }
    }
}

/// What the consumer selects from the provider's catalog.
public struct ServiceSelection: Codable, Sendable, Hashable {
    /// The template's name as published (`ic:name` of the offering).
    public var templateName: String
    /// Values of the template's parameters; validated against their patterns by the provider.
    public var parameters: [String: String]
    /// The agreement (negotiated with `urn:intercloud:negotiation:0`) the service runs under.
    public var agreementID: String

    public init(templateName: String, parameters: [String: String] = [:], agreementID: String) {
        self.templateName = templateName
        self.parameters = parameters
        self.agreementID = agreementID
    }
}

/// Where a provisioned service answers.
public struct ServiceEndpoint: Codable, Sendable, Hashable {
    public var host: String
    public var port: Int
    public var protocolName: String
    public var path: String?

    public init(host: String, port: Int, protocolName: String, path: String? = nil) {
        self.host = host
        self.port = port
        self.protocolName = protocolName
        self.path = path
    }

    /// `protocol://host:port/path` (IPv6 hosts in brackets).
    public var url: String {
        let hostPart = host.contains(":") ? "[\(host)]" : host
        return "\(protocolName)://\(hostPart):\(port)\(path ?? "")"
    }
}

/// Short-lived credentials for calls to a service. The token is shown once: the provider keeps
/// only its SHA-256.
public struct ServiceCredentials: Codable, Sendable, Hashable {
    public var username: String
    public var token: String
    public var expiresAt: Date

    public init(username: String, token: String, expiresAt: Date) {
        self.username = username
        self.token = token
        self.expiresAt = expiresAt
    }
}

/// The provider's answer to `select`.
public struct ProvisionedService: Codable, Sendable, Hashable {
    public var endpoint: ServiceEndpoint
    /// The template's interface description: free text or the URL of an OpenAPI document.
    public var interfaceDescription: String?
    public var credentials: ServiceCredentials

    public init(endpoint: ServiceEndpoint, interfaceDescription: String?, credentials: ServiceCredentials) {
        self.endpoint = endpoint
        self.interfaceDescription = interfaceDescription
        self.credentials = credentials
    }
}

/// A service's state as the provider tells the consumer.
public struct ServiceStatus: Codable, Sendable, Hashable {
    public var phase: FederatedService.Phase
    public var endpoint: ServiceEndpoint?
    /// When the current credentials expire (nil when none are issued).
    public var credentialsExpireAt: Date?
    /// Why the service failed or was torn down.
    public var reason: String?

    public init(phase: FederatedService.Phase, endpoint: ServiceEndpoint? = nil, credentialsExpireAt: Date? = nil, reason: String? = nil) {
        self.phase = phase
        self.endpoint = endpoint
        self.credentialsExpireAt = credentialsExpireAt
        self.reason = reason
    }
}

// MARK: - Validation of peer input

/// A message from a peer that is too large, malformed, or out of bounds.
public struct FederationMessageError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "invalid federation message: \(message)" }
}

extension FederationMessage {
    static let maximumIdentifierLength = 128
    static let maximumTextLength = 1024

    /// Encodes the message as the JSON carried in the protocol element.
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return try encoder.encode(self)
    }

    /// Decodes and validates a peer's message: size first (before parsing), then shape, then bounds.
    public static func decode(_ data: Data) throws(FederationMessageError) -> FederationMessage {
        guard data.count <= maximumEncodedBytes else {
            throw FederationMessageError("\(data.count) bytes exceeds the \(maximumEncodedBytes)-byte limit")
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let message: FederationMessage
        do { message = try decoder.decode(FederationMessage.self, from: data) } catch {
            throw FederationMessageError("not a federation message (\(error))")
        }
        try message.validate()
        return message
    }

    /// Checks every field against the protocol's bounds. Parameter values are only bounded here;
    /// their patterns are checked against the template by `ServerTemplate.render(parameters:)`.
    public func validate() throws(FederationMessageError) {
        try Self.checkIdentifier(serviceID, "service id")
        switch body {
        case .select(let selection):
            try Self.checkIdentifier(selection.templateName, "template name")
            try Self.checkIdentifier(selection.agreementID, "agreement id")
            guard selection.parameters.count <= ServerTemplate.maximumParameterCount else {
                throw FederationMessageError("more than \(ServerTemplate.maximumParameterCount) parameters")
            }
            for (name, value) in selection.parameters {
                try Self.checkIdentifier(name, "parameter name")
                guard value.utf8.count <= ServerTemplate.maximumParameterValueBytes else {
                    throw FederationMessageError("parameter \(name) longer than \(ServerTemplate.maximumParameterValueBytes) bytes")
                }
            }
        case .provisioned(let service):
            try Self.checkEndpoint(service.endpoint)
            if let description = service.interfaceDescription { try Self.checkText(description, "interface description") }
            try Self.checkCredentials(service.credentials)
        case .state(let status):
            if let endpoint = status.endpoint { try Self.checkEndpoint(endpoint) }
            if let reason = status.reason { try Self.checkText(reason, "reason") }
        case .renewed(let credentials):
            try Self.checkCredentials(credentials)
        case .refused(let reason):
            try Self.checkText(reason, "reason")
        case .status, .renew, .teardown, .done:
            break
        }
    }

    /// Identifiers end up in SQL keys, instance names and logs: letters, digits and `._:@-` only.
    static func checkIdentifier(_ value: String, _ what: String) throws(FederationMessageError) {
        guard !value.isEmpty, value.utf8.count <= maximumIdentifierLength else {
            throw FederationMessageError("\(what) must have 1...\(maximumIdentifierLength) bytes")
        }
        guard value.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "._:@-".unicodeScalars.contains($0)) }),
              value != ".", value != ".."
        else { throw FederationMessageError("\(what) \"\(value.prefix(40))\" has characters other than letters, digits and ._:@-") }
    }

    static func checkText(_ value: String, _ what: String) throws(FederationMessageError) {
        guard value.utf8.count <= maximumTextLength else { throw FederationMessageError("\(what) longer than \(maximumTextLength) bytes") }
        guard !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw FederationMessageError("\(what) contains control characters")
        }
    }

    static func checkEndpoint(_ endpoint: ServiceEndpoint) throws(FederationMessageError) {
        guard !endpoint.host.isEmpty, endpoint.host.utf8.count <= 253,
              endpoint.host.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || ".:-%".unicodeScalars.contains($0)) })
        else { throw FederationMessageError("endpoint host \"\(endpoint.host.prefix(40))\" is not a host name or address") }
        guard (1...65535).contains(endpoint.port) else { throw FederationMessageError("endpoint port \(endpoint.port) out of range") }
        guard ServiceInterface.knownProtocols.contains(endpoint.protocolName) else {
            throw FederationMessageError("unknown protocol \"\(endpoint.protocolName.prefix(32))\"")
        }
        if let path = endpoint.path {
            guard path.hasPrefix("/"), path.utf8.count <= 256, !path.contains(where: \.isWhitespace) else {
                throw FederationMessageError("endpoint path must start with / and have no spaces")
            }
            try checkText(path, "endpoint path")
        }
    }

    static func checkCredentials(_ credentials: ServiceCredentials) throws(FederationMessageError) {
        try checkIdentifier(credentials.username, "username")
        guard (16...256).contains(credentials.token.utf8.count),
              credentials.token.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-_".unicodeScalars.contains($0)) })
        else { throw FederationMessageError("token must be 16...256 characters of base64url") }
    }
}

// MARK: - Wire form

/// The JSON of `urn:intercloud:federation:0` (docs/protocol/federation.md), written out by hand:
/// every name on the wire is a string literal here, so renaming a Swift property or case cannot
/// change it. Times are left to the coder's date strategy (ISO 8601 in `encoded()`/`decode(_:)`).
extension FederationMessage {
    private enum WireKey: String, CodingKey {
        case serviceID = "serviceID"
        case body = "body"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        self.init(serviceID: try container.decode(String.self, forKey: .serviceID), body: try container.decode(Body.self, forKey: .body))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        try container.encode(serviceID, forKey: .serviceID)
        try container.encode(body, forKey: .body)
    }
}

/// A body is an object with exactly one member, named by the message kind, whose value is an
/// object: `{"select":{"_0":SELECTION}}`, `{"status":{}}`, `{"refused":{"reason":"…"}}`.
extension FederationMessage.Body {
    private enum Kind: String, CodingKey {
        case select = "select"
        case provisioned = "provisioned"
        case status = "status"
        case state = "state"
        case renew = "renew"
        case renewed = "renewed"
        case teardown = "teardown"
        case done = "done"
        case refused = "refused"
    }

    private enum ValueKey: String, CodingKey {
        case value = "_0"
        case reason = "reason"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Kind.self)
        guard container.allKeys.count == 1, let kind = container.allKeys.first else {
            throw DecodingError.dataCorrupted(.init(
                codingPath: container.codingPath, debugDescription: "a federation body has exactly one known message kind"))
        }
        let value = try container.nestedContainer(keyedBy: ValueKey.self, forKey: kind)
        switch kind {
        case .select: self = .select(try value.decode(ServiceSelection.self, forKey: .value))
        case .provisioned: self = .provisioned(try value.decode(ProvisionedService.self, forKey: .value))
        case .status: self = .status
        case .state: self = .state(try value.decode(ServiceStatus.self, forKey: .value))
        case .renew: self = .renew
        case .renewed: self = .renewed(try value.decode(ServiceCredentials.self, forKey: .value))
        case .teardown: self = .teardown
        case .done: self = .done
        case .refused: self = .refused(reason: try value.decode(String.self, forKey: .reason))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Kind.self)
        switch self {
        case .select(let selection):
            var value = container.nestedContainer(keyedBy: ValueKey.self, forKey: .select)
            try value.encode(selection, forKey: .value)
        case .provisioned(let service):
            var value = container.nestedContainer(keyedBy: ValueKey.self, forKey: .provisioned)
            try value.encode(service, forKey: .value)
        case .status:
            _ = container.nestedContainer(keyedBy: ValueKey.self, forKey: .status)
        case .state(let status):
            var value = container.nestedContainer(keyedBy: ValueKey.self, forKey: .state)
            try value.encode(status, forKey: .value)
        case .renew:
            _ = container.nestedContainer(keyedBy: ValueKey.self, forKey: .renew)
        case .renewed(let credentials):
            var value = container.nestedContainer(keyedBy: ValueKey.self, forKey: .renewed)
            try value.encode(credentials, forKey: .value)
        case .teardown:
            _ = container.nestedContainer(keyedBy: ValueKey.self, forKey: .teardown)
        case .done:
            _ = container.nestedContainer(keyedBy: ValueKey.self, forKey: .done)
        case .refused(let reason):
            var value = container.nestedContainer(keyedBy: ValueKey.self, forKey: .refused)
            try value.encode(reason, forKey: .reason)
        }
    }
}

extension ServiceSelection {
    private enum WireKey: String, CodingKey {
        case templateName = "templateName"
        case parameters = "parameters"
        case agreementID = "agreementID"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        self.init(
            templateName: try container.decode(String.self, forKey: .templateName),
            parameters: try container.decode([String: String].self, forKey: .parameters),
            agreementID: try container.decode(String.self, forKey: .agreementID))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        try container.encode(templateName, forKey: .templateName)
        try container.encode(parameters, forKey: .parameters)
        try container.encode(agreementID, forKey: .agreementID)
    }
}

extension ServiceEndpoint {
    private enum WireKey: String, CodingKey {
        case host = "host"
        case port = "port"
        case protocolName = "protocolName"
        case path = "path"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        self.init(
            host: try container.decode(String.self, forKey: .host), port: try container.decode(Int.self, forKey: .port),
            protocolName: try container.decode(String.self, forKey: .protocolName), path: try container.decodeIfPresent(String.self, forKey: .path))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        try container.encode(host, forKey: .host)
        try container.encode(port, forKey: .port)
        try container.encode(protocolName, forKey: .protocolName)
        try container.encodeIfPresent(path, forKey: .path)
    }
}

extension ServiceCredentials {
    private enum WireKey: String, CodingKey {
        case username = "username"
        case token = "token"
        case expiresAt = "expiresAt"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        self.init(
            username: try container.decode(String.self, forKey: .username), token: try container.decode(String.self, forKey: .token),
            expiresAt: try container.decode(Date.self, forKey: .expiresAt))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        try container.encode(username, forKey: .username)
        try container.encode(token, forKey: .token)
        try container.encode(expiresAt, forKey: .expiresAt)
    }
}

extension ProvisionedService {
    private enum WireKey: String, CodingKey {
        case endpoint = "endpoint"
        case interfaceDescription = "interfaceDescription"
        case credentials = "credentials"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        self.init(
            endpoint: try container.decode(ServiceEndpoint.self, forKey: .endpoint),
            interfaceDescription: try container.decodeIfPresent(String.self, forKey: .interfaceDescription),
            credentials: try container.decode(ServiceCredentials.self, forKey: .credentials))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        try container.encode(endpoint, forKey: .endpoint)
        try container.encodeIfPresent(interfaceDescription, forKey: .interfaceDescription)
        try container.encode(credentials, forKey: .credentials)
    }
}

extension ServiceStatus {
    private enum WireKey: String, CodingKey {
        case phase = "phase"
        case endpoint = "endpoint"
        case credentialsExpireAt = "credentialsExpireAt"
        case reason = "reason"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        let name = try container.decode(String.self, forKey: .phase)
        guard let phase = FederatedService.Phase.allCases.first(where: { $0.federationWireName == name }) else {
            throw DecodingError.dataCorruptedError(forKey: .phase, in: container, debugDescription: "unknown phase \"\(name.prefix(40))\"")
        }
        self.init(
            phase: phase, endpoint: try container.decodeIfPresent(ServiceEndpoint.self, forKey: .endpoint),
            credentialsExpireAt: try container.decodeIfPresent(Date.self, forKey: .credentialsExpireAt),
            reason: try container.decodeIfPresent(String.self, forKey: .reason))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        try container.encode(phase.federationWireName, forKey: .phase)
        try container.encodeIfPresent(endpoint, forKey: .endpoint)
        try container.encodeIfPresent(credentialsExpireAt, forKey: .credentialsExpireAt)
        try container.encodeIfPresent(reason, forKey: .reason)
    }
}

extension FederatedService.Phase {
    /// The phase's name in `state` messages (the phases are defined with the service's state
    /// machine; their names on the wire are fixed here).
    var federationWireName: String {
        switch self {
        case .requested: "requested"
        case .provisioning: "provisioning"
        case .starting: "starting"
        case .active: "active"
        case .tearingDown: "tearing-down"
        case .ended: "ended"
        case .failed: "failed"
        }
    }
}

import Foundation

/// One authenticated Keystone v3 session: a project-scoped token and the service catalog that came
/// with it. Every request asks for the token; it is renewed five minutes before it expires, or at once
/// when a service refuses it (`invalidate`). Concurrent callers share one renewal.
actor KeystoneSession {
    struct Token: Sendable {
        var value: String
        var expiresAt: Date
        var projectID: String?
        /// `type` (compute, image, network, identity) → endpoints.
        var catalog: [String: [Endpoint]]
    }

    struct Endpoint: Sendable, Hashable {
        var interface: String
        var region: String?
        var url: URL
    }

    let driver: String
    let authURL: URL
    let credentials: OpenStackDriver.Credentials
    let region: String?
    let interface: String
    let transport: any HTTPTransport
    let retry: RetryPolicy
    private var current: Token?
    private var renewal: Task<Token, any Error>?

    init(
        driver: String, authURL: URL, credentials: OpenStackDriver.Credentials, region: String?, interface: String,
        transport: any HTTPTransport, retry: RetryPolicy
    ) {
        self.driver = driver
        var url = authURL
        if url.lastPathComponent != "v3" { url = url.appendingPathComponent("v3") }
        self.authURL = url
        self.credentials = credentials
        self.region = region
        self.interface = interface
        self.transport = transport
        self.retry = retry
    }

    /// A token valid for at least five more minutes.
    func token(verb: Verb) async throws -> Token {
        if let current, current.expiresAt.timeIntervalSinceNow > 300 { return current }
        if let renewal { return try await renewal.value }
        let task = Task { try await self.authenticate(verb: verb) }
        renewal = task
        defer { renewal = nil }
        let token = try await task.value
        current = token
        return token
    }

    /// Drops `value` if it is still the current token (a service answered 401 to it).
    func invalidate(_ value: String) {
        if current?.value == value { current = nil }
    }

    /// The endpoint of a service `type` in the configured region and interface. Reads only immutable
    /// state and its arguments, so it needs no hop onto the actor.
    nonisolated func endpoint(_ type: String, token: Token, verb: Verb) throws -> URL {
        let candidates = (token.catalog[type] ?? []).filter { $0.interface == interface }
        guard !candidates.isEmpty else {
            throw ProviderError(
                driver: driver, verb: verb, code: .unavailable,
                message: "the service catalog has no \(interface) \(type) endpoint (services: \(token.catalog.keys.sorted().joined(separator: ", ")))")
        }
        if let region {
            guard let match = candidates.first(where: { $0.region == region }) else {
                throw ProviderError(
                    driver: driver, verb: verb, code: .invalidInput,
                    message: "no \(type) endpoint in region \(region); regions: \(Set(candidates.compactMap(\.region)).sorted().joined(separator: ", "))")
            }
            return match.url
        }
        let regions = Set(candidates.map { $0.region ?? "" })
        guard regions.count == 1 else {
            throw ProviderError(
                driver: driver, verb: verb, code: .invalidInput,
                message: "the \(type) service is in several regions (\(regions.sorted().joined(separator: ", "))); set the driver's region")
        }
        return candidates[0].url
    }

    private func authenticate(verb: Verb) async throws -> Token {
        let identity: [String: Any]
        var auth: [String: Any] = [:]
        switch credentials {
        case let .password(user, userDomain, password, project, projectDomain):
            identity = [
                "methods": ["password"],
                "password": ["user": ["name": user, "domain": ["name": userDomain], "password": password]],
            ]
            auth["scope"] = ["project": ["name": project, "domain": ["name": projectDomain]]]
        case let .applicationCredential(id, secret):
            // An application credential carries its own project scope; asking for another is an error.
            identity = ["methods": ["application_credential"], "application_credential": ["id": id, "secret": secret]]
        }
        auth["identity"] = identity
        let body = try JSONSerialization.data(withJSONObject: ["auth": auth])
        var request = HTTPRequest(url: authURL.appendingPathComponent("auth/tokens"), method: "POST", body: body)
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        let (data, response) = try await OpenStackHTTP.send(
            request, transport: transport, retry: retry, driver: driver, verb: .connect, action: "POST /v3/auth/tokens")
        guard let value = response.value(forHTTPHeaderField: "X-Subject-Token"), !value.isEmpty else {
            throw ProviderError(driver: driver, verb: .connect, code: .backend, message: "Keystone answered without X-Subject-Token")
        }
        let decoded: TokenBody
        do { decoded = try JSONDecoder().decode(TokenBody.self, from: data) } catch {
            throw ProviderError(driver: driver, verb: .connect, code: .backend, message: "Keystone token body: \(error)")
        }
        guard let expires = OpenStackHTTP.date(decoded.token.expires_at) else {
            throw ProviderError(
                driver: driver, verb: .connect, code: .backend, message: "Keystone token expiry \(decoded.token.expires_at) is not a date")
        }
        var catalog: [String: [Endpoint]] = [:]
        for service in decoded.token.catalog ?? [] {
            catalog[service.type, default: []] += service.endpoints.compactMap { endpoint in
                URL(string: endpoint.url).map { Endpoint(interface: endpoint.interface, region: endpoint.region_id ?? endpoint.region, url: $0) }
            }
        }
        return Token(value: value, expiresAt: expires, projectID: decoded.token.project?.id, catalog: catalog)
    }

    // Keystone's field names, as sent.
    private struct TokenBody: Decodable {
        struct Body: Decodable {
            var expires_at: String
            var project: Project?
            var catalog: [Service]?
        }
        struct Project: Decodable { var id: String }
        struct Service: Decodable {
            var type: String
            var endpoints: [ServiceEndpoint]
        }
        struct ServiceEndpoint: Decodable {
            var interface: String
            var region_id: String?
            var region: String?
            var url: String
        }
        var token: Body
    }
}

import FlyingFox
import FlyingSocks
import Foundation
import GRDB
import Logging

/// The provider's call gate: what a federated service's front (a reverse proxy such as nginx with
/// `auth_request`, an API gateway) asks, for each call, whether the caller's credentials hold.
/// Valid calls are counted per service and second (`FederationStore.validateCall`), which is what
/// usage records bill.
///
/// `GET /v1/calls/check` with `X-Intercloud-Service: <service id>` and `Authorization: Bearer
/// <token>` answers 204 when the token is the service's current one (the call is counted), 401
/// for a wrong or expired token, 403 when the service is not active, 400 for a request without
/// those headers or with oversized ones. Nothing else is served (404). It listens on loopback by
/// default (`[federation] call_gate = "127.0.0.1:8181"`): the gate is for the provider's own
/// network, next to the services it fronts.
public final class FederationCallGate: Sendable {
    public static let path = "/v1/calls/check"
    public static let serviceHeader = "X-Intercloud-Service"
    /// Longest service id and token read from a request: longer values are refused unread.
    static let maximumFieldBytes = 256

    let server: HTTPServer

    /// Binds to `host:port` (an IPv4 or IPv6 literal; port 0 picks a free one).
    public init(host: String, port: UInt16, database: DatabasePool, logger: Logger) throws {
        let check = Check(counter: FederationStore.CallCounter(database: database), logger: logger)
        // The concrete address type, not sockaddr_storage: the server opens its socket by the type's family.
        if host.contains(":") {
            server = HTTPServer(address: try sockaddr_in6.inet6(ip6: host, port: port), timeout: 5, logger: .disabled, handler: check)
        } else {
            server = HTTPServer(address: try sockaddr_in.inet(ip4: host, port: port), timeout: 5, logger: .disabled, handler: check)
        }
    }

    struct Check: HTTPHandler {
        let counter: FederationStore.CallCounter
        let logger: Logger

        func handleRequest(_ request: HTTPRequest) async throws -> HTTPResponse {
            guard request.path == FederationCallGate.path else { return HTTPResponse(statusCode: .notFound) }
            guard request.method == .GET else { return HTTPResponse(statusCode: .methodNotAllowed) }
            let maximumFieldBytes = FederationCallGate.maximumFieldBytes
            guard let serviceID = request.headers[HTTPHeader(FederationCallGate.serviceHeader)], !serviceID.isEmpty,
                  serviceID.utf8.count <= maximumFieldBytes,
                  let authorization = request.headers[.authorization], authorization.utf8.count <= maximumFieldBytes + 7,
                  authorization.hasPrefix("Bearer "), authorization.count > 7
            else { return HTTPResponse(statusCode: .badRequest) }
            let token = String(authorization.dropFirst(7))
            let result: CredentialValidation
            do {
                result = try await counter.validate(serviceID: serviceID, token: token, now: Date())
            } catch {
                logger.error("federation: call gate cannot check a call to \(serviceID): \(error)")
                return HTTPResponse(statusCode: .internalServerError)
            }
            switch result {
            case .valid: return HTTPResponse(statusCode: .noContent)
            case .invalid, .expired: return HTTPResponse(statusCode: .unauthorized)
            case .serviceNotActive: return HTTPResponse(statusCode: .forbidden)
            }
        }
    }

    /// Serves until cancelled.
    public func run() async throws { try await server.run() }

    /// The port it listens on, once listening.
    public func port() async throws -> UInt16 {
        try await server.waitUntilListening()
        guard let address = await server.listeningAddress else { throw CallGateError.notListening }
        switch address {
        case .ip4(_, let port), .ip6(_, let port): return port
        default: throw CallGateError.notListening
        }
    }

    enum CallGateError: Error { case notListening }
}

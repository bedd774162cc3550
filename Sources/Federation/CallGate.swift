import Foundation
import GRDB
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

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
///
/// Served with SwiftNIO (the HTTP stack the cloud drivers' client already brings), on NIO's shared
/// event loops, which start with the gate: a broker without one runs no threads for it.
public final class FederationCallGate: Sendable {
    public static let path = "/v1/calls/check"
    public static let serviceHeader = "X-Intercloud-Service"
    /// Longest service id and token taken from a request: longer values are refused.
    static let maximumFieldBytes = 256
    /// A connection that sends nothing for this long is closed.
    static let idleTimeout = TimeAmount.seconds(5)

    let address: SocketAddress
    let check: Check
    private let listening = Mutex<Listening>(.notYet([]))

    private enum Listening {
        case notYet([CheckedContinuation<UInt16, any Error>])
        case on(UInt16)
        case failed(any Error)
    }

    /// Listens on `host:port` (an IPv4 or IPv6 literal; port 0 picks a free one) once run.
    public init(host: String, port: UInt16, database: DatabasePool, logger: Logger) throws {
        check = Check(counter: FederationStore.CallCounter(database: database), logger: logger)
        address = try SocketAddress(ipAddress: host, port: Int(port))
    }

    struct Check: Sendable {
        let counter: FederationStore.CallCounter
        let logger: Logger

        func respond(to request: HTTPRequestHead) async -> HTTPResponseStatus {
            guard request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) == FederationCallGate.path else { return .notFound }
            guard request.method == .GET else { return .methodNotAllowed }
            let maximumFieldBytes = FederationCallGate.maximumFieldBytes
            guard let serviceID = request.headers.first(name: FederationCallGate.serviceHeader), !serviceID.isEmpty,
                  serviceID.utf8.count <= maximumFieldBytes,
                  let authorization = request.headers.first(name: "Authorization"), authorization.utf8.count <= maximumFieldBytes + 7,
                  authorization.hasPrefix("Bearer "), authorization.count > 7
            else { return .badRequest }
            let token = String(authorization.dropFirst(7))
            let result: CredentialValidation
            do {
                result = try await counter.validate(serviceID: serviceID, token: token, now: Date())
            } catch {
                logger.error("federation: call gate cannot check a call to \(serviceID): \(error)")
                return .internalServerError
            }
            switch result {
            case .valid: return .noContent
            case .invalid, .expired: return .unauthorized
            case .serviceNotActive: return .forbidden
            }
        }
    }

    /// Serves until cancelled.
    public func run() async throws {
        let server: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
        do {
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(to: address) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        try channel.pipeline.syncOperations.addHandlers(
                            IdleStateHandler(readTimeout: Self.idleTimeout), CloseWhenIdle())
                        return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            finishListening(.failed(error))
            throw error
        }
        finishListening(.on(UInt16(server.channel.localAddress?.port ?? 0)))
        try await withTaskCancellationHandler {
            try await server.executeThenClose { connections in
                await withDiscardingTaskGroup { group in
                    do {
                        for try await connection in connections {
                            group.addTask { await self.serve(connection) }
                        }
                    } catch {}
                    group.cancelAll()
                }
            }
        } onCancel: {
            server.channel.close(promise: nil)
        }
        try Task.checkCancellation()
    }

    /// One connection: each request answered with a status and no body, until the client closes,
    /// asks to close, or stays silent for `idleTimeout`.
    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        try? await connection.executeThenClose { requests, responses in
            var head: HTTPRequestHead?
            for try await part in requests {
                switch part {
                case .head(let request): head = request
                case .body: continue
                case .end:
                    guard let request = head else { continue }
                    head = nil
                    let status = await check.respond(to: request)
                    var headers = HTTPHeaders()
                    if status != .noContent { headers.add(name: "Content-Length", value: "0") }
                    if !request.isKeepAlive { headers.add(name: "Connection", value: "close") }
                    try await responses.write(.head(HTTPResponseHead(version: request.version, status: status, headers: headers)))
                    try await responses.write(.end(nil))
                    if !request.isKeepAlive { return }
                }
            }
        }
    }

    private func finishListening(_ state: Listening) {
        let waiting: [CheckedContinuation<UInt16, any Error>] = listening.withLock { listening in
            guard case .notYet(let waiting) = listening else { return [] }
            listening = state
            return waiting
        }
        for continuation in waiting {
            switch state {
            case .on(let port): continuation.resume(returning: port)
            case .failed(let error): continuation.resume(throwing: error)
            case .notYet: break
            }
        }
    }

    /// The port it listens on, once listening.
    public func port() async throws -> UInt16 {
        try await withCheckedThrowingContinuation { continuation in
            let now: Result<UInt16, any Error>? = listening.withLock { listening in
                switch listening {
                case .on(let port): return .success(port)
                case .failed(let error): return .failure(error)
                case .notYet(var waiting):
                    waiting.append(continuation)
                    listening = .notYet(waiting)
                    return nil
                }
            }
            if let now { continuation.resume(with: now) }
        }
    }
}

/// Closes a connection when `IdleStateHandler` reports it has read nothing for its timeout.
private final class CloseWhenIdle: ChannelInboundHandler {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}

import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// One request to a cloud's REST or Query API, as the EC2, S3 and OpenStack clients build it.
/// Header names compare without regard to case, as HTTP's do.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: URL
    public private(set) var headers: [(name: String, value: String)] = []
    public var body: Data
    /// The largest response body read into memory; a larger one fails the request
    /// (`HTTPResponseTooLarge`) rather than growing memory with whatever a server sends.
    public var responseLimit: Int

    public static let defaultResponseLimit = 64 << 20

    public init(url: URL, method: String = "GET", body: Data = Data(), responseLimit: Int = Self.defaultResponseLimit) {
        self.url = url
        self.method = method
        self.body = body
        self.responseLimit = responseLimit
    }

    public func value(forHTTPHeaderField name: String) -> String? {
        headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }

    /// Replaces every header of that name (any case); nil removes them.
    public mutating func setValue(_ value: String?, forHTTPHeaderField name: String) {
        headers.removeAll { $0.name.caseInsensitiveCompare(name) == .orderedSame }
        if let value { headers.append((name, value)) }
    }
}

/// A response's status and headers (its body travels beside it).
public struct HTTPResponse: Sendable {
    public var statusCode: Int
    public var headers: [(name: String, value: String)]

    public init(statusCode: Int, headers: [(name: String, value: String)] = []) {
        self.statusCode = statusCode
        self.headers = headers
    }

    public init(statusCode: Int, headerFields: [String: String]) {
        self.init(statusCode: statusCode, headers: headerFields.map { (name: $0.key, value: $0.value) })
    }

    public func value(forHTTPHeaderField name: String) -> String? {
        headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }
}

/// A response body was larger than the request's `responseLimit`.
public struct HTTPResponseTooLarge: Error, CustomStringConvertible {
    public var limit: Int
    public var description: String { "the response body is larger than \(limit) bytes" }
}

/// Sends HTTP requests. A protocol so retry and error mapping can be tested with a scripted transport;
/// production uses `HTTPClientTransport`.
public protocol HTTPTransport: Sendable {
    func send(_ request: HTTPRequest) async throws -> (Data, HTTPResponse)
}

/// Requests through AsyncHTTPClient (SwiftNIO). Not URLSession: on Linux that is FoundationNetworking
/// over libcurl, and linking it maps libcurl and the ~25 libraries it needs (GnuTLS, Kerberos,
/// LDAP, libssh2, ...) into every broker, ~4 MiB resident in one that never calls a cloud API.
///
/// `timeout` bounds connecting and each wait for bytes (an idle timeout, as URLSession's request
/// timeout was), not a whole request: a transfer of any size runs as long as bytes keep moving.
public struct HTTPClientTransport: HTTPTransport {
    public let timeout: TimeInterval

    public init(timeout: TimeInterval = 60) { self.timeout = timeout }

    public func send(_ request: HTTPRequest) async throws -> (Data, HTTPResponse) {
        let response = try await HTTPClients.execute(request.outgoing(body: request.body.isEmpty ? nil : .bytes(request.body)), timeout: timeout)
        let body: ByteBuffer
        do {
            body = try await response.body.collect(upTo: request.responseLimit)
        } catch is NIOTooManyBytesError {
            throw HTTPResponseTooLarge(limit: request.responseLimit)
        }
        return (Data(body.readableBytesView), response.head)
    }

    /// Sends `file` as the request body, read a chunk at a time off the cooperative pool; memory
    /// stays at a few chunks whatever the file's size. The response body is read up to `responseLimit`.
    public func upload(_ request: HTTPRequest, file: URL) async throws -> (Data, HTTPResponse) {
        let size = try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? NSNumber
        let chunks = FileChunks(file: file)
        let response = try await HTTPClients.execute(
            request.outgoing(body: .stream(chunks, length: size.map { .known($0.int64Value) } ?? .unknown)), timeout: timeout)
        let body: ByteBuffer
        do { body = try await response.body.collect(upTo: request.responseLimit) } catch is NIOTooManyBytesError {
            throw HTTPResponseTooLarge(limit: request.responseLimit)
        }
        return (Data(body.readableBytesView), response.head)
    }

    /// Writes a successful (2xx) response's body to `file` (created or truncated) as it arrives,
    /// a chunk at a time off the cooperative pool, and returns its head. Any other response's body
    /// is returned instead (its first `errorBodyLimit` bytes), and the file is left as it was.
    public func download(_ request: HTTPRequest, to file: URL, errorBodyLimit: Int = 4096) async throws -> (Data, HTTPResponse) {
        let response = try await HTTPClients.execute(request.outgoing(body: nil), timeout: timeout)
        let head = response.head
        guard (200..<300).contains(head.statusCode) else {
            var kept = Data()
            for try await buffer in response.body where kept.count < errorBodyLimit {
                kept.append(contentsOf: buffer.readableBytesView.prefix(errorBodyLimit - kept.count))
            }
            return (kept, head)
        }
        let writer = try await FileWriter.create(file)
        do {
            var pending = Data()
            for try await buffer in response.body {
                pending.append(contentsOf: buffer.readableBytesView)
                if pending.count >= FileChunks.chunkSize {
                    try await writer.write(pending)
                    pending.removeAll(keepingCapacity: true)
                }
            }
            if !pending.isEmpty { try await writer.write(pending) }
            try await writer.close()
        } catch {
            try? await writer.close()
            throw error
        }
        return (Data(), head)
    }
}

extension HTTPRequest {
    fileprivate func outgoing(body: HTTPClientRequest.Body?) -> HTTPClientRequest {
        var outgoing = HTTPClientRequest(url: url.absoluteString)
        outgoing.method = HTTPMethod(rawValue: method)
        for (name, value) in headers { outgoing.headers.add(name: name, value: value) }
        outgoing.body = body
        return outgoing
    }
}

extension HTTPClientResponse {
    fileprivate var head: HTTPResponse {
        HTTPResponse(statusCode: Int(status.code), headers: headers.map { (name: $0.name, value: $0.value) })
    }
}

/// The process's HTTP clients, one per timeout, made on first use and kept for the process's life
/// (as AsyncHTTPClient's own `HTTPClient.shared`): drivers come and go, their connections stay
/// pooled, and no client is left to shut down. Their event loops are NIO's shared group, whose
/// threads start with the first request, so a broker that never calls a cloud API runs none.
enum HTTPClients {
    private static let clients = Mutex<[TimeInterval: HTTPClient]>([:])

    static func client(timeout: TimeInterval) -> HTTPClient {
        clients.withLock { clients in
            if let client = clients[timeout] { return client }
            let limit = TimeAmount.milliseconds(Int64((timeout * 1000).rounded()))
            var configuration = HTTPClient.Configuration(timeout: .init(connect: limit, read: limit, write: limit))
            configuration.decompression = .disabled
            // A refused or failed connection fails the request at once, as it did with URLSession:
            // the drivers' own retry policies decide what is worth another attempt, and a cloud
            // that is down is reported as unavailable rather than retried until the connect timeout.
            configuration.connectionPool.retryConnectionEstablishment = false
            let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
            clients[timeout] = client
            return client
        }
    }

    /// No deadline for the whole request: the client's idle timeouts end a stalled one, and the
    /// caller's task cancellation any other.
    static func execute(_ request: HTTPClientRequest, timeout: TimeInterval) async throws -> HTTPClientResponse {
        try await client(timeout: timeout).execute(request, deadline: .distantFuture)
    }
}

/// What the drivers say about a failed request.
enum HTTPFailure {
    static func isCancellation(_ error: any Error) -> Bool {
        error is CancellationError || (error as? HTTPClientError) == .cancelled
    }

    /// The error in words: AsyncHTTPClient's own errors describe themselves as a type and case name
    /// (`HTTPClientError.readTimeout`); their short description reads "Read timeout". Connection
    /// errors (refused, unknown host) describe themselves.
    static func describe(_ error: any Error) -> String {
        (error as? HTTPClientError)?.shortDescription ?? String(describing: error)
    }
}

/// A file's bytes as an async sequence of buffers, each read on a dispatch queue (`BlockingWork`).
struct FileChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    static let chunkSize = 1 << 20
    let file: URL

    struct AsyncIterator: AsyncIteratorProtocol {
        let reader: Reader

        mutating func next() async throws -> ByteBuffer? {
            let reader = self.reader
            return try await BlockingWork.run { try reader.next() }
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(reader: Reader(file: file)) }

    final class Reader: @unchecked Sendable {
        // @unchecked: one iterator owns it and awaits each read before asking for the next.
        private let file: URL
        private var handle: FileHandle?
        private var finished = false

        init(file: URL) { self.file = file }

        func next() throws -> ByteBuffer? {
            guard !finished else { return nil }
            if handle == nil { handle = try FileHandle(forReadingFrom: file) }
            guard let chunk = try handle?.read(upToCount: FileChunks.chunkSize), !chunk.isEmpty else {
                finished = true
                try? handle?.close()
                handle = nil
                return nil
            }
            return ByteBuffer(bytes: chunk)
        }

        deinit { try? handle?.close() }
    }
}

/// Writes a file on a dispatch queue (`BlockingWork`), one chunk at a time.
final class FileWriter: Sendable {
    private let handle: FileHandle

    private init(handle: FileHandle) { self.handle = handle }

    static func create(_ file: URL) async throws -> FileWriter {
        try await BlockingWork.run {
            guard FileManager.default.createFile(atPath: file.path, contents: nil) else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: file.path])
            }
            return FileWriter(handle: try FileHandle(forWritingTo: file))
        }
    }

    func write(_ data: Data) async throws {
        let handle = self.handle
        try await BlockingWork.run { try handle.write(contentsOf: data) }
    }

    func close() async throws {
        let handle = self.handle
        try await BlockingWork.run { try handle.close() }
    }
}

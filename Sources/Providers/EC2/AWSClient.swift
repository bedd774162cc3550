import Foundation

/// Retry policy for throttling and transient server errors: exponential backoff with full jitter.
public struct RetryPolicy: Sendable, Hashable {
    public var maxAttempts: Int
    public var baseDelay: Duration
    public var maxDelay: Duration

    public init(maxAttempts: Int = 5, baseDelay: Duration = .milliseconds(200), maxDelay: Duration = .seconds(5)) {
        self.maxAttempts = maxAttempts
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    func delay(afterAttempt attempt: Int) -> Duration {
        let exponential = baseDelay * (1 << min(attempt - 1, 16))
        let capped = min(exponential, maxDelay)
        let milliseconds = Double(capped.components.seconds) * 1000 + Double(capped.components.attoseconds) / 1e15
        return .milliseconds(Int64(Double.random(in: 0.5...1.0) * milliseconds))
    }
}

/// One AWS service endpoint reached with SigV4: the EC2/IAM Query APIs and S3 REST.
struct AWSClient: Sendable {
    var driver: String
    var endpoint: URL
    var signer: SigV4Signer
    var transport: any HTTPTransport
    var retry: RetryPolicy

    /// A Query API call (`Action=...&Version=...`), returning the parsed response root.
    func query(_ action: String, version: String, parameters: [(String, String)], verb: Verb) async throws -> XMLTree {
        let pairs = [("Action", action), ("Version", version)] + parameters
        let body = Data(pairs.map { "\(Self.formEncode($0.0))=\(Self.formEncode($0.1))" }.joined(separator: "&").utf8)
        var request = HTTPRequest(url: endpoint, method: "POST", body: body)
        request.setValue("application/x-www-form-urlencoded; charset=utf-8", forHTTPHeaderField: "content-type")
        let (data, _) = try await send(request, verb: verb, action: action)
        return try parse(data, verb: verb, action: action)
    }

    /// `application/x-www-form-urlencoded` as Python's `urlencode` writes it (space as `+`). AWS hashes
    /// the body as sent, so either form verifies there; moto re-encodes the parsed form this way before
    /// checking the signature, so this is the form that verifies on both.
    static func formEncode(_ text: String) -> String {
        SigV4Signer.uriEncode(text).replacingOccurrences(of: "%20", with: "+")
    }

    /// A REST call (S3), signing the payload hash header as S3 requires. A response body larger than
    /// `responseLimit` fails the call.
    func rest(
        method: String, path: String, query: [(String, String?)] = [], headers: [String: String] = [:], body: Data = Data(),
        responseLimit: Int = HTTPRequest.defaultResponseLimit, verb: Verb, action: String
    ) async throws -> (Data, HTTPResponse) {
        var components = URLComponents(url: endpoint, resolvingAgainstBaseURL: false)!
        components.percentEncodedPath = path.split(separator: "/", omittingEmptySubsequences: false)
            .map { SigV4Signer.uriEncode(String($0)) }.joined(separator: "/")
        if !query.isEmpty {
            components.percentEncodedQuery = query.map { name, value in
                value.map { "\(SigV4Signer.uriEncode(name))=\(SigV4Signer.uriEncode($0))" } ?? "\(SigV4Signer.uriEncode(name))="
            }.joined(separator: "&")
        }
        var request = HTTPRequest(url: components.url!, method: method, body: body, responseLimit: responseLimit)
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        return try await send(request, verb: verb, action: action, signPayloadHeader: true)
    }

    /// Signs (fresh for every attempt, since the date is signed) and sends, retrying throttling and 5xx
    /// "try again" answers; maps every failure to a `ProviderError`.
    func send(
        _ request: HTTPRequest, verb: Verb, action: String, signPayloadHeader: Bool = false
    ) async throws -> (Data, HTTPResponse) {
        var attempt = 0
        while true {
            attempt += 1
            var signed = request
            signer.sign(&signed, signPayloadHeader: signPayloadHeader)
            let data: Data
            let response: HTTPResponse
            do {
                (data, response) = try await transport.send(signed)
            } catch let error where HTTPFailure.isCancellation(error) {
                throw ProviderError(driver: driver, verb: verb, code: .cancelled, message: "\(action) cancelled")
            } catch let error as HTTPResponseTooLarge {
                throw ProviderError(driver: driver, verb: verb, code: .backend, message: "\(action): \(error)")
            } catch {
                throw ProviderError(
                    driver: driver, verb: verb, code: .unavailable,
                    message: "\(action): cannot reach \(endpoint.absoluteString): \(HTTPFailure.describe(error))")
            }
            if (200..<300).contains(response.statusCode) { return (data, response) }
            let failure = mapError(data: data, status: response.statusCode, verb: verb, action: action)
            let retryable = failure.code == .throttled
                || (failure.code == .backend && [500, 502, 503, 504].contains(response.statusCode)
                    && ["InternalError", "ServiceUnavailable", "Unavailable", "SlowDown"].contains(failure.backendCode ?? ""))
            if retryable && attempt < retry.maxAttempts {
                do { try await Task.sleep(for: retry.delay(afterAttempt: attempt)) } catch {
                    throw ProviderError(driver: driver, verb: verb, code: .cancelled, message: "\(action) cancelled")
                }
                continue
            }
            if failure.code == .throttled {
                var final = failure
                final.message += " (gave up after \(attempt) attempts)"
                throw final
            }
            throw failure
        }
    }

    func parse(_ data: Data, verb: Verb, action: String) throws -> XMLTree {
        do { return try XMLTree.parse(data) } catch {
            throw ProviderError(driver: driver, verb: verb, code: .backend, message: "\(action): \(error)")
        }
    }

    /// EC2 (`<Response><Errors><Error>`), IAM (`<ErrorResponse><Error>`) and S3 (`<Error>`) error bodies.
    func mapError(data: Data, status: Int, verb: Verb, action: String) -> ProviderError {
        let root = try? XMLTree.parse(data)
        let error = root.flatMap { $0.name == "Error" ? $0 : $0.descendants("Error").first }
        let code = error?.string("Code") ?? "HTTP\(status)"
        let message = error?.string("Message") ?? String(decoding: data.prefix(300), as: UTF8.self)
        return ProviderError(
            driver: driver, verb: verb, code: Self.classify(code, status: status), backendCode: code,
            message: "\(action): \(message.isEmpty ? "HTTP \(status)" : message)")
    }

    static func classify(_ code: String, status: Int) -> ProviderError.Code {
        switch code {
        case "AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "IncompleteSignature",
            "UnrecognizedClientException", "InvalidAccessKeyId", "MissingAuthenticationToken", "AuthFailure.ServiceLinkedRoleCreationNotPermitted":
            return .authentication
        case "UnauthorizedOperation", "AccessDenied", "OptInRequired":
            return .forbidden
        case "RequestLimitExceeded", "Throttling", "ThrottlingException", "SlowDown", "TooManyRequestsException":
            return .throttled
        case "IncorrectInstanceState", "IncorrectState", "InvalidInstanceState", "InvalidState":
            return .invalidState
        case "InstanceLimitExceeded", "InsufficientInstanceCapacity", "VcpuLimitExceeded", "ResourceLimitExceeded":
            return .capacityExceeded
        case "NotImplemented", "InvalidAction", "UnsupportedOperation", "Unsupported":
            return .unsupported
        default:
            if code.hasSuffix(".NotFound") || code.hasSuffix("NotFound") || code == "NoSuchKey" || code == "NoSuchBucket"
                || code == "NoSuchUpload" || code.hasPrefix("InvalidAMIID") || code == "InvalidInstanceID.Malformed" {
                return .notFound
            }
            if code.hasPrefix("InvalidParameter") || code == "MissingParameter" || code.hasPrefix("Invalid") {
                return .invalidInput
            }
            if status == 401 || status == 403 { return .authentication }
            return .backend
        }
    }
}

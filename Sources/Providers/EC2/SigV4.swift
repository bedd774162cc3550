import Crypto
import Foundation

/// AWS Signature Version 4, written against the published algorithm
/// (canonical request → string to sign → HMAC-SHA256 key derivation → signature).
public struct SigV4Signer: Sendable {
    public struct Credentials: Sendable, Hashable {
        public var accessKeyID: String
        public var secretAccessKey: String
        public var sessionToken: String?

        public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
            self.accessKeyID = accessKeyID
            self.secretAccessKey = secretAccessKey
            self.sessionToken = sessionToken
        }

        /// From `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN`.
        public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> Credentials? {
            guard let key = environment["AWS_ACCESS_KEY_ID"], let secret = environment["AWS_SECRET_ACCESS_KEY"] else { return nil }
            return Credentials(accessKeyID: key, secretAccessKey: secret, sessionToken: environment["AWS_SESSION_TOKEN"])
        }
    }

    public var credentials: Credentials
    public var region: String
    public var service: String

    public init(credentials: Credentials, region: String, service: String) {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// The pieces of one signature, exposed so the known-answer test can check each step.
    public struct Signature: Sendable {
        public var canonicalRequest: String
        public var stringToSign: String
        public var signedHeaders: String
        public var signature: String
        public var authorization: String
    }

    /// Signs a request. `headers` must contain every header to sign (lowercase names are produced
    /// here); `host` is added from the URL if absent. Returns the signature; the caller adds
    /// `Authorization` and `x-amz-date` (and the rest of `headers`) to the request.
    public func sign(
        method: String, url: URL, headers: [String: String], payloadSHA256: String, date: Date
    ) -> Signature {
        let amzDate = Self.amzDate(date)
        let day = String(amzDate.prefix(8))
        var canonicalHeaders: [String: String] = [:]
        for (name, value) in headers {
            canonicalHeaders[name.lowercased()] = value.trimmingCharacters(in: .whitespaces)
                .split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        }
        if canonicalHeaders["host"] == nil { canonicalHeaders["host"] = Self.hostHeader(url) }
        canonicalHeaders["x-amz-date"] = amzDate
        if let token = credentials.sessionToken { canonicalHeaders["x-amz-security-token"] = token }
        let names = canonicalHeaders.keys.sorted()
        let signedHeaders = names.joined(separator: ";")
        let headerBlock = names.map { "\($0):\(canonicalHeaders[$0]!)\n" }.joined()
        let canonicalRequest = [
            method, Self.canonicalPath(url, service: service), Self.canonicalQuery(url), headerBlock, signedHeaders,
            payloadSHA256,
        ].joined(separator: "\n")
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = ["AWS4-HMAC-SHA256", amzDate, scope, Self.sha256Hex(Data(canonicalRequest.utf8))]
            .joined(separator: "\n")
        var key = SymmetricKey(data: Data("AWS4\(credentials.secretAccessKey)".utf8))
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Data(part.utf8), using: key)))
        }
        let signature = Data(HMAC<SHA256>.authenticationCode(for: Data(stringToSign.utf8), using: key)).hex
        let authorization = "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"
        return Signature(
            canonicalRequest: canonicalRequest, stringToSign: stringToSign, signedHeaders: signedHeaders,
            signature: signature, authorization: authorization)
    }

    /// Signs a request (its body as it is) and adds the signature's headers to it.
    public func sign(_ request: inout HTTPRequest, date: Date = Date(), signPayloadHeader: Bool = false) {
        let payloadHash = Self.sha256Hex(request.body)
        var headers: [String: String] = [:]
        for (name, value) in request.headers { headers[name.lowercased()] = value }
        if signPayloadHeader { headers["x-amz-content-sha256"] = payloadHash }
        let signature = sign(
            method: request.method, url: request.url, headers: headers, payloadSHA256: payloadHash, date: date)
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        request.setValue(Self.amzDate(date), forHTTPHeaderField: "x-amz-date")
        if let token = credentials.sessionToken { request.setValue(token, forHTTPHeaderField: "x-amz-security-token") }
        request.setValue(signature.authorization, forHTTPHeaderField: "Authorization")
    }

    public static func amzDate(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        return formatter.string(from: date)
    }

    public static func parseAmzDate(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        return formatter.date(from: text)
    }

    static func hostHeader(_ url: URL) -> String {
        let host = url.host ?? ""
        guard let port = url.port else { return host }
        if (url.scheme == "http" && port == 80) || (url.scheme == "https" && port == 443) { return host }
        return "\(host):\(port)"
    }

    /// Each path segment URI-encoded; S3 paths are encoded once, other services twice, as the spec says.
    static func canonicalPath(_ url: URL, service: String) -> String {
        let path = URLComponents(url: url, resolvingAgainstBaseURL: false)?.percentEncodedPath ?? "/"
        guard !path.isEmpty else { return "/" }
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).map { segment -> String in
            let decoded = String(segment).removingPercentEncoding ?? String(segment)
            let once = uriEncode(decoded)
            return service == "s3" ? once : uriEncode(once)
        }
        return segments.joined(separator: "/")
    }

    static func canonicalQuery(_ url: URL) -> String {
        guard let items = URLComponents(url: url, resolvingAgainstBaseURL: false)?.queryItems, !items.isEmpty else { return "" }
        let pairs: [(String, String)] = items.map { item in (uriEncode(item.name), uriEncode(item.value ?? "")) }
        let sorted = pairs.sorted { left, right in left.0 == right.0 ? left.1 < right.1 : left.0 < right.0 }
        return sorted.map { pair in pair.0 + "=" + pair.1 }.joined(separator: "&")
    }

    /// RFC 3986 encoding of everything but unreserved characters, as SigV4 requires.
    public static func uriEncode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            if unreserved.contains(byte) {
                out.unicodeScalars.append(UnicodeScalar(byte))
            } else {
                out.append("%")
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0x0f)])
            }
        }
        return out
    }

    private static let unreserved: Set<UInt8> = Set(
        Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~".utf8))
    private static let hexDigits = Array("0123456789ABCDEF")

    public static func sha256Hex(_ data: Data) -> String { SHA256.hash(data: data).hex }
}

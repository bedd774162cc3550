import Foundation

/// Every failure a driver reports: which driver, which verb, and why.
///
/// A struct with an open set of codes (not a public enum) so new causes can be added without breaking
/// callers that switch over them, as swift-certificates does with `CertificateError`.
public struct ProviderError: Error, Sendable, CustomStringConvertible, Equatable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        init(_ name: String) { self.name = name }
        public var description: String { name }

        /// The backend cannot perform this verb at all (declared in `DriverCapabilities`).
        public static let unsupported = Code("unsupported")
        /// The instance or image does not exist (or no longer exists).
        public static let notFound = Code("not-found")
        /// Credentials were refused or the request signature did not match.
        public static let authentication = Code("authentication")
        /// Authenticated but not allowed.
        public static let forbidden = Code("forbidden")
        /// The backend could not be reached (connection refused, daemon not running).
        public static let unavailable = Code("unavailable")
        /// The verb is not valid in the resource's current state.
        public static let invalidState = Code("invalid-state")
        /// The request was malformed or named something invalid.
        public static let invalidInput = Code("invalid-input")
        /// A quota or capacity limit was hit.
        public static let capacityExceeded = Code("capacity-exceeded")
        /// An image's content did not match its expected SHA-256.
        public static let checksumMismatch = Code("checksum-mismatch")
        /// The image format is not one this driver (or qemu-img) handles.
        public static let unsupportedFormat = Code("unsupported-format")
        /// An image from elsewhere was refused before anything was stored: it names another file or a
        /// protocol, is not in its declared format, or is larger than allowed (`ImageRefusal`).
        public static let refusedImage = Code("refused-image")
        /// A wait for a state did not finish in time.
        public static let timeout = Code("timeout")
        /// The backend kept throttling after all retries.
        public static let throttled = Code("throttled")
        /// The task was cancelled; partial work was undone.
        public static let cancelled = Code("cancelled")
        /// A local file operation failed.
        public static let io = Code("io")
        /// An injected fault (SimCloud reliability testing).
        public static let injectedFault = Code("injected-fault")
        /// Any other error reported by the backend; `backendCode` carries its own code.
        public static let backend = Code("backend")
    }

    public var driver: String
    public var verb: Verb
    public var code: Code
    /// The backend's own error code when it gave one (`InvalidInstanceID.NotFound`, `VIR_ERR_NO_DOMAIN`).
    public var backendCode: String?
    public var message: String

    public init(driver: String, verb: Verb, code: Code, backendCode: String? = nil, message: String) {
        self.driver = driver
        self.verb = verb
        self.code = code
        self.backendCode = backendCode
        self.message = message
    }

    public var description: String {
        var text = "\(driver): \(verb) failed (\(code)"
        if let backendCode { text += ", \(backendCode)" }
        return text + "): \(message)"
    }

    public static func unsupported(driver: String, verb: Verb, detail: String? = nil) -> ProviderError {
        ProviderError(
            driver: driver, verb: verb, code: .unsupported,
            message: detail ?? "the \(driver) driver cannot \(verb)")
    }

    public static func refusedImage(driver: String, verb: Verb, _ file: URL, _ refusal: ImageRefusal) -> ProviderError {
        ProviderError(
            driver: driver, verb: verb, code: .refusedImage, backendCode: refusal.reason.rawValue,
            message: "\(file.lastPathComponent) was refused (\(refusal.detail)); nothing was imported")
    }

    public static func notFound(driver: String, verb: Verb, _ what: String) -> ProviderError {
        ProviderError(driver: driver, verb: verb, code: .notFound, message: "\(what) does not exist")
    }

    public static func invalidState(driver: String, verb: Verb, _ message: String) -> ProviderError {
        ProviderError(driver: driver, verb: verb, code: .invalidState, message: message)
    }

    /// Wraps any error as coming from `driver`/`verb`, keeping a `ProviderError` as it is and turning
    /// task cancellation into `.cancelled`.
    public static func wrap(_ error: any Error, driver: String, verb: Verb) -> ProviderError {
        if let error = error as? ProviderError { return error }
        if error is CancellationError {
            return ProviderError(driver: driver, verb: verb, code: .cancelled, message: "cancelled")
        }
        return ProviderError(driver: driver, verb: verb, code: .io, message: String(describing: error))
    }
}

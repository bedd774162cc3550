import Foundation

/// One step of a long operation (boot, export, import, upload).
public struct ProgressEvent: Sendable, Hashable, CustomStringConvertible {
    public var driver: String
    public var verb: Verb
    /// Units done so far (bytes for transfers, steps otherwise).
    public var completed: Int64
    /// Total units, when known.
    public var total: Int64?
    public var message: String

    public init(driver: String, verb: Verb, completed: Int64, total: Int64?, message: String) {
        self.driver = driver
        self.verb = verb
        self.completed = completed
        self.total = total
        self.message = message
    }

    public var fraction: Double? {
        guard let total, total > 0 else { return nil }
        return Double(completed) / Double(total)
    }

    public var description: String {
        if let fraction { return "\(driver) \(verb): \(Int(fraction * 100))% \(message)" }
        return "\(driver) \(verb): \(message)"
    }
}

/// Called from any task; must be cheap (it is called per chunk during transfers).
public typealias ProgressHandler = @Sendable (ProgressEvent) -> Void

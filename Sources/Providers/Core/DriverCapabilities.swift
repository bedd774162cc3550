/// What a driver can do, declared up front (Libcloud's `features`), so a caller can choose a backend
/// before trying, and so the conformance suite can check that every undeclared verb fails with
/// `.unsupported` rather than doing nothing.
public struct DriverCapabilities: Sendable, Hashable {
    public var verbs: Set<Verb>
    /// Formats `exportImage` can write.
    public var exportFormats: Set<ImageFormat>
    /// Formats `importImage` can read.
    public var importFormats: Set<ImageFormat>

    public init(verbs: Set<Verb>, exportFormats: Set<ImageFormat> = [], importFormats: Set<ImageFormat> = []) {
        self.verbs = verbs
        self.exportFormats = exportFormats
        self.importFormats = importFormats
    }

    public func supports(_ verb: Verb) -> Bool { verbs.contains(verb) }
}

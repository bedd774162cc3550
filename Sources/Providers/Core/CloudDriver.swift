import Foundation

/// A cloud backend: SimCloud, libvirt, an EC2-compatible cloud.
///
/// Every method throws `ProviderError` naming this driver, the verb and the cause. Verbs that change
/// state return as soon as the backend accepted them and report the instance as the backend now sees
/// it (often a transitional state such as `.pending`); use `waitFor(instance:state:timeout:)` to wait.
/// Long operations take a `ProgressHandler` and honour task cancellation, undoing partial work.
public protocol CloudDriver: Sendable {
    /// The driver kind (`simcloud`, `libvirt`, `ec2`, `openstack`), used in errors and logs.
    var driverName: String { get }
    /// What this driver kind can do, known without connecting; `capabilities` is computed from it.
    static var declaredCapabilities: CapabilityDeclaration { get }
    /// What this instance can do: the declaration with the conditions its configuration turns on.
    var capabilities: DriverCapabilities { get }

    func listSizes() async throws -> [InstanceSize]
    func listInstances() async throws -> [Instance]
    func describe(instance id: String) async throws -> Instance
    func capacity() async throws -> Capacity

    func create(_ request: CreateInstanceRequest, progress: ProgressHandler?) async throws -> Instance
    /// start, shutdown, destroy, reboot, suspend, resume, save, restore.
    func perform(_ verb: Verb, instance id: String) async throws -> Instance
    func terminate(instance id: String) async throws
    /// Captures the instance's disk as a new image.
    func snapshot(instance id: String, name: String, progress: ProgressHandler?) async throws -> Image

    func listImages() async throws -> [Image]
    /// Registers an image that already exists in the backend's storage (EC2 RegisterImage with a
    /// snapshot or S3 location; libvirt a volume path), described by `options`.
    func registerImage(name: String, options: [String: String]) async throws -> Image
    func deregisterImage(id: String) async throws
    /// Writes the image to `destination` in `format`. A partial file is removed on failure or cancellation.
    func exportImage(
        id: String, to destination: URL, format: ImageFormat, progress: ProgressHandler?
    ) async throws -> ImageFile
    /// Imports a local image file from elsewhere. If `expectedSHA256` is given, the file is checked
    /// against it first and nothing is created on mismatch. The file must pass `admission`
    /// (`ImageInspection`: it names no other file, is in its declared format, is no larger than
    /// allowed) before anything is converted or stored; a refusal is `ProviderError.Code.refusedImage`.
    func importImage(
        from source: URL, name: String, format: ImageFormat, expectedSHA256: String?, admission: ImageAdmission,
        progress: ProgressHandler?
    ) async throws -> Image
    /// Imports a local image file the caller gives up (a received migration image): the driver may
    /// take the file itself instead of copying it. On success `source` is gone; on failure it is left
    /// as it was. `digestVerified`: the caller computed `expectedSHA256` from this very file (as it
    /// received it), so the driver may record it without hashing the file again. The default
    /// imports a copy (checked) and then removes `source`.
    func adoptImage(
        from source: URL, name: String, format: ImageFormat, expectedSHA256: String?, digestVerified: Bool,
        admission: ImageAdmission, progress: ProgressHandler?
    ) async throws -> Image
}

/// The verbs `perform(_:instance:)` accepts.
public let instanceActionVerbs: Set<Verb> = [.start, .shutdown, .destroy, .reboot, .suspend, .resume, .save, .restore]

extension CloudDriver {
    public func adoptImage(
        from source: URL, name: String, format: ImageFormat, expectedSHA256: String?, digestVerified: Bool,
        admission: ImageAdmission, progress: ProgressHandler?
    ) async throws -> Image {
        let image = try await importImage(
            from: source, name: name, format: format, expectedSHA256: expectedSHA256, admission: admission, progress: progress)
        try? FileManager.default.removeItem(at: source)
        return image
    }

    /// Imports with every check and no size limit (`ImageAdmission.strict`).
    public func importImage(
        from source: URL, name: String, format: ImageFormat, expectedSHA256: String?, progress: ProgressHandler?
    ) async throws -> Image {
        try await importImage(
            from: source, name: name, format: format, expectedSHA256: expectedSHA256, admission: .strict, progress: progress)
    }

    /// Adopts with every check and no size limit (`ImageAdmission.strict`).
    public func adoptImage(
        from source: URL, name: String, format: ImageFormat, expectedSHA256: String?, digestVerified: Bool,
        progress: ProgressHandler?
    ) async throws -> Image {
        try await adoptImage(
            from: source, name: name, format: format, expectedSHA256: expectedSHA256, digestVerified: digestVerified,
            admission: .strict, progress: progress)
    }

    /// The error every undeclared verb throws.
    public func unsupported(_ verb: Verb, _ detail: String? = nil) -> ProviderError {
        ProviderError.unsupported(driver: driverName, verb: verb, detail: detail)
    }

    /// Convenience wrappers that read like the lifecycle table.
    public func start(_ id: String) async throws -> Instance { try await perform(.start, instance: id) }
    public func shutdown(_ id: String) async throws -> Instance { try await perform(.shutdown, instance: id) }
    public func destroy(_ id: String) async throws -> Instance { try await perform(.destroy, instance: id) }
    public func reboot(_ id: String) async throws -> Instance { try await perform(.reboot, instance: id) }
    public func suspend(_ id: String) async throws -> Instance { try await perform(.suspend, instance: id) }
    public func resume(_ id: String) async throws -> Instance { try await perform(.resume, instance: id) }
    public func save(_ id: String) async throws -> Instance { try await perform(.save, instance: id) }
    public func restore(_ id: String) async throws -> Instance { try await perform(.restore, instance: id) }

    /// Polls until the instance reaches one of `states`, failing with `.timeout` after `timeout`, with
    /// `.invalidState` if it settles in `.error` (naming the backend's fault, `extra["fault"]`, if it
    /// reported one), and with `.notFound` if it disappears (unless
    /// `.terminated` was asked for, in which case disappearing counts as reaching it).
    @discardableResult
    public func waitFor(
        instance id: String, state states: Set<InstanceState>, timeout: Duration = .seconds(60),
        pollInterval: Duration = .milliseconds(100)
    ) async throws -> Instance {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        var last: Instance?
        while true {
            do {
                let instance = try await describe(instance: id)
                last = instance
                if states.contains(instance.state) { return instance }
                if instance.state == .error && !states.contains(.error) {
                    throw ProviderError.invalidState(
                        driver: driverName, verb: .describe,
                        "instance \(id) went to error (\(instance.rawState)) while waiting for \(states.map(\.rawValue).sorted())"
                            + (instance.extra["fault"].map { ": \($0)" } ?? ""))
                }
            } catch let error as ProviderError where error.code == .notFound && states.contains(.terminated) {
                return Instance(id: id, name: last?.name ?? id, state: .terminated, rawState: "gone")
            }
            if clock.now >= deadline {
                throw ProviderError(
                    driver: driverName, verb: .describe, code: .timeout,
                    message: "instance \(id) still \(last.map { "\($0.state) (\($0.rawState))" } ?? "unknown") after \(timeout); wanted \(states.map(\.rawValue).sorted())")
            }
            do { try await Task.sleep(for: pollInterval) } catch {
                throw ProviderError.wrap(error, driver: driverName, verb: .describe)
            }
        }
    }

    public func waitFor(
        instance id: String, state: InstanceState, timeout: Duration = .seconds(60),
        pollInterval: Duration = .milliseconds(100)
    ) async throws -> Instance {
        try await waitFor(instance: id, state: [state], timeout: timeout, pollInterval: pollInterval)
    }
}

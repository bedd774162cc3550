import Foundation

/// A driver option (a key of its `[provider]` settings) that turns more verbs on: libvirt's image
/// verbs need `image-dir`, EC2's image import needs `import-export = true`.
public struct CapabilityCondition: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The option's name as in the configuration file.
    public var option: String
    /// The value it must have; nil when setting it to anything is enough (a directory).
    public var value: String?

    public init(option: String, value: String? = nil) {
        self.option = option
        self.value = value
    }

    public var description: String { value.map { "\(option) = \($0)" } ?? option }

    /// Whether these settings (`DriverSettings.options`) turn the condition on.
    public func holds(in options: [String: String]) -> Bool {
        guard let set = options[option] else { return false }
        return value.map { $0 == set } ?? true
    }
}

/// What a driver kind can do, known without connecting: the one declaration a driver's
/// `capabilities` is computed from, and the source of the lifecycle table
/// (`intercloud provider lifecycle`, README's "Lifecycle table").
public struct CapabilityDeclaration: Sendable, Hashable {
    /// Capabilities that one option adds to the unconditional ones.
    public struct Conditional: Sendable, Hashable {
        public var condition: CapabilityCondition
        public var capabilities: DriverCapabilities

        public init(_ condition: CapabilityCondition, _ capabilities: DriverCapabilities) {
            self.condition = condition
            self.capabilities = capabilities
        }
    }

    /// The driver kind (`DriverRegistry.kinds` key, `CloudDriver.driverName`).
    public var driver: String
    /// What every instance of the driver can do, whatever its options.
    public var unconditional: DriverCapabilities
    public var conditional: [Conditional]
    /// The image files are converted with `qemu-img` on this host: without it, only `raw` is
    /// available whatever the declaration says (`LocalImageFiles.formats`).
    public var formatsNeedQemuImg: Bool
    /// For a driver type that conforms to `LiveMigrationDriver`: the option both sides need (the
    /// source's guest needs a disk file, the destination a directory to prepare one in); nil when
    /// none is needed. Which drivers migrate live at all is their conformance, not declared here.
    public var liveMigrationCondition: CapabilityCondition?
    /// Facts a reader of the table needs that a yes/no cannot say.
    public var notes: [String]

    public init(
        driver: String, unconditional: DriverCapabilities, conditional: [Conditional] = [], formatsNeedQemuImg: Bool = false,
        liveMigrationCondition: CapabilityCondition? = nil, notes: [String] = []
    ) {
        self.driver = driver
        self.unconditional = unconditional
        self.conditional = conditional
        self.formatsNeedQemuImg = formatsNeedQemuImg
        self.liveMigrationCondition = liveMigrationCondition
        self.notes = notes
    }

    /// Every option that turns something on, in declaration order.
    public var conditions: [CapabilityCondition] {
        var conditions = conditional.map(\.condition)
        if let liveMigrationCondition, !conditions.contains(liveMigrationCondition) { conditions.append(liveMigrationCondition) }
        return conditions
    }

    /// What the driver declares with these conditions on, on any host (the table's view).
    public func declared(enabling conditions: Set<CapabilityCondition>) -> DriverCapabilities {
        conditional.filter { conditions.contains($0.condition) }.reduce(unconditional) { $0.union($1.capabilities) }
    }

    /// What an instance with these conditions on can do on this host: its `capabilities`.
    public func capabilities(enabling conditions: Set<CapabilityCondition>) -> DriverCapabilities {
        var capabilities = declared(enabling: conditions)
        if formatsNeedQemuImg {
            capabilities.exportFormats.formIntersection(LocalImageFiles.formats)
            capabilities.importFormats.formIntersection(LocalImageFiles.formats)
        }
        return capabilities
    }

    /// What a driver made from these settings (`DriverRegistry.make`) can do on this host.
    public func capabilities(options: [String: String]) -> DriverCapabilities {
        capabilities(enabling: Set(conditions.filter { $0.holds(in: options) }))
    }
}

extension DriverCapabilities {
    public func union(_ other: DriverCapabilities) -> DriverCapabilities {
        DriverCapabilities(
            verbs: verbs.union(other.verbs), exportFormats: exportFormats.union(other.exportFormats),
            importFormats: importFormats.union(other.importFormats))
    }
}

import Foundation

/// A row of the lifecycle table: an operation a console offers on a cloud, and the driver verbs it
/// takes. Adding a case adds a row to the table and, through the conformance suite's exhaustive
/// switch, a check against every backend.
public enum LifecycleOperation: String, CaseIterable, Sendable, Codable {
    case create
    case poll
    case shutdown
    case cancel
    case start
    case reboot
    case suspend
    case resume
    case save
    case restore
    case snapshot
    case imageExport = "image-export"
    case imageImport = "image-import"
    case coldMigrationSource = "migrate-cold-source"
    case coldMigrationDestination = "migrate-cold-destination"
    case liveMigration = "migrate-live"
    case terminate

    /// Which image formats the cell lists.
    public enum FormatDirection: Sendable {
        case export, `import`
    }

    /// The row's name in the table.
    public var title: String {
        switch self {
        case .poll: "poll (describe, wait)"
        case .shutdown: "shutdown (graceful)"
        case .cancel: "cancel (hard stop)"
        case .imageExport: "image export"
        case .imageImport: "image import"
        case .coldMigrationSource: "migrate cold: source"
        case .coldMigrationDestination: "migrate cold: destination"
        case .liveMigration: "migrate live"
        default: rawValue
        }
    }

    /// Every verb the operation needs. Empty for live migration, which is a protocol
    /// (`LiveMigrationDriver`), not a verb.
    public var verbs: [Verb] {
        switch self {
        case .create: [.create]
        case .poll: [.describe, .listInstances]
        case .shutdown: [.shutdown]
        case .cancel: [.destroy]
        case .start: [.start]
        case .reboot: [.reboot]
        case .suspend: [.suspend]
        case .resume: [.resume]
        case .save: [.save]
        case .restore: [.restore]
        case .snapshot: [.snapshot]
        case .imageExport: [.exportImage]
        case .imageImport: [.importImage]
        // What the migration runner asks of each side before it starts (`MigrationRunner`): the
        // source snapshots the stopped instance and exports that image; the destination imports it.
        case .coldMigrationSource: [.snapshot, .exportImage]
        case .coldMigrationDestination: [.importImage]
        case .liveMigration: []
        case .terminate: [.terminate]
        }
    }

    public var formats: FormatDirection? {
        switch self {
        case .imageExport, .coldMigrationSource: .export
        case .imageImport, .coldMigrationDestination: .import
        default: nil
        }
    }

    /// The formats of `capabilities` this row lists, in `ImageFormat` order.
    public func formats(of capabilities: DriverCapabilities) -> [ImageFormat] {
        let set: Set<ImageFormat> = switch formats {
        case .export: capabilities.exportFormats
        case .import: capabilities.importFormats
        case nil: []
        }
        return ImageFormat.allCases.filter(set.contains)
    }

    /// Whether a driver with these capabilities can do it. A row with formats needs at least one.
    public func isSupported(by capabilities: DriverCapabilities, liveMigration: Bool) -> Bool {
        if self == .liveMigration { return liveMigration }
        return verbs.allSatisfy(capabilities.supports) && (formats == nil || !formats(of: capabilities).isEmpty)
    }
}

/// One cell: can this driver kind do this operation, under which option, in which formats.
public struct LifecycleCell: Sendable, Hashable, Codable {
    public enum Support: String, Sendable, Codable {
        case yes, no
        /// Only with `condition` set.
        case conditional
    }

    public var support: Support
    public var condition: CapabilityCondition?
    /// Formats, for the image and cold migration rows.
    public var formats: [ImageFormat]

    public var text: String {
        let head = switch support {
        case .yes: "yes"
        case .no: "no"
        case .conditional: "with \(condition.map { "`\($0)`" } ?? "an option")"
        }
        return formats.isEmpty || support == .no ? head : "\(head): \(formats.map(\.rawValue).joined(separator: ", "))"
    }
}

/// The lifecycle table: one column per driver kind of `DriverRegistry.drivers`, one row per
/// `LifecycleOperation`, computed from the drivers' static declarations without connecting.
public struct LifecycleTable: Sendable {
    /// A driver kind's column.
    public struct Column: Sendable {
        public var declaration: CapabilityDeclaration
        /// The driver type conforms to `LiveMigrationDriver`.
        public var liveMigration: Bool

        public init(declaration: CapabilityDeclaration, liveMigration: Bool) {
            self.declaration = declaration
            self.liveMigration = liveMigration
        }

        public init(_ driverType: any CloudDriver.Type) {
            self.init(declaration: driverType.declaredCapabilities, liveMigration: driverType is any LiveMigrationDriver.Type)
        }

        /// Whether an instance with these conditions on can migrate live.
        public func migratesLive(enabling conditions: Set<CapabilityCondition>) -> Bool {
            liveMigration && declaration.liveMigrationCondition.map(conditions.contains) ?? true
        }

        public func cell(_ operation: LifecycleOperation) -> LifecycleCell {
            let always = declaration.declared(enabling: [])
            if operation.isSupported(by: always, liveMigration: migratesLive(enabling: [])) {
                return LifecycleCell(support: .yes, formats: operation.formats(of: always))
            }
            for condition in declaration.conditions {
                let enabled = declaration.declared(enabling: [condition])
                if operation.isSupported(by: enabled, liveMigration: migratesLive(enabling: [condition])) {
                    return LifecycleCell(support: .conditional, condition: condition, formats: operation.formats(of: enabled))
                }
            }
            return LifecycleCell(support: .no, formats: [])
        }
    }

    public var columns: [Column]

    public init(columns: [Column]) { self.columns = columns }

    /// Every driver kind the registry builds.
    public static var drivers: LifecycleTable { LifecycleTable(columns: DriverRegistry.drivers.map(Column.init)) }

    /// How `intercloud provider lifecycle` prints it.
    public enum Format: String, CaseIterable, Sendable {
        /// README's "Lifecycle table" is this text.
        case markdown
        case json
        /// Aligned columns for a terminal.
        case text
    }

    public func render(_ format: Format) -> String {
        switch format {
        case .markdown: markdown()
        case .json: json()
        case .text: text()
        }
    }

    private func verbList(_ operation: LifecycleOperation) -> String {
        operation == .liveMigration ? "LiveMigrationDriver" : operation.verbs.map(\.rawValue).joined(separator: " + ")
    }

    private var notes: [String] {
        var notes: [String] = []
        let converting = columns.filter(\.declaration.formatsNeedQemuImg).map(\.declaration.driver)
        if !converting.isEmpty {
            let names = converting.count > 1
                ? converting.dropLast().joined(separator: ", ") + " and " + converting.last! : converting.joined()
            notes.append("\(names) convert image files with `qemu-img`; without it on the host, they read and write raw only.")
        }
        for column in columns {
            notes += column.declaration.notes.map { "\(column.declaration.driver): \($0)" }
        }
        return notes
    }

    private func markdown() -> String {
        func cell(_ text: String) -> String { text.replacingOccurrences(of: "|", with: "\\|") }
        var lines = [
            "| operation | driver verbs | " + columns.map { "`\($0.declaration.driver)`" }.joined(separator: " | ") + " |",
            "|---|---|" + String(repeating: "---|", count: columns.count),
        ]
        for operation in LifecycleOperation.allCases {
            let cells = columns.map { cell($0.cell(operation).text) }
            let verbs = operation == .liveMigration ? ["LiveMigrationDriver"] : operation.verbs.map(\.rawValue)
            lines.append("| \(operation.title) | " + verbs.map { "`\($0)`" }.joined(separator: " + ") + " | " + cells.joined(separator: " | ") + " |")
        }
        if !notes.isEmpty {
            lines.append("")
            lines += notes.map { "- \($0)" }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private func text() -> String {
        let header = ["OPERATION", "VERBS"] + columns.map { $0.declaration.driver.uppercased() }
        let rows = LifecycleOperation.allCases.map { operation in
            [operation.title, verbList(operation)] + columns.map { $0.cell(operation).text.replacingOccurrences(of: "`", with: "") }
        }
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        var lines = all.map { row in
            row.enumerated().map { index, text in
                index == row.count - 1 ? text : text.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
        if !notes.isEmpty {
            lines.append("")
            lines += notes.map { "* " + $0.replacingOccurrences(of: "`", with: "") }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private func json() -> String {
        struct Driver: Encodable {
            var driver: String
            var conditions: [String]
            var liveMigration: Bool
            var notes: [String]
        }
        struct Row: Encodable {
            var operation: String
            var title: String
            var verbs: [String]
            var cells: [String: LifecycleCell]
        }
        struct Document: Encodable {
            var drivers: [Driver]
            var operations: [Row]
        }
        let document = Document(
            drivers: columns.map {
                Driver(
                    driver: $0.declaration.driver, conditions: $0.declaration.conditions.map(\.description),
                    liveMigration: $0.liveMigration, notes: $0.declaration.notes)
            },
            operations: LifecycleOperation.allCases.map { operation in
                Row(
                    operation: operation.rawValue, title: operation.title, verbs: operation.verbs.map(\.rawValue),
                    cells: Dictionary(uniqueKeysWithValues: columns.map { ($0.declaration.driver, $0.cell(operation)) }))
            })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        // A fixed set of plain strings and booleans: encoding cannot fail.
        return String(decoding: (try? encoder.encode(document)) ?? Data(), as: UTF8.self) + "\n"
    }
}

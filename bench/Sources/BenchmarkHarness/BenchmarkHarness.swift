import Foundation

// What every benchmark of `intercloud-bench` shares, in one place so that two benchmarks never
// disagree on what "p90" or "× baseline" means: timing a body, the percentile rule, ratios to a
// baseline measured in the same run, and the report, printed as Markdown (for bench/RESULTS.md) or
// as JSON (for scripts). Nothing here knows about brokers or XMPP, so its tests build in seconds.

// MARK: Samples and percentiles

/// Durations measured for one operation, in the order they were taken.
public struct Samples: Sendable {
    /// As measured (scripts that merge rounds want every value, in order).
    public let values: [Duration]
    /// Ascending, for percentiles.
    public let sorted: [Duration]

    public init(_ values: [Duration]) {
        self.values = values
        self.sorted = values.sorted()
    }

    public var count: Int { values.count }

    /// The value at `percent` % of the ascending samples: index `count × percent / 100`, clamped to
    /// the last one, so the median of an even count is the upper middle value (no interpolation: a
    /// reported figure is always one that was measured). `.zero` for no samples.
    public func percentile(_ percent: Int) -> Duration {
        guard !sorted.isEmpty else { return .zero }
        return sorted[min(sorted.count - 1, sorted.count * percent / 100)]
    }

    public var median: Duration { percentile(50) }
    public var p50: Duration { percentile(50) }
    public var p90: Duration { percentile(90) }
    public var p99: Duration { percentile(99) }

    /// How many times the baseline's median this median is (the "× baseline" columns).
    public func ratio(to baseline: Samples) -> Double { median.ratio(to: baseline.median) }

    /// One line `KEY v1 v2 …` with every sample in `unit`, as measured: what scripts merging runs
    /// of several implementations read (bench/xmpp/run.sh computes its percentiles from these).
    public func line(_ key: String, unit: TimeUnit, decimals: Int) -> String {
        ([key] + values.map { format(unit.value(of: $0), decimals: decimals) }).joined(separator: " ")
    }
}

/// The median of plain numbers (rates, CPU per stanza), by the same rule as `Samples.median`.
public func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
}

extension Duration {
    public var seconds: Double { TimeUnit.seconds.value(of: self) }
    public var milliseconds: Double { TimeUnit.milliseconds.value(of: self) }
    public var microseconds: Double { TimeUnit.microseconds.value(of: self) }

    /// `self / baseline` as a plain number (0 when the baseline is zero).
    public func ratio(to baseline: Duration) -> Double {
        baseline == .zero ? 0 : self.seconds / baseline.seconds
    }
}

/// The unit a column of times is printed in.
public enum TimeUnit: String, Sendable, Codable {
    case seconds = "s"
    case milliseconds = "ms"
    case microseconds = "µs"

    /// Through `components`, which every supported platform has (`Duration.attoseconds` needs macOS 15).
    public func value(of duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        let total = Double(seconds) + Double(attoseconds) / 1e18
        switch self {
        case .seconds: return total
        case .milliseconds: return total * 1e3
        case .microseconds: return total * 1e6
        }
    }
}

/// `value` with `decimals` digits after the point, as every table prints numbers.
public func format(_ value: Double, decimals: Int) -> String { String(format: "%.\(decimals)f", value) }

// MARK: Timing

/// Times one run of `body` on the continuous clock (which keeps counting while the machine sleeps,
/// so a suspended run shows up as an outlier rather than as a fast sample).
public func time<T>(_ body: () throws -> T) rethrows -> (result: T, duration: Duration) {
    let start = ContinuousClock.now
    let result = try body()
    return (result, ContinuousClock.now - start)
}

/// Times one run of `body`; it runs on the caller's executor, so no hop is measured.
public nonisolated(nonsending) func time<T>(_ body: nonisolated(nonsending) () async throws -> T) async rethrows -> (result: T, duration: Duration) {
    let start = ContinuousClock.now
    let result = try await body()
    return (result, ContinuousClock.now - start)
}

/// Runs `body` `warmup` times unmeasured (caches, lazily opened files, JIT-like first paths of the
/// allocator), then `iterations` times measured.
public func measure(iterations: Int, warmup: Int, _ body: () throws -> Void) rethrows -> Samples {
    for _ in 0..<warmup { try body() }
    var samples: [Duration] = []
    samples.reserveCapacity(iterations)
    for _ in 0..<iterations { samples.append(try time(body).duration) }
    return Samples(samples)
}

/// Runs `body` `warmup` times unmeasured, then `iterations` times measured, on the caller's executor.
public nonisolated(nonsending) func measure(
    iterations: Int, warmup: Int, _ body: nonisolated(nonsending) () async throws -> Void
) async rethrows -> Samples {
    for _ in 0..<warmup { try await body() }
    var samples: [Duration] = []
    samples.reserveCapacity(iterations)
    for _ in 0..<iterations { samples.append(try await time(body).duration) }
    return Samples(samples)
}

/// The peak resident set size of this process in KiB (`VmHWM` in /proc/self/status), or nil where
/// there is no /proc.
public func peakResidentKiB() -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
    else { return nil }
    return line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) }
}

// MARK: Reports

/// One cell of a table: text, or a number printed with a fixed number of decimals (and kept as a
/// number in JSON), or nothing (`–`, JSON null) where a column does not apply to a row.
public enum Cell: Sendable, Equatable {
    case text(String)
    case number(Double, decimals: Int)
    case none

    public var markdown: String {
        switch self {
        case .text(let text): return text
        case .number(let value, let decimals): return format(value, decimals: decimals)
        case .none: return "–"
        }
    }
}

extension Cell: ExpressibleByStringLiteral, ExpressibleByStringInterpolation {
    public init(stringLiteral value: String) { self = .text(value) }
}

extension Cell: Encodable {
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .text(let text): try container.encode(text)
        case .number(let value, _): try container.encode(value)
        case .none: try container.encodeNil()
        }
    }
}

/// A Markdown table: a header, a text column first, numbers right-aligned after it.
public struct Table: Sendable, Encodable {
    public var columns: [String]
    public var rows: [[Cell]]

    public init(columns: [String], rows: [[Cell]] = []) {
        self.columns = columns
        self.rows = rows
    }

    public mutating func append(_ row: [Cell]) { rows.append(row) }

    /// The table with the first column left-aligned and the others right-aligned, or with the
    /// alignments given (`---`, `---:`) where a table has several text columns.
    public func markdown(alignments: [String]? = nil) -> String {
        let alignment = alignments ?? ["---"] + Array(repeating: "---:", count: max(0, columns.count - 1))
        let lines = ["| " + columns.joined(separator: " | ") + " |", "|" + alignment.joined(separator: "|") + "|"]
            + rows.map { "| " + $0.map(\.markdown).joined(separator: " | ") + " |" }
        return lines.joined(separator: "\n")
    }

    /// One row per operation: its percentiles in `unit`, then (if `baseline` is given) its median
    /// as a multiple of the baseline's, or `–` for operations that are not comparable with it.
    public static func percentiles(
        _ figures: [Figure], columns: [String], percentiles: [Int], unit: TimeUnit, decimals: Int, baseline: Samples?
    ) -> Table {
        var table = Table(columns: columns)
        for figure in figures {
            var row: [Cell] = [.text(figure.name)]
            row += percentiles.map { .number(unit.value(of: figure.samples.percentile($0)), decimals: decimals) }
            if let baseline { row.append(figure.comparable ? .number(figure.samples.ratio(to: baseline), decimals: 2) : .none) }
            table.append(row)
        }
        return table
    }
}

/// One measured operation of a table.
public struct Figure: Sendable {
    public var name: String
    public var samples: Samples
    /// False when the operation is not comparable with the table's baseline (its ratio is `–`).
    public var comparable: Bool

    public init(_ name: String, _ samples: Samples, comparable: Bool = true) {
        self.name = name
        self.samples = samples
        self.comparable = comparable
    }
}

/// What a benchmark prints: prose and tables, in order. The Markdown form is what bench/RESULTS.md
/// quotes; the JSON form carries the same tables with numbers as numbers.
public struct Report: Sendable {
    public enum Block: Sendable {
        case text(String)
        case table(Table, alignments: [String]?)
    }

    public var benchmark: String
    public var blocks: [Block] = []

    public init(benchmark: String) { self.benchmark = benchmark }

    public mutating func text(_ text: String) { blocks.append(.text(text)) }
    public mutating func table(_ table: Table, alignments: [String]? = nil) { blocks.append(.table(table, alignments: alignments)) }

    /// Blocks separated by a blank line, ending with a newline.
    public var markdown: String {
        blocks.map { block in
            switch block {
            case .text(let text): return text
            case .table(let table, let alignments): return table.markdown(alignments: alignments)
            }
        }.joined(separator: "\n\n") + "\n"
    }

    /// `{"benchmark": …, "text": [paragraphs], "tables": [{"columns": […], "rows": [[…]]}]}`.
    public var json: String {
        struct Form: Encodable {
            var benchmark: String
            var text: [String]
            var tables: [Table]
        }
        var form = Form(benchmark: benchmark, text: [], tables: [])
        for block in blocks {
            switch block {
            case .text(let text): form.text.append(text)
            case .table(let table, _): form.tables.append(table)
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(form)) ?? Data("{}".utf8), as: UTF8.self)
    }

    public func rendered(as format: ReportFormat) -> String {
        switch format {
        case .markdown: return markdown
        case .json: return json + "\n"
        }
    }
}

public enum ReportFormat: String, Sendable, CaseIterable {
    case markdown
    case json
}

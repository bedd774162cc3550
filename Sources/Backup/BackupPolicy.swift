import Foundation
import Providers
import TOMLParsing

/// What a backup policy file says (schema in README.md, "Backups"), read by `BackupPolicyLoader`:
/// which instances, how their disks are captured, where the backups go, how often, how many are kept.
public struct BackupPolicy: Codable, Sendable, Hashable {
    /// How an instance's disk is captured.
    public enum Method: String, Codable, Sendable, Hashable, CaseIterable {
        /// A snapshot of the instance as it runs (crash-consistent); the instance keeps running.
        case snapshot
        /// The instance is stopped, its disk captured, and it is started again if it was running
        /// (consistent, at the cost of downtime while the snapshot is taken; the export and upload
        /// happen after the restart).
        case stopAndExport = "stop-and-export"
    }

    /// Letters, digits and `-`, starting with a letter: part of every backup's key in the store.
    public var name: String
    /// Instance names or ids in this broker's `[provider]`.
    public var instances: [String]
    public var method: Method
    /// The disk format written to the store (`qcow2` or `raw`).
    public var format: ImageFormat
    /// How often `intercloud serve` runs the policy; nil: only when asked (`intercloud backup run`).
    public var every: TimeInterval?
    /// Backups kept per instance (the newest ones).
    public var keepLast: Int
    /// Backups older than this are deleted too, except an instance's newest one.
    public var keepDays: Int?
    /// How long a stop (for `stop-and-export`) or a start may take.
    public var powerTimeout: TimeInterval
    public var target: BackupTarget
    /// The file it was read from, for operators.
    public var source: String

    public init(
        name: String, instances: [String], method: Method = .snapshot, format: ImageFormat = .qcow2, every: TimeInterval? = nil,
        keepLast: Int = BackupPolicyLoader.defaultKeepLast, keepDays: Int? = nil,
        powerTimeout: TimeInterval = BackupPolicyLoader.defaultPowerTimeout, target: BackupTarget, source: String = ""
    ) {
        self.name = name
        self.instances = instances
        self.method = method
        self.format = format
        self.every = every
        self.keepLast = keepLast
        self.keepDays = keepDays
        self.powerTimeout = powerTimeout
        self.target = target
        self.source = source
    }
}

/// Where backups are stored. Credentials are never in the file: S3 keys come from
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` in the environment of the process that runs.
public enum BackupTarget: Codable, Sendable, Hashable, CustomStringConvertible {
    /// A directory on this host (a mounted NFS export, a second disk).
    case directory(path: String)
    /// An S3-compatible bucket, path-style addressing; `prefix` is prepended to every key.
    case s3(endpoint: URL, region: String, bucket: String, prefix: String)

    public var description: String {
        switch self {
        case .directory(let path): "directory \(path)"
        case .s3(let endpoint, _, let bucket, let prefix): "s3://\(bucket)/\(prefix) at \(endpoint.absoluteString)"
        }
    }
}

/// Reads backup policy files (TOML). Errors name `file:line: field`, like template and cluster files.
public enum BackupPolicyLoader {
    public static let version = 1
    public static let maximumFileBytes = 64 * 1024
    public static let maximumInstances = 64
    public static let defaultKeepLast = 7
    public static let maximumKeepLast = 1000
    public static let defaultPowerTimeout: TimeInterval = 300
    /// Shortest schedule: a run of a busy policy may take minutes; more often than this is a typo.
    public static let minimumEvery: TimeInterval = 60
    public static let formats: [ImageFormat] = [.qcow2, .raw]

    public static func load(path: String) throws(TOMLLoadError) -> BackupPolicy {
        let text = try TOMLLoadError.readFile(path, maximumBytes: maximumFileBytes)
        return try parse(text, file: path)
    }

    /// Every policy file among `paths` (files, or folders whose `*.toml` files are read); two
    /// policies with one name are refused.
    public static func load(paths: [String]) throws(TOMLLoadError) -> [BackupPolicy] {
        var files: [String] = []
        for path in paths {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
                files += names.filter { $0.hasSuffix(".toml") }.sorted().map { (path as NSString).appendingPathComponent($0) }
            } else {
                files.append(path)
            }
        }
        var policies: [BackupPolicy] = []
        var diagnostics: [TOMLDiagnostic] = []
        for file in files {
            do {
                let policy = try load(path: file)
                if let other = policies.first(where: { $0.name == policy.name }) {
                    diagnostics.append(TOMLDiagnostic(file: file, line: 1, field: "name", message: "policy '\(policy.name)' is also defined in \(other.source)"))
                } else {
                    policies.append(policy)
                }
            } catch { diagnostics += error.diagnostics }
        }
        guard diagnostics.isEmpty else { throw TOMLLoadError(diagnostics: diagnostics) }
        return policies
    }

    public static func parse(_ text: String, file: String) throws(TOMLLoadError) -> BackupPolicy {
        var parser = Parser(file: file, text: text)
        let policy = parser.parse()
        guard let policy, parser.diagnostics.isEmpty else { throw TOMLLoadError(diagnostics: parser.diagnostics) }
        return policy
    }

    /// A duration such as `90s`, `30m`, `6h`, `1d` (a bare number is seconds).
    public static func duration(_ text: String) -> TimeInterval? {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        guard let last = text.last else { return nil }
        let (digits, unit) = units[last].map { (text.dropLast(), $0) } ?? (Substring(text), 1)
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let value = Double(digits), value > 0, value.isFinite else { return nil }
        return value * unit
    }

    /// Policy names: letters, digits and `-`, starting with a letter (a key component in the store).
    static func isName(_ value: String) -> Bool {
        guard !value.isEmpty, value.utf8.count <= 40, let first = value.unicodeScalars.first, first.isASCII,
              CharacterSet.letters.contains(first) else { return false }
        return value.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "-") }
    }

    /// An S3 key prefix: empty, or printable ASCII without `..` segments, ending in `/`.
    static func isPrefix(_ value: String) -> Bool {
        value.isEmpty || (value.utf8.count <= 200 && value.hasSuffix("/") && !value.hasPrefix("/")
            && value.unicodeScalars.allSatisfy { $0.isASCII && $0.value > 32 && $0.value < 127 && $0 != "\\" }
            && !value.split(separator: "/").contains(".."))
    }
}

extension BackupPolicyLoader {
    struct Parser: TOMLFieldReader {
        let file: String
        let locator: TOMLSourceLocator
        let text: String
        var diagnostics: [TOMLDiagnostic] = []

        init(file: String, text: String) {
            self.file = file
            self.text = text
            self.locator = TOMLSourceLocator(text: text)
        }

        mutating func error(_ field: String, _ message: String) {
            diagnostics.append(TOMLDiagnostic(file: file, line: locator.line(of: field), field: field, message: message))
        }

        mutating func parse() -> BackupPolicy? {
            let root: TOMLTable
            do { root = try SerializedTOML.table(from: text) } catch {
                diagnostics.append(.syntax(error, file: file))
                return nil
            }
            checkKeys(
                root, path: "",
                allowed: ["version", "name", "instances", "method", "format", "every", "keep_last", "keep_days", "power_timeout_seconds", "target"])
            if let v = root["version"] {
                if v.int != BackupPolicyLoader.version { error("version", "expected \(BackupPolicyLoader.version), found \(v.debugDescription)") }
            } else {
                error("version", "missing; write `version = \(BackupPolicyLoader.version)` at the top")
            }
            let name = requiredString(root, "name", "")
            if let name, !BackupPolicyLoader.isName(name) {
                error("name", "'\(name.prefix(40))' must be 1...40 letters, digits and - starting with a letter")
            }
            var instances: [String] = []
            if let list = strings(root, "instances", "") {
                if list.isEmpty || list.count > BackupPolicyLoader.maximumInstances {
                    error("instances", "must name 1...\(BackupPolicyLoader.maximumInstances) instances")
                }
                for item in list where item.isEmpty || item.utf8.count > 255 || item.contains(where: { $0.isNewline }) {
                    error("instances", "'\(item.prefix(40))' is not an instance name or id")
                }
                if Set(list).count != list.count { error("instances", "an instance is named twice") }
                instances = list
            } else if root["instances"] == nil {
                error("instances", "missing; name the instances to back up, e.g. instances = [\"web-1\"]")
            }
            var method = BackupPolicy.Method.snapshot
            if let text = string(root, "method", "") {
                if let value = BackupPolicy.Method(rawValue: text) { method = value } else {
                    error("method", "'\(text.prefix(40))' is not a method (\(BackupPolicy.Method.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
            }
            var format = ImageFormat.qcow2
            if let text = string(root, "format", "") {
                if let value = ImageFormat(rawValue: text), BackupPolicyLoader.formats.contains(value) { format = value } else {
                    error("format", "'\(text.prefix(40))' is not a backup format (\(BackupPolicyLoader.formats.map(\.rawValue).joined(separator: ", ")))")
                }
            }
            var every: TimeInterval?
            if let text = string(root, "every", "") {
                if let value = BackupPolicyLoader.duration(text), value >= BackupPolicyLoader.minimumEvery { every = value } else {
                    error("every", "'\(text.prefix(40))' must be a duration of at least 60s, such as 30m, 6h or 1d")
                }
            }
            let keepLast = integer(root, "keep_last", range: 1...BackupPolicyLoader.maximumKeepLast) ?? BackupPolicyLoader.defaultKeepLast
            let keepDays = integer(root, "keep_days", range: 1...36_500)
            let powerTimeout = integer(root, "power_timeout_seconds", range: 1...86_400).map(TimeInterval.init)
                ?? BackupPolicyLoader.defaultPowerTimeout
            var target: BackupTarget?
            if let table = table(root, "target", "") {
                target = parseTarget(table)
            } else if root["target"] == nil {
                error("target", "missing; add a [target] with kind = \"directory\" or kind = \"s3\"")
            }
            guard diagnostics.isEmpty, let name, let target else { return nil }
            return BackupPolicy(
                name: name, instances: instances, method: method, format: format, every: every, keepLast: keepLast, keepDays: keepDays,
                powerTimeout: powerTimeout, target: target, source: file)
        }

        mutating func integer(_ t: TOMLTable, _ key: String, range: ClosedRange<Int>) -> Int? {
            guard let value = t[key] else { return nil }
            guard let n = value.int, range.contains(n) else {
                error(key, "expected an integer in \(range.lowerBound)...\(range.upperBound), found \(value.debugDescription)")
                return nil
            }
            return n
        }

        mutating func parseTarget(_ t: TOMLTable) -> BackupTarget? {
            switch requiredString(t, "kind", "target") {
            case "directory":
                checkKeys(t, path: "target", allowed: ["kind", "path"])
                guard let path = requiredString(t, "path", "target") else { return nil }
                guard path.hasPrefix("/") else {
                    error("target.path", "must be an absolute path")
                    return nil
                }
                return .directory(path: path)
            case "s3":
                checkKeys(t, path: "target", allowed: ["kind", "endpoint", "region", "bucket", "prefix"])
                let endpointText = requiredString(t, "endpoint", "target")
                let endpoint = endpointText.flatMap { URL(string: $0) }
                if let endpointText, endpoint?.host == nil || !["http", "https"].contains(endpoint?.scheme ?? "") {
                    error("target.endpoint", "'\(endpointText.prefix(80))' is not an http(s) URL")
                }
                let region = string(t, "region", "target") ?? "us-east-1"
                let bucket = requiredString(t, "bucket", "target")
                // S3's bucket naming rules: 3-63 lowercase letters, digits, dots and hyphens.
                if let bucket, !(3...63).contains(bucket.count)
                    || !bucket.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-" || $0 == ".") }) {
                    error("target.bucket", "'\(bucket.prefix(63))' is not a bucket name (3-63 lowercase letters, digits, . and -)")
                }
                let prefix = string(t, "prefix", "target") ?? ""
                if !BackupPolicyLoader.isPrefix(prefix) {
                    error("target.prefix", "'\(prefix.prefix(80))' must be empty or end in / (printable ASCII, no .. segments)")
                }
                guard let endpoint, let bucket, endpoint.host != nil else { return nil }
                return .s3(endpoint: endpoint, region: region, bucket: bucket, prefix: prefix)
            case let other?:
                error("target.kind", "'\(other.prefix(40))' is not a target kind (directory, s3)")
                return nil
            case nil:
                return nil
            }
        }
    }
}

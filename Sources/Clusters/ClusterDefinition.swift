import Federation
import Foundation
import TOMLParsing

/// A named collection of server templates launched, stopped and torn down together: what a
/// cluster file says (schema in README.md, "Clusters"), read by `ClusterLoader`.
public struct ClusterDefinition: Codable, Sendable, Hashable {
    /// Letters, digits and `-`, starting with a letter: operators name the cluster by it, and it is
    /// part of every instance name.
    public var name: String
    public var description: String?
    /// In file order.
    public var members: [ClusterMember]
    /// The file it was read from, for operators.
    public var source: String

    public init(name: String, description: String? = nil, members: [ClusterMember], source: String = "") {
        self.name = name
        self.description = description
        self.members = members
        self.source = source
    }

    /// Members in launch order: each after every member its `after` names, otherwise in file order
    /// (a stable topological sort). The loader refuses unknown names and cycles, so every member
    /// is listed exactly once.
    public var launchOrder: [ClusterMember] {
        var placed = Set<String>()
        var order: [ClusterMember] = []
        var remaining = members
        while !remaining.isEmpty {
            guard let next = remaining.firstIndex(where: { $0.after.allSatisfy(placed.contains) }) else {
                // A cycle (only a definition the loader did not check): keep file order.
                return order + remaining
            }
            let member = remaining.remove(at: next)
            placed.insert(member.name)
            order.append(member)
        }
        return order
    }
}

/// One member: `count` servers from one template, here or at a peer broker.
public struct ClusterMember: Codable, Sendable, Hashable {
    /// Unique in the cluster; letters, digits and `-`, starting with a letter.
    public var name: String
    /// A server template name: one of this broker's templates, or the peer's for a peer member.
    public var template: String
    /// Template parameter values, checked against the template like a peer's selection.
    public var parameters: [String: String]
    /// How many servers of this template (1...`ClusterLoader.maximumCount`).
    public var count: Int
    /// Members that must be running before this one is created.
    public var after: [String]
    /// A broker's bare JID: the member is selected there through service federation.
    public var peer: String?
    /// The agreement a peer member runs under (default: the newest in force granting federate).
    public var agreement: String?
    /// How long each server may take from its create until it runs.
    public var bootTimeout: TimeInterval

    public init(
        name: String, template: String, parameters: [String: String] = [:], count: Int = 1, after: [String] = [], peer: String? = nil,
        agreement: String? = nil, bootTimeout: TimeInterval = ClusterLoader.defaultBootTimeout
    ) {
        self.name = name
        self.template = template
        self.parameters = parameters
        self.count = count
        self.after = after
        self.peer = peer
        self.agreement = agreement
        self.bootTimeout = bootTimeout
    }
}

/// Reads cluster files (TOML). Errors name `file:line: field`, like template and policy files.
public enum ClusterLoader {
    public static let version = 1
    public static let maximumFileBytes = 64 * 1024
    /// Most servers one member may ask for.
    public static let maximumCount = 20
    /// Most members one cluster may have.
    public static let maximumMembers = 32
    public static let defaultBootTimeout: TimeInterval = 300

    /// Reads and checks `path`. With `templates`, every local member's template must be among them
    /// and accept the member's parameters (a peer's templates are checked by the peer).
    public static func load(path: String, templates: [ServerTemplate]? = nil) throws(TOMLLoadError) -> ClusterDefinition {
        let text = try TOMLLoadError.readFile(path, maximumBytes: maximumFileBytes)
        return try parse(text, file: path, templates: templates)
    }

    /// Parses one document held in memory; `file` names it in diagnostics.
    public static func parse(_ text: String, file: String, templates: [ServerTemplate]? = nil) throws(TOMLLoadError) -> ClusterDefinition {
        var parser = Parser(file: file, text: text, templates: templates)
        let definition = parser.parse()
        guard let definition, parser.diagnostics.isEmpty else { throw TOMLLoadError(diagnostics: parser.diagnostics) }
        return definition
    }

    /// Cluster and member names: letters, digits and `-`, starting with a letter, so they can be
    /// part of an instance name every driver accepts.
    static func isName(_ value: String, maxBytes: Int) -> Bool {
        guard !value.isEmpty, value.utf8.count <= maxBytes, let first = value.unicodeScalars.first,
              first.isASCII, CharacterSet.letters.contains(first) else { return false }
        return value.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "-") }
    }

    /// A bare JID as the federation service takes it: `local@domain`, no resource, no spaces.
    static func isBareJID(_ value: String) -> Bool {
        let parts = value.split(separator: "@", omittingEmptySubsequences: false)
        return parts.count == 2 && !parts[0].isEmpty && !parts[1].isEmpty && !value.contains("/") && value.utf8.count <= 320
            && !value.contains(where: { $0.isWhitespace })
    }
}

extension ClusterLoader {
    struct Parser: TOMLFieldReader {
        let file: String
        let locator: TOMLSourceLocator
        let text: String
        let templates: [ServerTemplate]?
        var diagnostics: [TOMLDiagnostic] = []

        init(file: String, text: String, templates: [ServerTemplate]?) {
            self.file = file
            self.text = text
            self.templates = templates
            self.locator = TOMLSourceLocator(text: text)
        }

        mutating func error(_ field: String, _ message: String) {
            diagnostics.append(TOMLDiagnostic(file: file, line: locator.line(of: field), field: field, message: message))
        }

        mutating func parse() -> ClusterDefinition? {
            let root: TOMLTable
            do { root = try SerializedTOML.table(from: text) } catch {
                diagnostics.append(.syntax(error, file: file))
                return nil
            }
            checkKeys(root, path: "", allowed: ["version", "name", "description", "member"])
            if let v = root["version"] {
                if v.int != ClusterLoader.version { error("version", "expected \(ClusterLoader.version), found \(v.debugDescription)") }
            } else {
                error("version", "missing; write `version = \(ClusterLoader.version)` at the top")
            }
            let name = requiredString(root, "name", "")
            if let name, !ClusterLoader.isName(name, maxBytes: 40) {
                error("name", "'\(name.prefix(40))' must be 1...40 letters, digits and - starting with a letter")
            }
            let description = string(root, "description", "")
            var members: [ClusterMember] = []
            if let value = root["member"] {
                if let array = value.array {
                    if array.count > ClusterLoader.maximumMembers { error("member", "more than \(ClusterLoader.maximumMembers) members") }
                    for i in 0..<array.count {
                        let path = "member[\(i)]"
                        guard let table = array[i].table else {
                            error(path, "expected a table, found \(array[i].type)")
                            continue
                        }
                        guard let member = parseMember(table, path: path) else { continue }
                        if members.contains(where: { $0.name == member.name }) {
                            error(path + ".name", "member '\(member.name)' is declared twice")
                        } else {
                            members.append(member)
                        }
                    }
                } else {
                    error("member", "expected an array of tables ([[member]]), found \(value.type)")
                }
            } else {
                error("member", "missing; a cluster needs at least one [[member]]")
            }
            checkOrdering(members)
            guard diagnostics.isEmpty, let name else { return nil }
            return ClusterDefinition(name: name, description: description, members: members, source: file)
        }

        mutating func parseMember(_ t: TOMLTable, path: String) -> ClusterMember? {
            checkKeys(t, path: path, allowed: ["name", "template", "parameters", "count", "after", "peer", "agreement", "boot_timeout_seconds"])
            let before = diagnostics.count
            let name = requiredString(t, "name", path)
            if let name, !ClusterLoader.isName(name, maxBytes: 24) {
                error(path + ".name", "'\(name.prefix(24))' must be 1...24 letters, digits and - starting with a letter")
            }
            let templateName = requiredString(t, "template", path)
            var count = 1
            if let value = t["count"] {
                if let n = value.int {
                    if (1...ClusterLoader.maximumCount).contains(n) { count = n } else {
                        error(path + ".count", "must be in 1...\(ClusterLoader.maximumCount) (found \(n))")
                    }
                } else {
                    error(path + ".count", "expected an integer, found \(value.type)")
                }
            }
            var bootTimeout = ClusterLoader.defaultBootTimeout
            if let value = t["boot_timeout_seconds"] {
                if let n = value.int, n >= 1 { bootTimeout = TimeInterval(n) } else {
                    error(path + ".boot_timeout_seconds", "expected an integer ≥ 1, found \(value.debugDescription)")
                }
            }
            let after = strings(t, "after", path) ?? []
            let peer = string(t, "peer", path)
            if let peer, !ClusterLoader.isBareJID(peer) {
                error(path + ".peer", "'\(peer.prefix(64))' is not a bare broker JID (name@domain)")
            }
            let agreement = string(t, "agreement", path)
            if agreement != nil, peer == nil { error(path + ".agreement", "only a peer member runs under an agreement (set peer)") }
            var parameters: [String: String] = [:]
            if let value = t["parameters"] {
                if let table = value.table {
                    for key in table.keys.sorted() {
                        guard let text = table[key]?.string else {
                            error(TOMLSourceLocator.append(path + ".parameters", key), "expected a string")
                            continue
                        }
                        parameters[key] = text
                    }
                } else {
                    error(path + ".parameters", "expected a table of strings, found \(value.type)")
                }
            }
            guard diagnostics.count == before, let name, let templateName else { return nil }
            if peer == nil, let templates {
                if let template = templates.first(where: { $0.name == templateName }) {
                    do { _ = try template.render(parameters: parameters) } catch {
                        self.error(path + ".parameters", "template \(templateName): \(error.description)")
                    }
                } else {
                    let known = templates.map(\.name).sorted().joined(separator: ", ")
                    self.error(path + ".template", "no template named '\(templateName.prefix(64))' (templates: \(known.isEmpty ? "none" : known))")
                }
            }
            return ClusterMember(
                name: name, template: templateName, parameters: parameters, count: count, after: after, peer: peer, agreement: agreement,
                bootTimeout: bootTimeout)
        }

        /// `after` must name other members, and following it must never lead back (no cycles).
        mutating func checkOrdering(_ members: [ClusterMember]) {
            let names = Set(members.map(\.name))
            let before = diagnostics.count
            for (i, member) in members.enumerated() {
                for other in member.after where !names.contains(other) || other == member.name {
                    error("member[\(i)].after", other == member.name ? "a member cannot come after itself" : "names no member '\(other.prefix(24))'")
                }
            }
            // A cycle is only looked for once every name is known (an unknown name blocks the order too).
            guard diagnostics.count == before else { return }
            let launchOrder = ClusterDefinition(name: "", members: members).launchOrder
            var placed = Set<String>()
            for member in launchOrder {
                if !member.after.allSatisfy(placed.contains),
                   let i = members.firstIndex(of: member) {
                    error("member[\(i)].after", "ordering cycle through '\(member.name)'")
                    return
                }
                placed.insert(member.name)
            }
        }
    }
}

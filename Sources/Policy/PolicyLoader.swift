import Foundation
import TOMLParsing

/// Reads policy files (TOML, schema in `policies/README.md`) into a `PolicySet`, collecting every
/// problem with file, line and field rather than stopping at the first.
public enum PolicyLoader {
    /// The schema version this loader understands.
    public static let version = 1

    /// Loads and validates several files together; overlap checks span all of them.
    public static func load(paths: [String]) throws(PolicyLoadError) -> PolicySet {
        var peers: [PeerPolicy] = []
        var diagnostics: [PolicyDiagnostic] = []
        var locators: [String: TOMLSourceLocator] = [:]
        for path in paths {
            let text: String
            do {
                text = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                diagnostics.append(PolicyDiagnostic(file: path, line: 1, field: "", message: "cannot read: \(error.localizedDescription)"))
                continue
            }
            var parser = Parser(file: path, text: text)
            peers += parser.parse()
            diagnostics += parser.diagnostics
            locators[path] = parser.locator
        }
        diagnostics += overlaps(peers, locators: locators)
        guard diagnostics.isEmpty else { throw PolicyLoadError(diagnostics: diagnostics) }
        return PolicySet(peers: peers)
    }

    /// Parses one document held in memory; `file` names it in diagnostics.
    public static func parse(_ text: String, file: String) throws(PolicyLoadError) -> PolicySet {
        var parser = Parser(file: file, text: text)
        let peers = parser.parse()
        let diagnostics = parser.diagnostics + overlaps(peers, locators: [file: parser.locator])
        guard diagnostics.isEmpty else { throw PolicyLoadError(diagnostics: diagnostics) }
        return PolicySet(peers: peers)
    }

    /// Two entries naming the same pattern must not be valid at the same time: which one governs
    /// the peer would then depend on file order, and an operator could not tell from reading.
    static func overlaps(_ peers: [PeerPolicy], locators: [String: TOMLSourceLocator]) -> [PolicyDiagnostic] {
        var diagnostics: [PolicyDiagnostic] = []
        for (i, a) in peers.enumerated() {
            for b in peers[(i + 1)...] {
                let shared = Set(a.match).intersection(b.match)
                guard !shared.isEmpty, a.validity.overlaps(b.validity) else { continue }
                let (file, field) = Self.origin(b.source)
                let line = locators[file]?.line(of: field + ".valid_from") ?? 1
                let patterns = shared.map(\.pattern).sorted().joined(separator: ", ")
                diagnostics.append(PolicyDiagnostic(
                    file: file, line: line, field: field + ".valid_from",
                    message: "validity overlaps entry '\(a.name)' (\(a.source)) for \(patterns)"))
            }
        }
        return diagnostics
    }

    /// `PeerPolicy.source` is "file#peer[n]"; split it back.
    static func origin(_ source: String) -> (file: String, field: String) {
        guard let hash = source.lastIndex(of: "#") else { return (source, "") }
        return (String(source[..<hash]), String(source[source.index(after: hash)...]))
    }
}

extension PolicyLoader {
    struct Parser {
        let file: String
        let text: String
        let locator: TOMLSourceLocator
        var diagnostics: [PolicyDiagnostic] = []

        init(file: String, text: String) {
            self.file = file
            self.text = text
            self.locator = TOMLSourceLocator(text: text)
        }

        mutating func error(_ field: String, _ message: String) {
            diagnostics.append(PolicyDiagnostic(file: file, line: locator.line(of: field), field: field, message: message))
        }

        mutating func parse() -> [PeerPolicy] {
            let root: TOMLTable
            do {
                root = try SerializedTOML.table(from: text)
            } catch {
                diagnostics.append(.syntax(error, file: file))
                return []
            }
            checkKeys(root, path: "", allowed: ["version", "peer"])
            if let v = root["version"] {
                if v.int != PolicyLoader.version { error("version", "expected \(PolicyLoader.version), found \(v.debugDescription)") }
            } else {
                error("version", "missing; write `version = \(PolicyLoader.version)` at the top")
            }
            guard let peersValue = root["peer"] else { return [] }
            guard let peers = peersValue.array else {
                error("peer", "expected an array of tables ([[peer]]), found \(peersValue.type)")
                return []
            }
            var result: [PeerPolicy] = []
            for i in 0..<peers.count {
                let path = "peer[\(i)]"
                guard let table = peers[i].table else {
                    error(path, "expected a table, found \(peers[i].type)")
                    continue
                }
                if let peer = parsePeer(table, path: path) { result.append(peer) }
            }
            return result
        }

        mutating func parsePeer(_ t: TOMLTable, path: String) -> PeerPolicy? {
            checkKeys(t, path: path, allowed: [
                "name", "match", "valid_from", "valid_until", "entitlements", "quota", "rates",
                "sla_offered", "sla_required", "placement", "max_rates",
            ])
            let before = diagnostics.count
            let name = string(t, "name", path) ?? ""
            if t["name"] == nil { error(TOMLSourceLocator.append(path, "name"), "missing") }
            var patterns: [JIDPattern] = []
            if let strings = strings(t, "match", path) {
                for s in strings {
                    if let p = JIDPattern(s) { patterns.append(p) } else {
                        error(TOMLSourceLocator.append(path, "match"), "'\(s)' is not a JID pattern (use user@domain, *@domain or *)")
                    }
                }
                if strings.isEmpty { error(TOMLSourceLocator.append(path, "match"), "must name at least one JID pattern") }
            } else if t["match"] == nil {
                error(TOMLSourceLocator.append(path, "match"), "missing")
            }
            let validity = ValidityPeriod(from: date(t, "valid_from", path), until: date(t, "valid_until", path))
            if let from = validity.from, let until = validity.until, until <= from {
                error(TOMLSourceLocator.append(path, "valid_until"), "must be after valid_from")
            }
            var entitlements = Set<Entitlement>()
            for s in strings(t, "entitlements", path) ?? [] {
                if let e = Entitlement(rawValue: s) { entitlements.insert(e) } else {
                    error(TOMLSourceLocator.append(path, "entitlements"), "unknown entitlement '\(s)' (one of \(Entitlement.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
            }
            let quota = table(t, "quota", path).map { parseQuota($0, TOMLSourceLocator.append(path, "quota")) } ?? .unlimited
            let rates = table(t, "rates", path).map { parseRates($0, TOMLSourceLocator.append(path, "rates")) }
            let offered = table(t, "sla_offered", path).map { parseSLA($0, TOMLSourceLocator.append(path, "sla_offered")) }
            let required = table(t, "sla_required", path).map { parseSLA($0, TOMLSourceLocator.append(path, "sla_required")) }
            let ceiling = table(t, "max_rates", path).map { parseCeiling($0, TOMLSourceLocator.append(path, "max_rates")) }
            var placement = Placement.anywhere
            if let p = table(t, "placement", path) {
                let pp = TOMLSourceLocator.append(path, "placement")
                checkKeys(p, path: pp, allowed: ["regions", "jurisdictions"])
                placement = Placement(regions: strings(p, "regions", pp) ?? [], jurisdictions: strings(p, "jurisdictions", pp) ?? [])
            }
            guard diagnostics.count == before else { return nil }
            return PeerPolicy(
                name: name, match: patterns, validity: validity, entitlements: entitlements, quota: quota,
                rates: rates, slaOffered: offered, slaRequired: required, placement: placement, source: "\(file)#\(path)",
                maxRates: ceiling)
        }

        mutating func parseCeiling(_ t: TOMLTable, _ path: String) -> PriceCeiling {
            // The same fields as a rate card; here an absent one means "no ceiling", not zero.
            let card = parseRates(t, path)
            return PriceCeiling(
                currency: card.currency, instanceHour: card.instanceHour,
                perGBTransferred: t["per_gb_transferred"] == nil ? nil : card.perGBTransferred,
                perGBMonthStored: t["per_gb_month_stored"] == nil ? nil : card.perGBMonthStored,
                perThousandCalls: t["per_1000_calls"] == nil ? nil : card.perThousandCalls)
        }

        mutating func parseQuota(_ t: TOMLTable, _ path: String) -> Quota {
            checkKeys(t, path: path, allowed: ["instances", "vcpu", "memory_gib", "storage_gib", "transfer_gb"])
            return Quota(
                instances: count(t, "instances", path), vcpu: count(t, "vcpu", path),
                memoryGiB: amount(t, "memory_gib", path), storageGiB: amount(t, "storage_gib", path),
                transferGB: amount(t, "transfer_gb", path))
        }

        mutating func parseRates(_ t: TOMLTable, _ path: String) -> RateCard {
            checkKeys(t, path: path, allowed: ["currency", "instance_hour", "per_gb_transferred", "per_gb_month_stored", "per_1000_calls"])
            let currency = string(t, "currency", path) ?? ""
            if t["currency"] == nil {
                error(TOMLSourceLocator.append(path, "currency"), "missing")
            } else if !currency.isEmpty, !Currency.isKnown(currency) {
                error(TOMLSourceLocator.append(path, "currency"), "'\(currency)' is not an ISO 4217 currency code")
            }
            var hourly: [String: Decimal] = [:]
            if let types = table(t, "instance_hour", path) {
                let tp = TOMLSourceLocator.append(path, "instance_hour")
                for key in types.keys {
                    if let price = amount(types, key, tp) { hourly[key] = price }
                }
            }
            return RateCard(
                currency: currency, instanceHour: hourly,
                perGBTransferred: amount(t, "per_gb_transferred", path) ?? 0,
                perGBMonthStored: amount(t, "per_gb_month_stored", path) ?? 0,
                perThousandCalls: amount(t, "per_1000_calls", path) ?? 0)
        }

        mutating func parseSLA(_ t: TOMLTable, _ path: String) -> ServiceLevel {
            checkKeys(t, path: path, allowed: ["availability_percent", "max_migration_downtime_seconds", "support"])
            let availability = amount(t, "availability_percent", path) ?? 0
            if availability > 100 { error(TOMLSourceLocator.append(path, "availability_percent"), "must be at most 100") }
            return ServiceLevel(
                availabilityPercent: availability,
                maxMigrationDowntimeSeconds: count(t, "max_migration_downtime_seconds", path) ?? 0,
                support: string(t, "support", path) ?? "")
        }

        // MARK: typed field readers; each reports a wrong type at the field's own line.

        mutating func checkKeys(_ t: TOMLTable, path: String, allowed: Set<String>) {
            for key in t.keys where !allowed.contains(key) {
                error(TOMLSourceLocator.append(path, key), "unknown field (allowed: \(allowed.sorted().joined(separator: ", ")))")
            }
        }

        mutating func string(_ t: TOMLTable, _ key: String, _ path: String) -> String? {
            guard let v = t[key] else { return nil }
            guard let s = v.string else { return wrongType(path, key, "a string", v) }
            return s
        }

        mutating func table(_ t: TOMLTable, _ key: String, _ path: String) -> TOMLTable? {
            guard let v = t[key] else { return nil }
            guard let table = v.table else { return wrongType(path, key, "a table", v) }
            return table
        }

        /// A string or an array of strings.
        mutating func strings(_ t: TOMLTable, _ key: String, _ path: String) -> [String]? {
            guard let v = t[key] else { return nil }
            if let s = v.string { return [s] }
            guard let array = v.array else { return wrongType(path, key, "an array of strings", v) }
            var result: [String] = []
            for i in 0..<array.count {
                guard let s = array[i].string else { return wrongType(path, key, "an array of strings", v) }
                result.append(s)
            }
            return result
        }

        /// A non-negative integer.
        mutating func count(_ t: TOMLTable, _ key: String, _ path: String) -> Int? {
            guard let v = t[key] else { return nil }
            guard let n = v.int else { return wrongType(path, key, "an integer", v) }
            guard n >= 0 else {
                error(TOMLSourceLocator.append(path, key), "must not be negative (found \(n))")
                return nil
            }
            return n
        }

        /// A non-negative exact amount: an integer or a decimal string ("0.0416"). TOML floats
        /// are refused because they are binary: 0.1 in a file would not be 0.1 on the bill.
        mutating func amount(_ t: TOMLTable, _ key: String, _ path: String) -> Decimal? {
            guard let v = t[key] else { return nil }
            let value: Decimal
            if let n = v.int {
                value = Decimal(n)
            } else if let s = v.string, let d = Self.decimal(s) {
                value = d
            } else if v.double != nil {
                error(TOMLSourceLocator.append(path, key), "write decimal amounts as strings (\"\(v.debugDescription)\") so they stay exact")
                return nil
            } else {
                return wrongType(path, key, "an integer or a decimal string", v)
            }
            guard value >= 0 else {
                error(TOMLSourceLocator.append(path, key), "must not be negative (found \(value))")
                return nil
            }
            return value
        }

        /// Strict: digits with an optional sign and fraction, nothing else (`Decimal(string:)`
        /// alone accepts trailing garbage like "1.5abc").
        static func decimal(_ s: String) -> Decimal? {
            let body = s.hasPrefix("-") || s.hasPrefix("+") ? s.dropFirst() : Substring(s)
            let parts = body.split(separator: ".", omittingEmptySubsequences: false)
            guard (1...2).contains(parts.count), parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }) else { return nil }
            return Decimal(string: s, locale: Locale(identifier: "en_US_POSIX"))
        }

        /// An offset date-time or a date (midnight UTC). Local date-times are refused: without an
        /// offset the two brokers could disagree on when a policy starts.
        mutating func date(_ t: TOMLTable, _ key: String, _ path: String) -> Date? {
            guard let v = t[key] else { return nil }
            var calendar = Calendar(identifier: .gregorian)
            calendar.timeZone = TimeZone(identifier: "UTC")!
            if let d = v.date {
                return calendar.date(from: DateComponents(year: d.year, month: d.month, day: d.day))
            }
            guard let dt = v.dateTime else { return wrongType(path, key, "a date-time with offset (2026-01-01T00:00:00Z) or a date", v) }
            guard let offset = dt.offset else {
                error(TOMLSourceLocator.append(path, key), "date-time needs an offset such as Z or +01:00")
                return nil
            }
            let components = DateComponents(
                year: dt.date.year, month: dt.date.month, day: dt.date.day,
                hour: dt.time.hour, minute: dt.time.minute, second: dt.time.second)
            return calendar.date(from: components).map { $0.addingTimeInterval(TimeInterval(-offset.offset * 60)) }
        }

        mutating func wrongType<T>(_ path: String, _ key: String, _ expected: String, _ v: any TOMLValueConvertible) -> T? {
            error(TOMLSourceLocator.append(path, key), "expected \(expected), found \(v.type)")
            return nil
        }
    }
}

/// ISO 4217 codes accepted in rate cards. A fixed list rather than Foundation's locale data,
/// which differs between macOS and Linux builds; extend it when a peer bills in another currency.
enum Currency {
    static let codes: Set<String> = [
        "AED", "AUD", "BGN", "BRL", "CAD", "CHF", "CLP", "CNY", "COP", "CZK", "DKK", "EGP", "EUR", "GBP",
        "HKD", "HUF", "IDR", "ILS", "INR", "ISK", "JPY", "KRW", "MXN", "MYR", "NOK", "NZD", "PHP", "PLN",
        "RON", "RSD", "SAR", "SEK", "SGD", "THB", "TRY", "TWD", "UAH", "USD", "ZAR",
    ]

    static func isKnown(_ code: String) -> Bool { codes.contains(code) }
}

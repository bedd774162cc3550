import Foundation

/// The terms one side proposes in a negotiation (a DSP "offer" or "request"): the same shape
/// either way, so a counter-offer is just another `Terms`.
public struct Terms: Codable, Sendable, Hashable {
    /// Resources the consumer may use at the provider.
    public var resources: ResourceAmount
    /// Instance types the consumer may run, empty for any priced type.
    public var instanceTypes: [String]
    public var period: ValidityPeriod
    public var rates: RateCard
    /// What the provider promises.
    public var sla: ServiceLevel
    public var entitlements: Set<Entitlement>
    public var placement: Placement

    public init(
        resources: ResourceAmount, instanceTypes: [String] = [], period: ValidityPeriod, rates: RateCard,
        sla: ServiceLevel, entitlements: Set<Entitlement>, placement: Placement = .anywhere
    ) {
        self.resources = resources
        self.instanceTypes = instanceTypes
        self.period = period
        self.rates = rates
        self.sla = sla
        self.entitlements = entitlements
        self.placement = placement
    }
}

/// A concluded contract between two brokers. Both sign `canonicalBytes()` (with the Trust
/// module); anyone holding both signatures and certificates can verify it offline.
public struct Agreement: Codable, Sendable, Hashable {
    public var id: String
    public var negotiationID: String
    /// Bare JIDs of the two brokers.
    public var consumer: String
    public var provider: String
    public var terms: Terms
    public var createdAt: Date

    public init(id: String, negotiationID: String, consumer: String, provider: String, terms: Terms, createdAt: Date) {
        self.id = id
        self.negotiationID = negotiationID
        self.consumer = consumer
        self.provider = provider
        self.terms = terms
        self.createdAt = createdAt
    }

    /// Whether the agreement is in force at `date`.
    public func isValid(at date: Date) -> Bool { terms.period.contains(date) }

    /// The bytes both brokers sign. Hand-written rather than JSONEncoder output because signing
    /// needs one encoding forever: JSONEncoder's Decimal and Date formats, key order and escaping
    /// are not promised across Foundation versions or platforms. Rules: UTF-8 lines `key=value\n`
    /// in the fixed order below; collections sorted; decimals in plain notation without trailing
    /// zeros ("0.0230" and "0.023" sign the same); dates as integer Unix seconds, with
    /// milliseconds dropped (protocol times are whole seconds); absent values as "-"; `\`, newline
    /// and `=` inside values escaped as `\\`, `\n`, `\=`; `rates.per_1000_calls` only when not
    /// zero (it came later). Any other change needs a new first line.
    public func canonicalBytes() -> [UInt8] {
        var lines: [(String, String)] = [
            ("format", "urn:intercloud:agreement:0"),
            ("id", id),
            ("negotiation", negotiationID),
            ("consumer", consumer),
            ("provider", provider),
            ("created", Self.seconds(createdAt)),
            ("period.from", terms.period.from.map(Self.seconds) ?? "-"),
            ("period.until", terms.period.until.map(Self.seconds) ?? "-"),
            ("resources.instances", String(terms.resources.instances)),
            ("resources.vcpu", String(terms.resources.vcpu)),
            ("resources.memory_gib", Self.decimal(terms.resources.memoryGiB)),
            ("resources.storage_gib", Self.decimal(terms.resources.storageGiB)),
            ("resources.transfer_gb", Self.decimal(terms.resources.transferGB)),
            ("instance_types", terms.instanceTypes.sorted().joined(separator: ",")),
            ("entitlements", terms.entitlements.map(\.rawValue).sorted().joined(separator: ",")),
            ("placement.regions", terms.placement.regions.sorted().joined(separator: ",")),
            ("placement.jurisdictions", terms.placement.jurisdictions.sorted().joined(separator: ",")),
            ("rates.currency", terms.rates.currency),
            ("rates.per_gb_transferred", Self.decimal(terms.rates.perGBTransferred)),
            ("rates.per_gb_month_stored", Self.decimal(terms.rates.perGBMonthStored)),
        ]
        // Written only when calls are priced, so agreements without it keep their encoding.
        if terms.rates.perThousandCalls != 0 {
            lines.append(("rates.per_1000_calls", Self.decimal(terms.rates.perThousandCalls)))
        }
        for type in terms.rates.instanceHour.keys.sorted() {
            lines.append(("rates.instance_hour.\(Self.escape(type))", Self.decimal(terms.rates.instanceHour[type]!)))
        }
        lines += [
            ("sla.availability_percent", Self.decimal(terms.sla.availabilityPercent)),
            ("sla.max_migration_downtime_seconds", String(terms.sla.maxMigrationDowntimeSeconds)),
            ("sla.support", terms.sla.support),
        ]
        let text = lines.map { "\($0.0)=\(Self.escape($0.1))\n" }.joined()
        return Array(text.utf8)
    }

    static func seconds(_ date: Date) -> String {
        String(Int64(date.timeIntervalSince1970.rounded(.down)))
    }

    /// Plain notation with no exponent and no trailing fractional zeros.
    static func decimal(_ value: Decimal) -> String {
        var text = NSDecimalNumber(decimal: value).description(withLocale: Locale(identifier: "en_US_POSIX"))
        if text.contains(".") {
            while text.hasSuffix("0") { text.removeLast() }
            if text.hasSuffix(".") { text.removeLast() }
        }
        return text == "-0" ? "0" : text
    }

    static func escape(_ value: String) -> String {
        var out = ""
        for c in value {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "=": out += "\\="
            default: out.append(c)
            }
        }
        return out
    }
}

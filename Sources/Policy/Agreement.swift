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

// MARK: Wire form

/// The JSON of terms and agreements in `urn:intercloud:negotiation:0` (docs/protocol/negotiation.md),
/// written out by hand, nested records included: every name on the wire is a string literal here,
/// so renaming a Swift property, type or case cannot change it. Entitlements go out sorted.
/// (The same coding serves the negotiation journal and signed agreement files.)
extension Terms {
    private enum WireKey: String, CodingKey {
        case resources = "resources"
        case instanceTypes = "instanceTypes"
        case period = "period"
        case rates = "rates"
        case sla = "sla"
        case entitlements = "entitlements"
        case placement = "placement"
    }

    private enum ResourceKey: String, CodingKey {
        case instances = "instances"
        case vcpu = "vcpu"
        case memoryGiB = "memoryGiB"
        case storageGiB = "storageGiB"
        case transferGB = "transferGB"
    }

    private enum PeriodKey: String, CodingKey {
        case from = "from"
        case until = "until"
    }

    private enum RateKey: String, CodingKey {
        case currency = "currency"
        case instanceHour = "instanceHour"
        case perGBTransferred = "perGBTransferred"
        case perGBMonthStored = "perGBMonthStored"
        case perThousandCalls = "perThousandCalls"
    }

    private enum ServiceKey: String, CodingKey {
        case availabilityPercent = "availabilityPercent"
        case maxMigrationDowntimeSeconds = "maxMigrationDowntimeSeconds"
        case support = "support"
    }

    private enum PlacementKey: String, CodingKey {
        case regions = "regions"
        case jurisdictions = "jurisdictions"
    }

    /// An entitlement's name on the wire.
    public static func wireName(_ entitlement: Entitlement) -> String {
        switch entitlement {
        case .query: "query"
        case .federate: "federate"
        case .migrateIn: "migrate-in"
        case .migrateOut: "migrate-out"
        case .migrateLive: "migrate-live"
        }
    }

    public static func entitlement(wireName: String) -> Entitlement? {
        Entitlement.allCases.first { Self.wireName($0) == wireName }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        let resources = try container.nestedContainer(keyedBy: ResourceKey.self, forKey: .resources)
        let period = try container.nestedContainer(keyedBy: PeriodKey.self, forKey: .period)
        let rates = try container.nestedContainer(keyedBy: RateKey.self, forKey: .rates)
        let sla = try container.nestedContainer(keyedBy: ServiceKey.self, forKey: .sla)
        let placement = try container.nestedContainer(keyedBy: PlacementKey.self, forKey: .placement)
        var entitlements: Set<Entitlement> = []
        for name in try container.decode([String].self, forKey: .entitlements) {
            guard let entitlement = Self.entitlement(wireName: name) else {
                throw DecodingError.dataCorruptedError(forKey: .entitlements, in: container, debugDescription: "unknown entitlement \(name)")
            }
            entitlements.insert(entitlement)
        }
        self.init(
            resources: ResourceAmount(
                instances: try resources.decode(Int.self, forKey: .instances), vcpu: try resources.decode(Int.self, forKey: .vcpu),
                memoryGiB: try resources.decode(Decimal.self, forKey: .memoryGiB),
                storageGiB: try resources.decode(Decimal.self, forKey: .storageGiB),
                transferGB: try resources.decode(Decimal.self, forKey: .transferGB)),
            instanceTypes: try container.decode([String].self, forKey: .instanceTypes),
            period: ValidityPeriod(
                from: try period.decodeIfPresent(Date.self, forKey: .from), until: try period.decodeIfPresent(Date.self, forKey: .until)),
            rates: RateCard(
                currency: try rates.decode(String.self, forKey: .currency),
                instanceHour: try rates.decode([String: Decimal].self, forKey: .instanceHour),
                perGBTransferred: try rates.decode(Decimal.self, forKey: .perGBTransferred),
                perGBMonthStored: try rates.decode(Decimal.self, forKey: .perGBMonthStored),
                // It came later: terms without it price calls at zero.
                perThousandCalls: try rates.decodeIfPresent(Decimal.self, forKey: .perThousandCalls) ?? 0),
            sla: ServiceLevel(
                availabilityPercent: try sla.decode(Decimal.self, forKey: .availabilityPercent),
                maxMigrationDowntimeSeconds: try sla.decode(Int.self, forKey: .maxMigrationDowntimeSeconds),
                support: try sla.decode(String.self, forKey: .support)),
            entitlements: entitlements,
            placement: Placement(
                regions: try placement.decode([String].self, forKey: .regions),
                jurisdictions: try placement.decode([String].self, forKey: .jurisdictions)))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        var resources = container.nestedContainer(keyedBy: ResourceKey.self, forKey: .resources)
        try resources.encode(self.resources.instances, forKey: .instances)
        try resources.encode(self.resources.vcpu, forKey: .vcpu)
        try resources.encode(self.resources.memoryGiB, forKey: .memoryGiB)
        try resources.encode(self.resources.storageGiB, forKey: .storageGiB)
        try resources.encode(self.resources.transferGB, forKey: .transferGB)
        try container.encode(instanceTypes, forKey: .instanceTypes)
        var period = container.nestedContainer(keyedBy: PeriodKey.self, forKey: .period)
        try period.encodeIfPresent(self.period.from, forKey: .from)
        try period.encodeIfPresent(self.period.until, forKey: .until)
        var rates = container.nestedContainer(keyedBy: RateKey.self, forKey: .rates)
        try rates.encode(self.rates.currency, forKey: .currency)
        try rates.encode(self.rates.instanceHour, forKey: .instanceHour)
        try rates.encode(self.rates.perGBTransferred, forKey: .perGBTransferred)
        try rates.encode(self.rates.perGBMonthStored, forKey: .perGBMonthStored)
        try rates.encode(self.rates.perThousandCalls, forKey: .perThousandCalls)
        var sla = container.nestedContainer(keyedBy: ServiceKey.self, forKey: .sla)
        try sla.encode(self.sla.availabilityPercent, forKey: .availabilityPercent)
        try sla.encode(self.sla.maxMigrationDowntimeSeconds, forKey: .maxMigrationDowntimeSeconds)
        try sla.encode(self.sla.support, forKey: .support)
        try container.encode(entitlements.map(Self.wireName).sorted(), forKey: .entitlements)
        var placement = container.nestedContainer(keyedBy: PlacementKey.self, forKey: .placement)
        try placement.encode(self.placement.regions, forKey: .regions)
        try placement.encode(self.placement.jurisdictions, forKey: .jurisdictions)
    }
}

extension Agreement {
    private enum WireKey: String, CodingKey {
        case id = "id"
        case negotiationID = "negotiationID"
        case consumer = "consumer"
        case provider = "provider"
        case terms = "terms"
        case createdAt = "createdAt"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        self.init(
            id: try container.decode(String.self, forKey: .id), negotiationID: try container.decode(String.self, forKey: .negotiationID),
            consumer: try container.decode(String.self, forKey: .consumer), provider: try container.decode(String.self, forKey: .provider),
            terms: try container.decode(Terms.self, forKey: .terms), createdAt: try container.decode(Date.self, forKey: .createdAt))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        try container.encode(id, forKey: .id)
        try container.encode(negotiationID, forKey: .negotiationID)
        try container.encode(consumer, forKey: .consumer)
        try container.encode(provider, forKey: .provider)
        try container.encode(terms, forKey: .terms)
        try container.encode(createdAt, forKey: .createdAt)
    }
}

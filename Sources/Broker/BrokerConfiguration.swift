import Backup
import Federation
import Foundation
import Metering
import Migration
import Policy
import TOMLParsing
import Trust
import XMPP

/// A broker's configuration, read from a TOML file. Every key is declared once in
/// `BrokerSettings` (type, default, accepted values, one line for the operator);
/// `intercloud config reference` and README's "Configuration reference" are generated from those
/// declarations, and `parse` reads every value through them.
///
/// Relative paths are resolved against the directory of the configuration file, so a config and
/// its state can move together.
public struct BrokerConfiguration: Sendable {
    /// `[broker]` as written (see `BrokerSettings.Broker`).
    public struct Broker: Sendable {
        /// The cloud this broker speaks for (its XMPP domain names it on the wire too).
        public var cloud: String
        public var regions: [String]
        /// SQLite database holding the peer registry and every journal of this broker.
        public var database: String
        /// Announced load (0...1) until provider drivers report a measured one.
        public var load: Double?
    }

    /// The resolved `[trust]` section: absolute paths, ready for `BrokerIdentity.load` and
    /// `TrustAnchors.load`.
    public struct TrustSettings: Sendable, Equatable {
        public var keyPath: String
        public var chainPath: String
        public var anchorPaths: [String]
        public var crlPaths: [String]
        public var retryAfterRefusal: Duration
        public var revalidationInterval: Duration
        /// Resolved anchor file → JID domain patterns (`anchor_domains`).
        public var anchorDomains: [String: [String]]
        public var keyChange: KeyChangePolicy
        /// Whether requests to peers use session keys (`sessions`).
        public var sessions: Bool

        /// Timers and the key-change policy left out take the defaults declared in
        /// `BrokerSettings.Trust` (nil here, because a public default argument cannot name them).
        public init(keyPath: String, chainPath: String, anchorPaths: [String], crlPaths: [String] = [],
                    retryAfterRefusal: Duration? = nil, revalidationInterval: Duration? = nil,
                    anchorDomains: [String: [String]] = [:], keyChange: KeyChangePolicy? = nil, sessions: Bool? = nil) {
            self.keyPath = keyPath
            self.chainPath = chainPath
            self.anchorPaths = anchorPaths
            self.crlPaths = crlPaths
            self.retryAfterRefusal = retryAfterRefusal ?? .seconds(BrokerSettings.Trust.retrySeconds.default)
            self.revalidationInterval = revalidationInterval ?? .seconds(BrokerSettings.Trust.revalidateSeconds.default)
            self.anchorDomains = anchorDomains
            self.keyChange = keyChange ?? KeyChangePolicy(rawValue: BrokerSettings.Trust.keyChange.default) ?? .sameAnchor
            self.sessions = sessions ?? BrokerSettings.Trust.sessions.default
        }

        /// The anchors, CRLs, anchor scopes and key-change policy this section names: the one way
        /// every part of the broker and the CLI reads them.
        public func loadAnchors() throws -> TrustAnchors {
            var anchors = try TrustAnchors.load(anchorPaths: anchorPaths, crlPaths: crlPaths, scopes: anchorDomains)
            anchors.keyChange = keyChange
            return anchors
        }
    }

    /// The resolved `[catalog]` section (present or not: every broker describes itself).
    public struct CatalogSettings: Sendable, Equatable {
        public var files: [String]
        public var timeout: Duration
        public var maxResults: Int
        public var cloudIRI: String
    }

    /// The resolved `[provider]` section.
    public struct ProviderSettings: Sendable, Equatable {
        public var driver: String
        public var options: [String: String]
        public var refresh: Duration
    }

    /// Audit aggregation and retention (`[audit]`).
    public struct AuditSettings: Sendable {
        public var aggregation = RefusalAggregator.Settings()
        /// Seconds an event is kept; nil keeps them forever.
        public var retention: TimeInterval? = BrokerSettings.Audit.retentionDays.default * 86_400
        public init() {}
    }

    public var broker: Broker
    public var xmpp: XMPPClientConfiguration
    public var rooms: [JID]
    public var directPeers: [JID]
    public var approvalPatterns: [String]
    /// How long a peering request waits for `intercloud peers approve` before it is declined
    /// (`[discovery] approval_wait_hours`): strangers' requests must not fill the bounded waiting
    /// list for good.
    public var approvalWait: Duration = .seconds(BrokerSettings.Discovery.approvalWaitHours.default * 3600)
    public var nickname: String
    public var databasePath: String
    public var sourcePath: String
    /// Certificates and anchors; nil when the file has no `[trust]` section, in which case the
    /// broker announces no fingerprint and refuses every federation request (`not-authorized`).
    public var trust: TrustSettings?
    /// Catalog files and the limits applied to peers' queries.
    public var catalog: CatalogSettings
    /// The local provider driver; nil when the broker drives no cloud of its own.
    public var provider: ProviderSettings?
    /// Policy files (resolved paths); empty without a `[policy]` section.
    public var policyFiles: [String] = []
    /// Negotiation timers and limits (`[negotiation]`, defaults otherwise).
    public var negotiation = NegotiationStateMachine.Configuration()
    /// How many negotiations peers may hold open with us (`[negotiation] max_open_per_peer`, `max_open`).
    public var negotiationAdmission = NegotiationAdmission()
    /// Metering sampling and periods (`[metering]`, defaults otherwise).
    public var metering = MeteringService.Settings()
    /// Migration transfer channel and work folder (`[migration]`, defaults otherwise).
    public var migration = MigrationService.Settings(workDirectory: "")
    /// Automatic migration (`[automation]`; off by default).
    public var automation = AutomationService.Settings()
    /// Server templates and federated services (`[federation]`).
    public var federation = FederationService.Settings()
    /// Audit aggregation and retention (`[audit]`).
    public var audit = AuditSettings()
    /// Backup policies run on schedule (`[backup]`).
    public var backup = BackupSettings()

    /// `[backup]`, resolved.
    public struct BackupSettings: Sendable {
        /// Policy files or folders (resolved paths).
        public var policyPaths: [String] = []
        /// Staging folder (resolved); empty until read from a file.
        public var staging: String = ""
        public var checkInterval: TimeInterval = BackupScheduler.defaultCheckInterval
    }

    public struct Error: Swift.Error, CustomStringConvertible {
        public var path: String
        public var message: String
        public var description: String { "\(path): \(message)" }
    }

    public static func load(path: String) throws -> BrokerConfiguration {
        let url = URL(fileURLWithPath: path)
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch {
            throw Error(path: path, message: "cannot read configuration: \(error.localizedDescription)")
        }
        return try parse(text, path: url.path)
    }

    public static func parse(_ text: String, path: String) throws -> BrokerConfiguration {
        let base = URL(fileURLWithPath: path).deletingLastPathComponent()
        func resolve(_ value: String) -> String {
            value.hasPrefix("/") ? value : base.appendingPathComponent(value).standardizedFileURL.path
        }
        let root: TOMLTable
        do {
            root = try SerializedTOML.table(from: text)
        } catch let error as TOMLText.Invalid {
            throw Error(path: "\(path):\(error.line):\(error.column)", message: "invalid TOML: \(error.message)")
        } catch let error as TOMLParseError {
            throw Error(path: "\(path):\(error.source.begin.line):\(error.source.begin.column)", message: "invalid TOML")
        }
        // Unknown sections and keys, wrong types and values out of range are refused here, for
        // the whole file, before any value is used; what follows reads through the declarations
        // (defaults included) and checks only what spans several keys.
        let settings = SettingsReader(file: path, text: text, root: root, sections: BrokerSettings.sections)
        try settings.checkDocument(requiredSections: BrokerSettings.requiredSections)
        typealias S = BrokerSettings

        let broker = Broker(
            cloud: try settings.value(S.Broker.cloud), regions: try settings.value(S.Broker.regions),
            database: try settings.value(S.Broker.database), load: try settings.value(S.Broker.load))

        let jid: JID
        do { jid = try JID(try settings.value(S.XMPPSettings.jid)) } catch let error as Error { throw error } catch {
            throw settings.error("xmpp.jid", "xmpp.jid: \(error)")
        }
        let fullJID = jid.isBare ? (try? jid.with(resource: "broker")) ?? jid : jid
        var password = try settings.written(S.XMPPSettings.password)
        if let passwordFile = try settings.written(S.XMPPSettings.passwordFile) {
            do { try SecretFile.checkPrivate(resolve(passwordFile), setting: "xmpp.password_file") } catch {
                throw Error(path: path, message: error.description)
            }
            do {
                password = try String(contentsOfFile: resolve(passwordFile), encoding: .utf8)
                    .trimmingCharacters(in: .whitespacesAndNewlines)
            } catch { throw Error(path: path, message: "xmpp.password_file: cannot read \(resolve(passwordFile))") }
        }
        guard let password, !password.isEmpty else {
            throw settings.error("xmpp", "xmpp.password or xmpp.password_file is required")
        }
        let host = try settings.written(S.XMPPSettings.host)
        let tls: XMPPClientConfiguration.TLSMode
        switch try settings.value(S.XMPPSettings.tls) {
        case "disabled-for-testing":
            // Without TLS the password crosses in clear: only to a server on this machine.
            guard let host, isLoopback(host) else {
                throw settings.error(
                    "xmpp.tls",
                    "xmpp.tls = \"disabled-for-testing\" sends the password in clear: it needs xmpp.host set to a loopback address (127.0.0.1, ::1 or localhost), not \(host.map { "\"\($0)\"" } ?? "the JID's domain")")
            }
            tls = .disabledForTesting
        default:
            guard let caFile = try settings.written(S.XMPPSettings.caFile) else {
                throw settings.error("xmpp", "xmpp.ca_file is required when xmpp.tls = \"required\"")
            }
            tls = .required(caFile: resolve(caFile))
        }
        let client = XMPPClientConfiguration(
            jid: fullJID, password: password, host: host, port: try settings.written(S.XMPPSettings.port).map { UInt16($0) },
            tls: tls, streamManagement: try settings.value(S.XMPPSettings.streamManagement),
            maxInboundStanzaBytes: try settings.value(S.XMPPSettings.maxStanzaBytes))

        func jids(_ values: [String], field: String) throws -> [JID] {
            try values.map { value in
                do { return try JID(value) } catch { throw settings.error(field, "\(field): \(value): \(error)") }
            }
        }

        var trust: TrustSettings?
        if settings.table("trust") != nil {
            var anchorDomains: [String: [String]] = [:]
            for (file, entry) in try settings.written(S.Trust.anchorDomains)?.entries ?? [:] {
                if case .strings(let domains) = entry { anchorDomains[resolve(file)] = domains }
            }
            trust = TrustSettings(
                keyPath: resolve(try settings.value(S.Trust.key)), chainPath: resolve(try settings.value(S.Trust.chain)),
                anchorPaths: try settings.value(S.Trust.anchors).map(resolve), crlPaths: try settings.value(S.Trust.crls).map(resolve),
                retryAfterRefusal: .milliseconds(Int64((try settings.value(S.Trust.retrySeconds) * 1000).rounded())),
                revalidationInterval: .milliseconds(Int64((try settings.value(S.Trust.revalidateSeconds) * 1000).rounded())),
                anchorDomains: anchorDomains, keyChange: KeyChangePolicy(rawValue: try settings.value(S.Trust.keyChange)),
                sessions: try settings.value(S.Trust.sessions))
        }

        let catalog = CatalogSettings(
            files: try settings.value(S.Catalog.files).map(resolve),
            timeout: .milliseconds(try settings.value(S.Catalog.timeoutMilliseconds)),
            maxResults: try settings.value(S.Catalog.maxResults),
            cloudIRI: try settings.written(S.Catalog.cloudIRI) ?? "urn:intercloud:cloud:\(broker.cloud)")

        var provider: ProviderSettings?
        if settings.table("provider") != nil {
            // Driver options naming files or folders are resolved like every other path.
            let pathOptions: Set<String> = ["data-dir", "image-dir", "instance-dir", "kernel", "initrd"]
            var options: [String: String] = [:]
            for (key, entry) in try settings.value(S.Provider.options).entries {
                if case .string(let value) = entry { options[key] = pathOptions.contains(key) ? resolve(value) : value }
            }
            provider = ProviderSettings(
                driver: try settings.value(S.Provider.driver), options: options,
                refresh: .seconds(try settings.value(S.Provider.refreshSeconds)))
        }

        let perPeer = try settings.value(S.Negotiation.maxOpenPerPeer)
        let maxOpen = try settings.value(S.Negotiation.maxOpen)
        guard maxOpen >= perPeer else {
            throw settings.error("negotiation.max_open", "negotiation.max_open (\(maxOpen)) must be ≥ negotiation.max_open_per_peer (\(perPeer))")
        }

        var configuration = BrokerConfiguration(
            broker: broker, xmpp: client,
            rooms: try jids(try settings.value(S.Discovery.rooms), field: "discovery.rooms"),
            directPeers: try jids(try settings.value(S.Discovery.peers), field: "discovery.peers").map(\.bare),
            approvalPatterns: try settings.value(S.Discovery.approve),
            nickname: try settings.written(S.Discovery.nickname) ?? broker.cloud,
            databasePath: resolve(broker.database),
            sourcePath: path,
            trust: trust,
            catalog: catalog,
            provider: provider,
            policyFiles: settings.table("policy") != nil ? try settings.value(S.PolicyFiles.files).map(resolve) : [])
        configuration.approvalWait = .milliseconds(Int64((try settings.value(S.Discovery.approvalWaitHours) * 3_600_000).rounded()))

        configuration.negotiation = NegotiationStateMachine.Configuration(
            stepTimeout: try settings.value(S.Negotiation.stepTimeoutSeconds), maxAttempts: try settings.value(S.Negotiation.maxAttempts),
            decisionTimeout: try settings.value(S.Negotiation.decisionTimeoutSeconds), maxRounds: try settings.value(S.Negotiation.maxRounds))
        configuration.negotiationAdmission = NegotiationAdmission(maxOpenPerPeer: perPeer, maxOpen: maxOpen)

        configuration.metering.sampleInterval = try settings.value(S.Metering.sampleSeconds)
        configuration.metering.periodSeconds = try settings.value(S.Metering.periodSeconds)
        if let percent = try settings.written(S.Metering.tolerancePercent) {
            // Through the decimal text, so 1.1 % is 0.011 exactly and not the nearest binary fraction.
            configuration.metering.tolerance.relative = Decimal(string: String(percent))! / 100
        }
        configuration.metering.maxCallsPerSecond = Int64(try settings.value(S.Metering.maxCallsPerSecond))

        var migration = MigrationService.Settings(
            workDirectory: resolve(try settings.written(S.Migration.workDir) ?? "\(broker.database).migrations"))
        migration.transferHost = try settings.value(S.Migration.transferHost)
        migration.advertisedHost = try settings.written(S.Migration.advertisedHost)
        migration.transferPort = UInt16(try settings.value(S.Migration.transferPort))
        migration.bootTimeout = .milliseconds(Int64(try settings.value(S.Migration.bootTimeoutSeconds) * 1000))
        migration.gracefulShutdownSeconds = try settings.value(S.Migration.gracefulShutdownSeconds)
        migration.requestTimeout = .milliseconds(Int64(try settings.value(S.Migration.requestTimeoutSeconds) * 1000))
        migration.peerCheckInterval = try settings.value(S.Migration.peerCheckSeconds)
        migration.transferWait = try settings.value(S.Migration.transferWaitSeconds)
        migration.liveURI = try settings.written(S.Migration.liveURI)
        migration.maxConcurrentPerAgreement = try settings.value(S.Migration.maxConcurrentPerAgreement)
        if let livePeers = settings.table("migration.live_peers") {
            for peer in livePeers.keys {
                let entryPath = TOMLSourceLocator.append("migration.live_peers", peer)
                guard let jid = try? JID(peer), jid.isBare, jid.localpart != nil else {
                    throw settings.error(entryPath, "migration.live_peers: \"\(peer)\" is not a bare JID (user@domain)")
                }
                let entry = livePeers[peer]?.table
                migration.livePeers.peers[jid.description.lowercased()] = .init(
                    uris: try settings.written(S.Migration.uris, in: entry, path: entryPath) ?? [],
                    allowsPlaintext: try settings.written(S.Migration.allowPlaintext, in: entry, path: entryPath)
                        ?? S.Migration.allowPlaintext.default)
            }
        }
        configuration.migration = migration

        configuration.federation.templatePaths = try settings.value(S.Federation.templates).map(resolve)
        configuration.federation.credentialTTL = try settings.value(S.Federation.credentialTTLSeconds)
        configuration.federation.bootTimeout = try settings.value(S.Federation.bootTimeoutSeconds)
        configuration.federation.teardownRetryInterval = try settings.value(S.Federation.teardownRetrySeconds)
        configuration.federation.callGate = try settings.written(S.Federation.callGate).flatMap(S.Federation.address)

        configuration.backup.policyPaths = try settings.value(S.Backup.policies).map(resolve)
        configuration.backup.staging = resolve(try settings.written(S.Backup.staging) ?? "\(broker.database).backups")
        configuration.backup.checkInterval = try settings.value(S.Backup.checkSeconds)

        configuration.audit.aggregation.window = try settings.value(S.Audit.aggregateSeconds)
        configuration.audit.aggregation.maxKeys = try settings.value(S.Audit.maxTrackedSenders)
        let retentionDays = try settings.value(S.Audit.retentionDays)
        configuration.audit.retention = retentionDays == 0 ? nil : retentionDays * 86_400

        configuration.automation.mode = AutomationService.Mode(rawValue: try settings.value(S.Automation.mode)) ?? .off
        configuration.automation.checkInterval = .milliseconds(Int64(try settings.value(S.Automation.checkSeconds) * 1000))
        configuration.automation.policy.triggers = Set(try settings.value(S.Automation.triggers).compactMap(AutomationPolicy.Trigger.init(rawValue:)))
        if let percent = try settings.written(S.Automation.capacityThresholdPercent) {
            configuration.automation.policy.capacityThresholdPercent = Decimal(string: String(percent))!
        }
        if let percent = try settings.written(S.Automation.priceAdvantagePercent) {
            configuration.automation.policy.priceAdvantagePercent = Decimal(string: String(percent))!
        }
        configuration.automation.policy.exclude = Set(try settings.value(S.Automation.exclude))
        configuration.automation.policy.maxPerRound = try settings.value(S.Automation.maxPerRound)
        return configuration
    }
}

/// Whether `host` names this machine: "localhost", 127.0.0.0/8 or ::1.
func isLoopback(_ host: String) -> Bool {
    let host = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")).lowercased()
    if host == "localhost" || host == "::1" { return true }
    let parts = host.split(separator: ".", omittingEmptySubsequences: false)
    return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
}

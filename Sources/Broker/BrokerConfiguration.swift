import Federation
import Foundation
import Metering
import Migration
import Policy
import TOMLParsing
import Trust
import XMPP

/// A broker's configuration, read from a TOML file (see `examples/` and README).
///
/// Relative paths are resolved against the directory of the configuration file, so a config and
/// its state can move together.
public struct BrokerConfiguration: Sendable {
    public struct Broker: Sendable, Codable {
        /// The cloud this broker speaks for (its XMPP domain names it on the wire too).
        public var cloud: String
        public var regions: [String]
        /// SQLite database holding the peer registry and every journal of this broker.
        public var database: String
        /// Announced load (0...1) until provider drivers report a measured one.
        public var load: Double?
    }

    public struct XMPPSection: Sendable, Codable {
        public var jid: String
        public var password: String?
        public var password_file: String?
        public var host: String?
        public var port: Int?
        /// `required` (default) or `disabled-for-testing`.
        public var tls: String?
        public var ca_file: String?
        public var stream_management: Bool?
        public var max_stanza_bytes: Int?
    }

    public struct Discovery: Sendable, Codable {
        /// MUC rooms acting as Intercloud exchanges.
        public var rooms: [String]?
        /// Brokers we ask to peer with directly (roster subscription).
        public var peers: [String]?
        /// Subscription requests from JIDs matching one of these patterns are approved at once
        /// (`*@cloud2.test`, `broker@cloud3.test`, `*`); others wait for `intercloud peers approve`.
        public var approve: [String]?
        /// Room nickname; defaults to the cloud name.
        public var nickname: String?
        /// Hours a peering request waits for the operator before it is declined (default 168).
        public var approval_wait_hours: TOMLNumber?
    }

    /// `[trust]` as written in the file (paths relative to the configuration file).
    public struct TrustSection: Sendable, Codable {
        /// PEM private key of the broker (mode 0600), as `intercloud certs issue` writes it.
        public var key: String
        /// PEM chain: the broker's leaf (with its JID as XmppAddr) first, then intermediates.
        public var chain: String
        /// CA certificates (PEM/DER files or directories of them) trusted to vouch for peers.
        public var anchors: [String]
        /// CRL files (PEM/DER files or directories) checked during verification.
        public var crls: [String]?
        /// How long to wait before handshaking again with a peer that was refused, while its
        /// announced fingerprint stays the same (a new fingerprint is tried at once).
        public var retry_seconds: Double?
        /// How often anchor and CRL files are read again and every pin re-verified (default 3600).
        public var revalidate_seconds: Double?
        /// Anchor file → the JID domains its CA may vouch for, e.g.
        /// `{ "anchors/cloud2-ca.pem" = ["cloud2.example", "*.cloud2.example"] }`; unlisted anchors vouch for any.
        public var anchor_domains: [String: [String]]?
        /// When a pinned peer may present another key: "same-anchor" (default: its new chain ends
        /// at the anchor its pinned one did) or "operator" (only after `intercloud trust allow JID --new-key`).
        public var key_change: String?
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

        public init(keyPath: String, chainPath: String, anchorPaths: [String], crlPaths: [String] = [],
                    retryAfterRefusal: Duration = .seconds(300), revalidationInterval: Duration = .seconds(3600),
                    anchorDomains: [String: [String]] = [:], keyChange: KeyChangePolicy = .sameAnchor) {
            self.keyPath = keyPath
            self.chainPath = chainPath
            self.anchorPaths = anchorPaths
            self.crlPaths = crlPaths
            self.retryAfterRefusal = retryAfterRefusal
            self.revalidationInterval = revalidationInterval
            self.anchorDomains = anchorDomains
            self.keyChange = keyChange
        }

        /// The anchors, CRLs, anchor scopes and key-change policy this section names: the one way
        /// every part of the broker and the CLI reads them.
        public func loadAnchors() throws -> TrustAnchors {
            var anchors = try TrustAnchors.load(anchorPaths: anchorPaths, crlPaths: crlPaths, scopes: anchorDomains)
            anchors.keyChange = keyChange
            return anchors
        }
    }

    /// `[catalog]` as written in the file (paths relative to the configuration file).
    public struct CatalogSection: Sendable, Codable {
        /// Static descriptions (Turtle `.ttl`, N-Triples `.nt`, RDF/XML `.rdf`/`.owl`/`.xml`).
        public var files: [String]?
        /// Wall-clock budget of one peer query (default 5000).
        public var timeout_ms: Int?
        /// Most solutions (or triples) one answer may hold (default 10000).
        public var max_results: Int?
        /// IRI naming this cloud in its generated self-description (default
        /// `urn:intercloud:cloud:<broker.cloud>`); static files should use the same IRI.
        public var cloud_iri: String?
    }

    /// The resolved `[catalog]` section (present or not: every broker describes itself).
    public struct CatalogSettings: Sendable, Equatable {
        public var files: [String]
        public var timeout: Duration
        public var maxResults: Int
        public var cloudIRI: String
    }

    /// `[provider]`: the local cloud this broker drives, whose inventory (sizes with prices,
    /// images, free capacity) is published in the catalog.
    public struct ProviderSection: Sendable, Codable {
        /// `simcloud`, `libvirt` or `ec2` (see `intercloud provider --help`).
        public var driver: String
        /// Driver options by their CLI names (`data-dir`, `uri`, `endpoint`, ...); directory and
        /// file options are resolved against the configuration file.
        public var options: [String: String]?
        /// Seconds between inventory refreshes (default 30).
        public var refresh_seconds: Int?
    }

    /// The resolved `[provider]` section.
    public struct ProviderSettings: Sendable, Equatable {
        public var driver: String
        public var options: [String: String]
        public var refresh: Duration
    }

    /// `[policy]`: the peer policy files (see policies/README.md) this broker enforces.
    public struct PolicySection: Sendable, Codable {
        public var files: [String]
    }

    /// `[negotiation]`: timers and limits of contract negotiations (all optional).
    public struct NegotiationSection: Sendable, Codable {
        /// Seconds to wait for the peer's IQ result of one attempt (default 5).
        public var step_timeout_seconds: TOMLNumber?
        /// Attempts per message, including the first (default 3).
        public var max_attempts: Int?
        /// Seconds a state may last without either side moving it on (default 60).
        public var decision_timeout_seconds: TOMLNumber?
        /// Requests plus offers allowed in one negotiation (default 8).
        public var max_rounds: Int?
        /// Negotiations one peer may hold open with this broker as provider (default 8).
        public var max_open_per_peer: Int?
        /// Negotiations all peers together may hold open with this broker as provider (default 128).
        public var max_open: Int?
    }

    /// `[metering]`: sampling and metering periods (all optional).
    public struct MeteringSection: Sendable, Codable {
        /// Seconds between samples of the provider driver (default 60).
        public var sample_seconds: TOMLNumber?
        /// Length of one usage record's period in seconds (default 3600).
        public var period_seconds: TOMLNumber?
        /// Relative difference the consumer accepts before disputing, in percent (default 1).
        public var tolerance_percent: TOMLNumber?
        /// Consumer side: the most federated calls per second of a period it accepts being billed
        /// for; a record above it is refused (default 1000).
        public var max_calls_per_second: Int?
    }

    /// `[migration]`: the image transfer channel and working files (all optional).
    public struct MigrationSection: Sendable, Codable {
        /// Address the TLS transfer server listens on (default 127.0.0.1).
        public var transfer_host: String?
        /// Address offered to peers when it differs (NAT, a public name).
        public var advertised_host: String?
        /// TCP port of the transfer server (default 0: ephemeral, offered per migration).
        public var transfer_port: Int?
        /// Folder for exported, converted and received disks (default: next to the database).
        public var work_dir: String?
        /// How long a migrated instance may take to be running at the destination (default 120).
        public var boot_timeout_seconds: TOMLNumber?
        /// Graceful shutdown time before a hard power-off at the source (default 30).
        public var graceful_shutdown_seconds: TOMLNumber?
        /// How long the source waits for the destination's answer to one message (default 60;
        /// must cover the destination's import + create + start of the instance).
        public var request_timeout_seconds: TOMLNumber?
        /// Destination side: how long a migration may wait on its source (a held reservation, or a
        /// started copy waiting for the cut-over) before the source is asked where it stands, and
        /// how often after that (default 60).
        public var peer_check_seconds: TOMLNumber?
        /// This cloud's libvirt URI as a peer's hypervisor must reach it for live migration, e.g.
        /// `qemu+tls://hv1.cloud2.example/system` (default: the provider's `uri`).
        public var live_uri: String?
        /// Live migration out: per peer (bare JID), the hypervisor URIs it may offer and whether
        /// the guest may cross unencrypted:
        /// `"broker@cloud2.example" = { uris = ["qemu+tls://hv1.cloud2.example/system"] }`.
        public var live_peers: [String: LivePeerSection]?
        /// Migrations into this cloud under one agreement at once (default 4).
        public var max_concurrent_per_agreement: Int?
    }

    /// One peer's entry in `[migration.live_peers]`.
    public struct LivePeerSection: Sendable, Codable {
        /// URIs accepted as offered, or any URI with one's scheme and host and no query parameters.
        public var uris: [String]
        /// Accept a migration stream without TLS (anything but `qemu+tls`); default false.
        public var allow_plaintext: Bool?
    }

    /// `[automation]`: automatic migration driven by policy (off by default).
    public struct AutomationSection: Sendable, Codable {
        /// off (default), propose (log and audit only) or migrate.
        public var mode: String?
        public var check_seconds: TOMLNumber?
        /// capacity, failure, price (default capacity and failure).
        public var triggers: [String]?
        public var capacity_threshold_percent: TOMLNumber?
        public var price_advantage_percent: TOMLNumber?
        /// Instance IDs or names that never move automatically.
        public var exclude: [String]?
        public var max_per_round: Int?
    }

    /// `[federation]`: server templates offered to peers (all optional).
    public struct FederationSection: Sendable, Codable {
        /// Template files or folders (see templates/README.md).
        public var templates: [String]?
        public var credential_ttl_seconds: TOMLNumber?
        public var boot_timeout_seconds: TOMLNumber?
        public var teardown_retry_seconds: TOMLNumber?
        /// `host:port` where services' fronts check each call's credentials (`GET /v1/calls/check`),
        /// e.g. "127.0.0.1:8181"; default: no call gate.
        public var call_gate: String?
    }

    /// `[audit]`: how refusals are aggregated and how long the audit log is kept (all optional).
    public struct AuditSection: Sendable, Codable {
        /// Refusals with the same sender, kind and reason within this many seconds are written as
        /// the first one plus one summary row with their count (default 60).
        public var aggregate_seconds: TOMLNumber?
        /// Senders tracked at once; refusals from more share one row per window (default 4096).
        public var max_tracked_senders: Int?
        /// Events older than this many days are deleted (default 90; 0 keeps them forever).
        public var retention_days: TOMLNumber?
    }

    /// Audit aggregation and retention (`[audit]`).
    public struct AuditSettings: Sendable {
        public var aggregation = RefusalAggregator.Settings()
        /// Seconds an event is kept; nil keeps them forever.
        public var retention: TimeInterval? = 90 * 86_400
        public init() {}
    }

    struct File: Codable {
        var broker: Broker
        var xmpp: XMPPSection
        var discovery: Discovery?
        var trust: TrustSection?
        var catalog: CatalogSection?
        var provider: ProviderSection?
        var policy: PolicySection?
        var negotiation: NegotiationSection?
        var metering: MeteringSection?
        var migration: MigrationSection?
        var automation: AutomationSection?
        var federation: FederationSection?
        var audit: AuditSection?
    }

    public var broker: Broker
    public var xmpp: XMPPClientConfiguration
    public var rooms: [JID]
    public var directPeers: [JID]
    public var approvalPatterns: [String]
    /// How long a peering request waits for `intercloud peers approve` before it is declined
    /// (`[discovery] approval_wait_hours`, default 168): strangers' requests must not fill the
    /// bounded waiting list for good.
    public var approvalWait: Duration = .seconds(7 * 24 * 3600)
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
        let file: File
        do {
            file = try SerializedTOML.decode(File.self, from: text)
        } catch let error as TOMLText.Invalid {
            throw Error(path: "\(path):\(error.line):\(error.column)", message: "invalid TOML: \(error.message)")
        } catch let error as TOMLParseError {
            throw Error(path: "\(path):\(error.source.begin.line):\(error.source.begin.column)", message: "invalid TOML")
        } catch let error as DecodingError {
            throw Error(path: path, message: Self.describe(error))
        }
        let jid: JID
        do { jid = try JID(file.xmpp.jid) } catch {
            throw Error(path: path, message: "xmpp.jid: \(error)")
        }
        guard jid.localpart != nil else { throw Error(path: path, message: "xmpp.jid must be an account JID (user@domain[/resource])") }
        let fullJID = jid.isBare ? (try? jid.with(resource: "broker")) ?? jid : jid
        var password = file.xmpp.password
        if let passwordFile = file.xmpp.password_file {
            do { try SecretFile.checkPrivate(resolve(passwordFile), setting: "xmpp.password_file") } catch {
                throw Error(path: path, message: error.description)
            }
            do {
                password = try String(contentsOfFile: resolve(passwordFile), encoding: .utf8)
                    .trimmingCharacters(in: .whitespacesAndNewlines)
            } catch { throw Error(path: path, message: "xmpp.password_file: cannot read \(resolve(passwordFile))") }
        }
        guard let password, !password.isEmpty else {
            throw Error(path: path, message: "xmpp.password or xmpp.password_file is required")
        }
        let tls: XMPPClientConfiguration.TLSMode
        switch file.xmpp.tls ?? "required" {
        case "required":
            guard let caFile = file.xmpp.ca_file else {
                throw Error(path: path, message: "xmpp.ca_file is required when xmpp.tls = \"required\"")
            }
            tls = .required(caFile: resolve(caFile))
        case "disabled-for-testing":
            // Without TLS the password crosses in clear: only to a server on this machine.
            guard let host = file.xmpp.host, isLoopback(host) else {
                throw Error(
                    path: path,
                    message: "xmpp.tls = \"disabled-for-testing\" sends the password in clear: it needs xmpp.host set to a loopback address (127.0.0.1, ::1 or localhost), not \(file.xmpp.host.map { "\"\($0)\"" } ?? "the JID's domain")")
            }
            tls = .disabledForTesting
        case let other:
            throw Error(path: path, message: "xmpp.tls must be \"required\" or \"disabled-for-testing\", not \"\(other)\"")
        }
        if let port = file.xmpp.port, !(1...65535).contains(port) {
            throw Error(path: path, message: "xmpp.port \(port) is not a TCP port")
        }
        guard !file.broker.cloud.isEmpty, Announcement.isValidName(file.broker.cloud) else {
            throw Error(path: path, message: "broker.cloud must be 1-64 letters, digits, '.', '_' or '-'")
        }
        func jids(_ values: [String]?, field: String) throws -> [JID] {
            try (values ?? []).map { value in
                do { return try JID(value) } catch { throw Error(path: path, message: "\(field): \(value): \(error)") }
            }
        }
        var trust: TrustSettings?
        if let section = file.trust {
            guard !section.key.isEmpty, !section.chain.isEmpty else {
                throw Error(path: path, message: "trust.key and trust.chain must name the broker's key and chain files")
            }
            guard !section.anchors.isEmpty else {
                throw Error(path: path, message: "trust.anchors must list at least one CA file or directory (no peer could be trusted otherwise)")
            }
            if let retry = section.retry_seconds, !(retry.isFinite && retry >= 0) {
                throw Error(path: path, message: "trust.retry_seconds must be a number ≥ 0")
            }
            if let revalidate = section.revalidate_seconds, !(revalidate.isFinite && revalidate >= 1) {
                throw Error(path: path, message: "trust.revalidate_seconds must be a number ≥ 1")
            }
            let keyChange = try section.key_change.map { value in
                guard let policy = KeyChangePolicy(rawValue: value) else {
                    throw Error(path: path, message: "trust.key_change must be \"same-anchor\" or \"operator\", not \"\(value)\"")
                }
                return policy
            } ?? .sameAnchor
            var anchorDomains: [String: [String]] = [:]
            for (file, domains) in section.anchor_domains ?? [:] {
                guard !domains.isEmpty, domains.allSatisfy({ !$0.isEmpty && !$0.contains("@") && !$0.contains("/") }) else {
                    throw Error(path: path, message: "trust.anchor_domains.\"\(file)\" must list JID domains such as \"cloud2.example\" or \"*.cloud2.example\"")
                }
                anchorDomains[resolve(file)] = domains
            }
            trust = TrustSettings(
                keyPath: resolve(section.key), chainPath: resolve(section.chain), anchorPaths: section.anchors.map(resolve),
                crlPaths: (section.crls ?? []).map(resolve),
                retryAfterRefusal: .milliseconds(Int64(((section.retry_seconds ?? 300) * 1000).rounded())),
                revalidationInterval: .milliseconds(Int64(((section.revalidate_seconds ?? 3600) * 1000).rounded())),
                anchorDomains: anchorDomains, keyChange: keyChange)
        }
        let catalogSection = file.catalog ?? CatalogSection()
        if let timeout = catalogSection.timeout_ms, timeout < 1 {
            throw Error(path: path, message: "catalog.timeout_ms must be ≥ 1")
        }
        if let maxResults = catalogSection.max_results, maxResults < 1 {
            throw Error(path: path, message: "catalog.max_results must be ≥ 1")
        }
        let catalog = CatalogSettings(
            files: (catalogSection.files ?? []).map(resolve),
            timeout: .milliseconds(catalogSection.timeout_ms ?? 5000),
            maxResults: catalogSection.max_results ?? 10_000,
            cloudIRI: catalogSection.cloud_iri ?? "urn:intercloud:cloud:\(file.broker.cloud)")
        let client = XMPPClientConfiguration(
            jid: fullJID, password: password, host: file.xmpp.host, port: file.xmpp.port.map { UInt16($0) },
            tls: tls, streamManagement: file.xmpp.stream_management ?? true,
            maxInboundStanzaBytes: file.xmpp.max_stanza_bytes ?? 512 * 1024)
        var provider: ProviderSettings?
        if let section = file.provider {
            let pathOptions: Set<String> = ["data-dir", "image-dir", "instance-dir", "kernel", "initrd"]
            var options: [String: String] = [:]
            for (key, value) in section.options ?? [:] { options[key] = pathOptions.contains(key) ? resolve(value) : value }
            let seconds = section.refresh_seconds ?? 30
            guard seconds >= 1 else { throw Error(path: path, message: "provider.refresh_seconds must be ≥ 1") }
            guard ["simcloud", "libvirt", "ec2"].contains(section.driver) else {
                throw Error(path: path, message: "provider.driver must be simcloud, libvirt or ec2, not \"\(section.driver)\"")
            }
            provider = ProviderSettings(driver: section.driver, options: options, refresh: .seconds(seconds))
        }
        var negotiation = NegotiationStateMachine.Configuration()
        if let section = file.negotiation {
            if let value = section.step_timeout_seconds?.value {
                guard value.isFinite, value > 0 else { throw Error(path: path, message: "negotiation.step_timeout_seconds must be > 0") }
                negotiation.stepTimeout = value
            }
            if let value = section.max_attempts {
                guard value >= 1 else { throw Error(path: path, message: "negotiation.max_attempts must be ≥ 1") }
                negotiation.maxAttempts = value
            }
            if let value = section.decision_timeout_seconds?.value {
                guard value.isFinite, value > 0 else { throw Error(path: path, message: "negotiation.decision_timeout_seconds must be > 0") }
                negotiation.decisionTimeout = value
            }
            if let value = section.max_rounds {
                guard value >= 1 else { throw Error(path: path, message: "negotiation.max_rounds must be ≥ 1") }
                negotiation.maxRounds = value
            }
        }
        var negotiationAdmission = NegotiationAdmission()
        if let section = file.negotiation {
            let perPeer = section.max_open_per_peer ?? NegotiationAdmission.defaultMaxOpenPerPeer
            let all = section.max_open ?? NegotiationAdmission.defaultMaxOpen
            guard perPeer >= 1 else { throw Error(path: path, message: "negotiation.max_open_per_peer must be ≥ 1") }
            guard all >= perPeer else {
                throw Error(path: path, message: "negotiation.max_open (\(all)) must be ≥ negotiation.max_open_per_peer (\(perPeer))")
            }
            negotiationAdmission = NegotiationAdmission(maxOpenPerPeer: perPeer, maxOpen: all)
        }
        var configuration = BrokerConfiguration(
            broker: file.broker, xmpp: client,
            rooms: try jids(file.discovery?.rooms, field: "discovery.rooms"),
            directPeers: try jids(file.discovery?.peers, field: "discovery.peers").map(\.bare),
            approvalPatterns: file.discovery?.approve ?? [],
            nickname: file.discovery?.nickname ?? file.broker.cloud,
            databasePath: resolve(file.broker.database),
            sourcePath: path,
            trust: trust,
            catalog: catalog,
            provider: provider,
            policyFiles: (file.policy?.files ?? []).map(resolve))
        configuration.negotiation = negotiation
        configuration.negotiationAdmission = negotiationAdmission
        if let hours = file.discovery?.approval_wait_hours?.value {
            guard hours.isFinite, hours > 0 else { throw Error(path: path, message: "discovery.approval_wait_hours must be > 0") }
            configuration.approvalWait = .milliseconds(Int64((hours * 3_600_000).rounded()))
        }
        if let section = file.metering {
            if let value = section.sample_seconds?.value {
                guard value.isFinite, value >= 0.05 else { throw Error(path: path, message: "metering.sample_seconds must be ≥ 0.05") }
                configuration.metering.sampleInterval = value
            }
            if let value = section.period_seconds?.value {
                guard value.isFinite, value >= 1 else { throw Error(path: path, message: "metering.period_seconds must be ≥ 1") }
                configuration.metering.periodSeconds = value
            }
            if let value = section.tolerance_percent?.value {
                guard value.isFinite, value >= 0, value <= 100 else { throw Error(path: path, message: "metering.tolerance_percent must be within 0-100") }
                configuration.metering.tolerance.relative = Decimal(string: String(value))! / 100
            }
            if let value = section.max_calls_per_second {
                guard value >= 1 else { throw Error(path: path, message: "metering.max_calls_per_second must be ≥ 1") }
                configuration.metering.maxCallsPerSecond = Int64(value)
            }
        }
        configuration.migration = MigrationService.Settings(workDirectory: resolve(file.migration?.work_dir ?? "\(file.broker.database).migrations"))
        if let section = file.migration {
            if let host = section.transfer_host { configuration.migration.transferHost = host }
            configuration.migration.advertisedHost = section.advertised_host
            if let port = section.transfer_port {
                guard (0...65535).contains(port) else { throw Error(path: path, message: "migration.transfer_port \(port) is not a TCP port") }
                configuration.migration.transferPort = UInt16(port)
            }
            if let value = section.boot_timeout_seconds?.value {
                guard value.isFinite, value >= 1 else { throw Error(path: path, message: "migration.boot_timeout_seconds must be ≥ 1") }
                configuration.migration.bootTimeout = .milliseconds(Int64(value * 1000))
            }
            if let value = section.graceful_shutdown_seconds?.value {
                guard value.isFinite, value >= 0 else { throw Error(path: path, message: "migration.graceful_shutdown_seconds must be ≥ 0") }
                configuration.migration.gracefulShutdownSeconds = value
            }
            if let value = section.request_timeout_seconds?.value {
                guard value.isFinite, value >= 1 else { throw Error(path: path, message: "migration.request_timeout_seconds must be ≥ 1") }
                configuration.migration.requestTimeout = .milliseconds(Int64(value * 1000))
            }
            if let value = section.peer_check_seconds?.value {
                guard value.isFinite, value >= 1 else { throw Error(path: path, message: "migration.peer_check_seconds must be ≥ 1") }
                configuration.migration.peerCheckInterval = value
            }
            if let uri = section.live_uri {
                do { try MigrationMessage.checkLiveURI(uri) } catch {
                    throw Error(path: path, message: "migration.live_uri: \(error.message)")
                }
                configuration.migration.liveURI = uri
            }
            if let value = section.max_concurrent_per_agreement {
                guard value >= 1 else { throw Error(path: path, message: "migration.max_concurrent_per_agreement must be ≥ 1") }
                configuration.migration.maxConcurrentPerAgreement = value
            }
            for (peer, entry) in section.live_peers ?? [:] {
                guard let jid = try? JID(peer), jid.isBare, jid.localpart != nil else {
                    throw Error(path: path, message: "migration.live_peers: \"\(peer)\" is not a bare JID (user@domain)")
                }
                guard !entry.uris.isEmpty else { throw Error(path: path, message: "migration.live_peers.\"\(peer)\".uris is empty") }
                for uri in entry.uris {
                    do { try MigrationMessage.checkLiveURI(uri) } catch {
                        throw Error(path: path, message: "migration.live_peers.\"\(peer)\": \(error.message)")
                    }
                }
                configuration.migration.livePeers.peers[jid.description.lowercased()] = .init(
                    uris: entry.uris, allowsPlaintext: entry.allow_plaintext ?? false)
            }
        }
        if let section = file.federation {
            configuration.federation.templatePaths = (section.templates ?? []).map(resolve)
            if let value = section.credential_ttl_seconds?.value {
                guard value.isFinite, value >= 60 else { throw Error(path: path, message: "federation.credential_ttl_seconds must be ≥ 60") }
                configuration.federation.credentialTTL = value
            }
            if let value = section.boot_timeout_seconds?.value {
                guard value.isFinite, value >= 1 else { throw Error(path: path, message: "federation.boot_timeout_seconds must be ≥ 1") }
                configuration.federation.bootTimeout = value
            }
            if let value = section.teardown_retry_seconds?.value {
                guard value.isFinite, value >= 1 else { throw Error(path: path, message: "federation.teardown_retry_seconds must be ≥ 1") }
                configuration.federation.teardownRetryInterval = value
            }
            if let gate = section.call_gate {
                guard let colon = gate.lastIndex(of: ":"), let port = UInt16(gate[gate.index(after: colon)...]) else {
                    throw Error(path: path, message: "federation.call_gate must be host:port, e.g. \"127.0.0.1:8181\"")
                }
                let host = gate[..<colon].trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
                guard !host.isEmpty, host.allSatisfy({ $0.isHexDigit || $0 == "." || $0 == ":" }) else {
                    throw Error(path: path, message: "federation.call_gate needs an IP address (IPv4 or IPv6), not \"\(host)\"")
                }
                configuration.federation.callGate = .init(host: host, port: port)
            }
        }
        if let section = file.audit {
            if let value = section.aggregate_seconds?.value {
                guard value.isFinite, value >= 1 else { throw Error(path: path, message: "audit.aggregate_seconds must be ≥ 1") }
                configuration.audit.aggregation.window = value
            }
            if let value = section.max_tracked_senders {
                guard value >= 1 else { throw Error(path: path, message: "audit.max_tracked_senders must be ≥ 1") }
                configuration.audit.aggregation.maxKeys = value
            }
            if let value = section.retention_days?.value {
                guard value.isFinite, value >= 0 else { throw Error(path: path, message: "audit.retention_days must be ≥ 0") }
                configuration.audit.retention = value == 0 ? nil : value * 86_400
            }
        }
        if let section = file.automation {
            if let mode = section.mode {
                guard let value = AutomationService.Mode(rawValue: mode) else {
                    throw Error(path: path, message: "automation.mode must be off, propose or migrate, not \"\(mode)\"")
                }
                configuration.automation.mode = value
            }
            if let value = section.check_seconds?.value {
                guard value.isFinite, value >= 0.1 else { throw Error(path: path, message: "automation.check_seconds must be ≥ 0.1") }
                configuration.automation.checkInterval = .milliseconds(Int64(value * 1000))
            }
            if let triggers = section.triggers {
                configuration.automation.policy.triggers = Set(try triggers.map { name in
                    guard let trigger = AutomationPolicy.Trigger(rawValue: name) else {
                        throw Error(path: path, message: "automation.triggers: unknown trigger \"\(name)\" (capacity, failure, price)")
                    }
                    return trigger
                })
            }
            if let value = section.capacity_threshold_percent?.value {
                guard value.isFinite, value > 0, value <= 100 else { throw Error(path: path, message: "automation.capacity_threshold_percent must be within 0-100") }
                configuration.automation.policy.capacityThresholdPercent = Decimal(string: String(value))!
            }
            if let value = section.price_advantage_percent?.value {
                guard value.isFinite, value >= 0, value < 100 else { throw Error(path: path, message: "automation.price_advantage_percent must be within 0-100") }
                configuration.automation.policy.priceAdvantagePercent = Decimal(string: String(value))!
            }
            configuration.automation.policy.exclude = Set(section.exclude ?? [])
            if let value = section.max_per_round {
                guard value >= 1 else { throw Error(path: path, message: "automation.max_per_round must be ≥ 1") }
                configuration.automation.policy.maxPerRound = value
            }
        }
        return configuration
    }

    static func describe(_ error: DecodingError) -> String {
        func pathString(_ path: [any CodingKey]) -> String { path.map(\.stringValue).joined(separator: ".") }
        switch error {
        case .keyNotFound(let key, let context): return "missing \(pathString(context.codingPath + [key]))"
        case .typeMismatch(_, let context): return "wrong type for \(pathString(context.codingPath))"
        case .valueNotFound(_, let context): return "missing value for \(pathString(context.codingPath))"
        case .dataCorrupted(let context): return "invalid \(pathString(context.codingPath)): \(context.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}

/// Operator approval rules for direct peering requests.
public enum ApprovalRule {
    /// `*` matches any JID, `*@domain` any account of that domain, otherwise the bare JID exactly.
    public static func matches(_ jid: JID, patterns: [String]) -> Bool {
        let bare = jid.bare.description
        return patterns.contains { pattern in
            let pattern = pattern.lowercased()
            if pattern == "*" { return true }
            if pattern.hasPrefix("*@") { return jid.domainpart == String(pattern.dropFirst(2)) }
            return pattern == bare
        }
    }
}

/// A TOML number written either way (`60` or `0.5`): TOML keeps integers and floats apart, but
/// an operator writing seconds should not have to care.
public struct TOMLNumber: Codable, Sendable, Hashable {
    public var value: Double

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let double = try? container.decode(Double.self) {
            value = double
        } else {
            value = Double(try container.decode(Int.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }
}

/// Whether `host` names this machine: "localhost", 127.0.0.0/8 or ::1.
func isLoopback(_ host: String) -> Bool {
    let host = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")).lowercased()
    if host == "localhost" || host == "::1" { return true }
    let parts = host.split(separator: ".", omittingEmptySubsequences: false)
    return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
}

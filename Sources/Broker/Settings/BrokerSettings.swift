import Discovery
import Foundation
import Trust
import XMPP

/// Every key of a broker's configuration file, declared once (see `Setting`), grouped by the
/// module whose settings they are: the broker's own here, the protocol modules' in
/// `BrokerSettings+<Module>.swift`.
///
/// Where a default belongs to a domain module (a negotiation timer, a metering period, a
/// migration timeout), the declaration reads that module's own default (`MeteringService.Settings()`,
/// `NegotiationAdmission.defaultMaxOpen`), so the number is written once, next to the code that
/// uses it, and the reference, the parser and the module cannot disagree. Defaults that only the
/// configuration has (catalog limits, trust timers, audit retention) are written here, and the
/// settings structs take them from these declarations.
public enum BrokerSettings {
    /// Sections in the order of the reference.
    static let sections: [SettingsSection] = [
        Broker.section, XMPPSettings.section, Discovery.section, Trust.section, Catalog.section, Provider.section,
        PolicyFiles.section, Negotiation.section, Metering.section, Migration.section, Migration.livePeersSection,
        Automation.section, Federation.section, Backup.section, Audit.section,
    ]

    /// Sections a file must have.
    static let requiredSections: Set<String> = ["broker", "xmpp"]

    /// Every declared key, in the order of the reference.
    public static var declarations: [SettingDeclaration] { sections.flatMap { $0.settings.map(\.declaration) } }

    /// `[broker]`: the cloud this broker speaks for.
    enum Broker {
        static let cloud = Setting<String>(
            "broker", "cloud", required: true,
            rule: .matching("1-64 letters, digits, '.', '_' or '-'") { !$0.isEmpty && Announcement.isValidName($0) },
            "The cloud this broker speaks for (its XMPP domain names it on the wire too).")
        static let regions = Setting<[String]>(
            "broker", "regions", required: true, "Regions announced and described in the catalog (may be empty).")
        static let database = Setting<String>(
            "broker", "database", required: true, rule: .nonEmpty,
            "SQLite database: peer registry, every journal, the audit log.")
        static let load = Setting<Double>(
            "broker", "load", default: 0, rule: .within(0, 1), "Load announced (0 to 1) until provider drivers report a measured one.")

        static let section = SettingsSection("broker", "Required. Relative paths anywhere in the file are resolved against the file's directory.", [
            cloud.erased, regions.erased, database.erased, load.erased,
        ])
    }

    /// `[xmpp]`: the broker's account on its cloud's XMPP server.
    enum XMPPSettings {
        static let jid = Setting<String>(
            "xmpp", "jid", required: true,
            rule: .matching("an account JID (user@domain[/resource])") { (try? JID($0))?.localpart != nil },
            "The broker's account; without a resource, `/broker` is used.")
        static let password = Setting<String>("xmpp", "password", note: "none (password_file instead)", "The account's password.")
        static let passwordFile = Setting<String>(
            "xmpp", "password_file", note: "none (password instead)", "File holding the password (mode 0600); preferred to password.")
        static let host = Setting<String>(
            "xmpp", "host", note: "DNS SRV of the JID's domain", "Server to connect to.")
        static let port = Setting<Int>(
            "xmpp", "port", note: "DNS SRV, else 5222", rule: .within(1...65535), "Server's client port.")
        static let tls = Setting<String>(
            "xmpp", "tls", default: "required", rule: .oneOf(["required", "disabled-for-testing"]),
            "STARTTLS with the server's certificate verified; disabled-for-testing only with host on loopback.")
        static let caFile = Setting<String>(
            "xmpp", "ca_file", note: "required when tls = \"required\"", "CA the server's certificate must chain to.")
        static let streamManagement = Setting<Bool>(
            "xmpp", "stream_management", default: true, "XEP-0198: resumable sessions, at about half the throughput.")
        static let maxStanzaBytes = Setting<Int>(
            "xmpp", "max_stanza_bytes", default: 512 * 1024, rule: .atLeast(1),
            "Larger inbound stanzas are refused (not-acceptable).")

        static let section = SettingsSection("xmpp", "Required.", [
            jid.erased, password.erased, passwordFile.erased, host.erased, port.erased, tls.erased, caFile.erased,
            streamManagement.erased, maxStanzaBytes.erased,
        ])
    }

    /// `[discovery]`: how peers are found and who may peer without the operator.
    enum Discovery {
        /// JIDs only: a room or peer that is not one is named in the error.
        static let jids = SettingRule<[String]>(text: "JIDs") { list in
            list.first { (try? JID($0)) == nil }.map { "must be JIDs: \($0.tomlText) is not one" }
        }
        static let rooms = Setting<[String]>(
            "discovery", "rooms", default: [], rule: jids, "MUC rooms acting as Intercloud exchanges, joined at start.")
        static let peers = Setting<[String]>(
            "discovery", "peers", default: [], rule: jids, "Brokers asked to peer directly (roster subscription).")
        static let approve = Setting<[String]>(
            "discovery", "approve", default: [],
            "Peering requests from matching JIDs are approved at once (`*@cloud2.example`, `broker@cloud3.example`, `*`).")
        static let nickname = Setting<String>("discovery", "nickname", note: "broker.cloud", "Nickname in exchange rooms.")
        static let approvalWaitHours = Setting<Double>(
            "discovery", "approval_wait_hours", default: 168, rule: .above(0),
            "Other requests wait this long for `intercloud peers approve`, then are declined.")

        static let section = SettingsSection("discovery", "Optional.", [
            rooms.erased, peers.erased, approve.erased, nickname.erased, approvalWaitHours.erased,
        ])
    }

    /// `[trust]`: the broker's identity and the anchors it trusts peers by.
    enum Trust {
        static let key = Setting<String>(
            "trust", "key", required: true, rule: .nonEmpty,
            "PEM private key of the broker (mode 0600), as `intercloud certs issue` writes it.")
        static let chain = Setting<String>(
            "trust", "chain", required: true, rule: .nonEmpty,
            "PEM chain: the broker's leaf (its JID as XmppAddr) first, then intermediates.")
        static let anchors = Setting<[String]>(
            "trust", "anchors", required: true, rule: .nonEmpty, "CA files or directories trusted to vouch for peers.")
        static let crls = Setting<[String]>("trust", "crls", default: [], "CRL files or directories checked during verification.")
        static let retrySeconds = Setting<Double>(
            "trust", "retry_seconds", default: 300, rule: .atLeast(0),
            "Wait before handshaking again with a refused peer whose fingerprint is unchanged.")
        static let revalidateSeconds = Setting<Double>(
            "trust", "revalidate_seconds", default: 3600, rule: .atLeast(1),
            "How often anchors and CRLs are read again and every pin re-verified.")
        static let anchorDomains = Setting<SettingTable>(
            "trust", "anchor_domains", note: "every anchor vouches for any domain",
            rule: SettingRule(text: "anchor file = [JID domains]") { table in
                for (file, entry) in table.entries {
                    guard case .strings(let domains) = entry, !domains.isEmpty,
                          domains.allSatisfy({ !$0.isEmpty && !$0.contains("@") && !$0.contains("/") }) else {
                        return "must list JID domains such as \"cloud2.example\" or \"*.cloud2.example\" for \(file.tomlText)"
                    }
                }
                return nil
            },
            "Anchor file → the JID domains its CA may vouch for: `{ \"anchors/cloud2-ca.pem\" = [\"cloud2.example\"] }`.")
        static let keyChange = Setting<String>(
            "trust", "key_change", default: KeyChangePolicy.sameAnchor.rawValue, rule: .oneOf(KeyChangePolicy.allCases.map(\.rawValue)),
            "When a pinned peer may present a new key: its chain ends at the same anchor, or only after `intercloud trust allow --new-key`.")
        static let sessions = Setting<Bool>(
            "trust", "sessions", default: true,
            "Make session keys with peers that offer them and authenticate requests to them by HMAC instead of two signatures (docs/protocol/session.md).")

        static let section = SettingsSection(
            "trust", "Optional; without it the broker announces no fingerprint and refuses every federation request.", [
                key.erased, chain.erased, anchors.erased, crls.erased, retrySeconds.erased, revalidateSeconds.erased,
                anchorDomains.erased, keyChange.erased, sessions.erased,
            ])
    }

    /// `[catalog]`: static descriptions and the limits on peers' queries.
    enum Catalog {
        static let files = Setting<[String]>(
            "catalog", "files", default: [], "Static descriptions: Turtle `.ttl`, N-Triples `.nt`, RDF/XML `.rdf`/`.owl`/`.xml`.")
        static let timeoutMilliseconds = Setting<Int>(
            "catalog", "timeout_ms", default: 5000, rule: .atLeast(1), "Wall-clock budget of one peer query.")
        static let maxResults = Setting<Int>(
            "catalog", "max_results", default: 10_000, rule: .atLeast(1), "Most solutions (or triples) one answer may hold.")
        static let cloudIRI = Setting<String>(
            "catalog", "cloud_iri", note: "urn:intercloud:cloud:<broker.cloud>",
            "IRI naming this cloud in its generated self-description; static files should use the same.")

        static let section = SettingsSection("catalog", "Optional; every broker describes itself.", [
            files.erased, timeoutMilliseconds.erased, maxResults.erased, cloudIRI.erased,
        ])
    }

    /// `[policy]`: the peer policy files enforced (policies/README.md).
    enum PolicyFiles {
        static let files = Setting<[String]>(
            "policy", "files", required: true, "Peer policy files (see policies/README.md and `intercloud policy --help`).")

        static let section = SettingsSection("policy", "Optional; without it every trusted peer may query and nothing else is granted by policy.", [
            files.erased,
        ])
    }

    /// `[audit]`: refusal aggregation and retention.
    enum Audit {
        static let aggregateSeconds = Setting<Double>(
            "audit", "aggregate_seconds", default: RefusalAggregator.Settings().window, rule: .atLeast(1),
            "Refusals with the same sender, kind and reason within this window: the first row plus one summary.")
        static let maxTrackedSenders = Setting<Int>(
            "audit", "max_tracked_senders", default: RefusalAggregator.Settings().maxKeys, rule: .atLeast(1),
            "Senders tracked at once; beyond that a flood from many JIDs shares one row per window.")
        static let retentionDays = Setting<Double>(
            "audit", "retention_days", default: 90, rule: .atLeast(0), "Older audit events are deleted; 0 keeps them forever.")

        static let section = SettingsSection("audit", "Optional.", [
            aggregateSeconds.erased, maxTrackedSenders.erased, retentionDays.erased,
        ])
    }
}

extension Duration {
    /// Whole and fractional seconds, for defaults kept as `Duration` by their module.
    var settingSeconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

extension Decimal {
    var settingDouble: Double { NSDecimalNumber(decimal: self).doubleValue }
}

import ArgumentParser
import Broker
import Foundation
import Trust
import XMPP

/// `intercloud certs init-ca|issue|show`: make or inspect the PKI described in certs/README.md.
/// Thin over `Trust.CertificateFiles`, which is where the behaviour is tested.
struct CertsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certs",
        abstract: "Make a CA, issue broker certificates with an XmppAddr, show certificates.",
        discussion: """
            A broker needs a key and a certificate chain whose leaf names the broker's JID
            as an XmppAddr (RFC 6120 §13.7.1.4), and the CA certificates it trusts for
            peers. They go in the [trust] section of its configuration (paths relative to
            the configuration file):

              [trust]
              key = "certs/broker.key"            # 0600
              chain = "certs/broker-chain.pem"    # leaf, then intermediates
              anchors = ["certs/anchors/"]        # CA files or directories
              crls = ["certs/crls/"]              # optional
              # retry_seconds = 300      # pause before retrying a refused peer
              # revalidate_seconds = 3600    # re-read anchors/CRLs, re-check pins

            A small PKI for one cloud:

              intercloud certs init-ca --dir pki/root --cn "Intercloud Root"
              intercloud certs init-ca --dir pki/cloud1 --cn "cloud1 CA" \\
                  --parent pki/root
              intercloud certs issue --ca pki/cloud1 --config cloud1.toml
              intercloud certs show --config cloud1.toml

            `issue --config` takes the JID and the key and chain paths from the
            configuration; `show --config` loads what `intercloud serve` will load
            and prints the fingerprint the broker will announce.

            Give each partner the root (or the per-cloud CA) to list in its anchors. See
            certs/README.md.
            """,
        subcommands: [InitCA.self, Issue.self, Show.self]
    )

    struct InitCA: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "init-ca", abstract: "Create a root CA, or an intermediate under --parent (writes ca.key 0600, ca.pem).")

        @Option(help: "Directory for ca.key and ca.pem.") var dir: String
        @Option(help: "Common name of the CA.") var cn: String
        @Option(help: "Organization name.") var org: String?
        @Option(help: "Directory of the issuing CA; omit for a self-signed root.") var parent: String?
        @Option(help: "Validity in days.") var days: Int = 3650

        func run() async throws {
            let ca = try CertificateFiles.initCA(
                directory: dir, commonName: cn, organization: org, parentDirectory: parent, validityDays: days)
            print(CertificateSummary(ca.certificate).text)
        }
    }

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a broker key and certificate for a JID (writes broker.key 0600, broker-chain.pem).")

        @Option(help: "Directory of the issuing CA (ca.key, ca.pem).") var ca: String
        @Option(help: "The broker's bare JID, e.g. broker@cloud1.test (default with --config: its xmpp.jid).") var jid: String?
        @Option(help: "Output directory for broker.key and broker-chain.pem.") var out: String?
        @Option(name: .shortAndLong, help: "Broker configuration (TOML): write to its trust.key and trust.chain, for its JID.")
        var config: String?
        @Option(help: "Validity in days.") var days: Int = 365

        func validate() throws {
            if config == nil && (jid == nil || out == nil) { throw ValidationError("give --jid and --out, or --config") }
            if config != nil && out != nil { throw ValidationError("--out and --config exclude each other (the config names the files)") }
        }

        func run() async throws {
            if let out, let jid {
                let identity = try CertificateFiles.issue(caDirectory: ca, jid: jid, outputDirectory: out, validityDays: days)
                print(CertificateSummary(identity.leaf).text)
                return
            }
            let configuration = try loadConfiguration(config ?? "")
            guard let trust = configuration.trust else {
                throw ValidationError("\(configuration.sourcePath) has no [trust] section naming key and chain files")
            }
            let bare = jid ?? configuration.xmpp.jid.bare.description
            guard !FileManager.default.fileExists(atPath: trust.keyPath) else {
                throw ValidationError("\(trust.keyPath) exists; refusing to overwrite a broker key")
            }
            let identity = try CertificateFiles.loadCA(directory: ca).issueBrokerIdentity(
                jid: bare, notBefore: Date() - 300, validity: TimeInterval(days) * 86_400)
            try identity.save(keyPath: trust.keyPath, chainPath: trust.chainPath)
            print(CertificateSummary(identity.leaf).text)
            print("\nwrote \(trust.keyPath) (0600) and \(trust.chainPath)")
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the certificates in a PEM or DER file, or a broker's configured identity and anchors.")

        @Argument(help: "Certificate or chain file.") var path: String?
        @Option(name: .shortAndLong, help: "Broker configuration (TOML): show its trust.chain, the fingerprint it announces, and its anchors.")
        var config: String?
        @Flag(help: "Print JSON instead of text.") var json = false

        func validate() throws {
            if (path == nil) == (config == nil) { throw ValidationError("give a certificate file or --config, not both") }
        }

        func run() async throws {
            if let config { return try showConfigured(config) }
            let summaries = try CertificateFiles.show(path: path ?? "")
            if json {
                let encoder = JSONEncoder()
                encoder.dateEncodingStrategy = .iso8601
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(summaries), as: UTF8.self))
            } else {
                print(summaries.map(\.text).joined(separator: "\n\n"))
            }
        }

        /// Loads exactly what `intercloud serve` loads, so a mistake shows here first.
        func showConfigured(_ path: String) throws {
            let configuration = try loadConfiguration(path)
            guard let trust = configuration.trust else {
                throw ValidationError("\(path) has no [trust] section: the broker would announce no fingerprint and refuse all federation requests")
            }
            let identity = try BrokerIdentity.load(keyPath: trust.keyPath, chainPath: trust.chainPath)
            let anchors = try trust.loadAnchors()
            let bare = configuration.xmpp.jid.bare.description
            let matches = identity.jids.contains { $0.lowercased() == bare.lowercased() }
            if json {
                struct Shown: Encodable {
                    var jid: String, fingerprint: String, xmppAddrMatches: Bool
                    var chain: [CertificateSummary], anchors: [CertificateSummary], crls: Int
                }
                let encoder = JSONEncoder()
                encoder.dateEncodingStrategy = .iso8601
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                let shown = Shown(
                    jid: bare, fingerprint: identity.fingerprint, xmppAddrMatches: matches,
                    chain: identity.chain.map(CertificateSummary.init), anchors: anchors.anchors.map(CertificateSummary.init),
                    crls: anchors.crls.count)
                print(String(decoding: try encoder.encode(shown), as: UTF8.self))
                return
            }
            print("broker JID:   \(bare)")
            print("fingerprint:  \(identity.fingerprint)   (announced in presence; peers pin it)")
            print("XmppAddr:     \(identity.jids.joined(separator: ", "))" + (matches ? "" : "   <- does NOT name \(bare): peers will refuse it"))
            print("\nchain (\(trust.chainPath)):\n")
            print(identity.chain.map { CertificateSummary($0).text }.joined(separator: "\n\n"))
            print("\nanchors (\(anchors.anchors.count)), CRLs: \(anchors.crls.count)")
            for anchor in anchors.anchors { print("  " + CertificateSummary(anchor).subject) }
        }
    }
}

import ArgumentParser
import Foundation
import Trust

/// `intercloud certs init-ca|issue|show`: make or inspect the PKI described in certs/README.md.
/// Thin over `Trust.CertificateFiles`, which is where the behaviour is tested.
struct CertsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certs",
        abstract: "Make a CA, issue broker certificates with an XmppAddr, show certificates.",
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
        @Option(help: "The broker's bare JID, e.g. broker@cloud1.test.") var jid: String
        @Option(help: "Output directory.") var out: String
        @Option(help: "Validity in days.") var days: Int = 365

        func run() async throws {
            let identity = try CertificateFiles.issue(caDirectory: ca, jid: jid, outputDirectory: out, validityDays: days)
            print(CertificateSummary(identity.leaf).text)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the certificates in a PEM or DER file.")

        @Argument(help: "Certificate or chain file.") var path: String
        @Flag(help: "Print JSON instead of text.") var json = false

        func run() async throws {
            let summaries = try CertificateFiles.show(path: path)
            if json {
                let encoder = JSONEncoder()
                encoder.dateEncodingStrategy = .iso8601
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(summaries), as: UTF8.self))
            } else {
                print(summaries.map(\.text).joined(separator: "\n\n"))
            }
        }
    }
}

import ArgumentParser
import Broker
import Foundation
import Policy

struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Check peer policy files and explain how a request would be decided.",
        discussion: """
            Policy files (TOML, see policies/README.md) say what each peer or peer group may do:
            entitlements (query, federate, migrate-in, migrate-out, migrate-live), quotas, rate cards, SLAs,
            allowed regions and validity periods. A broker enforces the files listed in the
            [policy] section of its configuration:

              [policy]
              files = ["policies/cloud1.toml"]

            Today the broker uses them for the catalog query entitlement; negotiation, migration
            and federation will check them too.

              intercloud policy check policies/*.toml
              intercloud policy explain --peer broker@cloud2.example --request query --config cloud1.toml
              intercloud policy explain --peer broker@cloud2.example --request migrate-in \\
                  --instance-type m1.small --vcpu 2 --memory-gib 4 --disk-gib 20 --region eu-west policies/*.toml
            """,
        subcommands: [Check.self, Explain.self])

    /// Policy files from the arguments, else from the configuration's [policy] section.
    static func files(_ files: [String], config: String?) throws -> [String] {
        if !files.isEmpty { return files }
        guard let config else { throw ValidationError("give policy files, or --config with a [policy] section") }
        let configuration = try loadConfiguration(config)
        guard !configuration.policyFiles.isEmpty else { throw ValidationError("\(config) has no [policy] files") }
        return configuration.policyFiles
    }

    static func load(_ files: [String]) throws -> PolicySet {
        do { return try PolicyLoader.load(paths: files) } catch {
            FileHandle.standardError.write(Data("\(error)\n".utf8))
            throw ExitCode(1)
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate policy files; every problem is reported as file:line: field: message.")

        @Argument(help: "Policy files (default: the [policy] files of --config).")
        var files: [String] = []

        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).")
        var config: String?

        func run() async throws {
            let set = try PolicyCommand.load(try PolicyCommand.files(files, config: config))
            printTable(
                headers: ["ENTRY", "MATCH", "ENTITLEMENTS", "VALID", "SOURCE"],
                rows: set.peers.map { peer in
                    [peer.name, peer.match.map(\.description).joined(separator: ","),
                     peer.entitlements.map(\.rawValue).sorted().joined(separator: ","),
                     validity(peer.validity), peer.source]
                })
            print("ok: \(set.peers.count) peer entries")
        }

        func validity(_ period: ValidityPeriod) -> String {
            let formatter = ISO8601DateFormatter()
            return (period.from.map { formatter.string(from: $0) } ?? "always") + " .. "
                + (period.until.map { formatter.string(from: $0) } ?? "open")
        }
    }

    struct Explain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show which entry governs a peer and whether a request would be allowed, with reasons.")

        enum RequestKind: String, ExpressibleByArgument, CaseIterable {
            case query, federate, migrateIn = "migrate-in", migrateOut = "migrate-out"
        }

        @Option(help: "The peer's JID.") var peer: String
        @Option(help: "query, federate, migrate-in or migrate-out.") var request: RequestKind = .query
        @Option(help: "Service (federate).") var service: String = "service"
        @Option(help: "Instance type (migrate).") var instanceType: String = "default"
        @Option(help: "vCPUs requested.") var vcpu: Int = 1
        @Option(help: "Memory in GiB.") var memoryGib: String = "1"
        @Option(help: "Disk in GiB.") var diskGib: String = "10"
        @Option(help: "Region (migrate).") var region: String = "default"
        @Option(help: "Data transferred in GB (migrate).") var transferGb: String = "0"
        @Argument(help: "Policy files (default: the [policy] files of --config).") var files: [String] = []
        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).") var config: String?

        func decimal(_ text: String, _ name: String) throws -> Decimal {
            guard let value = Decimal(string: text), value >= 0 else { throw ValidationError("--\(name) must be a number ≥ 0") }
            return value
        }

        func run() async throws {
            let set = try PolicyCommand.load(try PolicyCommand.files(files, config: config))
            let memory = try decimal(memoryGib, "memory-gib"), disk = try decimal(diskGib, "disk-gib")
            let spec = MigrationSpec(instanceType: instanceType, vcpu: vcpu, memoryGiB: memory, diskGiB: disk, region: region,
                                     transferGB: try decimal(transferGb, "transfer-gb"))
            let policyRequest: PolicyRequest = switch request {
            case .query: .query
            case .federate: .federate(service: service, size: ResourceAmount(instances: 1, vcpu: vcpu, memoryGiB: memory, storageGiB: disk))
            case .migrateIn: .migrateIn(spec)
            case .migrateOut: .migrateOut(spec)
            }
            let explanation = set.explain(policyRequest, peer: peer, now: Date())
            print(explanation.description)
            if !explanation.decision.isAllowed { throw ExitCode(1) }
        }
    }
}

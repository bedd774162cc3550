import ArgumentParser
import Broker
import Foundation
import Negotiation
import Policy
import Storage
import Trust
import XMPP

/// Opens the broker database named by a configuration, or explains why it cannot.
func openBrokerDatabase(_ configuration: BrokerConfiguration) throws -> NegotiationStore {
    guard FileManager.default.fileExists(atPath: configuration.databasePath) else {
        throw ValidationError("no database at \(configuration.databasePath): has this broker run yet?")
    }
    return NegotiationStore(database: try IntercloudDatabase.open(path: configuration.databasePath, schema: BrokerNode.schema))
}

func jsonEncoder() -> JSONEncoder {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    return encoder
}

struct NegotiateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "negotiate",
        abstract: "Negotiate an agreement with a trusted peer (this broker as consumer).",
        discussion: """
            Asks the running broker (`intercloud serve --config FILE`) to negotiate with --peer
            over urn:intercloud:negotiation:0 and follows it until FINALIZED or TERMINATED.
            States: REQUESTED → (OFFERED → ACCEPTED)? → AGREED → VERIFIED → FINALIZED, or
            TERMINATED with a reason. The provider decides with its policy files: it agrees
            to terms its policy allows, counters with its own rate card, quota and SLA
            otherwise, or terminates with the policy's reasons. This broker accepts an offer
            unless its own policy entry for the peer refuses it (sla_required, validity).

            Prices left at 0 ask the provider for its rate card (it counters with it).
              intercloud negotiate --config cloud1.toml --peer broker@cloud2.example \\
                --entitle query,migrate-in --instances 2 --vcpu 4 --memory-gib 8 \\
                --storage-gib 80 --transfer-gb 50 --types sim.small,sim.medium --days 30

            Exit status 0 when FINALIZED, 1 when TERMINATED. The agreement is then listed by
            `intercloud agreement list` and can be exported for offline verification.
            """)

    @Option(name: .shortAndLong, help: "Broker configuration file (TOML).")
    var config: String

    @Option(help: "Provider broker JID (bare).")
    var peer: String

    @Option(help: "Comma-separated entitlements to ask for: query, federate, migrate-in, migrate-out, migrate-live (live migration; with migrate-in).")
    var entitle: String = "query,migrate-in"

    @Option(help: "Instances the agreement allows.") var instances: Int = 1
    @Option(help: "vCPUs the agreement allows.") var vcpu: Int = 2
    @Option(help: "Memory in GiB.") var memoryGib: String = "4"
    @Option(help: "Storage in GiB.") var storageGib: String = "40"
    @Option(help: "Transfer in GB.") var transferGb: String = "10"
    @Option(help: "Comma-separated instance types (empty: any priced type).") var types: String = ""
    @Option(help: "Agreement length in days from now.") var days: Int = 30
    @Option(help: "Currency of the prices (ISO 4217).") var currency: String = "EUR"
    @Option(help: "Comma-separated regions the workloads may be placed in (empty: anywhere).") var regions: String = ""
    @Option(help: "Seconds to wait for the outcome.") var timeout: Double = 60
    @Option(help: "Output format: table or json.") var output: OutputFormat = .table

    func validate() throws {
        for value in [memoryGib, storageGib, transferGb] where Decimal(string: value).map({ $0 >= 0 }) != true {
            throw ValidationError("amounts must be decimal numbers ≥ 0, not '\(value)'")
        }
        guard instances >= 0, vcpu >= 0, days >= 1 else { throw ValidationError("--instances, --vcpu must be ≥ 0 and --days ≥ 1") }
        _ = try entitlements()
    }

    func entitlements() throws -> Set<Entitlement> {
        Set(try entitle.split(separator: ",").map { name in
            guard let value = Entitlement(rawValue: String(name).trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("unknown entitlement '\(name)' (\(Entitlement.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            return value
        })
    }

    func run() async throws {
        let configuration = try loadConfiguration(config)
        let store = try openBrokerDatabase(configuration)
        let peerJID = try JID(peer).bare.description
        let now = Date()
        let start = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))
        var sla = ServiceLevel(availabilityPercent: 0, maxMigrationDowntimeSeconds: 86_400, support: "")
        if !configuration.policyFiles.isEmpty, let entry = try PolicyLoader.load(paths: configuration.policyFiles).policy(for: peerJID, at: now),
            let required = entry.slaRequired
        {
            sla = required
        }
        let list = { (text: String) in text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
        let terms = Terms(
            resources: ResourceAmount(
                instances: instances, vcpu: vcpu, memoryGiB: Decimal(string: memoryGib)!, storageGiB: Decimal(string: storageGib)!,
                transferGB: Decimal(string: transferGb)!),
            instanceTypes: list(types),
            period: ValidityPeriod(from: start, until: start.addingTimeInterval(TimeInterval(days) * 86_400)),
            rates: RateCard(currency: currency), sla: sla, entitlements: try entitlements(),
            placement: Placement(regions: list(regions)))
        let id = "neg-\((0..<8).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined())"
        try store.requestNegotiation(id: id, peer: peerJID, terms: terms, now: now)
        if output == .table { print("negotiation \(id) with \(peerJID): queued for the broker") }
        var lastState = ""
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let row = try store.negotiation(id), row.state != lastState {
                lastState = row.state
                if output == .table { print("  \(row.state)\(row.reason.map { ": \($0)" } ?? "")") }
                if row.state == NegotiationState.finalized.rawValue || row.state == NegotiationState.terminated.rawValue { break }
            }
            if lastState.isEmpty, Date().timeIntervalSince(now) > 10 {
                throw ValidationError("the broker did not take the request within 10 s: is `intercloud serve --config \(config)` running?")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let agreement = try store.agreement(negotiationID: id)
        switch output {
        case .json:
            var object: [String: String] = ["negotiation": id, "peer": peerJID, "state": lastState]
            if let reason = try store.negotiation(id)?.reason { object["reason"] = reason }
            if let agreement { object["agreement"] = agreement.agreement.id }
            print(String(decoding: try jsonEncoder().encode(object), as: UTF8.self))
        case .table:
            if let agreement, lastState == NegotiationState.finalized.rawValue {
                print("")
                printAgreement(agreement)
            }
        }
        if lastState != NegotiationState.finalized.rawValue {
            if lastState.isEmpty || lastState != NegotiationState.terminated.rawValue, output == .table {
                print("no outcome within \(Int(timeout)) s (state \(lastState.isEmpty ? "not started" : lastState)); the broker goes on: see `intercloud negotiations`")
            }
            throw ExitCode(1)
        }
    }
}

struct NegotiationsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "negotiations",
        abstract: "List this broker's negotiations (newest first), with their state and reason.")

    @Option(name: .shortAndLong, help: "Broker configuration file (TOML).") var config: String
    @Option(help: "Only negotiations with this peer (bare JID).") var peer: String?
    @Option(help: "Output format: table or json.") var output: OutputFormat = .table

    func run() async throws {
        let store = try openBrokerDatabase(try loadConfiguration(config))
        let rows = try store.negotiations(peer: peer.map { try JID($0).bare.description })
        switch output {
        case .json: print(String(decoding: try jsonEncoder().encode(rows), as: UTF8.self))
        case .table:
            let format = ISO8601DateFormatter()
            printTable(
                headers: ["ID", "PEER", "ROLE", "STATE", "UPDATED", "REASON"],
                rows: rows.map { [$0.id, $0.peer, $0.role, $0.state, format.string(from: $0.updatedAt), $0.reason ?? ""] })
        }
    }
}

func printAgreement(_ stored: NegotiationStore.StoredAgreement) {
    let a = stored.agreement
    let t = a.terms
    let format = ISO8601DateFormatter()
    print("agreement   \(a.id) (\(stored.state.rawValue))")
    print("negotiation \(a.negotiationID)")
    print("provider    \(a.provider)   signed: yes")
    print("consumer    \(a.consumer)   signed: \(stored.consumerSignature == nil ? "no" : "yes")")
    print("period      \(t.period.from.map(format.string) ?? "-") .. \(t.period.until.map(format.string) ?? "-")")
    print("entitles    \(t.entitlements.map(\.rawValue).sorted().joined(separator: ", "))")
    let r = t.resources
    print("resources   \(r.instances) instances, \(r.vcpu) vCPU, \(r.memoryGiB) GiB memory, \(r.storageGiB) GiB storage, \(r.transferGB) GB transfer")
    if !t.instanceTypes.isEmpty { print("types       \(t.instanceTypes.sorted().joined(separator: ", "))") }
    if !t.placement.regions.isEmpty || !t.placement.jurisdictions.isEmpty {
        print("placement   regions \(t.placement.regions.joined(separator: ", ")) jurisdictions \(t.placement.jurisdictions.joined(separator: ", "))")
    }
    print("sla         \(t.sla.availabilityPercent)% availability, migration downtime ≤ \(t.sla.maxMigrationDowntimeSeconds) s, support \(t.sla.support.isEmpty ? "-" : t.sla.support)")
    print("rates (\(t.rates.currency)):")
    for type in t.rates.instanceHour.keys.sorted() { print("  \(type.padding(toLength: 24, withPad: " ", startingAt: 0)) \(t.rates.instanceHour[type]!) per hour") }
    print("  \("transfer".padding(toLength: 24, withPad: " ", startingAt: 0)) \(t.rates.perGBTransferred) per GB")
    print("  \("storage".padding(toLength: 24, withPad: " ", startingAt: 0)) \(t.rates.perGBMonthStored) per GB-month")
    if t.rates.perThousandCalls != 0 {
        print("  \("federated calls".padding(toLength: 24, withPad: " ", startingAt: 0)) \(t.rates.perThousandCalls) per 1000")
    }
}

struct AgreementCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agreement",
        abstract: "List, show, export and verify signed agreements.",
        discussion: """
            An agreement is signed by the provider and countersigned by the consumer over its
            canonical text (format urn:intercloud:agreement:0). `export` writes a file holding
            that text, both signatures and both certificate chains; `verify` checks such a file
            offline, without any broker:
              intercloud agreement export agr-1a2b3c4d --config cloud2.toml --out agr.json
              intercloud agreement verify agr.json [--anchors certs/root.pem]
            """,
        subcommands: [List.self, Show.self, Export.self, Verify.self],
        defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List agreements (newest first).")
        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).") var config: String
        @Option(help: "Only agreements with this peer (bare JID).") var peer: String?
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table

        func run() async throws {
            let store = try openBrokerDatabase(try loadConfiguration(config))
            let agreements = try store.agreements(peer: peer.map { try JID($0).bare.description })
            switch output {
            case .json:
                struct Item: Encodable {
                    var state: String
                    var agreement: Agreement
                    var countersigned: Bool
                }
                let items = agreements.map { Item(state: $0.state.rawValue, agreement: $0.agreement, countersigned: $0.consumerSignature != nil) }
                print(String(decoding: try jsonEncoder().encode(items), as: UTF8.self))
            case .table:
                let format = ISO8601DateFormatter()
                printTable(
                    headers: ["ID", "STATE", "PROVIDER", "CONSUMER", "ENTITLES", "UNTIL"],
                    rows: agreements.map {
                        [$0.agreement.id, $0.state.rawValue, $0.agreement.provider, $0.agreement.consumer,
                         $0.agreement.terms.entitlements.map(\.rawValue).sorted().joined(separator: ","),
                         $0.agreement.terms.period.until.map(format.string) ?? "-"]
                    })
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one agreement's terms.")
        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).") var config: String
        @Argument(help: "Agreement ID.") var id: String

        func run() async throws {
            let store = try openBrokerDatabase(try loadConfiguration(config))
            guard let stored = try store.agreement(id) else { throw ValidationError("no agreement \(id)") }
            printAgreement(stored)
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a signed agreement file for offline verification.")
        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).") var config: String
        @Option(help: "Output file (default: standard output).") var out: String?
        @Argument(help: "Agreement ID.") var id: String

        func run() async throws {
            let store = try openBrokerDatabase(try loadConfiguration(config))
            guard let stored = try store.agreement(id) else { throw ValidationError("no agreement \(id)") }
            let data = try SignedAgreementDocument(stored: stored).encoded()
            if let out {
                try data.write(to: URL(fileURLWithPath: out), options: .atomic)
                print("wrote \(out)")
            } else {
                print(String(decoding: data, as: UTF8.self))
            }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a signed agreement file: canonical text, both signatures, both certificates.",
            discussion: "Exit status 0 when every check passes, 1 otherwise.")
        @Argument(help: "File written by `agreement export`.") var file: String
        @Option(parsing: .singleValue, help: "CA certificate file or directory; with it, both chains must validate (repeatable).")
        var anchors: [String] = []
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table

        func run() async throws {
            let data: Data
            do { data = try Data(contentsOf: URL(fileURLWithPath: file)) } catch { throw ValidationError("cannot read \(file)") }
            let document: SignedAgreementDocument
            do { document = try SignedAgreementDocument.decode(data) } catch {
                throw ValidationError("\(file) is not a signed agreement file: \(error)")
            }
            let trustAnchors = anchors.isEmpty ? nil : try TrustAnchors.load(anchorPaths: anchors)
            let checks = await document.verify(anchors: trustAnchors)
            let valid = checks.allSatisfy(\.passed)
            switch output {
            case .json:
                struct Report: Encodable {
                    var file: String
                    var agreement: String
                    var valid: Bool
                    var checks: [SignedAgreementDocument.Check]
                }
                print(String(decoding: try jsonEncoder().encode(Report(file: file, agreement: document.agreement.id, valid: valid, checks: checks)), as: UTF8.self))
            case .table:
                print("agreement \(document.agreement.id) between \(document.agreement.provider) (provider) and \(document.agreement.consumer) (consumer)")
                for check in checks { print("  \(check.passed ? "ok  " : "FAIL") \(check.name): \(check.detail)") }
                print(valid ? "VALID" : "INVALID")
            }
            if !valid { throw ExitCode(1) }
        }
    }
}

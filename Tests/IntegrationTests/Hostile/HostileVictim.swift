import Broker
import Discovery
import Foundation
import GRDB
import Metering
import Migration
import Negotiation
import Providers
import Storage
import TestSupport
import Trust
import XMPP

/// The victim of the hostile-peer harness: a real `intercloud serve` process (the binary built next
/// to this test bundle, as `CrashTestClouds` runs it) over the shared test Prosody, with its own
/// PKI leaf, policy file, provider and short deadlines, and read-only access to its database: what
/// the tests assert on is what the process wrote.
final class HostileVictim: @unchecked Sendable {
    // @unchecked: used by one test at a time (serialized suite); `pid` and the reader are only
    // touched from that test's task.
    let jid: String
    let config: String
    let databasePath: String
    let dataDirectory: URL
    let directory: URL
    let log: URL
    let binary: String
    private(set) var pid: pid_t = 0
    private var reader: DatabasePool?

    /// The full JID the victim's broker runs as (`[xmpp] jid`).
    var fullJID: JID { try! JID(jid + "/broker") }

    /// Writes the victim's key, chain, policy and configuration into `directory`. `provider` is its
    /// `[provider]` section (and anything else it needs), `extraTOML` more sections.
    init(
        server: TestProsody, directory: URL, account: (jid: String, password: String), root: CertificateAuthority, rootPath: String,
        room: String, policy: String, provider: String, extraTOML: String
    ) throws {
        binary = try CrashTestClouds.intercloudBinary()
        self.directory = directory
        jid = account.jid
        let identity = try root.issueBrokerIdentity(jid: account.jid, notBefore: Date() - 86_400)
        try identity.save(
            keyPath: directory.appendingPathComponent("victim.key").path, chainPath: directory.appendingPathComponent("victim-chain.pem").path)
        try policy.write(to: directory.appendingPathComponent("victim-policy.toml"), atomically: true, encoding: .utf8)
        databasePath = directory.appendingPathComponent("victim.sqlite").path
        dataDirectory = directory.appendingPathComponent("victim-data")
        log = directory.appendingPathComponent("victim-serve.log")
        let toml = """
            [broker]
            cloud = "victim"
            regions = ["victim-a"]
            database = "\(databasePath)"

            [xmpp]
            jid = "\(account.jid)/broker"
            password = "\(account.password)"
            host = "\(server.address)"
            port = \(server.port)
            ca_file = "\(server.caFile)"

            [discovery]
            rooms = ["\(room)"]

            [trust]
            key = "victim.key"
            chain = "victim-chain.pem"
            anchors = ["\(rootPath)"]

            [policy]
            files = ["victim-policy.toml"]

            \(provider.replacingOccurrences(of: "%DATA%", with: dataDirectory.path))

            \(extraTOML)
            """
        config = directory.appendingPathComponent("victim.toml").path
        try toml.write(toFile: config, atomically: true, encoding: .utf8)
    }

    // MARK: the process

    func start() throws {
        pid = try ChildProcess.spawn(
            [binary, "serve", "--config", config], environment: ProcessInfo.processInfo.environment, output: log, append: true)
    }

    /// SIGTERM, as an operator would, then SIGKILL if it lingers.
    func stop() async {
        guard pid > 0 else { return }
        kill(pid, SIGTERM)
        if (try? await ChildProcess.wait(pid, timeout: .seconds(15))) ?? nil == nil {
            kill(pid, SIGKILL)
            _ = try? await ChildProcess.wait(pid, timeout: .seconds(10))
        }
        pid = 0
    }

    /// Whether the process still runs (a hostile peer must not have taken it down).
    var isRunning: Bool {
        guard pid > 0 else { return false }
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == 0
    }

    /// Runs the CLI against the victim's configuration; returns its output, or throws with it
    /// (with `allowFailure`, returns its output whatever its exit status).
    @discardableResult
    func cli(_ arguments: [String], timeout: Duration = .seconds(120), allowFailure: Bool = false) async throws -> String {
        let name = "cli-\(UUID().uuidString.prefix(8))"
        let output = directory.appendingPathComponent("\(name).out"), errors = directory.appendingPathComponent("\(name).err")
        defer { for file in [output, errors] { try? FileManager.default.removeItem(at: file) } }
        let child = try ChildProcess.spawn(
            [binary] + arguments + ["--config", config], environment: ProcessInfo.processInfo.environment, output: output, errors: errors,
            append: false)
        let status = try await ChildProcess.wait(child, timeout: timeout)
        var text = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
        guard let status else {
            kill(child, SIGKILL)
            _ = try await ChildProcess.wait(child, timeout: .seconds(10))
            throw CrashTestError("intercloud \(arguments.joined(separator: " ")) did not finish in \(timeout): \(text)")
        }
        guard status == 0 || allowFailure else {
            text += (try? String(contentsOf: errors, encoding: .utf8)) ?? ""
            throw CrashTestError("intercloud \(arguments.joined(separator: " ")) exited with status \(status): \(text)")
        }
        return text
    }

    func tail(lines: Int = 40) -> String {
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        return "--- victim log\n" + text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    /// Whether the victim's log has a line containing `text`.
    func logged(_ text: String) -> Bool { loggedCount(text) > 0 }

    /// How many lines of the victim's log contain `text`.
    func loggedCount(_ text: String) -> Int {
        ((try? String(contentsOf: log, encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.contains(text) }.count
    }

    // MARK: what it wrote (read-only)

    /// The victim's database, read-only (the process owns its schema), once it exists.
    var database: DatabasePool? {
        if let reader { return reader }
        guard FileManager.default.fileExists(atPath: databasePath),
            let opened = try? IntercloudDatabase.open(path: databasePath, schema: [], readOnly: true)
        else { return nil }
        reader = opened
        return opened
    }

    /// Audit events as the victim wrote them, newest first (summary rows of aggregated refusals
    /// appear once their window has ended; `count` says how many refusals a row stands for).
    func audit(peer: String? = nil, kind: String? = nil) -> [AuditEvent] {
        guard let database else { return [] }
        return (try? AuditLog(database: database).events(matching: AuditQuery(peer: peer, kind: kind, limit: 10_000))) ?? []
    }

    /// How many refusals the audit counts for `peer`, `kind` and `reason` (rows × their counts).
    func refusals(peer: String, kind: String, reason: String) -> Int {
        audit(peer: peer, kind: kind).filter { $0.reason == reason && $0.outcome == .refused }.reduce(0) { $0 + $1.count }
    }

    var journal: MigrationJournal? { database.map(MigrationJournal.init(database:)) }
    var negotiations: NegotiationStore? { database.map(NegotiationStore.init(database:)) }
    var ledger: UsageLedger? { database.map { UsageLedger(database: $0) } }

    /// Every usage ledger row the victim holds with `peer`, in either role.
    func ledgerEntries(peer: String) -> [LedgerEntry] {
        (try? ledger?.entries(peer: peer, overlapping: MeteringPeriod(from: Date(timeIntervalSince1970: 0), until: Date().addingTimeInterval(3650 * 86_400)))) ?? []
    }

    /// Peers the victim has a row for.
    var peerRows: [PeerRecord] { (database.flatMap { try? PeerRegistry(database: $0).all() }) ?? [] }

    /// Whether the victim shows `peer` online and trusted.
    func trusts(_ peer: String) -> Bool {
        guard let database else { return false }
        let registry = PeerRegistry(database: database)
        guard let record = (try? registry.all())?.first(where: { $0.jid == peer }) else { return false }
        return record.online && (try? registry.trustStatus(of: record)) == .trusted
    }

    /// Destination migrations not finished (they hold quota and capacity at the victim).
    var unfinishedDestinationMigrations: [String] {
        ((try? journal?.unfinished()) ?? []).filter { $0.role == .destination }.map(\.migrationID)
    }

    /// Instances of the victim's provider, from the CLI (a separate process, as an operator sees them).
    func instances() async throws -> [Instance] {
        try CrashTestClouds.decoder.decode([Instance].self, from: Data(try await cli(["provider", "instances", "--output", "json"]).utf8))
    }

    func images() async throws -> [Image] {
        try CrashTestClouds.decoder.decode([Image].self, from: Data(try await cli(["provider", "images", "--output", "json"]).utf8))
    }
}

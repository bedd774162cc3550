import Clusters
import Foundation
import TestSupport
import Testing

/// `intercloud cluster` as operators run it: the built executable, a broker configuration with a
/// SimCloud `[provider]` and the repository's templates, `--output json` parsed back.
@Suite("intercloud cluster")
struct ClusterCommandTests {
    static func intercloudBinary() throws -> String { try IntercloudExecutable.path() }
    static func intercloud(_ arguments: [String]) throws -> IntercloudExecutable.Run { try IntercloudExecutable.run(arguments) }

    static func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(type, from: Data(text.utf8))
    }

    func writeConfiguration(_ directory: TemporaryDirectory, bootDelayMilliseconds: Int = 0) throws -> String {
        try directory.file("cloud1.toml", """
            [broker]
            cloud = "cloud1"
            regions = []
            database = "state/broker.sqlite"

            [xmpp]
            jid = "broker@cloud1.test"
            password = "unused"
            tls = "disabled-for-testing"
            host = "127.0.0.1"

            [provider]
            driver = "simcloud"
            options = { data-dir = "sim", boot-delay-ms = "\(bootDelayMilliseconds)", shutdown-delay-ms = "0", terminate-delay-ms = "0" }

            [federation]
            templates = ["\(repositoryRoot.appendingPathComponent("templates").path)"]
            """)
    }

    @Test("launch, list, show, stop, start, teardown with --output json: the cluster's state as the journal has it")
    func lifecycleAsJSON() throws {
        let directory = try TemporaryDirectory()
        let config = try writeConfiguration(directory)
        let shop = repositoryRoot.appendingPathComponent("clusters/shop.toml").path

        let check = try Self.intercloud(["cluster", "check", shop, "--config", config, "--output", "json"])
        #expect(check.status == 0, "\(check.stderr)")
        #expect(check.stdout.contains("\"launchOrder\""))

        let launch = try Self.intercloud(["cluster", "launch", shop, "--config", config, "--output", "json"])
        #expect(launch.status == 0, "\(launch.stderr)")
        let launched = try Self.decode(ClusterStatus.self, launch.stdout)
        #expect(launched.name == "shop")
        #expect(launched.phase == .running)
        #expect(launched.servers.map(\.unit) == ["db-1", "web-1", "web-2"])
        #expect(launched.servers.allSatisfy { $0.state == .running && $0.instanceID != nil })
        // Progress goes to stderr, so stdout stays JSON.
        #expect(launch.stderr.contains("shop db-1: create"))

        let list = try Self.intercloud(["cluster", "list", "--config", config, "--output", "json"])
        #expect(try Self.decode([ClusterStatus].self, list.stdout).map { [$0.name, $0.phase.rawValue] } == [["shop", "running"]])

        struct Detail: Decodable { var cluster: ClusterStatus; var steps: [ClusterStepRecord] }
        let show = try Self.intercloud(["cluster", "show", "shop", "--config", config, "--output", "json"])
        let detail = try Self.decode(Detail.self, show.stdout)
        #expect(detail.cluster.id == launched.id)
        #expect(detail.steps.map(\.step).filter { $0.hasPrefix("create ") } == ["create db-1", "create web-1", "create web-2"])

        let stop = try Self.intercloud(["cluster", "stop", "shop", "--config", config, "--output", "json", "--quiet"])
        #expect(stop.status == 0, "\(stop.stderr)")
        #expect(try Self.decode(ClusterStatus.self, stop.stdout).phase == .stopped)
        #expect(stop.stderr.isEmpty)

        let start = try Self.intercloud(["cluster", "start", "shop", "--config", config, "--output", "json", "-q"])
        #expect(try Self.decode(ClusterStatus.self, start.stdout).phase == .running)

        // What the cloud itself says, through `intercloud provider`.
        struct Listed: Decodable { var name: String; var state: String }
        let instances = try Self.decode(
            [Listed].self, try Self.intercloud(["provider", "instances", "--config", config, "--output", "json"]).stdout)
        #expect(Set(instances.filter { $0.state == "running" }.map(\.name)) == Set(launched.servers.map(\.name)))

        let teardown = try Self.intercloud(["cluster", "teardown", "shop", "--config", config, "--output", "json", "-q"])
        #expect(teardown.status == 0)
        #expect(try Self.decode(ClusterStatus.self, teardown.stdout).phase == .tornDown)
        let after = try Self.decode(
            [Listed].self, try Self.intercloud(["provider", "instances", "--config", config, "--output", "json"]).stdout)
        #expect(after.allSatisfy { $0.state == "terminated" })
    }

    @Test("a file with errors is refused with file:line: field, and nothing is launched")
    func refusedFile() throws {
        let directory = try TemporaryDirectory()
        let config = try writeConfiguration(directory)
        let file = try directory.file("bad.toml", "version = 1\nname = \"bad\"\n[[member]]\nname = \"web\"\ntemplate = \"web-server\"\nafter = [\"db\"]\n")
        let launch = try Self.intercloud(["cluster", "launch", file, "--config", config, "--output", "json"])
        #expect(launch.status != 0)
        #expect(launch.stderr.contains("bad.toml:6: member[0].after: names no member 'db'"))
        let list = try Self.intercloud(["cluster", "list", "--config", config, "--output", "json"])
        #expect(try Self.decode([ClusterStatus].self, list.stdout).isEmpty)
    }

    @Test("kill -9 of `intercloud cluster launch` while web-1 boots; `intercloud cluster resume` finishes the launch with one instance per server")
    func killedLaunchIsResumed() throws {
        let directory = try TemporaryDirectory()
        let config = try writeConfiguration(directory, bootDelayMilliseconds: 1500)
        let shop = repositoryRoot.appendingPathComponent("clusters/shop.toml").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.intercloudBinary())
        process.arguments = ["cluster", "launch", shop, "--config", config, "--output", "json"]
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        var progress = ""
        while !progress.contains("web-1: created") {
            let data = err.fileHandleForReading.availableData
            if data.isEmpty { break }
            progress += String(decoding: data, as: UTF8.self)
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal, "\(progress)")

        let killed = try Self.decode([ClusterStatus].self, try Self.intercloud(["cluster", "list", "--config", config, "--output", "json"]).stdout)
        #expect(killed.map(\.phase) == [.launching])
        // web-1's instance exists; the journal says so (booting) unless the kill came before the
        // line that records it (creating): then resume finds it by its name.
        let states = killed.first?.servers.map(\.state) ?? []
        #expect(states.count == 3 && states[0] == .running && [.creating, .booting].contains(states[1]) && states[2] == .pending, "\(states)")
        // Stop waits for the launch to be finished first.
        let refused = try Self.intercloud(["cluster", "stop", "shop", "--config", config])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("resume it first"))

        let resume = try Self.intercloud(["cluster", "resume", "--config", config, "--output", "json", "-q"])
        #expect(resume.status == 0, "\(resume.stderr)")
        let resumed = try Self.decode([ClusterStatus].self, resume.stdout)
        #expect(resumed.map(\.phase) == [.running])
        struct Listed: Decodable { var id: String; var name: String; var state: String }
        let instances = try Self.decode(
            [Listed].self, try Self.intercloud(["provider", "instances", "--config", config, "--output", "json"]).stdout)
        #expect(instances.count == 3)
        #expect(Set(instances.map(\.id)) == Set(resumed.first?.servers.compactMap(\.instanceID) ?? []))
        _ = try Self.intercloud(["cluster", "teardown", "shop", "--config", config, "-q"])
    }
}

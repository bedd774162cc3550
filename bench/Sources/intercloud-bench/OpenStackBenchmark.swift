import ArgumentParser
import BenchmarkHarness
import Foundation
import Providers

/// Per-verb latency of the OpenStack driver against a real OpenStack (bench/providers/openstack.sh
/// starts one on loopback), beside the same operations with the `openstack` CLI in the same run,
/// alternating. The CLI is a new Python process per command that loads its plugins and fetches a
/// Keystone token before its API call; those start-up costs are measured on their own
/// (`openstack --version`, `openstack token issue`) and subtracted, so the comparison is of API work.
/// The driver keeps its token (as a broker does), and its waits for a state are not timed.
struct OpenStackBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "openstack", abstract: "OpenStack driver per-verb latency beside the openstack CLI in the same run.")

    @Option(help: "openstack.json written by scripts/openstack.sh start DIR.") var facts: String
    @Option(help: "Rounds of every verb for each of driver and CLI.") var rounds = 5
    @Option(help: "Size of the image uploaded and downloaded, MiB.") var imageMib = 16
    @Option(help: "The openstack CLI.") var cli = "/usr/bin/openstack"
    @OptionGroup var output: ReportOptions

    struct Cloud {
        var authURL: URL
        var region: String
        var credentialID: String
        var credentialSecret: String
        var imageID: String
        var flavor: String
    }

    func run() async throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: facts))
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let auth = (object["auth_url"] as? String).flatMap(URL.init(string:)), let region = object["region_name"] as? String,
              let id = object["application_credential_id"] as? String, let secret = object["application_credential_secret"] as? String,
              let image = object["image_id"] as? String, let flavor = object["flavor"] as? String
        else { throw BenchmarkFailure("\(facts) lacks auth_url, region_name, the application credential, image_id or flavor") }
        let cloud = Cloud(authURL: auth, region: region, credentialID: id, credentialSecret: secret, imageID: image, flavor: flavor)
        let driver = OpenStackDriver(configuration: .init(
            authURL: auth, credentials: .applicationCredential(id: id, secret: secret), region: region))
        try await driver.connect()
        let scratch = try ScratchDirectory("intercloud-openstack-bench")
        defer { scratch.remove() }
        let upload = scratch.url.appendingPathComponent("upload.raw")
        try Data((0..<(imageMib << 20)).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ ($0 >> 12)) }).write(to: upload)

        var ours: [String: [Duration]] = [:]
        var theirs: [String: [Duration]] = [:]
        var startup: [Duration] = []
        var tokenIssue: [Duration] = []
        func ourTime<T>(_ verb: String, _ body: () async throws -> T) async throws -> T {
            let (result, duration) = try await time(body)
            ours[verb, default: []].append(duration)
            return result
        }
        func cliTime(_ verb: String, _ arguments: [String], json: Bool = true) async throws -> String {
            let (output, duration) = try await time { try await runCLI(cloud, arguments, json: json) }
            theirs[verb, default: []].append(duration)
            return output
        }
        func settle(_ id: String, _ state: InstanceState) async throws {
            _ = try await driver.waitFor(instance: id, state: state, timeout: .seconds(300), pollInterval: .milliseconds(500))
        }

        // Servers and images of an earlier run that failed half-way would skew this one's lists.
        await Self.sweep(driver)
        do {
            for round in 0..<rounds {
                FileHandle.standardError.write(Data("openstack bench: round \(round + 1)/\(rounds)\n".utf8))
                startup.append(try await time { try await runCLI(cloud, ["--version"], json: false) }.duration)
                tokenIssue.append(try await time { try await runCLI(cloud, ["token", "issue"]) }.duration)

                _ = try await ourTime("list sizes (flavors)") { try await driver.listSizes() }
                _ = try await cliTime("list sizes (flavors)", ["flavor", "list"])
                _ = try await ourTime("list instances (servers)") { try await driver.listInstances() }
                _ = try await cliTime("list instances (servers)", ["server", "list"])
                _ = try await ourTime("list images") { try await driver.listImages() }
                _ = try await cliTime("list images", ["image", "list"])

                // Servers: ours made by the driver, theirs by the CLI; each side drives its own.
                let mine = try await ourTime("create (accepted)") {
                    try await driver.create(
                        CreateInstanceRequest(name: "bench-ours-\(round)", sizeID: cloud.flavor, imageID: cloud.imageID), progress: nil)
                }
                let made = try await cliTime(
                    "create (accepted)",
                    ["--os-compute-api-version", "2.60", "server", "create", "--flavor", cloud.flavor, "--image", cloud.imageID,
                     "--nic", "none", "bench-cli-\(round)"])
                guard let theirID = (try JSONSerialization.jsonObject(with: Data(made.utf8)) as? [String: Any])?["id"] as? String else {
                    throw BenchmarkFailure("openstack server create printed no id: \(made.prefix(200))")
                }
                try await settle(mine.id, .running)
                try await settle(theirID, .running)
                _ = try await ourTime("describe") { try await driver.describe(instance: mine.id) }
                _ = try await cliTime("describe", ["server", "show", theirID])
                _ = try await ourTime("shutdown (accepted)") { try await driver.shutdown(mine.id) }
                _ = try await cliTime("shutdown (accepted)", ["server", "stop", theirID], json: false)
                try await settle(mine.id, .stopped)
                try await settle(theirID, .stopped)
                _ = try await ourTime("start (accepted)") { try await driver.start(mine.id) }
                _ = try await cliTime("start (accepted)", ["server", "start", theirID], json: false)
                try await settle(mine.id, .running)
                try await settle(theirID, .running)
                try await ourTime("terminate (accepted)") { try await driver.terminate(instance: mine.id) }
                _ = try await cliTime("terminate (accepted)", ["server", "delete", theirID], json: false)

                // Images: upload and download of the same file; the driver also checks Glance's digest.
                let image = try await ourTime("image upload \(imageMib) MiB") {
                    try await driver.importImage(from: upload, name: "bench-ours-\(round)", format: .raw, expectedSHA256: nil, progress: nil)
                }
                let created = try await cliTime(
                    "image upload \(imageMib) MiB",
                    ["image", "create", "--disk-format", "raw", "--container-format", "bare", "--file", upload.path, "bench-cli-\(round)"])
                guard let cliImage = (try JSONSerialization.jsonObject(with: Data(created.utf8)) as? [String: Any])?["id"] as? String else {
                    throw BenchmarkFailure("openstack image create printed no id: \(created.prefix(200))")
                }
                let downloaded = scratch.url.appendingPathComponent("download-\(round).raw")
                _ = try await ourTime("image download \(imageMib) MiB") {
                    try await driver.exportImage(id: image.id, to: downloaded, format: .raw, progress: nil)
                }
                try? FileManager.default.removeItem(at: downloaded)
                _ = try await cliTime("image download \(imageMib) MiB", ["image", "save", "--file", downloaded.path, cliImage], json: false)
                try? FileManager.default.removeItem(at: downloaded)
                try await driver.deregisterImage(id: image.id)
                try await driver.deregisterImage(id: cliImage)
                try await settle(mine.id, .terminated)
                try await settle(theirID, .terminated)
            }
        } catch {
            await Self.sweep(driver)
            throw error
        }

        let startupSamples = Samples(startup)
        let tokenSamples = Samples(tokenIssue)
        var report = Report(benchmark: "openstack")
        report.text("""
            \(rounds) rounds, driver and CLI alternating; medians in ms. The CLI's own start-up: `openstack --version` \
            \(format(startupSamples.median.milliseconds, decimals: 0)) ms, `openstack token issue` (start-up + Keystone) \
            \(format(tokenSamples.median.milliseconds, decimals: 0)) ms. "CLI API" is the CLI's median minus the token-issue \
            median: the time of its API work. Goal: driver ≤ 1.0× CLI API per verb.
            """)
        var table = Table(columns: ["verb", "driver ms", "CLI ms", "CLI API ms", "driver ÷ CLI API"])
        let order = ["list sizes (flavors)", "list instances (servers)", "list images", "create (accepted)", "describe",
                     "shutdown (accepted)", "start (accepted)", "terminate (accepted)", "image upload \(imageMib) MiB",
                     "image download \(imageMib) MiB"]
        for verb in order {
            let driverSamples = Samples(ours[verb] ?? [])
            let cliSamples = Samples(theirs[verb] ?? [])
            let api = max(0, cliSamples.median.milliseconds - tokenSamples.median.milliseconds)
            table.append([
                .text(verb), .number(driverSamples.median.milliseconds, decimals: 1), .number(cliSamples.median.milliseconds, decimals: 0),
                .number(api, decimals: 0), api > 0 ? .number(driverSamples.median.milliseconds / api, decimals: 2) : .none,
            ])
        }
        report.table(table)
        output.print(report)
    }

    /// Deletes every server and image this benchmark names (`bench-ours-*`, `bench-cli-*`).
    static func sweep(_ driver: OpenStackDriver) async {
        func ours(_ name: String) -> Bool { name.hasPrefix("bench-ours-") || name.hasPrefix("bench-cli-") }
        for server in (try? await driver.listInstances()) ?? [] where ours(server.name) {
            try? await driver.terminate(instance: server.id)
        }
        for image in (try? await driver.listImages()) ?? [] where ours(image.name) {
            try? await driver.deregisterImage(id: image.id)
        }
    }

    /// Runs the CLI with the application credential, waiting without blocking a pool thread.
    func runCLI(_ cloud: Cloud, _ arguments: [String], json: Bool = true) async throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: cli)
        process.arguments = arguments + (json ? ["-f", "json"] : [])
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("OS_") }
        environment["OS_AUTH_URL"] = cloud.authURL.absoluteString
        environment["OS_IDENTITY_API_VERSION"] = "3"
        environment["OS_REGION_NAME"] = cloud.region
        environment["OS_INTERFACE"] = "public"
        environment["OS_AUTH_TYPE"] = "v3applicationcredential"
        environment["OS_APPLICATION_CREDENTIAL_ID"] = cloud.credentialID
        environment["OS_APPLICATION_CREDENTIAL_SECRET"] = cloud.credentialSecret
        process.environment = environment
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = FileHandle.nullDevice
        let collected = OutputCollector()
        output.fileHandleForReading.readabilityHandler = { handle in collected.append(handle.availableData, error: false) }
        errors.fileHandleForReading.readabilityHandler = { handle in collected.append(handle.availableData, error: true) }
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { finished in continuation.resume(returning: finished.terminationStatus) }
            do { try process.run() } catch { continuation.resume(throwing: error) }
        }
        output.fileHandleForReading.readabilityHandler = nil
        errors.fileHandleForReading.readabilityHandler = nil
        collected.append(output.fileHandleForReading.readDataToEndOfFile(), error: false)
        collected.append(errors.fileHandleForReading.readDataToEndOfFile(), error: true)
        guard status == 0 else {
            throw BenchmarkFailure("openstack \(arguments.joined(separator: " ")) failed (\(status)): \(collected.errors.prefix(500))")
        }
        return collected.output
    }
}

/// Output of a child process gathered from its pipes' handlers.
final class OutputCollector: @unchecked Sendable {
    // `@unchecked`: both buffers are only touched while holding `lock`.
    private let lock = NSLock()
    private var out = Data()
    private var err = Data()
    func append(_ data: Data, error: Bool) { lock.withLock { if error { err.append(data) } else { out.append(data) } } }
    var output: String { lock.withLock { String(decoding: out, as: UTF8.self) } }
    var errors: String { lock.withLock { String(decoding: err, as: UTF8.self) } }
}

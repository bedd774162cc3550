import ArgumentParser
import CatalogQueries
import Foundation
import Logging
import Synchronization
import XMPP
import XMLModel

/// The stranger of the hostile benchmark, in a process of its own (started by `hostile`): connects
/// as an account that is no peer of anyone and runs commands read from standard input, one a
/// line, answering on standard output:
/// `ping N W` / `flood N W` (N pings / unsigned catalog queries, W in flight) → `result …`;
/// `flood-until-stop W` → `started`, then on `stop` → `result …`. Ends at end of input.
struct HostileStranger: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hostile-stranger", abstract: "The hostile benchmark's flooding stranger (started by `hostile`).",
        shouldDisplay: false)

    @Option var host = "127.0.0.1"
    @Option var port: Int
    @Option var caFile: String
    @Option var jid: String
    @Option var password: String
    @Option(help: "The victim's full JID.") var victim: String
    @Option(help: "The unsigned catalog query sent as hostile stanza.") var query = HostileBenchmark.defaultQuery

    func run() async throws {
        var quiet = Logger(label: "intercloud.bench.stranger")
        quiet.logLevel = .error
        var jid = try JID(self.jid)
        if jid.isBare { jid = try jid.with(resource: "flood") }
        let client = XMPPClient(
            configuration: .init(
                jid: jid, password: password, host: host, port: UInt16(port),
                tls: .required(caFile: caFile), streamManagement: false),
            logger: quiet)
        client.start()
        try await client.waitUntilOnline(timeout: .seconds(20))
        let target = try JID(victim)
        let ping = XMLElement("ping", namespace: Ping.namespace)
        let hostile = XMLElement("query", namespace: CatalogProtocol.namespace, text: query)
        let input = LineSource(fileDescriptor: 0)
        Self.emit("ready")
        while let line = await input.next() {
            let words = line.split(separator: " ").map(String.init)
            guard let verb = words.first else { continue }
            let number = { (index: Int) in words.count > index ? Int(words[index]) ?? 0 : 0 }
            switch verb {
            case "ping":
                Self.emit(await Self.burst(client, target, ping, count: number(1), window: number(2), stop: nil).line)
            case "flood":
                Self.emit(await Self.burst(client, target, hostile, count: number(1), window: number(2), stop: nil).line)
            case "flood-until-stop":
                let stop = StopFlag()
                let flood = Task { await Self.burst(client, target, hostile, count: nil, window: number(1), stop: stop) }
                Self.emit("started")
                _ = await input.next()  // "stop", or end of input
                stop.set()
                Self.emit(await flood.value.line)
            default:
                Self.emit("error unknown command \(verb)")
            }
        }
        await client.stop()
    }

    /// Sends `count` IQs (or until `stop`) with `window` in flight; tallies the answers.
    static func burst(_ client: XMPPClient, _ target: JID, _ payload: XMLElement, count: Int?, window: Int, stop: StopFlag?) async -> Tally {
        let remaining = Remaining(count ?? Int.max)
        let started = ContinuousClock.now
        var total = await withTaskGroup(of: Tally.self) { group in
            for _ in 0..<max(1, window) {
                group.addTask {
                    var tally = Tally()
                    while stop?.isSet != true, remaining.take() {
                        do {
                            _ = try await client.iq(.get, to: target, payload: payload, timeout: .seconds(30))
                            tally.ok += 1
                        } catch XMPPError.stanza(let error) {
                            switch error.condition {
                            case "not-authorized": tally.notAuthorized += 1
                            case "resource-constraint": tally.resourceConstraint += 1
                            default:
                                tally.other += 1
                                tally.otherConditions.insert(error.condition)
                            }
                        } catch XMPPError.timeout {
                            tally.timeouts += 1
                        } catch {
                            tally.other += 1
                            tally.otherConditions.insert("\(error)")
                        }
                    }
                    return tally
                }
            }
            var sum = Tally()
            for await tally in group { sum = sum + tally }
            return sum
        }
        total.seconds = (ContinuousClock.now - started) / .seconds(1)
        return total
    }

    static func emit(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}

/// Answers to one batch of stranger IQs, and its one-line form between the processes.
struct Tally: Sendable {
    var ok = 0
    var notAuthorized = 0
    var resourceConstraint = 0
    var other = 0
    var timeouts = 0
    var seconds = 0.0
    var otherConditions = Set<String>()

    var total: Int { ok + notAuthorized + resourceConstraint + other + timeouts }
    var refused: Int { notAuthorized + resourceConstraint }

    init() {}

    static func + (a: Tally, b: Tally) -> Tally {
        var sum = a
        sum.ok += b.ok
        sum.notAuthorized += b.notAuthorized
        sum.resourceConstraint += b.resourceConstraint
        sum.other += b.other
        sum.timeouts += b.timeouts
        sum.seconds += b.seconds
        sum.otherConditions.formUnion(b.otherConditions)
        return sum
    }

    var line: String {
        "result ok=\(ok) not-authorized=\(notAuthorized) resource-constraint=\(resourceConstraint) other=\(other) "
            + "timeouts=\(timeouts) seconds=\(seconds) conditions=\(otherConditions.sorted().joined(separator: ",").replacingOccurrences(of: " ", with: "_"))"
    }

    init(line: String) throws {
        guard line.hasPrefix("result ") else { throw BenchmarkFailure("stranger worker said: \(line)") }
        for field in line.split(separator: " ").dropFirst() {
            let parts = field.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "ok": ok = Int(parts[1]) ?? 0
            case "not-authorized": notAuthorized = Int(parts[1]) ?? 0
            case "resource-constraint": resourceConstraint = Int(parts[1]) ?? 0
            case "other": other = Int(parts[1]) ?? 0
            case "timeouts": timeouts = Int(parts[1]) ?? 0
            case "seconds": seconds = Double(parts[1]) ?? 0
            case "conditions": otherConditions = Set(parts[1].split(separator: ",").map(String.init))
            default: break
            }
        }
    }
}

/// One worker command with the victim's CPU and writes around it.

/// Set once to stop a flood.
final class StopFlag: Sendable {
    private let flag = Atomic(false)
    func set() { flag.store(true, ordering: .relaxed) }
    var isSet: Bool { flag.load(ordering: .relaxed) }
}

/// IQs left to send in a batch.
final class Remaining: Sendable {
    private let count: Atomic<Int>
    init(_ count: Int) { self.count = Atomic(count) }
    /// Takes one; false when none is left.
    func take() -> Bool { count.subtract(1, ordering: .relaxed).oldValue > 0 }
}

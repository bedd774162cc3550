import Foundation
import Synchronization

// What the hostile benchmark reads about processes (its own children and the XMPP server), from
// /proc: CPU time, disk writes, and a child's output lines.

/// CPU and bytes sent to storage by a process: clock ticks (user + system, `/proc/PID/stat`,
/// exited threads included), the sum of its threads' run time in ns (`/proc/PID/task/*/schedstat`,
/// finer, but a thread that ends takes its time with it) and `/proc/PID/io` write_bytes.
struct ProcessUsage {
    static let tickMicroseconds = 1e6 / Double(sysconf(Int32(_SC_CLK_TCK)))
    var ticks = 0
    var threadNanoseconds: Int64 = 0
    var threads: Set<String> = []
    /// After `minus`: a thread seen before was gone after (its ns are lost: use ticks).
    var threadEnded = false
    var writeBytes: Int64 = 0
    var cancelledWriteBytes: Int64 = 0

    /// CPU time in µs: the threads' ns sum, unless a thread ended or the sum is more than two
    /// ticks short of the tick count (a thread came and went), then the tick count.
    var cpuMicroseconds: Double {
        fromTicks ? Double(ticks) * Self.tickMicroseconds : Double(threadNanoseconds) / 1000
    }

    var fromTicks: Bool {
        threadEnded || Double(threadNanoseconds) / 1000 < Double(ticks - 2) * Self.tickMicroseconds
    }

    static func read(_ pid: Int32) throws -> ProcessUsage {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // Fields after the command name (which may hold spaces), from field 3 (state) on.
        guard let close = stat.lastIndex(of: ")") else { throw BenchmarkFailure("unreadable /proc/\(pid)/stat") }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let utime = Int(fields[11]), let stime = Int(fields[12]) else {
            throw BenchmarkFailure("unreadable /proc/\(pid)/stat")
        }
        var usage = ProcessUsage(ticks: utime + stime)
        for tid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [] {
            guard let schedstat = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/schedstat", encoding: .utf8),
                let first = schedstat.split(separator: " ").first, let nanoseconds = Int64(first)
            else { continue }
            usage.threadNanoseconds += nanoseconds
            usage.threads.insert(tid)
        }
        for line in try String(contentsOfFile: "/proc/\(pid)/io", encoding: .utf8).split(separator: "\n") {
            let parts = line.split(separator: ":").map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, let value = Int64(parts[1]) else { continue }
            if parts[0] == "write_bytes" { usage.writeBytes = value }
            if parts[0] == "cancelled_write_bytes" { usage.cancelledWriteBytes = value }
        }
        return usage
    }

    func minus(_ other: ProcessUsage) -> ProcessUsage {
        ProcessUsage(
            ticks: ticks - other.ticks, threadNanoseconds: threadNanoseconds - other.threadNanoseconds, threads: threads,
            threadEnded: !other.threads.isSubset(of: threads), writeBytes: writeBytes - other.writeBytes,
            cancelledWriteBytes: cancelledWriteBytes - other.cancelledWriteBytes)
    }

    static func + (a: ProcessUsage, b: ProcessUsage) -> ProcessUsage {
        ProcessUsage(
            ticks: a.ticks + b.ticks, threadNanoseconds: a.threadNanoseconds + b.threadNanoseconds, threads: a.threads.union(b.threads),
            threadEnded: a.threadEnded || b.threadEnded, writeBytes: a.writeBytes + b.writeBytes,
            cancelledWriteBytes: a.cancelledWriteBytes + b.cancelledWriteBytes)
    }
}

/// CPU time of the machine, of some processes and of one process's threads, at one moment (or,
/// after `minus`, shares of one core over an interval).
struct CPUSnapshot {
    var at = ContinuousClock.now
    var seconds = 0.0
    var machineBusy = 0.0
    var machineTotal = 0.0
    var machineCores = 0.0
    var processes: [Double] = []
    var threadTicks: [String: (name: String, ticks: Int)] = [:]
    /// After `minus`: threads by share of one core, busiest first.
    var threads: [(name: String, share: Double)] = []

    init(pids: [Int32], threadsOf pid: Int32) {
        // /proc/stat: cpu user nice system idle iowait irq softirq steal …, in ticks.
        if let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) {
            let lines = stat.split(separator: "\n")
            let values = lines.first?.split(separator: " ").dropFirst().compactMap { Double($0) } ?? []
            if values.count >= 5 {
                machineTotal = values.prefix(8).reduce(0, +)
                machineBusy = machineTotal - values[3] - values[4]
            }
            machineCores = Double(lines.filter { $0.hasPrefix("cpu") && !$0.hasPrefix("cpu ") }.count)
        }
        processes = pids.map { pid in pid > 0 ? Double((try? ProcessUsage.read(pid).ticks) ?? 0) : 0 }
        for tid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [] {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/stat", encoding: .utf8),
                let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")")
            else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 12, let utime = Int(fields[11]), let stime = Int(fields[12]) else { continue }
            threadTicks[tid] = (String(stat[stat.index(after: open)..<close]), utime + stime)
        }
    }

    func minus(_ before: CPUSnapshot) -> CPUSnapshot {
        var delta = self
        delta.seconds = (at - before.at) / .seconds(1)
        let tickSeconds = 1 / Double(sysconf(Int32(_SC_CLK_TCK)))
        let wall = max(delta.seconds, 1e-9)
        let machineTicks = max(machineTotal - before.machineTotal, 1)
        // Machine: busy share of all cores, in cores.
        delta.machineBusy = (machineBusy - before.machineBusy) / machineTicks * machineCores
        delta.processes = zip(processes, before.processes).map { ($0 - $1) * tickSeconds / wall }
        delta.threads = threadTicks.map { tid, now in
            (name: now.name, share: Double(now.ticks - (before.threadTicks[tid]?.ticks ?? 0)) * tickSeconds / wall)
        }.sorted { $0.share > $1.share }
        return delta
    }
}

/// Size of the SQLite file and its WAL.

/// Lines read from a file descriptor on a thread of their own.
final class LineSource: Sendable {
    private let lines: Mutex<(queue: [String], ended: Bool)> = Mutex(([], false))

    init(fileDescriptor: Int32) {
        let thread = Thread { [self] in
            var pending: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(fileDescriptor, $0.baseAddress, $0.count) }
                if count < 0, errno == EINTR { continue }
                if count <= 0 { break }
                pending.append(contentsOf: buffer[0..<count])
                while let newline = pending.firstIndex(of: 10) {
                    let line = String(decoding: pending[..<newline], as: UTF8.self)
                    pending.removeSubrange(...newline)
                    lines.withLock { $0.queue.append(line) }
                }
            }
            lines.withLock { $0.ended = true }
        }
        thread.start()
    }

    /// The next line, or nil at end of input or at `deadline` (polls every 2 ms).
    func next(before deadline: ContinuousClock.Instant = .now + .seconds(365 * 86_400)) async -> String? {
        while ContinuousClock.now < deadline {
            let (line, ended): (String?, Bool) = lines.withLock { state in
                state.queue.isEmpty ? (nil, state.ended) : (state.queue.removeFirst(), false)
            }
            if let line { return line }
            if ended { return nil }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return nil
    }
}

/// A child process: standard output read as lines, standard error counted (and its tail kept).
final class ChildProcess: @unchecked Sendable {
    // @unchecked: `process` and the pipes are set up in init and only used through thread-safe calls.
    private let process = Process()
    private let input = Pipe()
    private let output: LineSource
    private let errors = Mutex<(bytes: Int, tail: [UInt8])>((0, []))

    init(executable: String, arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let outputPipe = Pipe()
        let errorPipe = Pipe()
        process.standardInput = input
        process.standardOutput = outputPipe
        process.standardError = errorPipe
        try process.run()
        output = LineSource(fileDescriptor: outputPipe.fileHandleForReading.fileDescriptor)
        let errorDescriptor = errorPipe.fileHandleForReading.fileDescriptor
        // Keep the read ends open for the threads (the handles close their descriptors on deinit).
        retained = [outputPipe, errorPipe]
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(errorDescriptor, $0.baseAddress, $0.count) }
                if count < 0, errno == EINTR { continue }
                if count <= 0 { break }
                errors.withLock { state in
                    state.bytes += count
                    state.tail.append(contentsOf: buffer[0..<count])
                    if state.tail.count > 8192 { state.tail.removeFirst(state.tail.count - 4096) }
                }
            }
        }
        thread.start()
    }

    private var retained: [Pipe] = []

    var pid: Int32 { process.processIdentifier }
    var hasExited: Bool { !process.isRunning }
    var exitStatus: Int32? { process.isRunning ? nil : process.terminationStatus }
    var stderrBytes: Int { errors.withLock { $0.bytes } }
    var stderrTail: String { String(decoding: errors.withLock { $0.tail }.suffix(2000), as: UTF8.self) }

    func send(_ line: String) {
        try? input.fileHandleForWriting.write(contentsOf: Data((line + "\n").utf8))
    }

    func closeInput() { try? input.fileHandleForWriting.close() }

    func nextLine(timeout: Double) async throws -> String {
        if let line = await output.next(before: .now + .milliseconds(Int64(timeout * 1000))) { return line }
        throw BenchmarkFailure(
            "no answer from \(process.executableURL?.lastPathComponent ?? "child") within \(timeout) s: \(stderrTail)")
    }

    /// Sends a command and returns its answer line.
    func command(_ line: String, timeout: Double = 600) async throws -> String {
        send(line)
        return try await nextLine(timeout: timeout)
    }

    func terminate() { if process.isRunning { process.terminate() } }

    /// Waits for the process to end; false if it is still running after `timeout` seconds (then
    /// it is killed).
    func waitForExit(timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            return false
        }
        return true
    }
}

/// Runs `command` with /bin/sh and returns its standard output, failing on a non-zero exit. Through
/// posix_spawn and a temporary file rather than Foundation's Process and a pipe: a command that
/// leaves a process behind keeps an inherited pipe open, and Process then never reports the exit.
@discardableResult
func shell(_ command: String) throws -> String {
    let output = FileManager.default.temporaryDirectory.appendingPathComponent("intercloud-bench-shell-\(UUID().uuidString.prefix(8))")
    defer { try? FileManager.default.removeItem(at: output) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, output.path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    var pid: pid_t = 0
    let arguments = ["/bin/sh", "-c", command]
    let argv = arguments.map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    guard posix_spawn(&pid, "/bin/sh", &actions, nil, argv, environ) == 0 else { throw BenchmarkFailure("cannot run \(command)") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0, errno == EINTR {}
    guard status == 0 else { throw BenchmarkFailure("\(command) failed (\(status))") }
    return (try? String(contentsOf: output, encoding: .utf8)) ?? ""
}

import CStrophe
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The process-wide owner of libstrophe: ONE context on ONE dedicated thread for every connection.
///
/// libstrophe is not thread-safe even across separate contexts (its SHA-1 code keeps a static
/// buffer, so concurrent SCRAM logins on two threads corrupt each other), so every call into it
/// happens on `loopThread`. Other threads talk to the loop by enqueuing closures in `inbox` and
/// writing a byte to a wake-up pipe.
///
/// Waking without a fixed tick: libstrophe has no wake-up call and `xmpp_run_once` sleeps in
/// `select()` on its own sockets only. So the loop never sleeps inside libstrophe: it calls
/// `xmpp_run_once(ctx, 0)` (flush queued writes, read what is ready, fire handlers) and then sleeps
/// in its own `poll()` over the wake-up pipe plus every connection's socket (captured through the
/// sockopt callback), with a timeout equal to the next IQ deadline or reconnect time. A request
/// from another thread therefore costs one pipe write and one loop iteration, not a tick.
/// TLS can hold decrypted bytes that `poll()` cannot see; after activity on a TLS connection the
/// loop runs a few extra zero-timeout iterations (a 16 KiB TLS record is read in 4 KiB chunks).
public final class XMPPRuntime: @unchecked Sendable {
    // @unchecked Sendable: every stored property below except `inbox`, the wake-up descriptors
    // and `threadStarted` is touched only on the loop thread; those are a Mutex, immutable fds and
    // an atomic.

    public static let shared = XMPPRuntime()

    let context: OpaquePointer
    /// The origin of loop time (`loopTime()`), which the connections' state machines run on.
    let clockOrigin = ContinuousClock.now
    private let inbox = Mutex(Inbox())
    /// Read and write ends of the wake-up pipe (non-blocking; a full pipe already means "awake").
    private let wakeDescriptor: Int32
    private let wakeWriteDescriptor: Int32
    private let threadStarted = Atomic<Bool>(false)

    private let logger = Logger(label: "intercloud.xmpp.runtime")

    // Loop-confined state.
    var cores: [OpaquePointer: ConnectionCore] = [:]
    /// Low descriptors held for libstrophe's sockets (see `LowDescriptorReserve`).
    let lowDescriptors = LowDescriptorReserve()
    var activity = false
    /// What the loop polls: the wake-up pipe, then every connection socket (see `sleepUntilReady`).
    private var pollDescriptors: [pollfd] = []
    private let logHandler: UnsafeMutablePointer<xmpp_log_t>
    /// Read once: the loop consults it on every sleep.
    private let debugEnabled = stropheDebugEnabled

    private init() {
        signal(SIGPIPE, SIG_IGN)  // a TLS write to a closed socket must not kill the broker
        xmpp_initialize()
        logHandler = UnsafeMutablePointer<xmpp_log_t>.allocate(capacity: 1)
        logHandler.initialize(to: xmpp_log_t(handler: stropheLog, userdata: nil))
        context = xmpp_ctx_new(nil, logHandler)!
        var ends: [Int32] = [-1, -1]
        precondition(pipe(&ends) == 0, "cannot create the XMPP wake-up pipe")
        for end in ends {
            _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
        }
        wakeDescriptor = ends[0]
        wakeWriteDescriptor = ends[1]
        lowDescriptors.fill()
        // Only now may the log handler reach back to this runtime (it must not touch `shared`
        // while `shared` is being initialized).
        logHandler.pointee.userdata = Unmanaged.passUnretained(self).toOpaque()
    }

    /// Time since `clockOrigin`, as a `Duration` (frozen, unlike `ContinuousClock.Instant`: see
    /// `ConnectionCore.Instant`).
    func loopTime() -> Duration { ContinuousClock.now - clockOrigin }

    /// Runs `work` on the loop thread, waking the loop if it sleeps.
    func submit(_ work: @escaping @Sendable () -> Void) {
        startThreadIfNeeded()
        let wake = inbox.withLock { inbox in
            inbox.work.append(work)
            // Only the first submission after the loop went to sleep writes to the pipe: while the
            // loop runs (a busy broker, many requests in flight) submitting costs no system call.
            guard inbox.loopAsleep else { return false }
            inbox.loopAsleep = false
            return true
        }
        if wake {
            var one: UInt8 = 1
            _ = write(wakeWriteDescriptor, &one, 1)
        }
    }

    private func startThreadIfNeeded() {
        guard threadStarted.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
        else { return }
        let thread = Thread { [self] in runLoop() }
        thread.name = "intercloud-xmpp"
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Work for the loop thread, and whether the loop sleeps in `poll()` (so a submission must
    /// wake it). Both under one lock, so a submission can never slip in between the loop's last
    /// look at the queue and its sleep unnoticed.
    private struct Inbox {
        var work: [@Sendable () -> Void] = []
        var loopAsleep = false
    }

    /// Loop-confined: the inbox's work is swapped into this array and run from it, so neither
    /// side allocates a new array per drain.
    private var draining: [@Sendable () -> Void] = []

    private func drainInbox() -> Bool {
        inbox.withLock { inbox in
            inbox.loopAsleep = false
            swap(&inbox.work, &draining)
        }
        guard !draining.isEmpty else { return false }
        for item in draining { item() }
        draining.removeAll(keepingCapacity: true)
        return true
    }

    private func runLoop() {
        var extraIterations = 0
        var shortSleeps = 0
        while true {
            let hadWork = drainInbox()
            activity = false
            xmpp_run_once(context, 0)
            let now = loopTime()
            // Iterating the dictionary's values directly: a core that releases itself below
            // changes `cores`, which then copies (the iteration keeps the old storage alive).
            for core in cores.values { core.afterIteration(now: now) }
            updateLogHandler()
            if hadWork || activity {
                // Handlers may have queued writes; they leave at the start of the next run_once.
                if cores.values.contains(where: { $0.mayHaveUnsentBytes }) { extraIterations = max(extraIterations, 1) }
                continue
            }
            if extraIterations > 0 {
                extraIterations -= 1
                continue
            }

            // Writes cut short (see `ConnectionCore.checkPendingWrite`): iterate again while
            // libstrophe holds bytes the socket can take; after sends, sleep short for a while too,
            // the fallback if a cut-short write went unnoticed.
            var sent = false, writeAgain = false
            for core in cores.values {
                switch core.checkPendingWrite() {
                case .none: break
                case .sent: sent = true
                case .writeAgain: writeAgain = true
                }
            }
            if writeAgain || sent { shortSleeps = max(shortSleeps, 8) }
            if writeAgain { continue }
            let socketReadable = sleepUntilReady(now: now, cap: shortSleeps > 0 ? .milliseconds(1) : .milliseconds(250))
            if shortSleeps > 0 { shortSleeps -= 1 }
            if socketReadable {
                // Some of libstrophe's internal steps take more than one iteration (after SASL
                // success the stream is reset, then reopened): for a few sleeps after traffic,
                // sleep at most 1 ms so such a step never waits for the 250 ms cap.
                shortSleeps = 8
                // Bytes arrived. libstrophe's own handlers (SASL steps, bind, stream-management
                // acks) may answer them with writes that neither fire our handlers nor show in
                // xmpp_conn_send_queue_len: always run one more iteration to flush them, and a few
                // more over TLS, where OpenSSL can hold decrypted bytes that poll() cannot see
                // (a 16 KiB record is read in 4 KiB chunks).
                if cores.values.contains(where: { $0.isSecured }) {
                    extraIterations = 4
                } else if cores.values.contains(where: { $0.mayHaveUnsentBytes }) {
                    extraIterations = 1
                }
            }
        }
    }

    /// libstrophe formats every stanza it sends or receives into a debug message (a `vsnprintf` of
    /// the whole stanza, twice per request on each side) whenever a log handler is installed, and
    /// the level is ours to filter only after that work. What we need from its log is the
    /// resumption notice and the reasons a connection or login fails, all of which come while a
    /// connection is being established. So the handler is installed only while some connection
    /// is not online (or with INTERCLOUD_STROPHE_DEBUG=1); a session that fails later still
    /// reports its error code and stream error through the connection handler.
    private func updateLogHandler() {
        let wanted = debugEnabled || cores.values.contains { !$0.isOnline }
        if wanted != (logHandler.pointee.handler != nil) {
            logHandler.pointee.handler = wanted ? stropheLog : nil
        }
    }

    /// Sleeps in poll() until a request is submitted, a socket is ready or a deadline passes.
    /// Returns whether a connection socket (not the wake-up pipe) became ready.
    private func sleepUntilReady(now: Duration, cap: Duration) -> Bool {
        // Reused: this runs before every sleep, and a fresh array each time was an allocation
        // per request.
        pollDescriptors.removeAll(keepingCapacity: true)
        pollDescriptors.append(pollfd(fd: wakeDescriptor, events: Int16(POLLIN), revents: 0))
        // libstrophe runs its own timed handlers (connect and disconnect timeouts, keepalives) only
        // inside xmpp_run_once: cap the sleep so they are never late by more than this.
        var timeout: Duration = cap
        for core in cores.values {
            if let deadline = core.nextDeadline {
                timeout = min(timeout, max(.zero, deadline - now))
            }
            if core.descriptor >= 0 && core.wantsSocketPolling {
                var events = Int16(POLLIN)
                if core.wantsWritable { events |= Int16(POLLOUT) }
                pollDescriptors.append(pollfd(fd: core.descriptor, events: events, revents: 0))
            } else if core.isConnecting {
                timeout = min(timeout, .milliseconds(2))
            }
        }
        // Whole milliseconds, rounded up, from the components (dividing two Durations goes
        // through 128-bit arithmetic and a Double).
        let (seconds, attoseconds) = timeout.components
        let milliseconds = Int32(clamping: seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)

        // From here on a submission must write to the pipe; work that came in since the last
        // drain is run first instead of sleeping.
        let mayAsleep = inbox.withLock { inbox in
            inbox.loopAsleep = inbox.work.isEmpty
            return inbox.loopAsleep
        }
        guard mayAsleep else { return false }
        let ready = poll(&pollDescriptors, nfds_t(pollDescriptors.count), milliseconds)
        if debugEnabled {
            let summary = pollDescriptors.map { "\($0.fd):\($0.events)->\($0.revents)" }.joined(separator: " ")
            FileHandle.standardError.write(Data("\(ContinuousClock.now) poll \(summary) timeout \(milliseconds) ms\n".utf8))
        }
        guard ready > 0 else { return false }
        return finishPoll()
    }

    /// After a poll that found something: empties the wake-up pipe if it was written, and
    /// returns whether a connection socket is ready.
    private func finishPoll() -> Bool {
        if pollDescriptors[0].revents != 0 {
            withUnsafeTemporaryAllocation(byteCount: 256, alignment: 1) { buffer in
                while read(wakeDescriptor, buffer.baseAddress, buffer.count) > 0 {}
            }
        }
        return pollDescriptors.dropFirst().contains { $0.revents != 0 }
    }
}

private let stropheDebugEnabled = ProcessInfo.processInfo.environment["INTERCLOUD_STROPHE_DEBUG"] == "1"

// MARK: - C callbacks (no captures: context is recovered from the connection pointer or userdata)

private func stropheLog(
    _ userdata: UnsafeMutableRawPointer?, _ level: xmpp_log_level_t,
    _ area: UnsafePointer<CChar>?, _ message: UnsafePointer<CChar>?
) {
    guard let message else { return }
    if stropheDebugEnabled {
        // INTERCLOUD_STROPHE_DEBUG=1: every libstrophe message, with a timestamp, for diagnosing
        // connection problems (it includes stanza dumps: never enable in production).
        // SASL exchanges are never printed (DebugLogRedaction).
        let area = area.map { String(cString: $0) } ?? "strophe"
        let text = DebugLogRedaction.redact(String(cString: message))
        FileHandle.standardError.write(Data("\(ContinuousClock.now) strophe \(area): \(text)\n".utf8))
    }
    // libstrophe offers no API to tell a resumed stream-management session from a fresh one; its
    // debug log line is the only signal. Only messages from the "xmpp" area are inspected, and only
    // with a byte comparison, so the stanza dumps of the "conn" area cost nothing here.
    if level == XMPP_LEVEL_DEBUG {
        if let userdata, let area, strcmp(area, "xmpp") == 0, strstr(message, "Session resumed successfully") != nil {
            Unmanaged<XMPPRuntime>.fromOpaque(userdata).takeUnretainedValue().noteSessionResumed()
        }
        return
    }
    let text = DebugLogRedaction.redact(String(cString: message))
    let areaName = area.map { String(cString: $0) } ?? "strophe"
    let logger = Logger(label: "intercloud.xmpp.strophe")
    switch level {
    case XMPP_LEVEL_ERROR: logger.error("\(areaName): \(text)")
    case XMPP_LEVEL_WARN: logger.warning("\(areaName): \(text)")
    default: logger.trace("\(areaName): \(text)")
    }
}

extension XMPPRuntime {
    /// Called from the log handler on the loop thread while a `<resumed/>` is being processed: the
    /// connection that is currently connecting and authenticating is the one that resumed.
    fileprivate func noteSessionResumed() {
        for core in cores.values where core.isConnecting { core.sawResumed = true }
    }
}

func stropheConnectionHandler(
    _ connection: OpaquePointer?, _ event: xmpp_conn_event_t, _ error: Int32,
    _ streamError: UnsafeMutablePointer<xmpp_stream_error_t>?, _ userdata: UnsafeMutableRawPointer?
) {
    guard let userdata else { return }
    let core = Unmanaged<ConnectionCore>.fromOpaque(userdata).takeUnretainedValue()
    XMPPRuntime.shared.activity = true
    var reason = "error \(error)"
    if let streamError, let text = streamError.pointee.text { reason += ": " + String(cString: text) }
    switch event {
    case XMPP_CONN_CONNECT: core.connectionEstablished()
    case XMPP_CONN_DISCONNECT, XMPP_CONN_FAIL: core.connectionLost(reason: reason)
    default: break
    }
}

func stropheStanzaHandler(
    _ connection: OpaquePointer?, _ stanza: OpaquePointer?, _ userdata: UnsafeMutableRawPointer?
) -> Int32 {
    guard let userdata, let stanza else { return 1 }
    let core = Unmanaged<ConnectionCore>.fromOpaque(userdata).takeUnretainedValue()
    XMPPRuntime.shared.activity = true
    core.received(stanza)
    return 1
}

func stropheSocketOptions(_ connection: OpaquePointer?, _ socket: UnsafeMutableRawPointer?) -> Int32 {
    guard let connection, let socket else { return 0 }
    let descriptor = socket.load(as: Int32.self)
    guard descriptor < LowDescriptorReserve.selectLimit else {
        // libstrophe would FD_SET it and glibc would abort the process; failing this attempt
        // instead lets the connection lifecycle retry with backoff once descriptors are free.
        XMPPRuntime.shared.cores[connection]?.logger.error(
            "socket descriptor \(descriptor) is above select()'s limit of \(LowDescriptorReserve.selectLimit): this process has too many open files; retrying later")
        return -1
    }
    var one: Int32 = 1
    // Request/response latency matters more than segment count: disable Nagle.
    _ = setsockopt(descriptor, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    let core = XMPPRuntime.shared.cores[connection]
    if let bytes = core?.configuration.socketSendBufferBytes {
        var size = Int32(clamping: bytes)
        _ = setsockopt(descriptor, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }
    core?.descriptor = descriptor
    return xmpp_sockopt_cb_keepalive(connection, socket)
}

func stropheCertificateFailure(_ certificate: OpaquePointer?, _ message: UnsafePointer<CChar>?) -> Int32 {
    // Called only when OpenSSL could not verify the server against the configured CA. We never
    // override that decision: log it and refuse the connection.
    let text = message.map { String(cString: $0) } ?? "unknown reason"
    Logger(label: "intercloud.xmpp.tls").error("refusing server certificate: \(text)")
    return 0
}

/// The loop thread is also a task executor. Latency-sensitive code can run on it with
/// `withTaskExecutorPreference(XMPPRuntime.shared) { ... }`: a request then leaves and its answer
/// resumes the awaiting task on the loop thread itself, with no thread wake-up on either side
/// (otherwise each request costs a wake of the loop thread and a wake of a cooperative thread).
/// Only for code that does not block: a blocking job stalls every XMPP connection of the process.
extension XMPPRuntime: TaskExecutor {
    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        submit { [self] in job.runSynchronously(on: asUnownedTaskExecutor()) }
    }
}

/// libstrophe waits with `select()`, whose `fd_set` cannot hold a descriptor ≥ `FD_SETSIZE`
/// (1024): glibc aborts the process on `FD_SET` of such a descriptor. A broker sharing its
/// process with many databases, transfer sockets and drivers (or a test process running many
/// brokers) can use that many. So the runtime holds a few low descriptors from the start (open
/// on /dev/null) and frees one just before libstrophe creates a socket: `socket()` returns the
/// lowest free descriptor, which is then at most the one just freed. Refilled on the loop
/// thread, keeping only descriptors well below the limit. Loop-confined (no lock needed).
final class LowDescriptorReserve: @unchecked Sendable {
    // @unchecked: only the XMPP loop thread (and the runtime's init before it starts) touches it.
    static let selectLimit: Int32 = 1024
    static let size = 16
    private var held: [Int32] = []

    /// Opens placeholders until `size` are held, keeping only descriptors below 900 (room for
    /// libstrophe's own short-lived descriptors, such as DNS sockets).
    func fill() {
        while held.count < Self.size {
            let descriptor = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else { return }
            guard descriptor < 900 else {
                close(descriptor)
                return
            }
            held.append(descriptor)
        }
    }

    /// Frees the highest held placeholder so the next `socket()` gets a descriptor at most that.
    func releaseOne() {
        held.sort()
        if let descriptor = held.popLast() { close(descriptor) }
    }
}

import Testing
import XMPP

@Suite struct ConnectionLifecycleTests {
    typealias Machine = ConnectionLifecycle<Duration>
    let add: (Duration, Duration) -> Duration = { $0 + $1 }

    @Test func firstConnectStartsSessionOne() {
        var machine = Machine()
        #expect(machine.start() == .startConnecting)
        #expect(machine.connected(resumed: false) == .sessionStarted(epoch: 1, failRequestsBefore: 1))
        #expect(machine.isOnline)
    }

    @Test func lossSchedulesBackoffThenReconnects() {
        var machine = Machine(backoff: .init(initial: .milliseconds(100), maximum: .seconds(5)))
        _ = machine.start()
        _ = machine.connected(resumed: false)
        #expect(machine.disconnected(now: .zero, jitter: 1, add: add) == .scheduleReconnect(at: .milliseconds(100), attempt: 0))
        #expect(machine.tick(now: .milliseconds(99)) == .none)
        #expect(machine.tick(now: .milliseconds(100)) == .startConnecting)
    }

    @Test func failedAttemptsBackOffExponentiallyUpToTheCap() {
        var machine = Machine(backoff: .init(initial: .milliseconds(100), maximum: .seconds(1)))
        _ = machine.start()
        var delays: [Duration] = []
        var now: Duration = .zero
        for _ in 0..<6 {
            guard case .scheduleReconnect(let at, _) = machine.disconnected(now: now, jitter: 1, add: add) else {
                Issue.record("expected a reconnect")
                return
            }
            delays.append(at - now)
            now = at
            #expect(machine.tick(now: now) == .startConnecting)
        }
        #expect(delays == [.milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1), .seconds(1)])
    }

    @Test func resumedSessionKeepsEpoch() {
        var machine = Machine()
        _ = machine.start()
        _ = machine.connected(resumed: false)
        _ = machine.disconnected(now: .zero, jitter: 0, add: add)
        _ = machine.tick(now: .seconds(10))
        #expect(machine.connected(resumed: true) == .sessionResumed(epoch: 1))
    }

    @Test func freshSessionAfterLossFailsEarlierRequests() {
        var machine = Machine()
        _ = machine.start()
        _ = machine.connected(resumed: false)
        _ = machine.disconnected(now: .zero, jitter: 0, add: add)
        _ = machine.tick(now: .seconds(10))
        #expect(machine.connected(resumed: false) == .sessionStarted(epoch: 2, failRequestsBefore: 2))
    }

    @Test func stopWhileOnlineSendsUnavailableThenFinishes() {
        var machine = Machine()
        _ = machine.start()
        _ = machine.connected(resumed: false)
        #expect(machine.stop() == .sendUnavailableAndDisconnect)
        #expect(machine.disconnected(now: .zero, jitter: 0, add: add) == .finished)
        #expect(machine.state == .stopped)
    }

    @Test func stopWhileWaitingFinishesAtOnce() {
        var machine = Machine()
        _ = machine.start()
        _ = machine.disconnected(now: .zero, jitter: 0, add: add)
        #expect(machine.stop() == .finished)
        #expect(machine.tick(now: .seconds(100)) == .none)
    }
}

@testable import Broker
import Testing
import XMPP

/// When trust handshakes start: bounded in number, and not at every flap of a refused peer.
@Suite struct HandshakeScheduleTests {
    func schedule(max: Int = 8) -> HandshakeSchedule {
        HandshakeSchedule(maxConcurrent: max, retryAfterRefusal: .seconds(300), retryAfterTimeout: .seconds(15), comebackFloor: .seconds(30))
    }

    func jid(_ name: String) -> JID { try! JID("\(name)/broker") }

    @Test func aRoomFullOfNewPeersQueuesBehindTheSlots() {
        var schedule = schedule(max: 2)
        let now = ContinuousClock.now
        var started: [String] = []
        for index in 0..<5 {
            let peer = "b\(index)@c\(index).test"
            schedule.seen(peer, target: jid(peer), fingerprint: "f\(index)", cameOnline: true, now: now)
            if schedule.start(peer, now: now) { started.append(peer) }
        }
        #expect(started.count == 2 && schedule.inFlightCount == 2)
        // Each finished handshake names the next peer waiting for a slot, until none waits.
        var next = schedule.finished(started[0], fingerprint: "f0", failed: false, timedOut: false, now: now).next
        var more = 0
        while let peer = next {
            let didStart = schedule.start(peer, now: now)
            #expect(didStart)
            more += 1
            next = schedule.finished(peer, fingerprint: schedule.peers[peer]!.announced, failed: false, timedOut: false, now: now).next
        }
        #expect(more == 3)
    }

    @Test func aRefusedPeerFlappingItsPresenceGetsOneHandshakePerFloor() {
        var schedule = schedule()
        let t0 = ContinuousClock.now
        let peer = "mallory@evil.test"
        schedule.seen(peer, target: jid(peer), fingerprint: "f", cameOnline: true, now: t0)
        let first = schedule.start(peer, now: t0)
        #expect(first)
        _ = schedule.finished(peer, fingerprint: "f", failed: true, timedOut: false, now: t0)
        // A hundred offline/online flaps in the next 29 s start nothing.
        var attempts = 0
        for second in 1..<30 {
            schedule.seen(peer, target: jid(peer), fingerprint: "f", cameOnline: true, now: t0 + .seconds(second))
            if schedule.start(peer, now: t0 + .seconds(second)) { attempts += 1 }
        }
        #expect(attempts == 0)
        // After the floor a comeback may try again (sooner than the 300 s refusal pause)...
        schedule.seen(peer, target: jid(peer), fingerprint: "f", cameOnline: true, now: t0 + .seconds(31))
        let afterFloor = schedule.start(peer, now: t0 + .seconds(31))
        #expect(afterFloor)
        _ = schedule.finished(peer, fingerprint: "f", failed: true, timedOut: false, now: t0 + .seconds(31))
        // ...and a presence without a comeback waits the whole pause.
        schedule.seen(peer, target: jid(peer), fingerprint: "f", cameOnline: false, now: t0 + .seconds(100))
        let withoutComeback = schedule.start(peer, now: t0 + .seconds(100))
        #expect(!withoutComeback)
        // A new fingerprint is tried at once.
        schedule.seen(peer, target: jid(peer), fingerprint: "g", cameOnline: false, now: t0 + .seconds(101))
        let newKey = schedule.start(peer, now: t0 + .seconds(101))
        #expect(newKey)
    }
}

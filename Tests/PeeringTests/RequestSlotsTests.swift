@testable import Peering
import Testing

/// One sender cannot take the slots every other peer needs.
@Suite struct RequestSlotsTests {
    @Test func aFloodingSenderIsHeldToItsShareAndOthersStillGetSlots() {
        var slots = RequestSlots(global: 64, perPeer: 16)
        var refused = 0
        for _ in 0..<1000 where slots.acquire("mallory@evil.test") != nil { refused += 1 }
        #expect(refused == 1000 - 16)
        // A trusted peer is still admitted while the flood holds its share.
        #expect(slots.acquire("broker@cloud2.test") == nil)
        // Four flooding senders together reach the global bound; then everyone waits.
        for sender in ["a@evil.test", "b@evil.test", "c@evil.test"] {
            for _ in 0..<16 { _ = slots.acquire(sender) }
        }
        #expect(slots.acquire("broker@cloud3.test") == .global)
        slots.release("a@evil.test")
        #expect(slots.acquire("broker@cloud3.test") == nil)
        #expect(slots.acquire("mallory@evil.test") == .global)
        // Releasing frees per peer; the table keeps only peers with requests in progress.
        for _ in 0..<16 { slots.release("mallory@evil.test") }
        slots.release("unknown@x.test")
        #expect(slots.peersInProgress == 5)
    }

    @Test func workWithoutAPeerBoundStillCountsAgainstTheGlobalOne() {
        var slots = RequestSlots(global: 2, perPeer: 1)
        #expect(slots.acquire("operator", perPeerBound: false) == nil)
        #expect(slots.acquire("operator", perPeerBound: false) == nil)
        #expect(slots.acquire("operator", perPeerBound: false) == .global)
        #expect(slots.acquire("broker@cloud2.test") == .global)
        slots.release("operator")
        #expect(slots.acquire("broker@cloud2.test") == nil)
        #expect(slots.acquire("broker@cloud2.test") == .global)
    }
}

/// A flood of refusals from one sender logs one line per window, not one per stanza.
@Suite struct RefusalLogGateTests {
    @Test func oneLinePerSenderAndWindow() {
        let gate = RefusalLogGate(window: .seconds(60), maxSenders: 3)
        let t0 = ContinuousClock.now
        var logged = 0
        for second in 0..<120 where gate.shouldLog("mallory@evil.test", now: t0 + .seconds(second)) { logged += 1 }
        #expect(logged == 2)
        #expect(gate.shouldLog("broker@cloud2.test", now: t0))  // another sender is logged at once
        // Bounded: past the senders remembered within a window, new senders are not logged at all.
        var logged2 = 0
        for index in 0..<10 where gate.shouldLog("s\(index)@evil.test", now: t0) { logged2 += 1 }
        #expect(logged2 == 1)
    }
}

import Broker
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
}

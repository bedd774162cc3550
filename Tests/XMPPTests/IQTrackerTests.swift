import Testing
import XMPP

@Suite struct IQTrackerTests {
    typealias Tracker = IQTracker<Int>

    @Test func deliversMatchingResponse() {
        var tracker = Tracker()
        tracker.sent(id: "1", to: "peer@cloud2.test/b", deadline: 100, sessionEpoch: 1)
        #expect(tracker.received(id: "1", from: "peer@cloud2.test/b", ownBareJID: "me@cloud1.test", ownDomain: "cloud1.test") == .deliver(id: "1"))
        #expect(tracker.count == 0)
    }

    @Test func ignoresSpoofedResponderAndKeepsWaiting() {
        var tracker = Tracker()
        tracker.sent(id: "1", to: "peer@cloud2.test/b", deadline: 100, sessionEpoch: 1)
        #expect(tracker.received(id: "1", from: "mallory@cloud2.test/x", ownBareJID: "me@cloud1.test", ownDomain: "cloud1.test")
            == .ignoreSpoofed(id: "1", from: "mallory@cloud2.test/x"))
        #expect(tracker.isPending("1"))
    }

    @Test func requestsToOwnServerAcceptServerOrNoFrom() {
        var tracker = Tracker()
        tracker.sent(id: "a", to: nil, deadline: 100, sessionEpoch: 1)
        tracker.sent(id: "b", to: nil, deadline: 100, sessionEpoch: 1)
        #expect(tracker.received(id: "a", from: nil, ownBareJID: "me@cloud1.test", ownDomain: "cloud1.test") == .deliver(id: "a"))
        #expect(tracker.received(id: "b", from: "cloud1.test", ownBareJID: "me@cloud1.test", ownDomain: "cloud1.test") == .deliver(id: "b"))
    }

    @Test func unknownAndDuplicateResponsesAreIgnored() {
        var tracker = Tracker()
        tracker.sent(id: "1", to: "p@c/r", deadline: 100, sessionEpoch: 1)
        _ = tracker.received(id: "1", from: "p@c/r", ownBareJID: "me@c", ownDomain: "c")
        #expect(tracker.received(id: "1", from: "p@c/r", ownBareJID: "me@c", ownDomain: "c") == .ignoreUnknown(id: "1"))
    }

    @Test func expiresByDeadlineInOrder() {
        var tracker = Tracker()
        tracker.sent(id: "late", to: "p@c", deadline: 50, sessionEpoch: 1)
        tracker.sent(id: "early", to: "p@c", deadline: 10, sessionEpoch: 1)
        #expect(tracker.nextDeadline == 10)
        #expect(tracker.expire(now: 9) == [])
        #expect(tracker.expire(now: 10) == ["early"])
        #expect(tracker.nextDeadline == 50)
    }

    @Test func answeredRequestsLeaveAnEarlyBoundThatExpireCorrects() {
        var tracker = Tracker()
        tracker.sent(id: "a", to: "p@c", deadline: 10, sessionEpoch: 1)
        tracker.sent(id: "b", to: "p@c", deadline: 30, sessionEpoch: 1)
        tracker.sent(id: "c", to: "p@c", deadline: 20, sessionEpoch: 1)
        #expect(tracker.received(id: "a", from: "p@c", ownBareJID: "me@c", ownDomain: "c") == .deliver(id: "a"))
        // Answers do not rescan: the bound may stay early, never late.
        #expect(tracker.nextDeadline.map { $0 <= 20 } == true)
        #expect(tracker.expire(now: 15) == [])
        #expect(tracker.nextDeadline == 20)
        #expect(tracker.expire(now: 25) == ["c"])
        #expect(tracker.nextDeadline == 30)
        _ = tracker.cancelled(id: "b")
        #expect(tracker.nextDeadline == nil)
        tracker.sent(id: "d", to: "p@c", deadline: 40, sessionEpoch: 1)
        #expect(tracker.nextDeadline == 40)
        #expect(tracker.removeAll() == ["d"])
        #expect(tracker.nextDeadline == nil)
    }

    @Test func newSessionFailsOnlyOlderRequests() {
        var tracker = Tracker()
        tracker.sent(id: "old", to: "p@c", deadline: 100, sessionEpoch: 1)
        tracker.sent(id: "new", to: "p@c", deadline: 100, sessionEpoch: 2)
        #expect(tracker.sessionReplaced(newEpoch: 2) == ["old"])
        #expect(tracker.isPending("new"))
    }

    @Test func cancellationForgetsRequest() {
        var tracker = Tracker()
        tracker.sent(id: "1", to: "p@c", deadline: 100, sessionEpoch: 1)
        let first = tracker.cancelled(id: "1")
        let second = tracker.cancelled(id: "1")
        #expect(first)
        #expect(!second)
    }
}

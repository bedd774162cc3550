import Foundation
import Storage
import Testing
@testable import Trust

/// A flood of refusals costs a bounded number of audit rows, with every refusal still counted.
@Suite("Audit aggregation and retention")
struct AuditAggregationTests {
    func temporaryLog(window: TimeInterval = 60, maxKeys: Int = 4096) throws -> (AuditLog, URL) {
        let (pool, directory) = try IntercloudDatabase.temporary(schema: [TrustSchema.self, AuditSchema.self])
        let aggregator = RefusalAggregator(settings: .init(window: window, maxKeys: maxKeys))
        return (AuditLog(database: pool, aggregator: aggregator), directory)
    }

    func refusal(_ peer: String, at: Date, reason: String = "unsigned", detail: String = "no envelope") -> AuditEvent {
        AuditEvent(at: at, module: "trust", kind: "trust.envelope", peer: peer, action: "urn:intercloud:catalog:0",
                   outcome: .refused, reason: reason, detail: detail)
    }

    @Test("2000 refusals from one stranger in one window are two rows: the first and a summary counting the rest")
    func floodFromOneSender() async throws {
        let (log, directory) = try temporaryLog()
        defer { try? FileManager.default.removeItem(at: directory) }
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        var written = 0
        for index in 0..<2000 {
            if try await log.offPool.recordRefusal(refusal("mallory@evil.test", at: t0 + Double(index) * 0.01)) != nil { written += 1 }
        }
        #expect(written == 1)
        #expect(try log.events().count == 1)
        // Before the window ends nothing more is written; after it, one summary.
        #expect(try await log.offPool.flushAggregated(now: t0 + 30) == 0)
        #expect(try await log.offPool.flushAggregated(now: t0 + 61) == 1)
        let events = try log.events()
        #expect(events.count == 2)
        #expect(events.map(\.count).reduce(0, +) == 2000)
        #expect(events.first?.detail.contains("1999 more") == true)
        // A refusal in the next window is written again at once.
        #expect(try await log.offPool.recordRefusal(refusal("mallory@evil.test", at: t0 + 62)) != nil)
    }

    @Test("senders, kinds and reasons are counted apart; accepted and operator events are never aggregated")
    func keysAndOutcomes() async throws {
        let (log, directory) = try temporaryLog()
        defer { try? FileManager.default.removeItem(at: directory) }
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        for _ in 0..<3 {
            try await log.offPool.recordRefusal(refusal("a@evil.test", at: t0))
            try await log.offPool.recordRefusal(refusal("b@evil.test", at: t0))
            try await log.offPool.recordRefusal(refusal("a@evil.test", at: t0, reason: "stale"))
            try await log.offPool.record(AuditEvent(at: t0, module: "trust", kind: "trust.handshake", peer: "c@ok.test", action: "respond", outcome: .accepted))
        }
        #expect(try log.events(matching: AuditQuery(outcome: .refused)).count == 3)
        #expect(try log.events(matching: AuditQuery(outcome: .accepted)).count == 3)
        #expect(try await log.offPool.drainAggregated() == 3)
        #expect(try log.events(matching: AuditQuery(outcome: .refused)).map(\.count).reduce(0, +) == 9)
    }

    @Test("past the tracked senders, a flood from many JIDs shares one overflow row per window")
    func manySenders() async throws {
        let (log, directory) = try temporaryLog(maxKeys: 16)
        defer { try? FileManager.default.removeItem(at: directory) }
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        for index in 0..<1000 { try await log.offPool.recordRefusal(refusal("s\(index)@evil.test", at: t0)) }
        #expect(log.aggregator?.openWindows == 17)
        #expect(try log.events().count == 17)
        try await log.offPool.drainAggregated()
        let overflow = try log.events(matching: AuditQuery(peer: RefusalAggregator.overflowPeer))
        #expect(overflow.map(\.count).reduce(0, +) == 1000 - 16)
    }

    @Test("text fields from peers are cut to their bounds; retention deletes old events")
    func boundsAndRetention() async throws {
        let (log, directory) = try temporaryLog()
        defer { try? FileManager.default.removeItem(at: directory) }
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        let long = String(repeating: "x", count: 100_000)
        let written = try #require(try await log.offPool.recordRefusal(refusal("\(long)@evil.test", at: t0, detail: long)))
        #expect(written.peer.utf8.count <= AuditLog.fieldLimits.peer && written.peer.hasSuffix("…"))
        #expect(written.detail.utf8.count <= AuditLog.fieldLimits.detail)
        // One Character of half a million combining marks is cut too (bytes, not Characters).
        let combining = "a" + String(repeating: "\u{0301}", count: 500_000)
        let cut = try #require(try await log.offPool.recordRefusal(refusal("z@evil.test", at: t0, detail: combining)))
        #expect(cut.detail.utf8.count <= AuditLog.fieldLimits.detail)
        try await log.offPool.record(AuditEvent(at: t0 + 86_400 * 10, module: "trust", kind: "trust.operator", peer: "p@x.test", action: "allow", outcome: .operator))
        #expect(try await log.offPool.prune(before: t0 + 86_400) == 2)
        #expect(try log.events().map(\.kind) == ["trust.operator"])
    }
}

import Foundation
import Storage
import Testing

/// An actor pinned to the storage executor, standing in for the journaling services: its method
/// blocks its thread the way a synchronous fsync does.
private actor Journal {
    nonisolated var unownedExecutor: UnownedSerialExecutor { StorageExecutor.shared.asUnownedSerialExecutor() }
    private(set) var writes = 0

    func write(blockingFor duration: TimeInterval) -> Bool {
        Thread.sleep(forTimeInterval: duration)
        writes += 1
        return StorageExecutor.shared.isCurrent
    }
}

@Suite struct StorageExecutorTests {
    @Test func journalingActorsRunOnTheStorageThread() async {
        let journal = Journal()
        #expect(await journal.write(blockingFor: 0))
        #expect(!StorageExecutor.shared.isCurrent)
    }

    /// As many journaling actors as the pool has threads each block for 0.4 s. They queue on the
    /// storage thread, so a task on the cooperative pool started meanwhile runs at once; on the
    /// pool, they would hold every cooperative thread until they were done.
    @Test func blockingWritesLeaveTheCooperativePoolFree() async throws {
        let journals = (0..<max(2, ProcessInfo.processInfo.activeProcessorCount)).map { _ in Journal() }
        let started = ContinuousClock.now
        let writes = Task { await withTaskGroup(of: Bool.self) { group in
            for journal in journals { for _ in 0..<2 { group.addTask { await journal.write(blockingFor: 0.2) } } }
            return await group.reduce(true) { $0 && $1 }
        } }
        try await Task.sleep(for: .milliseconds(50))
        let other = await Task.detached { ContinuousClock.now }.value
        #expect(other - started < .milliseconds(350), "a pool task waited for the journals' blocking writes")
        #expect(await writes.value)
        for journal in journals { #expect(await journal.writes == 2) }
        #expect(ContinuousClock.now - started >= .milliseconds(400 * journals.count))
    }
}

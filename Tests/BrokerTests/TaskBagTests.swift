import Synchronization
import Testing

@testable import Broker

/// The broker's background tasks: `close` cancels every task and returns only when all ended, and
/// nothing starts after it.
@Suite struct TaskBagTests {
    @Test func closeCancelsAndAwaitsEveryTaskAndRefusesNewOnes() async throws {
        let bag = TaskBag()
        let started = Mutex(0), ended = Mutex(0)
        for _ in 0..<50 {
            bag.spawn {
                started.withLock { $0 += 1 }
                // Runs until cancelled.
                while !Task.isCancelled { try? await Task.sleep(for: .milliseconds(5)) }
                ended.withLock { $0 += 1 }
            }
        }
        // Short tasks that end on their own, some before `spawn` has registered them.
        for _ in 0..<200 { bag.spawn { ended.withLock { $0 += 1 } } }
        while started.withLock({ $0 }) < 50 { try await Task.sleep(for: .milliseconds(1)) }
        await bag.close()
        #expect(ended.withLock { $0 } == 250)
        // Refused without a task being made: nothing is running or will run.
        bag.spawn { ended.withLock { $0 += 1 } }
        #expect(bag.running == 0)
    }

    @Test func closeWithNothingRunningReturns() async {
        let bag = TaskBag()
        bag.spawn {}
        await bag.close()
        await bag.close()
    }
}

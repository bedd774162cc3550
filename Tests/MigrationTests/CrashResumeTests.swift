import Foundation
import Testing
@testable import Migration

/// Stops one side right after each of its journal writes in turn, starts it again over the same
/// journal and driver files, resumes, and checks that both sides settle on one outcome with exactly
/// one running copy.
@Suite("Migration: crash after each journal write, then resume", .serialized)
struct CrashResumeTests {
    /// Journal writes of an undisturbed migration, per side.
    static func journalWritesOfHappyPath() async throws -> [MigrationRole: Int] {
        let fixture = try MigrationFixture()
        defer { Task { await fixture.removeFiles() } }
        let instanceID = try await fixture.setUp()
        #expect(try await fixture.migrate(instanceID).outcome == .completed)
        return await fixture.journalWrites
    }

    /// Runs one migration with a crash of `role` after its `write`-th journal write; returns whether it completed.
    static func crashAndResume(_ role: MigrationRole, after write: Int) async throws -> Bool {
        let fixture = try MigrationFixture()
        defer { Task { await fixture.removeFiles() } }
        let instanceID = try await fixture.setUp()
        await fixture.configure { $0.crashPlan = (role, write) }
        let context = "\(role.rawValue) crash after write \(write)"
        var crashedStep: String?
        do {
            _ = try await fixture.migrate(instanceID)
        } catch let crash as SimulatedCrash {
            crashedStep = crash.step
        }
        // The destination's crash surfaces at the source only as a failed request.
        if role == .destination { crashedStep = await fixture.journaledSteps[.destination]?[write - 1] }
        #expect(crashedStep != nil, "\(context): the crash did not happen")
        let step = "\(context) (\(crashedStep ?? "?"))"

        // Restart the crashed side over its files and resume it.
        if role == .source {
            try await fixture.startSource()
        } else {
            try await fixture.startDestination()
            for result in try await fixture.destinationRunner.resume() {
                #expect(result.outcome != .waiting || result.migrationID == "mig-1", "\(step)")
            }
        }
        // The source finishes (forward or back); a source that stalled waiting for the destination's
        // confirmation gets it now that the destination is back.
        var outcomes: [MigrationRunner.Outcome] = []
        for _ in 0..<3 {
            let results = try await fixture.sourceRunner.resume()
            outcomes += results.map(\.outcome)
            if !results.contains(where: { if case .stalled = $0.outcome { true } else { false } }) { break }
        }
        #expect(!outcomes.contains { if case .stalled = $0 { true } else { false } }, "\(step): \(outcomes)")
        return try await fixture.expectSettled("mig-1", sourceInstanceID: instanceID, context: step)
    }

    @Test("source crash after each journal write")
    func sourceCrashes() async throws {
        let writes = try #require(try await Self.journalWritesOfHappyPath()[.source])
        #expect(writes >= 12)
        var completed = 0
        for write in 1...writes {
            if try await Self.crashAndResume(.source, after: write) { completed += 1 }
        }
        // Crashes before the stop roll back or complete; after the cut-over they must complete.
        #expect(completed >= 5, "\(completed) of \(writes) completed")
    }

    @Test("destination crash after each journal write")
    func destinationCrashes() async throws {
        let writes = try #require(try await Self.journalWritesOfHappyPath()[.destination])
        #expect(writes >= 10)
        var completed = 0
        for write in 1...writes {
            if try await Self.crashAndResume(.destination, after: write) { completed += 1 }
        }
        // Once COMPLETED is journaled (metering, withdraw, reply), the migration must complete.
        #expect(completed >= 3, "\(completed) of \(writes) completed")
    }
}

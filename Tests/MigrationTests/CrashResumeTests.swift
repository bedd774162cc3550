import Foundation
import Providers
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
        defer { fixture.removeFiles() }
        let instanceID = try await fixture.setUp()
        #expect(try await fixture.migrate(instanceID).outcome == .completed)
        return await fixture.journalWrites
    }

    /// The destination fails its last step (the check that its copy runs), so both sides roll back
    /// from as far as a migration gets before the commit.
    static func failLate(_ fixture: MigrationFixture) async {
        await fixture.destinationCloud.inject(.fail(.describe))
    }

    static func journalWritesOfLateRollback() async throws -> [MigrationRole: Int] {
        let fixture = try MigrationFixture()
        defer { fixture.removeFiles() }
        let instanceID = try await fixture.setUp()
        await failLate(fixture)
        guard case .rolledBack = try await fixture.migrate(instanceID).outcome else {
            Issue.record("the injected fault did not roll back")
            return [:]
        }
        return await fixture.journalWrites
    }

    /// Runs one migration with a crash of `role` after its `write`-th journal write; returns whether
    /// it completed and the step journaled last before the crash.
    static func crashAndResume(
        _ role: MigrationRole, after write: Int, inject: (MigrationFixture) async -> Void = { _ in }
    ) async throws -> (completed: Bool, step: String) {
        let fixture = try MigrationFixture()
        defer { fixture.removeFiles() }
        let instanceID = try await fixture.setUp()
        await inject(fixture)
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
        return (try await fixture.expectSettled("mig-1", sourceInstanceID: instanceID, context: step), crashedStep ?? "")
    }

    @Test("source crash after each journal write: the resumed source always finishes forward")
    func sourceCrashes() async throws {
        let writes = try #require(try await Self.journalWritesOfHappyPath()[.source])
        #expect(writes >= 12)
        for write in 1...writes {
            // The destination stayed up, so every in-flight step can be issued again and succeed.
            let (completed, step) = try await Self.crashAndResume(.source, after: write)
            #expect(completed, "source crash after \(step) rolled back")
        }
    }

    @Test("destination crash after each journal write: rolled back unless the commit was journaled")
    func destinationCrashes() async throws {
        let writes = try #require(try await Self.journalWritesOfHappyPath()[.destination])
        #expect(writes >= 10)
        var completions = 0
        for write in 1...writes {
            let (completed, step) = try await Self.crashAndResume(.destination, after: write)
            // The source saw its request fail and rolled back; the destination's abort answer decides:
            // before COMPLETING it undoes its copy, from COMPLETING on it has committed.
            let committed = step.hasPrefix("completing") || step.hasPrefix("completed")
            #expect(completed == committed, "destination crash after \(step)")
            if completed { completions += 1 }
        }
        #expect(completions == 3)
    }

    @Test("crash after each journal write of a rollback: the resumed rollback finishes", arguments: [MigrationRole.source, .destination])
    func crashesDuringRollback(_ role: MigrationRole) async throws {
        let writes = try #require(try await Self.journalWritesOfLateRollback()[role])
        #expect(writes >= 12)
        for write in 1...writes {
            // A restarted driver has forgotten the injected fault, so a crash before the failing step
            // lets the migration complete; after it, the rollback must finish. Either way the end
            // state is checked in full.
            let (completed, step) = try await Self.crashAndResume(role, after: write, inject: Self.failLate)
            if step.contains("rollingBack") || step.contains("rolledBack") {
                #expect(!completed, "\(role.rawValue) crash after \(step) completed instead of rolling back")
            }
        }
    }
}

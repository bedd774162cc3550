import Foundation
import GRDB
import Storage
import Testing
@testable import Metering

@Suite struct UsageLedgerTests {
    let providerSignature: [UInt8] = Array(repeating: 0xA1, count: 64)
    let consumerSignature: [UInt8] = Array(repeating: 0xC2, count: 72)

    /// A fresh ledger in its own SQLite file; the directory is removed afterwards.
    func withLedger(_ body: (UsageLedger, String) throws -> Void) throws {
        let (pool, directory) = try IntercloudDatabase.temporary(schema: [MeteringSchema.self])
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = pool.path
        try body(UsageLedger(database: pool), path)
        try pool.close()
    }

    @Test func proposingTheSameRecordAgainIsIdempotent() throws {
        try withLedger { ledger, _ in
            let first = try ledger.propose(record(), providerSignature: providerSignature, role: .consumer, at: t0)
            #expect(first.state == .proposed)
            #expect(first.peer == provider)
            #expect(first.canonicalBytes == record().canonicalBytes())
            // A retry, even with another (randomized) signature, returns the stored row unchanged.
            let again = try ledger.propose(record(), providerSignature: [0x01], role: .consumer, at: t0 + 60)
            #expect(again == first)
            #expect(again.providerSignature == providerSignature)
        }
    }

    @Test func aDifferentRecordUnderTheSameKeyIsRefused() throws {
        try withLedger { ledger, _ in
            let stored = try ledger.propose(record(), providerSignature: providerSignature, role: .provider, at: t0)
            let rewritten = record(vcpuSeconds: 36_001)
            #expect(throws: LedgerError.conflictingRecord(
                rewritten.key, storedSHA256: stored.sha256, offeredSHA256: SHA256.hex(SHA256.digest(rewritten.canonicalBytes())))) {
                try ledger.propose(rewritten, providerSignature: providerSignature, role: .provider, at: t0)
            }
            #expect(try ledger.entry(rewritten.key)?.canonicalBytes == record().canonicalBytes())
            // The same agreement and sequence from another provider is another record.
            var otherProvider = rewritten
            otherProvider.provider = "broker@cloud3.example"
            #expect(throws: Never.self) {
                try ledger.propose(otherProvider, providerSignature: providerSignature, role: .consumer, at: t0)
            }
        }
    }

    @Test func countersignTransitions() throws {
        try withLedger { ledger, _ in
            let key = try ledger.propose(record(), providerSignature: providerSignature, role: .consumer, at: t0).key
            let signed = try ledger.countersign(key, consumerSignature: consumerSignature, at: t0 + 60)
            #expect(signed.state == .countersigned)
            #expect(signed.consumerSignature == consumerSignature)
            #expect(signed.settledAt == t0 + 60)
            // Again: unchanged, first countersignature kept.
            #expect(try ledger.countersign(key, consumerSignature: [0x09], at: t0 + 120) == signed)
            #expect(throws: LedgerError.invalidTransition(key, from: .countersigned, to: .disputed)) {
                try ledger.dispute(key, reasons: ["late"], at: t0 + 180)
            }
        }
    }

    @Test func disputeTransitions() throws {
        try withLedger { ledger, _ in
            let key = try ledger.propose(record(), providerSignature: providerSignature, role: .provider, at: t0).key
            let reasons = ["vcpu_seconds: provider 36000 seconds, consumer 30000 seconds", "quote \" and\nnewline"]
            let disputed = try ledger.dispute(key, reasons: reasons, at: t0 + 60)
            #expect(disputed.state == .disputed)
            #expect(disputed.disputeReasons == reasons)
            #expect(disputed.consumerSignature == nil)
            #expect(try ledger.dispute(key, reasons: ["other"], at: t0 + 120).disputeReasons == reasons)
            #expect(throws: LedgerError.invalidTransition(key, from: .disputed, to: .countersigned)) {
                try ledger.countersign(key, consumerSignature: consumerSignature, at: t0 + 180)
            }
            // The provider answers a dispute with a corrected record under the next sequence number.
            #expect(try ledger.nextSequence(agreementID: "a1", provider: provider) == 2)
            #expect(try ledger.nextSequence(agreementID: "a9", provider: provider) == 0)
        }
    }

    @Test func refusesMissingRecordsAndBadInput() throws {
        try withLedger { ledger, _ in
            let missing = UsageRecordKey(agreementID: "nope", sequence: 1, provider: provider)
            #expect(throws: LedgerError.notFound(missing)) { try ledger.countersign(missing, consumerSignature: consumerSignature, at: t0) }
            #expect(throws: LedgerError.notFound(missing)) { try ledger.proof(of: missing) }
            #expect(throws: LedgerError.self) { try ledger.propose(record(), providerSignature: [], role: .consumer, at: t0) }
            #expect(throws: LedgerError.self) {
                try ledger.propose(record(), providerSignature: Array(repeating: 1, count: 4097), role: .consumer, at: t0)
            }
            let key = try ledger.propose(record(), providerSignature: providerSignature, role: .consumer, at: t0).key
            #expect(throws: LedgerError.self) { try ledger.dispute(key, reasons: [], at: t0) }
            #expect(throws: LedgerError.self) { try ledger.dispute(key, reasons: Array(repeating: "x", count: 65), at: t0) }
            #expect(try ledger.entry(key)?.state == .proposed)
        }
    }

    @Test func survivesReopenAndProofChecksOut() throws {
        let (pool, directory) = try IntercloudDatabase.temporary(schema: [MeteringSchema.self])
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = pool.path
        let key: UsageRecordKey
        do {
            let ledger = UsageLedger(database: pool)
            key = try ledger.propose(record(), providerSignature: providerSignature, role: .consumer, at: t0).key
            try ledger.countersign(key, consumerSignature: consumerSignature, at: t0 + 60)
            try pool.close()
        }

        let reopened = try IntercloudDatabase.open(path: path, schema: [MeteringSchema.self])
        let ledger = UsageLedger(database: reopened)
        let proof = try ledger.proof(of: key)
        #expect(proof.state == .countersigned)
        #expect(proof.canonicalBytes == record().canonicalBytes())
        #expect(proof.providerSignature == providerSignature)
        #expect(proof.consumerSignature == consumerSignature)
        #expect(try UsageRecord(canonicalBytes: proof.canonicalBytes) == record())
        // The digest a third party computes with standard tools.
        let file = directory.appendingPathComponent("record.txt")
        try Data(proof.canonicalBytes).write(to: file)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        process.arguments = [file.path]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(printed.hasPrefix(proof.sha256 + " "))

        // Proposing it again after the reopen is still idempotent, and a conflicting one still refused.
        #expect(try ledger.propose(record(), providerSignature: providerSignature, role: .consumer, at: t0 + 600).state == .countersigned)
        #expect(throws: LedgerError.self) {
            try ledger.propose(record(bytes: 1), providerSignature: providerSignature, role: .consumer, at: t0 + 600)
        }
        // The schema is registered once under its frozen name; ledger writes run synchronous = FULL.
        let migrations = try reopened.read { db in try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations") }
        let synchronous = try reopened.write { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
        #expect(migrations == ["metering.v1"])
        #expect(synchronous == 2)
        try reopened.close()
    }

    @Test func queriesByPeerAndPeriodAndBillableRecords() throws {
        try withLedger { ledger, _ in
            let day = 24 * hour
            let june1 = record(sequence: 1, period: period(0, day))
            let june2 = record(sequence: 2, period: period(day, 2 * day))
            let june3 = record(sequence: 3, period: period(2 * day, 3 * day))
            for item in [june1, june2, june3] {
                try ledger.propose(item, providerSignature: providerSignature, role: .consumer, at: t0 + 3 * day)
            }
            try ledger.countersign(june1.key, consumerSignature: consumerSignature, at: t0 + 3 * day)
            try ledger.countersign(june3.key, consumerSignature: consumerSignature, at: t0 + 3 * day)
            // We provide to someone else too: not that peer's rows.
            var outgoing = record(agreement: "b1", sequence: 0, period: period(0, day))
            outgoing.provider = consumer
            outgoing.consumer = "broker@cloud3.example"
            try ledger.propose(outgoing, providerSignature: providerSignature, role: .provider, at: t0 + day)

            #expect(try ledger.entries(peer: provider, overlapping: period(0, 3 * day)).map(\.key.sequence) == [1, 2, 3])
            #expect(try ledger.entries(peer: provider, overlapping: period(day + 1, day + 2)).map(\.key.sequence) == [2])
            #expect(try ledger.entries(peer: provider, overlapping: period(0, 3 * day), state: .proposed).map(\.key.sequence) == [2])
            #expect(try ledger.entries(peer: "broker@cloud3.example", overlapping: period(0, day)).map(\.key.agreementID) == ["b1"])
            #expect(try ledger.billableRecords(peer: provider, role: .consumer, period: period(0, 3 * day)) == [june1, june3])
            // Billing covers only records entirely inside the period.
            #expect(try ledger.billableRecords(peer: provider, role: .consumer, period: period(0, 2 * day + 1)) == [june1])
            #expect(try ledger.billableRecords(peer: provider, role: .provider, period: period(0, 3 * day)).isEmpty)
        }
    }

    @Test func slaBreachesAreStoredOncePerBreach() throws {
        try withLedger { ledger, path in
            let breach = SLABreach(agreementID: "a1", kind: .availability, detail: "availability 99% below 99.9%", from: t0, until: t0 + hour)
            try ledger.recordBreach(breach, at: t0 + hour)
            var remeasured = breach
            remeasured.detail = "availability 98% below 99.9%"
            try ledger.recordBreach(remeasured, at: t0 + 2 * hour)
            let migration = SLABreach(agreementID: "a2", kind: .migrationDowntime, detail: "migration m1: downtime 420 s above 300 s",
                                      from: t0 + 2 * hour, until: t0 + 2 * hour + 420)
            try ledger.recordBreach(migration, at: t0 + 3 * hour)
            #expect(try ledger.breaches(overlapping: period(0, 3 * hour)) == [remeasured, migration])
            #expect(try ledger.breaches(agreementID: "a2", overlapping: period(0, 3 * hour)) == [migration])
            #expect(try ledger.breaches(overlapping: period(3 * hour, 4 * hour)).isEmpty)
            #expect(FileManager.default.fileExists(atPath: path))
        }
    }
}

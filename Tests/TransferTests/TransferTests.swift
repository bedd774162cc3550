import Foundation
import Synchronization
import Testing

@testable import Transfer

@Suite struct TransferChannelTests {
    @Test func identityFingerprintMatchesTrust() throws {
        let brokers = try TestBrokers.make()
        #expect(brokers.source.fingerprint == brokers.sourceTrustFingerprint)
        #expect(brokers.destination.fingerprint == brokers.destinationTrustFingerprint)
        #expect(brokers.source.certificateChainDER.count == 2)  // leaf + intermediate, no root
    }

    @Test func multiChunkFileArrivesWithEndToEndHash() async throws {
        let pair = try Pair()
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        let digest = try makeFile(at: file, size: 17 * 64 * 1024 + 123)  // 18 chunks, short last one
        let transfer = try pair.expect(file)
        let receipt = try await pair.send(file, transfer)
        #expect(receipt.sha256 == digest)
        #expect(receipt.fileSize == 17 * 64 * 1024 + 123)
        #expect(receipt.attempts == 1 && receipt.resumePoints == [0])
        #expect(receipt.chunkBytesTransferred == receipt.fileSize)
        let serverSide = try #require(await outcome(of: transfer.transferID, on: pair.server)).get()
        #expect(serverSide.sha256 == digest)
        #expect(try sha256(of: transfer.destination) == digest)
        #expect(await partialRemoved(transfer))
        #expect(!FileManager.default.fileExists(atPath: transfer.destination.path + ".partial.chunks"))
    }

    @Test func concurrentTransfersToOneServerEachLandWhereRegistered() async throws {
        let pair = try Pair()
        defer { pair.cleanUp() }
        var jobs: [(URL, ExpectedTransfer, String)] = []
        for seed in 1...3 {
            let file = pair.directory.appendingPathComponent("image-\(seed).raw")
            let digest = try makeFile(at: file, size: 20 * 64 * 1024 + seed, seed: UInt64(seed))
            jobs.append((file, try pair.expect(file), digest))
        }
        let receipts = try await withThrowingTaskGroup(of: TransferReceipt.self) { group in
            for (file, transfer, _) in jobs { group.addTask { try await pair.send(file, transfer) } }
            return try await group.reduce(into: [TransferReceipt]()) { $0.append($1) }
        }
        #expect(receipts.count == 3)
        for (_, transfer, digest) in jobs {
            #expect(try sha256(of: transfer.destination) == digest)
        }
    }

    @Test func emptyFileCompletes() async throws {
        let pair = try Pair()
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("empty.raw")
        let digest = try makeFile(at: file, size: 0)
        let transfer = try pair.expect(file)
        let receipt = try await pair.send(file, transfer)
        #expect(receipt.sha256 == digest)
        #expect(try Data(contentsOf: transfer.destination).isEmpty)
    }

    @Test func senderRefusesServerWithUnexpectedCertificate() async throws {
        let pair = try Pair()
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        _ = try makeFile(at: file, size: 100_000)
        let transfer = try pair.expect(file)
        let expected = pair.brokers.stranger.fingerprint
        await #expect(throws: TransferError.peerCertificateMismatch(expected: expected, presented: pair.brokers.destination.fingerprint)) {
            try await pair.send(file, transfer, expectedServer: expected)
        }
        #expect(await partialRemoved(transfer))
    }

    @Test func serverRefusesSenderWithUnpinnedCertificate() async throws {
        let pair = try Pair()
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        _ = try makeFile(at: file, size: 100_000)
        let transfer = try pair.expect(file)
        let stranger = TransferSender(identity: pair.brokers.stranger, options: .init(chunkSize: 64 * 1024))
        // Refused in the TLS handshake: no registered transfer pins that certificate.
        let error = await #expect(throws: TransferError.self) { try await pair.send(file, transfer, sender: stranger) }
        guard case .certificateRefusedByPeer = error else {
            Issue.record("expected certificateRefusedByPeer, got \(String(describing: error))")
            return
        }
        #expect(await partialRemoved(transfer))
    }

    @Test func certificatePinnedForAnotherTransferIsRefusedForThisOne() async throws {
        let pair = try Pair()
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        _ = try makeFile(at: file, size: 100_000)
        let transfer = try pair.expect(file)
        _ = try pair.expect(file, peer: pair.brokers.stranger.fingerprint)  // the stranger is expected elsewhere
        let stranger = TransferSender(identity: pair.brokers.stranger, options: .init(chunkSize: 64 * 1024))
        let error = await #expect(throws: TransferError.self) { try await pair.send(file, transfer, sender: stranger) }
        guard case .peerRefused(.peerCertificateNotAccepted, _) = error else {
            Issue.record("expected peerCertificateNotAccepted, got \(String(describing: error))")
            return
        }
        // The legitimate sender is not locked out by the stranger's attempt.
        let receipt = try await pair.send(file, transfer)
        #expect(receipt.sha256 == transfer.sha256)
    }

    @Test func unknownTokenIsRefusedAndWritesNothing() async throws {
        let pair = try Pair()
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        _ = try makeFile(at: file, size: 100_000)
        let transfer = try pair.expect(file)
        let error = await #expect(throws: TransferError.self) { try await pair.send(file, transfer, token: "guessed") }
        guard case .peerRefused(.unknownTransfer, _) = error else {
            Issue.record("expected unknownTransfer, got \(String(describing: error))")
            return
        }
        #expect(await partialRemoved(transfer))
        #expect(!FileManager.default.fileExists(atPath: transfer.destination.path))
    }

    @Test func sizeDifferentFromTheOfferIsRefused() async throws {
        let pair = try Pair()
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        _ = try makeFile(at: file, size: 100_000)
        let transfer = try pair.expect(file, size: 50_000)
        let error = await #expect(throws: TransferError.self) { try await pair.send(file, transfer) }
        guard case .peerRefused(.offerMismatch, _) = error else {
            Issue.record("expected offerMismatch, got \(String(describing: error))")
            return
        }
    }

    @Test func tamperedChunkIsRefusedOnBothSides() async throws {
        let pair = try Pair()
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        _ = try makeFile(at: file, size: 40 * 64 * 1024)
        let transfer = try pair.expect(file)
        var sender = pair.sender()
        sender.faults.corruptChunk = 5
        let error = await #expect(throws: TransferError.self) { try await pair.send(file, transfer, sender: sender) }
        guard case .peerRefused(.chunkDigestMismatch, let reason) = error else {
            Issue.record("expected chunkDigestMismatch, got \(String(describing: error))")
            return
        }
        #expect(reason.contains("chunk 5"))
        let serverSide = try #require(await outcome(of: transfer.transferID, on: pair.server))
        guard case .failure(.refused(.chunkDigestMismatch, _)) = serverSide else {
            Issue.record("server outcome \(serverSide)")
            return
        }
        #expect(!FileManager.default.fileExists(atPath: transfer.destination.path))
    }

    @Test func wrongEndToEndHashIsRefusedAndPartialRemoved() async throws {
        let pair = try Pair()
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        _ = try makeFile(at: file, size: 5 * 64 * 1024)
        let transfer = try pair.expect(file, sha256: String(repeating: "ab", count: 32))
        let error = await #expect(throws: TransferError.self) { try await pair.send(file, transfer) }
        guard case .peerRefused(.endToEndDigestMismatch, _) = error else {
            Issue.record("expected endToEndDigestMismatch, got \(String(describing: error))")
            return
        }
        let serverSide = try #require(await outcome(of: transfer.transferID, on: pair.server))
        guard case .failure(.refused(.endToEndDigestMismatch, _)) = serverSide else {
            Issue.record("server outcome \(serverSide)")
            return
        }
        #expect(!FileManager.default.fileExists(atPath: transfer.destination.path))
        #expect(await partialRemoved(transfer))
    }

    @Test func resumesFromLastVerifiedChunkAfterTheServerDropsTheConnection() async throws {
        let pair = try Pair()
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        let digest = try makeFile(at: file, size: 64 * 64 * 1024)
        let transfer = try pair.expect(file)
        pair.server.faults.withLock { $0.dropConnectionAfterStoredChunks = 10 }
        let sender = pair.sender(.init(chunkSize: 64 * 1024, retry: RetryPolicy(maximumAttempts: 3, initialBackoff: 0.05)))
        let receipt = try await pair.send(file, transfer, sender: sender)
        #expect(receipt.sha256 == digest)
        #expect(receipt.attempts == 2)
        #expect(receipt.resumePoints.count == 2 && receipt.resumePoints[0] == 0)
        #expect(receipt.resumePoints[1] >= 10)
        let resent = receipt.chunkBytesTransferred - receipt.fileSize
        #expect(resent < receipt.fileSize)
        #expect(try sha256(of: transfer.destination) == digest)
        let serverSide = try #require(await outcome(of: transfer.transferID, on: pair.server)).get()
        #expect(serverSide.attempts == 2 && serverSide.resumePoints == receipt.resumePoints)
    }

    @Test func resumesAfterTheSendingTaskIsCancelled() async throws {
        let pair = try Pair()
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        let digest = try makeFile(at: file, size: 200 * 64 * 1024)
        let transfer = try pair.expect(file)
        // Small buffers and chunks so the first attempt cannot race to the end before it is cut.
        let sender = pair.sender(.init(chunkSize: 64 * 1024, bufferCount: 2))
        let cut = TaskSlot()
        let first = Task { () async throws -> TransferReceipt in
            try await pair.send(file, transfer, sender: sender) { progress in
                if progress.bytesDone >= 20 * 64 * 1024 { cut.cancel() }
            }
        }
        cut.set(first)
        await #expect(throws: TransferError.cancelled) { try await first.value }
        // The server notices the break and releases the transfer; a new send resumes.
        var receipt: TransferReceipt?
        for _ in 0..<50 where receipt == nil {
            let attempt = await sendResult(pair, file, transfer, sender)
            switch attempt {
            case .success(let value): receipt = value
            case .failure(let error) where error == .peerRefused(.busy, error.busyReason): try await Task.sleep(for: .milliseconds(50))
            case .failure(let error): throw error
            }
        }
        let done = try #require(receipt)
        #expect(done.sha256 == digest)
        #expect(done.resumePoints.first ?? 0 >= 20)
        #expect(done.chunkBytesTransferred < done.fileSize)
        #expect(try sha256(of: transfer.destination) == digest)
    }

    @Test func transferWithdrawnMidwayIsRefusedAndLeavesNothing() async throws {
        let pair = try Pair()
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        _ = try makeFile(at: file, size: 200 * 64 * 1024)
        let transfer = try pair.expect(file)
        let server = pair.server
        let sender = pair.sender(.init(chunkSize: 64 * 1024, bufferCount: 2))
        let error = await #expect(throws: TransferError.self) {
            try await pair.send(file, transfer, sender: sender) { progress in
                if progress.bytesDone >= 10 * 64 * 1024 { server.cancel(transferID: transfer.transferID) }
            }
        }
        guard case .peerRefused(.cancelled, _) = error else {
            Issue.record("expected cancelled, got \(String(describing: error))")
            return
        }
        await #expect(throws: TransferError.cancelled) { try await server.completion(of: transfer.transferID) }
        #expect(!FileManager.default.fileExists(atPath: transfer.destination.path))
        #expect(await partialRemoved(transfer))
    }

    @Test func progressIsMonotonicWithRateAndETA() async throws {
        let pair = try Pair()
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        _ = try makeFile(at: file, size: 100 * 64 * 1024)
        let transfer = try pair.expect(file)
        let reports = Recorder<TransferProgress>()
        _ = try await pair.send(file, transfer) { reports.append($0) }
        let all = reports.all
        #expect(all.count >= 50)
        #expect(zip(all, all.dropFirst()).allSatisfy { $0.bytesDone <= $1.bytesDone })
        #expect(all.allSatisfy { $0.totalBytes == 100 * 64 * 1024 })
        #expect(all.last?.bytesDone == 100 * 64 * 1024)
        #expect(all.last?.eta == 0)
        #expect(all.contains { $0.bytesPerSecond > 0 && ($0.eta ?? 0) > 0 })
    }

    @Test func fileFarLargerThanTheBufferPoolGoesThroughFixedBuffers() async throws {
        let pair = try Pair(serverOptions: .init(bufferCount: 2, syncOnCompletion: false))
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        let size = 32 << 20
        let digest = try makeFile(at: file, size: size)
        let transfer = try pair.expect(file)
        let chunkSize = 256 * 1024
        let sender = pair.sender(.init(chunkSize: chunkSize, bufferCount: 2))
        // 128 chunks through 2 buffers on each side: memory is 2 × 256 KiB whatever the size.
        let pool = ChunkBufferPool(count: 2, chunkCapacity: chunkSize)
        #expect(pool.count * (pool.chunkCapacity + ChunkBuffer.headerRoom) < size / 60)
        let receipt = try await pair.send(file, transfer, sender: sender)
        #expect(receipt.sha256 == digest)
        #expect(try sha256(of: transfer.destination) == digest)
    }

    /// Direct (past the page cache) and buffered writes and reads: a break mid-file resumes from
    /// the receiver's verified prefix, re-read from disk, and the chained hash still ends in the
    /// file's SHA-256; the last chunk's short tail (not a whole page) is read and written too.
    @Test(arguments: [true, false], [true, false])
    func resumeYieldsTheEndToEndHashWithEitherIOMode(directWrites: Bool, directReads: Bool) async throws {
        let pair = try Pair(serverOptions: .init(syncOnCompletion: false, directWrites: directWrites))
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        let size = 30 * 64 * 1024 + 1000
        let digest = try makeFile(at: file, size: size)
        let transfer = try pair.expect(file)
        pair.server.faults.withLock { $0.dropConnectionAfterStoredChunks = 7 }
        let sender = pair.sender(
            .init(chunkSize: 64 * 1024, retry: RetryPolicy(maximumAttempts: 3, initialBackoff: 0.05), directReads: directReads))
        let receipt = try await pair.send(file, transfer, sender: sender)
        #expect(receipt.attempts == 2)
        #expect(receipt.resumePoints.count == 2 && receipt.resumePoints[0] == 0 && receipt.resumePoints[1] >= 7)
        #expect(receipt.sha256 == digest)
        #expect(try sha256(of: transfer.destination) == digest)
        let serverSide = try #require(await outcome(of: transfer.transferID, on: pair.server)).get()
        #expect(serverSide.sha256 == digest)
    }

    /// A chunk size that is a whole number of hash blocks but not of pages: direct IO is asked for
    /// on both sides and cannot be used, and the transfer goes through the page cache instead.
    @Test func chunkSizeOffThePageBoundaryFallsBackToBufferedIO() async throws {
        let pair = try Pair(serverOptions: .init(syncOnCompletion: false, directWrites: true))
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        let chunk = 4096 + 64
        let digest = try makeFile(at: file, size: 10 * chunk + 7)
        let transfer = try pair.expect(file)
        let receipt = try await pair.send(file, transfer, sender: pair.sender(.init(chunkSize: chunk, directReads: true)))
        #expect(receipt.sha256 == digest)
        #expect(try sha256(of: transfer.destination) == digest)
    }

    @Test func partialFileSurvivesServerRestartAndCorruptedChunksAreResent() async throws {
        let brokers = try TestBrokers.make()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("image.raw")
        let chunk = 64 * 1024
        let digest = try makeFile(at: file, size: 40 * chunk)
        let transfer = ExpectedTransfer(
            transferID: "restart", token: "secret", destination: directory.appendingPathComponent("out.img"),
            fileSize: UInt64(40 * chunk), sha256: digest, peerFingerprint: brokers.source.fingerprint)
        let sender = TransferSender(identity: brokers.source, options: .init(chunkSize: chunk, retry: .none))

        let first = try TransferServer(identity: brokers.destination, options: .init(syncOnCompletion: false))
        try first.register(transfer)
        first.faults.withLock { $0.dropConnectionAfterStoredChunks = 12 }
        await #expect(throws: TransferError.self) {
            try await sender.send(
                file: file, host: "127.0.0.1", port: first.port, transferID: "restart", token: "secret",
                expectedPeerFingerprint: brokers.destination.fingerprint)
        }
        first.shutdown()

        // Damage chunk 3 on disk: the re-hash on resume must notice and resume from there.
        let partial = try FileHandle(forUpdating: URL(fileURLWithPath: transfer.destination.path + ".partial"))
        try partial.seek(toOffset: UInt64(3 * chunk + 10))
        try partial.write(contentsOf: Data([0xde, 0xad]))
        try partial.close()

        let second = try TransferServer(identity: brokers.destination, options: .init(syncOnCompletion: false))
        defer { second.shutdown() }
        try second.register(transfer)
        let receipt = try await sender.send(
            file: file, host: "127.0.0.1", port: second.port, transferID: "restart", token: "secret",
            expectedPeerFingerprint: brokers.destination.fingerprint)
        #expect(receipt.resumePoints == [3])
        #expect(receipt.chunkBytesTransferred == UInt64(37 * chunk))
        #expect(try sha256(of: transfer.destination) == digest)
    }
}

/// Lets a progress callback cancel the task it runs in.
final class TaskSlot: Sendable {
    private let slot = Mutex<(task: Task<TransferReceipt, any Error>?, cancelRequested: Bool)>((nil, false))
    func set(_ task: Task<TransferReceipt, any Error>) {
        let cancelNow = slot.withLock { state in
            state.task = task
            return state.cancelRequested
        }
        if cancelNow { task.cancel() }
    }
    func cancel() {
        let task = slot.withLock { state in
            state.cancelRequested = true
            return state.task
        }
        task?.cancel()
    }
}

private func sendResult(
    _ pair: Pair, _ file: URL, _ transfer: ExpectedTransfer, _ sender: TransferSender
) async -> Result<TransferReceipt, TransferError> {
    do throws(TransferError) {
        return .success(try await pair.send(file, transfer, sender: sender))
    } catch {
        return .failure(error)
    }
}

extension TransferError {
    /// The reason of a busy refusal (so a busy error compares equal whatever its text).
    var busyReason: String {
        if case .peerRefused(.busy, let reason) = self { return reason }
        return ""
    }
}

/// Whether the receiver removed the transfer's partial file. Its connection thread removes it when
/// it refuses or finishes, which may be just after the sender already saw the outcome: allow it a
/// moment (bounded) instead of racing it.
func partialRemoved(_ transfer: ExpectedTransfer) async -> Bool {
    let partial = transfer.destination.path + ".partial"
    let deadline = ContinuousClock.now + .seconds(5)
    while FileManager.default.fileExists(atPath: partial), ContinuousClock.now < deadline {
        try? await Task.sleep(for: .milliseconds(20))
    }
    return !FileManager.default.fileExists(atPath: partial)
}

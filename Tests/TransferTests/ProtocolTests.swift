import Crypto
import Foundation
import Testing

@testable import Transfer

@Suite struct FrameTests {
    @Test func controlFramesRoundTrip() throws {
        let frames: [ControlFrame] = [
            .hello(Hello(fileSize: 1 << 40, chunkSize: 4 << 20, transferID: "t-1", token: "s3cret")),
            .accept(resumeFrom: 7, chainingValue: Array(0..<32)),
            .ack(storedChunks: 12),
            .complete(fileSize: 99, sha256: Array(repeating: 0xab, count: 32)),
            .error(.chunkDigestMismatch, "chunk 3 hashes to …"),
            .error(RefusalCode(rawValue: 200), "a code from a newer peer"),
        ]
        for frame in frames {
            let bytes = frame.encoded()
            let header = try FrameHeader.parse(bytes.prefix(5), maximumChunkFrameLength: 0)
            #expect(header.length == bytes.count - 5)
            #expect(try ControlFrame.decode(type: header.type, payload: bytes[5...]) == frame)
        }
    }

    @Test func oversizedAndUnknownFramesAreRefusedBeforeTheirPayload() {
        // A control frame claiming 1 MiB, a chunk before any was negotiated, a chunk bigger than
        // the negotiated size, an unknown type.
        #expect(throws: FrameError.self) { try FrameHeader.parse([4, 0, 0x10, 0, 0], maximumChunkFrameLength: 0) }
        #expect(throws: FrameError.self) { try FrameHeader.parse([3, 0, 0, 0x10, 0], maximumChunkFrameLength: 0) }
        #expect(throws: FrameError.self) { try FrameHeader.parse([3, 0, 1, 0, 41], maximumChunkFrameLength: 40 + 65536) }
        #expect(throws: FrameError.self) { try FrameHeader.parse([3, 0, 0, 0, 40], maximumChunkFrameLength: 40 + 65536) }
        #expect(throws: FrameError.self) { try FrameHeader.parse([9, 0, 0, 0, 0], maximumChunkFrameLength: 0) }
        #expect((try? FrameHeader.parse([3, 0, 1, 0, 40], maximumChunkFrameLength: 40 + 65536))?.length == 65576)
    }

    @Test func truncatedOrPaddedPayloadsAreRefused() {
        let hello = ControlFrame.hello(Hello(fileSize: 5, chunkSize: 4096, transferID: "id", token: "tok")).encoded()
        #expect(throws: FrameError.self) { try ControlFrame.decode(type: .hello, payload: hello[5..<(hello.count - 1)]) }
        #expect(throws: FrameError.self) { try ControlFrame.decode(type: .hello, payload: (hello + [0])[5...]) }
        // A string length pointing past the end.
        #expect(throws: FrameError.self) { try ControlFrame.decode(type: .error, payload: [6, 0xff, 0xff, 65][...]) }
        // Not UTF-8.
        #expect(throws: FrameError.self) { try ControlFrame.decode(type: .error, payload: [6, 0, 2, 0xff, 0xfe][...]) }
    }
}

@Suite struct SessionTests {
    let expected = ExpectedTransfer(
        transferID: "t", token: "tok", destination: URL(fileURLWithPath: "/nonexistent/out.img"), fileSize: 10_000,
        sha256: String(repeating: "00", count: 32), peerFingerprint: String(repeating: "aa", count: 32))

    func hello(size: UInt64 = 10_000, chunk: UInt32 = 4096, token: String = "tok") -> Hello {
        Hello(fileSize: size, chunkSize: chunk, transferID: "t", token: token)
    }

    func session() -> ReceiverSession {
        ReceiverSession(peerFingerprint: String(repeating: "aa", count: 32), maximumChunkSize: 1 << 20)
    }

    @Test func receiverRefusesWhatDoesNotMatchTheRegistration() {
        func refusal(_ actions: [ReceiverSession.Action]) -> RefusalCode? {
            for case .send(.error(let code, _)) in actions { return code }
            return nil
        }
        var s = session()
        #expect(refusal(s.receivedHello(hello(token: "nope"), lookup: .registered(expected, activeElsewhere: false))) == .unknownTransfer)
        s = session()
        #expect(refusal(s.receivedHello(hello(), lookup: .notRegistered)) == .unknownTransfer)
        s = ReceiverSession(peerFingerprint: String(repeating: "bb", count: 32), maximumChunkSize: 1 << 20)
        #expect(refusal(s.receivedHello(hello(), lookup: .registered(expected, activeElsewhere: false))) == .peerCertificateNotAccepted)
        s = session()
        #expect(refusal(s.receivedHello(hello(size: 10_001), lookup: .registered(expected, activeElsewhere: false))) == .offerMismatch)
        s = session()
        #expect(refusal(s.receivedHello(hello(chunk: 2 << 20), lookup: .registered(expected, activeElsewhere: false))) == .offerMismatch)
        s = session()
        #expect(refusal(s.receivedHello(hello(), lookup: .registered(expected, activeElsewhere: true))) == .busy)
        // None of these refusals fails the registered transfer itself.
        s = session()
        let actions = s.receivedHello(hello(token: "nope"), lookup: .registered(expected, activeElsewhere: false))
        #expect(!actions.contains { if case .reportFailed = $0 { true } else { false } })
    }

    @Test func receiverAcceptsResumesAndEnforcesOrder() {
        var s = session()
        let layout = ChunkLayout(fileSize: 10_000, chunkSize: 4096)
        #expect(s.receivedHello(hello(), lookup: .registered(expected, activeElsewhere: false)) == [.prepareStorage(expected, layout)])
        let state = [UInt8](repeating: 9, count: 32)
        #expect(
            s.storagePrepared(verifiedChunks: 1, prefixChainingValue: state, fullFileSHA256: nil)
                == [.send(.accept(resumeFrom: 1, chainingValue: state))])
        let digest = [UInt8](repeating: 1, count: 32)
        // Chunk 2 before 1, and chunk 1 with the wrong length, are refused for good.
        var copy = s
        #expect(copy.receivedChunkHeader(index: 2, digest: digest, dataLength: 10_000 - 8192).contains(.reportFailed(
            .refused(.malformedFrame, "chunk 2 where 1 was expected"))))
        copy = s
        #expect(copy.receivedChunkHeader(index: 1, digest: digest, dataLength: 100).contains { if case .reportFailed = $0 { true } else { false } })
        #expect(s.receivedChunkHeader(index: 1, digest: digest, dataLength: 4096) == [.receiveChunkData(index: 1, length: 4096, digest: digest)])
        #expect(s.receivedChunkHeader(index: 2, digest: digest, dataLength: 10_000 - 8192).count == 1)
        #expect(s.chunkStored(index: 1) == [.send(.ack(storedChunks: 2))])
        #expect(s.chunkStored(index: 2) == [.send(.ack(storedChunks: 3))])
        #expect(s.allChunksStored(sha256: [UInt8](repeating: 0, count: 32)) == [.finalize])
        #expect(s.finalized().contains(.reportCompleted(sha256: [UInt8](repeating: 0, count: 32))))
    }

    @Test func senderChecksWhatTheReceiverSays() throws {
        var s = try SenderSession(transferID: "t", token: "tok", fileSize: 10_000, chunkSize: 4096)
        #expect(s.chunkCount == 3)
        // The receiver's state over chunk 0 becomes the sender's starting point.
        let zeros = [UInt8](repeating: 0, count: 4096)
        var prefix = ChainedDigest()
        zeros.withUnsafeBytes { prefix.update($0) }
        #expect(
            s.received(.accept(resumeFrom: 1, chainingValue: prefix.chainingValue))
                == [.reportProgress(bytesDone: 4096), .streamChunks(from: 1, prefix: prefix)])
        s.sentChunk(1)
        // An ack for a chunk never sent is a protocol violation.
        var copy = s
        #expect(copy.received(.ack(storedChunks: 3)).count == 1 && copy.phase == .failed)
        #expect(s.received(.ack(storedChunks: 2)) == [.reportProgress(bytesDone: 8192)])
        #expect(s.received(.error(.storageFailure, "disk full")) == [.fail(.peerRefused(.storageFailure, "disk full"))])
        var beyond = try SenderSession(transferID: "t", token: "tok", fileSize: 10_000, chunkSize: 4096)
        #expect(beyond.received(.accept(resumeFrom: 4, chainingValue: prefix.chainingValue)).count == 1 && beyond.phase == .failed)
        var shortState = try SenderSession(transferID: "t", token: "tok", fileSize: 10_000, chunkSize: 4096)
        #expect(shortState.received(.accept(resumeFrom: 1, chainingValue: [1, 2, 3])).count == 1 && shortState.phase == .failed)
        #expect(throws: TransferError.self) { try SenderSession(transferID: "t", token: "tok", fileSize: 1, chunkSize: 100) }
        // Chained digests need whole 64-byte blocks per chunk.
        #expect(throws: TransferError.self) { try SenderSession(transferID: "t", token: "tok", fileSize: 1, chunkSize: 4096 + 32) }
    }

    @Test func progressMeterGivesRateAndETA() {
        var meter = ProgressMeter(totalBytes: 1000)
        let start = Date(timeIntervalSince1970: 0)
        let first = meter.record(bytesDone: 0, now: start)
        #expect(first.bytesPerSecond == 0 && first.eta == nil)
        let second = meter.record(bytesDone: 100, now: start + 1)
        #expect(second.bytesPerSecond == 100)
        #expect(second.eta == 9)
        #expect(meter.record(bytesDone: 1000, now: start + 2).eta == 0)
    }
}

@Suite struct ChainedDigestTests {
    static func bytes(_ count: Int, seed: UInt8) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) } }

    @Test func lastChunkDigestIsTheFileSHA256AndEarlierOnesFollowTheChain() throws {
        let file = Self.bytes(3 * 4096 + 100, seed: 7)
        let layout = ChunkLayout(fileSize: UInt64(file.count), chunkSize: 4096)
        var hasher = ChainedDigest()
        var digests: [[UInt8]] = []
        for index in 0..<layout.chunkCount {
            let start = Int(layout.offset(of: index))
            file[start..<start + layout.length(of: index)].withUnsafeBytes { hasher.update($0) }
            digests.append(hasher.chunkDigest(isLast: index + 1 == layout.chunkCount))
        }
        #expect(Hex.encode(digests[3]) == sha256Hex(file))
        // Each state differs, and differs from a plain hash of the chunk (it covers the prefix).
        #expect(Set(digests).count == 4)
        #expect(Hex.encode(digests[1]) != sha256Hex(Array(file[4096..<8192])))

        // A state handed over (as in the accept frame) continues exactly where the hash was.
        var resumed = try #require(ChainedDigest(chainingValue: digests[1], absorbedBytes: 8192))
        file[8192...].withUnsafeBytes { resumed.update($0) }
        #expect(Hex.encode(resumed.finalDigest) == sha256Hex(file))
        // States off a block boundary or of the wrong size are refused.
        #expect(ChainedDigest(chainingValue: digests[1], absorbedBytes: 8190) == nil)
        #expect(ChainedDigest(chainingValue: [0, 1], absorbedBytes: 8192) == nil)
    }

    @Test func oneChangedByteChangesThatChunksDigestAndAllLaterOnes() {
        var file = Self.bytes(4 * 4096, seed: 1)
        func chain(_ bytes: [UInt8]) -> [[UInt8]] {
            var hasher = ChainedDigest()
            return (0..<4).map { index in
                bytes[index * 4096..<(index + 1) * 4096].withUnsafeBytes { hasher.update($0) }
                return hasher.chunkDigest(isLast: index == 3)
            }
        }
        let before = chain(file)
        file[2 * 4096 + 17] ^= 1
        let after = chain(file)
        #expect(before[0] == after[0] && before[1] == after[1])
        #expect(before[2] != after[2] && before[3] != after[3])
    }

    @Test func receiverRefusesChunkSizesOffTheBlockBoundary() {
        var s = ReceiverSession(peerFingerprint: String(repeating: "a", count: 64), maximumChunkSize: 1 << 20)
        let expected = ExpectedTransfer(
            transferID: "t", token: "tok", destination: URL(fileURLWithPath: "/nonexistent/x"), fileSize: 10_000,
            sha256: String(repeating: "0", count: 64), peerFingerprint: String(repeating: "a", count: 64))
        let actions = s.receivedHello(
            Hello(fileSize: 10_000, chunkSize: 4096 + 32, transferID: "t", token: "tok"),
            lookup: .registered(expected, activeElsewhere: false))
        #expect(actions.contains { if case .send(.error(.offerMismatch, _)) = $0 { true } else { false } })
    }
}

private func sha256Hex(_ bytes: [UInt8]) -> String { Hex.encode(SHA256.hash(data: bytes)) }

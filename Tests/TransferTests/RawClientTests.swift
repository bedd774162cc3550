import Foundation
import Testing

@testable import Transfer

/// A hand-driven client (the module's own TLS stream, no sender logic) sending what a correct
/// sender never would.
@Suite struct RawClientTests {
    static func connect(_ pair: Pair) throws(TransferError) -> TLSStream {
        let fd = try Sockets.connect(host: "127.0.0.1", port: pair.server.port, timeout: 5)
        let context = try TLSContext(
            role: .client, identity: pair.brokers.source, pin: PeerPin { _ in true })
        let stream = try TLSStream(fd: fd, context: context, idleTimeout: 5)
        try stream.handshake(asServer: false)
        return stream
    }

    @Test func oversizedChunkFrameIsRefusedAndFailsTheTransfer() async throws {
        let pair = try Pair()
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        _ = try makeFile(at: file, size: 3 * 4096)
        let transfer = try pair.expect(file)
        let answer: ControlFrame = try await runOnDedicatedThread(name: "raw-client") { () throws(TransferError) in
            let stream = try Self.connect(pair)
            try stream.write(ControlFrame.hello(Hello(fileSize: 3 * 4096, chunkSize: 4096, transferID: transfer.transferID, token: transfer.token)).encoded())
            guard case .accept(0, _) = try stream.readControlFrame() else { throw .protocolViolation("no accept") }
            // A chunk frame announcing 64 MiB when 4 KiB chunks were agreed.
            try stream.write([3, 0x04, 0, 0, 0x28] + [UInt8](repeating: 0, count: 40))
            return try stream.readControlFrame()
        }
        guard case .error(.malformedFrame, let reason) = answer else {
            Issue.record("expected a malformed-frame refusal, got \(answer)")
            return
        }
        #expect(reason.contains("exceeds"))
        let outcome = try #require(await outcome(of: transfer.transferID, on: pair.server))
        guard case .failure(.refused(.malformedFrame, _)) = outcome else {
            Issue.record("server outcome \(outcome)")
            return
        }
        #expect(!FileManager.default.fileExists(atPath: transfer.destination.path))
    }

    /// The bulk cipher is AES-128-GCM (the cheapest per byte with AES-NI) even for a client that
    /// lists AES-256 first: the server's order decides.
    @Test func serverPicksAES128EvenWhenTheClientPrefersAES256() async throws {
        let pair = try Pair()
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        _ = try makeFile(at: file, size: 4096)
        _ = try pair.expect(file)
        let suite: String? = try await runOnDedicatedThread(name: "raw-client") { () throws(TransferError) in
            let fd = try Sockets.connect(host: "127.0.0.1", port: pair.server.port, timeout: 5)
            let context = try TLSContext(
                role: .client, identity: pair.brokers.source, pin: PeerPin { _ in true },
                cipherSuites: "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256")
            let stream = try TLSStream(fd: fd, context: context, idleTimeout: 5)
            try stream.handshake(asServer: false)
            return stream.negotiatedCipherSuite()
        }
        #expect(suite == "TLS_AES_128_GCM_SHA256")
    }

    @Test func garbageInsteadOfHelloIsRefused() async throws {
        let pair = try Pair()
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        _ = try makeFile(at: file, size: 4096)
        let transfer = try pair.expect(file)
        let answer: ControlFrame = try await runOnDedicatedThread(name: "raw-client") { () throws(TransferError) in
            let stream = try Self.connect(pair)
            try stream.write(Array("GET / HTTP/1.1\r\n\r\n".utf8))
            return try stream.readControlFrame()
        }
        guard case .error(.malformedFrame, _) = answer else {
            Issue.record("expected a malformed-frame refusal, got \(answer)")
            return
        }
        // The registered transfer is untouched: the real sender still gets through.
        let receipt = try await pair.send(file, transfer)
        #expect(receipt.sha256 == transfer.sha256)
    }

    @Test func secondConnectionForATransferInProgressIsTurnedAwayAsBusy() async throws {
        let pair = try Pair()
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        _ = try makeFile(at: file, size: 3 * 4096)
        let transfer = try pair.expect(file)
        let answer: ControlFrame = try await runOnDedicatedThread(name: "raw-client") { () throws(TransferError) in
            let first = try Self.connect(pair)
            let hello = ControlFrame.hello(Hello(fileSize: 3 * 4096, chunkSize: 4096, transferID: transfer.transferID, token: transfer.token))
            try first.write(hello.encoded())
            guard case .accept = try first.readControlFrame() else { throw .protocolViolation("no accept") }
            let second = try Self.connect(pair)
            try second.write(hello.encoded())
            return try second.readControlFrame()
        }
        guard case .error(.busy, _) = answer else {
            Issue.record("expected busy, got \(answer)")
            return
        }
    }
}

import Foundation
import Testing

@testable import Migration
@testable import Transfer

/// docs/protocol/transfer.md against the code: every frame of the document is byte for byte what
/// the channel writes (parsed with its own frame reader and written again), and the frame types,
/// refusal codes and limits it states are the code's. If one of these tests fails, the frames
/// changed, or the document is wrong.
@Suite struct TransferFrameGoldenTests {
    static func frames() throws -> [(line: Int, bytes: [UInt8])] {
        try ProtocolDocumentTests.blocks("transfer").compactMap { block in
            if case .hex(let line, let bytes) = block { return (line, bytes) } else { return nil }
        }
    }

    @Test func everyDocumentedFrameIsTheChannelsBytes() throws {
        let chunkSize = 1 << 20
        var seen: [FrameType] = []
        var hello: Hello?
        for (line, bytes) in try Self.frames() {
            let label = "transfer.md:\(line)"
            let header = try FrameHeader.parse(bytes.prefix(WireLimits.frameHeaderLength), maximumChunkFrameLength: WireLimits.chunkHeaderLength + chunkSize)
            seen.append(header.type)
            if header.type == .chunk {
                // Only the chunk's header is shown: type, length, index, digest.
                #expect(bytes.count == ChunkFrameHeader.length, "\(label)")
                let index = bytes[5..<13].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                var written = [UInt8](repeating: 0, count: ChunkFrameHeader.length)
                written.withUnsafeMutableBytes {
                    ChunkFrameHeader.write(into: $0, index: index, digest: Array(bytes[13...]), dataLength: header.length - WireLimits.chunkHeaderLength)
                }
                #expect(written == bytes, "\(label): not the chunk header the sender writes")
                #expect(header.length - WireLimits.chunkHeaderLength == chunkSize, "\(label)")
                continue
            }
            #expect(header.length == bytes.count - WireLimits.frameHeaderLength, "\(label): the length is not the payload's")
            let frame = try ControlFrame.decode(type: header.type, payload: bytes[WireLimits.frameHeaderLength...])
            #expect(frame.encoded() == bytes, "\(label): not the bytes the channel writes")
            switch frame {
            case .hello(let decoded):
                hello = decoded
                #expect(decoded.version == WireLimits.protocolVersion)
                #expect(Int(decoded.chunkSize) == TransferSender.Options().chunkSize, "\(label): brokers send another chunk size")
                #expect(decoded.token.count == BrokerImageTransport.token().count, "\(label): brokers' tokens have another length")
            case .accept(let resumeFrom, let chainingValue):
                // A new transfer: nothing stored, SHA-256's state over nothing.
                #expect(resumeFrom == 0 && chainingValue == ChainedDigest().chainingValue, "\(label)")
            case .complete(let size, _):
                #expect(size == hello?.fileSize, "\(label): another size than the hello's")
            case .error(let code, let reason):
                #expect(code == .unknownTransfer && reason == "no transfer \(hello?.transferID ?? "") with that token", "\(label)")
            case .ack:
                break
            }
        }
        #expect(seen == [.hello, .accept, .chunk, .ack, .complete, .error], "\(seen)")
    }

    /// `| \`n\` | name | when |` rows under "### Refusal codes": exactly the code's codes and names.
    @Test func refusalCodesAreTheCodes() throws {
        let text = try ProtocolDocumentTests.text("transfer")
        let start = try #require(text.range(of: "\n### Refusal codes\n"))
        var rows: [(UInt8, String)] = []
        for line in text[start.upperBound...].split(separator: "\n") {
            if line.hasPrefix("#") { break }
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            if line.hasPrefix("|"), let code = ProtocolDocumentTests.code(cells[0]).flatMap({ UInt8($0) }) { rows.append((code, cells[1])) }
        }
        #expect(rows.map(\.0) == Array(1...10))
        for (code, name) in rows {
            #expect(RefusalCode(rawValue: code).description == name, "code \(code): the code calls it \(RefusalCode(rawValue: code))")
        }
        // And the frame types of "type: `1` hello, `2` accept, …".
        let types = try ProtocolDocumentTests.names(in: "transfer", after: "| 1 | type:", end: "\n")
        #expect(types.compactMap { UInt8($0) }.map { FrameType(rawValue: $0) } == [.hello, .accept, .chunk, .ack, .complete, .error])
    }

    /// The limits the document states.
    @Test func documentedLimitsAreTheCodes() throws {
        let text = try ProtocolDocumentTests.text("transfer")
        #expect(WireLimits.maximumControlFrameLength == 4096 && text.contains("a payload of at most 4096 bytes"))
        #expect(WireLimits.minimumChunkSize == 4096 && WireLimits.maximumChunkSize == 67_108_864 && text.contains("4096 to 67108864"))
        #expect(TransferServer.Options().maximumChunkSize == 16_777_216 && text.contains("at most 16777216 at a broker's receiver"))
        #expect(WireLimits.maximumIdentifierLength == 256 && WireLimits.maximumReasonLength == 1024)
        let server = TransferServer.Options()
        #expect(server.handshakeTimeout == 10 && server.idleTimeout == 30 && server.waitTimeout == 120)
        #expect(server.maximumConnections == 16 && server.maximumConnectionsPerAddress == 4)
        #expect(TLSContext.cipherSuites == "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256")
        #expect(RetryPolicy() == RetryPolicy(maximumAttempts: 5, initialBackoff: 0.2, maximumBackoff: 5))
    }
}

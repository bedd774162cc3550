import ArgumentParser
import BenchmarkHarness
import Foundation
import Transfer

/// One side of the image transfer benchmark (bench/transfer/run.sh), each side its own process so
/// each side's peak memory can be read separately; run.sh times it against `curl` from nginx.
/// Each side prints one line: `seconds=… bytes=… vmhwm_kib=…` (the sender adds `sha256=…`).
struct TransferBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transfer", abstract: "One side of a broker-to-broker image transfer (bench/transfer/run.sh runs both).",
        subcommands: [Serve.self, Send.self])

    /// This broker's certificate chain and key (PEM files).
    struct IdentityOptions: ParsableArguments {
        @Option var chain: String
        @Option var key: String
        @Option(help: "The transfer's id.") var id: String
        @Option(help: "The transfer's one-time token.") var token: String
        @Option(help: "SHA-256 fingerprint of the other side's leaf certificate.") var peer: String
        @Flag(help: "Through the page cache instead of direct IO (receiver writes, sender reads).") var buffered = false

        func identity() throws -> TransferIdentity {
            try TransferIdentity(certificateChainFile: URL(fileURLWithPath: chain), privateKeyFile: URL(fileURLWithPath: key))
        }
    }

    /// The receiver: listens on a loopback port (written to --port-file), takes one file.
    struct Serve: AsyncParsableCommand {
        @OptionGroup var side: IdentityOptions
        @Option(help: "Where the port chosen is written, once listening.") var portFile: String
        @Option(help: "Where the received file goes.") var destination: String
        @Option(help: "Expected size in bytes.") var size: UInt64
        @Option(help: "Expected SHA-256 of the whole file.") var sha256: String
        @Flag(help: "fsync the file before renaming it into place.") var sync = false

        func run() async throws {
            let server = try TransferServer(
                host: "127.0.0.1", port: 0, identity: try side.identity(),
                options: .init(syncOnCompletion: sync, directWrites: !side.buffered))
            try server.register(
                ExpectedTransfer(
                    transferID: side.id, token: side.token, destination: URL(fileURLWithPath: destination), fileSize: size,
                    sha256: sha256, peerFingerprint: side.peer))
            try "\(server.port)\n".write(toFile: portFile, atomically: true, encoding: .utf8)
            let receipt = try await server.completion(of: side.id)
            print("seconds=\(receipt.duration) bytes=\(receipt.fileSize) vmhwm_kib=\(peakResidentKiB() ?? -1)")
            server.shutdown()
        }
    }

    /// The sender: sends one file to a receiver's loopback port.
    struct Send: AsyncParsableCommand {
        @OptionGroup var side: IdentityOptions
        @Option(help: "The receiver's port.") var port: UInt16
        @Option(help: "The file to send.") var file: String
        @Option(help: "Bytes per chunk (default: the broker's).") var chunkSize: Int?
        @Option(help: "Chunk buffers in flight (default: the broker's).") var buffers: Int?

        func run() async throws {
            var options = TransferSender.Options()
            if let chunkSize { options.chunkSize = chunkSize }
            if let buffers { options.bufferCount = buffers }
            options.directReads = !side.buffered
            let sender = TransferSender(identity: try side.identity(), options: options)
            let (receipt, elapsed) = try await time {
                try await sender.send(
                    file: URL(fileURLWithPath: file), host: "127.0.0.1", port: port, transferID: side.id, token: side.token,
                    expectedPeerFingerprint: side.peer)
            }
            print("seconds=\(elapsed.seconds) bytes=\(receipt.fileSize) vmhwm_kib=\(peakResidentKiB() ?? -1) sha256=\(receipt.sha256)")
        }
    }
}

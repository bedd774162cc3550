import Crypto
import Foundation
import SwiftASN1
import Synchronization
import Trust
import X509

@testable import Transfer

/// Two brokers with real certificates from Trust (one root and intermediate per cloud), turned
/// into transfer identities through PEM, the way a broker loads its identity files.
struct TestBrokers: Sendable {
    var source: TransferIdentity
    var destination: TransferIdentity
    /// A third broker: someone the others have not pinned.
    var stranger: TransferIdentity
    var sourceTrustFingerprint: String
    var destinationTrustFingerprint: String

    static let shared: Result<TestBrokers, any Error> = Result { try TestBrokers() }

    static func make() throws -> TestBrokers { try shared.get() }

    private init() throws {
        let now = Date()
        func broker(_ cloud: String) throws -> (TransferIdentity, String) {
            let root = try CertificateAuthority.makeRoot(commonName: "\(cloud) root", organization: cloud, notBefore: now - 86_400)
            let ca = try root.makeIntermediate(commonName: "\(cloud) CA", organization: cloud, notBefore: now - 86_400)
            let identity = try ca.issueBrokerIdentity(jid: "broker@\(cloud).test", notBefore: now - 3600)
            let transfer = try TransferIdentity(
                certificateChainPEM: try PEMFiles.pem(identity.chain),
                privateKeyPEM: try identity.privateKey.serializeAsPEM().pemString)
            return (transfer, identity.fingerprint)
        }
        (source, sourceTrustFingerprint) = try broker("cloud1")
        (destination, destinationTrustFingerprint) = try broker("cloud2")
        (stranger, _) = try broker("cloud3")
    }
}

func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("transfer-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// A file of pseudo-random bytes (seeded, so a failure can be reproduced) and its SHA-256.
func makeFile(at url: URL, size: Int, seed: UInt64 = 42) throws -> String {
    var state = seed | 1
    var bytes = [UInt8](repeating: 0, count: size)
    bytes.withUnsafeMutableBytes { raw in
        let words = raw.bindMemory(to: UInt64.self)
        for index in words.indices {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            words[index] = state
        }
        for index in (words.count * 8)..<size { raw[index] = UInt8(truncatingIfNeeded: index) }
    }
    try Data(bytes).write(to: url)
    return Hex.encode(SHA256.hash(data: bytes))
}

func sha256(of url: URL) throws -> String {
    Hex.encode(SHA256.hash(data: try Data(contentsOf: url)))
}

/// Collects values from callbacks on the transfer threads.
final class Recorder<Value: Sendable>: Sendable {
    private let values = Mutex<[Value]>([])
    func append(_ value: Value) { values.withLock { $0.append(value) } }
    var all: [Value] { values.withLock { $0 } }
}

/// A receiving server and a sending broker, wired with each other's fingerprints.
struct Pair {
    let brokers: TestBrokers
    let server: TransferServer
    let directory: URL

    init(serverOptions: TransferServer.Options = TransferServer.Options(syncOnCompletion: false)) throws {
        brokers = try TestBrokers.make()
        server = try TransferServer(host: "127.0.0.1", port: 0, identity: brokers.destination, options: serverOptions)
        directory = try temporaryDirectory()
    }

    func sender(_ options: TransferSender.Options = TransferSender.Options(chunkSize: 64 * 1024)) -> TransferSender {
        TransferSender(identity: brokers.source, options: options)
    }

    /// Registers a transfer of `file` (size and hash from the file unless overridden).
    func expect(
        _ file: URL, id: String = UUID().uuidString, token: String = "token-\(UUID().uuidString)",
        sha256 override: String? = nil, size: UInt64? = nil, peer: String? = nil
    ) throws -> ExpectedTransfer {
        let transfer = ExpectedTransfer(
            transferID: id, token: token, destination: directory.appendingPathComponent("received-\(id).img"),
            fileSize: try size ?? UInt64(truncating: FileManager.default.attributesOfItem(atPath: file.path)[.size] as! NSNumber),
            sha256: try override ?? sha256(of: file), peerFingerprint: peer ?? brokers.source.fingerprint)
        try server.register(transfer)
        return transfer
    }

    func send(
        _ file: URL, _ transfer: ExpectedTransfer, sender: TransferSender? = nil, token: String? = nil,
        expectedServer: String? = nil, progress: @escaping @Sendable (TransferProgress) -> Void = { _ in }
    ) async throws(TransferError) -> TransferReceipt {
        try await (sender ?? self.sender()).send(
            file: file, host: "127.0.0.1", port: server.port, transferID: transfer.transferID,
            token: token ?? transfer.token, expectedPeerFingerprint: expectedServer ?? brokers.destination.fingerprint,
            progress: progress)
    }

    func cleanUp() {
        server.shutdown()
        try? FileManager.default.removeItem(at: directory)
    }
}

/// Waits for a server-side outcome, giving up after `seconds` (a test must fail, not hang).
func outcome(
    of transferID: String, on server: TransferServer, within seconds: Double = 20
) async -> Result<TransferReceipt, TransferError>? {
    await withTaskGroup(of: Result<TransferReceipt, TransferError>?.self) { group in
        group.addTask {
            do throws(TransferError) { return .success(try await server.completion(of: transferID)) } catch {
                return .failure(error)
            }
        }
        group.addTask {
            try? await Task.sleep(for: .seconds(seconds))
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        // Unblocks the waiting completion so the group can end.
        if first == nil { server.cancel(transferID: transferID) }
        return first
    }
}

import Crypto
import Foundation
import Migration

/// An `ImageTransport` that copies files between local directories, hashing as it copies (1 MiB
/// chunks). The offer's host is the receiving inbox directory, the token names the file in it.
/// Offers are stored as files in the inbox, so a transport created again over the same inbox (after
/// a simulated crash) knows them.
actor LocalFileTransport: ImageTransport {
    struct TransportError: Error, CustomStringConvertible {
        var description: String
    }

    let inbox: URL
    private var failNextSendAfterBytes: Int64?
    private var corruptNextSend = false
    private var failedTransfers: [String: String] = [:]

    init(inbox: URL) throws {
        self.inbox = inbox
        try FileManager.default.createDirectory(at: inbox, withIntermediateDirectories: true)
    }

    /// The next `send` stops with an error after `bytes` bytes, leaving a partial file.
    func failNextSend(afterBytes bytes: Int64) { failNextSendAfterBytes = bytes }
    /// The next `send` flips one byte of the copy (the destination's checksum must catch it).
    func corruptNextSendOnce() { corruptNextSend = true }
    /// The transfer of `migrationID` failed for good (what a TLS server reports when the source
    /// announced it and never connected).
    func failTransfer(of migrationID: String, reason: String) { failedTransfers[migrationID] = reason }
    func transferFailure(migrationID: String) async -> String? { failedTransfers[migrationID] }

    private func offerFile(_ migrationID: String) -> URL { inbox.appendingPathComponent("\(migrationID).offer") }

    /// An open offer as stored in the inbox: "TOKEN MAXIMUM-BYTES".
    private static func readOffer(_ file: URL) -> (token: String, maximumBytes: Int64)? {
        guard let text = try? String(contentsOf: file, encoding: .utf8) else { return nil }
        let parts = text.split(separator: " ")
        guard parts.count == 2, let maximum = Int64(parts[1]) else { return nil }
        return (String(parts[0]), maximum)
    }

    func prepareOffer(migrationID: String, maximumBytes: Int64) async throws -> TransferOffer {
        let file = offerFile(migrationID)
        let token: String
        if let stored = Self.readOffer(file) {
            token = stored.token
        } else {
            token = (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
            try "\(token) \(maximumBytes)".write(to: file, atomically: true, encoding: .utf8)
        }
        return TransferOffer(host: inbox.path, port: "local", token: token)
    }

    func receivedFile(for offer: TransferOffer) async throws -> ReceivedImageFile {
        let url = try Self.imageURL(offer)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw TransportError(description: "nothing received for offer \(offer.token)")
        }
        let digest = try await FileDigest.sha256(of: url)
        // The sender's running hash must match what arrived (a truncated or damaged copy does not).
        let sent = try? String(contentsOf: url.deletingPathExtension().appendingPathExtension("sha256"), encoding: .utf8)
        guard sent == digest.sha256 else { throw TransportError(description: "received file does not match the sender's hash") }
        return ReceivedImageFile(url: url, bytes: digest.bytes, sha256: digest.sha256)
    }

    func withdraw(migrationID: String) async throws {
        let file = offerFile(migrationID)
        guard let token = Self.readOffer(file)?.token else { return }
        for name in ["\(token).image", "\(token).partial", "\(token).sha256"] {
            try? FileManager.default.removeItem(at: inbox.appendingPathComponent(name))
        }
        try FileManager.default.removeItem(at: file)
    }

    func send(file: URL, to offer: TransferOffer, progress: @escaping @Sendable (TransferProgress) -> Void) async throws {
        let target = try Self.imageURL(offer)
        // Like a real receiver, the inbox takes files only for offers it has open (not withdrawn).
        let offers = (try? FileManager.default.contentsOfDirectory(atPath: offer.host).filter { $0.hasSuffix(".offer") }) ?? []
        guard let open = offers.lazy.compactMap({ Self.readOffer(URL(fileURLWithPath: offer.host).appendingPathComponent($0)) })
            .first(where: { $0.token == offer.token })
        else { throw TransportError(description: "no open offer \(offer.token)") }
        let size = (try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int).map(Int64.init) ?? 0
        guard size <= open.maximumBytes else {
            throw TransportError(description: "\(size) bytes exceeds the \(open.maximumBytes) the offer accepts")
        }
        let partial = target.deletingPathExtension().appendingPathExtension("partial")
        let failAfter = failNextSendAfterBytes
        let corrupt = corruptNextSend
        failNextSendAfterBytes = nil
        corruptNextSend = false
        try await FileDigest.onBlockingQueue {
            let sha256 = try Self.copy(file, to: partial, failAfter: failAfter, corrupt: corrupt, progress: progress)
            try sha256.write(to: target.deletingPathExtension().appendingPathExtension("sha256"), atomically: true, encoding: .utf8)
            if FileManager.default.fileExists(atPath: target.path) { try FileManager.default.removeItem(at: target) }
            try FileManager.default.moveItem(at: partial, to: target)
        }
    }

    /// The token must be hex: it becomes a file name, and comes from the other party.
    static func imageURL(_ offer: TransferOffer) throws -> URL {
        guard offer.token.count == 32, offer.token.allSatisfy(\.isHexDigit) else {
            throw TransportError(description: "malformed offer token")
        }
        return URL(fileURLWithPath: offer.host).appendingPathComponent("\(offer.token).image")
    }

    private static func copy(
        _ source: URL, to destination: URL, failAfter: Int64?, corrupt: Bool, progress: @Sendable (TransferProgress) -> Void
    ) throws -> String {
        let input = try FileHandle(forReadingFrom: source)
        defer { try? input.close() }
        let total = Int64(try FileManager.default.attributesOfItem(atPath: source.path)[.size] as? Int ?? 0)
        _ = FileManager.default.createFile(atPath: destination.path, contents: nil)
        let output = try FileHandle(forWritingTo: destination)
        defer { try? output.close() }
        var hasher = SHA256()
        var copied: Int64 = 0
        let started = Date()
        while var chunk = try input.read(upToCount: 1 << 20), !chunk.isEmpty {
            if let failAfter, copied + Int64(chunk.count) > failAfter {
                throw TransportError(description: "connection lost after \(copied) bytes")
            }
            if corrupt && copied == 0 { chunk[chunk.startIndex] ^= 0xFF }
            hasher.update(data: chunk)
            try output.write(contentsOf: chunk)
            copied += Int64(chunk.count)
            let elapsed = max(Date().timeIntervalSince(started), 1e-6)
            let rate = Double(copied) / elapsed
            progress(TransferProgress(
                bytes: copied, totalBytes: total, bytesPerSecond: rate, etaSeconds: Double(total - copied) / max(rate, 1)))
        }
        try output.synchronize()
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}

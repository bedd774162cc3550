import Foundation
import Testing
@testable import Providers

/// The S3 client's transfers through AsyncHTTPClient against a real moto with signature checks on:
/// multipart uploads and ranged downloads of a file several parts long, bodies larger than the
/// caller expects, and `HTTPClientTransport`'s streaming to and from files.
@Suite("S3 transfers on moto")
struct S3TransferTests {
    static let bucket = "transfers"
    static let partSize = 5 << 20

    func store(_ session: MotoServer.Session) -> S3ObjectStore {
        S3ObjectStore(configuration: .init(
            endpoint: session.endpoint, region: "us-east-1", bucket: Self.bucket, credentials: session.credentials,
            partSize: Self.partSize, concurrency: 2))
    }

    /// A file of `count` pseudo-random bytes (distinct in every part, so a misplaced range shows).
    func randomFile(_ count: Int, in directory: URL) throws -> (URL, String) {
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: count)
        for index in stride(from: 0, to: count, by: 8) {
            withUnsafeBytes(of: generator.next() as UInt64) { random in
                for offset in 0..<min(8, count - index) { bytes[index + offset] = random[offset] }
            }
        }
        let file = directory.appendingPathComponent("source-\(UUID().uuidString.prefix(8))")
        try Data(bytes).write(to: file)
        return (file, try FileCopy.digest(of: file).sha256)
    }

    func temporaryDirectory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("s3-transfers-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    @Test("a file of three parts goes up in a multipart upload and comes down in ranged GETs, byte for byte")
    func uploadAndDownload() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (file, digest) = try randomFile(2 * Self.partSize + 12_345, in: directory)
        try await MotoServer.shared.withExclusiveAccess { session in
            let store = store(session)
            try await store.ensureBucket()
            let uploaded = try await store.upload(file: file, key: "disks/three-parts")
            #expect(uploaded.bytes == Int64(2 * Self.partSize + 12_345) && uploaded.sha256 == digest)
            #expect(try await store.size(of: "disks/three-parts") == uploaded.bytes)
            // A HEAD announces the object's length but has no body: no response limit applies to it.
            let (_, head) = try await store.storage.client.rest(
                method: "HEAD", path: "/\(Self.bucket)/disks/three-parts", responseLimit: 1000, verb: .listImages, action: "HeadObject")
            #expect(S3Storage.header("content-length", in: head) == String(uploaded.bytes))
            let copy = directory.appendingPathComponent("copy")
            let downloaded = try await store.download(key: "disks/three-parts", to: copy, maxBytes: 1 << 30)
            #expect(downloaded.sha256 == digest)
            #expect(try FileCopy.digest(of: copy).sha256 == digest)
            // Nothing left of the multipart upload, and no partial file beside the copy.
            #expect(try await store.storage.listMultipartUploads(bucket: Self.bucket, verb: .listImages).isEmpty)
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() == ["copy", file.lastPathComponent].sorted())
        }
    }

    @Test("a body larger than the caller expects fails the request as a backend error instead of filling memory")
    func responseLimit() async throws {
        try await MotoServer.shared.withExclusiveAccess { session in
            let store = store(session)
            try await store.ensureBucket()
            try await store.put(Data(repeating: 7, count: 300_000), key: "big", contentType: "application/octet-stream")
            let error = await #expect(throws: ProviderError.self) {
                _ = try await store.storage.client.rest(
                    method: "GET", path: "/\(Self.bucket)/big", responseLimit: 100_000, verb: .importImage, action: "GetObject")
            }
            #expect(error?.code == .backend)
            #expect(error?.message.contains("larger than 100000 bytes") == true, "\(error?.message ?? "")")
            // Within its limit the same object reads whole; `get` refuses it by its size before reading.
            #expect(try await store.get(key: "big", limit: 300_000).count == 300_000)
            let refused = await #expect(throws: ProviderError.self) { _ = try await store.get(key: "big", limit: 1000) }
            #expect(refused?.code == .invalidInput)
        }
    }

    @Test("the transport streams a file up and a 2xx body down to a file; an error body comes back and no file is written")
    func transportFiles() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (file, digest) = try randomFile(3 << 20, in: directory)
        try await MotoServer.shared.withExclusiveAccess { session in
            try await store(session).ensureBucket()
            let signer = SigV4Signer(credentials: session.credentials, region: "us-east-1", service: "s3")
            let transport = HTTPClientTransport(timeout: 30)
            let url = session.endpoint.appendingPathComponent("\(Self.bucket)/streamed")
            // S3 signs the payload's hash; UNSIGNED-PAYLOAD lets a streamed body be signed before it is read.
            var put = HTTPRequest(url: url, method: "PUT")
            put.setValue("UNSIGNED-PAYLOAD", forHTTPHeaderField: "x-amz-content-sha256")
            let now = Date()
            let putSignature = signer.sign(
                method: "PUT", url: url, headers: ["x-amz-content-sha256": "UNSIGNED-PAYLOAD"], payloadSHA256: "UNSIGNED-PAYLOAD", date: now)
            put.setValue(SigV4Signer.amzDate(now), forHTTPHeaderField: "x-amz-date")
            put.setValue(putSignature.authorization, forHTTPHeaderField: "Authorization")
            let (_, stored) = try await transport.upload(put, file: file)
            #expect(stored.statusCode == 200)

            var get = HTTPRequest(url: url)
            signer.sign(&get, signPayloadHeader: true)
            let copy = directory.appendingPathComponent("copy")
            let (_, fetched) = try await transport.download(get, to: copy)
            #expect(fetched.statusCode == 200)
            #expect(try FileCopy.digest(of: copy).sha256 == digest)

            var missing = HTTPRequest(url: session.endpoint.appendingPathComponent("\(Self.bucket)/missing"))
            signer.sign(&missing, signPayloadHeader: true)
            let nothing = directory.appendingPathComponent("nothing")
            let (body, refused) = try await transport.download(missing, to: nothing)
            #expect(refused.statusCode == 404)
            #expect(String(decoding: body, as: UTF8.self).contains("NoSuchKey"))
            #expect(!FileManager.default.fileExists(atPath: nothing.path))
        }
    }
}

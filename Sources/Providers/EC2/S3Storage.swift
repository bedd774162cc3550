import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The S3 calls image upload needs: bucket, multipart upload, delete, list. Path-style addressing,
/// which moto and most S3-compatible stores accept.
struct S3Storage: Sendable {
    var client: AWSClient
    var driver: String

    func ensureBucket(_ bucket: String, region: String, verb: Verb) async throws {
        do {
            _ = try await client.rest(method: "HEAD", path: "/\(bucket)", verb: verb, action: "HeadBucket")
            return
        } catch let error as ProviderError where error.code == .notFound || error.backendCode == "HTTP404" {}
        let body = region == "us-east-1" ? Data() : Data(
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>\(region)</LocationConstraint></CreateBucketConfiguration>".utf8)
        _ = try await client.rest(method: "PUT", path: "/\(bucket)", body: body, verb: verb, action: "CreateBucket")
    }

    /// What a multipart upload stored.
    struct Uploaded: Sendable {
        var etag: String
        var bytes: Int64
        /// SHA-256 of the whole file as read for the upload (S3's multipart ETag is no content hash).
        var sha256: String
    }

    /// Uploads `file` in parts, `concurrency` of them in flight (each part is hashed for its
    /// signed payload in its own task), hashing the whole file as it is read; aborts the upload
    /// (so no parts linger) on any failure or cancellation. Memory: about `concurrency` parts.
    func uploadMultipart(
        file: URL, bucket: String, key: String, partSize: Int, concurrency: Int = 4, verb: Verb, progress: ProgressHandler?
    ) async throws -> Uploaded {
        let created = try await client.rest(
            method: "POST", path: "/\(bucket)/\(key)", query: [("uploads", nil)], verb: verb, action: "CreateMultipartUpload")
        guard let uploadID = try XMLTree.parse(created.0).string("UploadId") else {
            throw ProviderError(driver: driver, verb: verb, code: .backend, message: "CreateMultipartUpload returned no UploadId")
        }
        do {
            let reader = try PartReader(file: file)
            defer { reader.close() }
            let total = Int64((try? FileManager.default.attributesOfItem(atPath: file.path)[.size] as? NSNumber)??.int64Value ?? 0)
            // S3 takes at most 10 000 parts: larger files get larger parts (whole MiB).
            let mebibytes = (Int((total + 9_999) / 10_000) + (1 << 20) - 1) >> 20
            let partSize = max(partSize, mebibytes << 20)
            var parts: [Int: String] = [:]
            var sent: Int64 = 0
            var read: Int64 = 0
            let client = self.client, driver = self.driver
            try await withThrowingTaskGroup(of: (Int, String, Int).self) { group in
                func collect(_ finished: (Int, String, Int)) {
                    parts[finished.0] = finished.1
                    sent += Int64(finished.2)
                    progress?(ProgressEvent(driver: driver, verb: verb, completed: sent, total: total, message: "uploaded part \(finished.0)"))
                }
                var number = 1
                var inFlight = 0
                while true {
                    try Task.checkCancellation()
                    guard let chunk = try await reader.next(upToCount: partSize) else { break }
                    read += Int64(chunk.count)
                    let partNumber = number
                    group.addTask {
                        let (_, response) = try await client.rest(
                            method: "PUT", path: "/\(bucket)/\(key)",
                            query: [("partNumber", String(partNumber)), ("uploadId", uploadID)], body: chunk, verb: verb, action: "UploadPart")
                        guard let etag = Self.header("ETag", in: response) else {
                            throw ProviderError(driver: driver, verb: verb, code: .backend, message: "UploadPart \(partNumber) returned no ETag")
                        }
                        return (partNumber, etag, chunk.count)
                    }
                    number += 1
                    inFlight += 1
                    if inFlight >= max(1, concurrency), let finished = try await group.next() {
                        collect(finished)
                        inFlight -= 1
                    }
                }
                while let finished = try await group.next() { collect(finished) }
            }
            let manifest = "<CompleteMultipartUpload>" + parts.keys.sorted().map {
                "<Part><PartNumber>\($0)</PartNumber><ETag>\(parts[$0]!)</ETag></Part>"
            }.joined() + "</CompleteMultipartUpload>"
            let (data, _) = try await client.rest(
                method: "POST", path: "/\(bucket)/\(key)", query: [("uploadId", uploadID)],
                // Typed explicitly: a POST body without a type may be taken for a form and consumed as one.
                headers: ["Content-Type": "application/xml"], body: Data(manifest.utf8),
                verb: verb, action: "CompleteMultipartUpload")
            return Uploaded(etag: (try? XMLTree.parse(data).string("ETag")) ?? "", bytes: read, sha256: reader.sha256())
        } catch {
            _ = try? await client.rest(
                method: "DELETE", path: "/\(bucket)/\(key)", query: [("uploadId", uploadID)], verb: verb,
                action: "AbortMultipartUpload")
            if let error = error as? ProviderError { throw error }
            throw ProviderError.wrap(error, driver: driver, verb: verb)
        }
    }

    /// Reads a file part by part, hashing it as it goes, on a dispatch queue (`BlockingWork`): an
    /// 8 MiB read and its SHA-256 take tens of milliseconds, which would hold a pool thread.
    final class PartReader: @unchecked Sendable {
        // @unchecked: `handle` and `hasher` are used by one task at a time: the upload awaits each
        // `next` before it asks for the following part, and reads the digest after the last.
        private let handle: FileHandle
        private var hasher = SHA256()

        init(file: URL) throws { handle = try FileHandle(forReadingFrom: file) }

        /// The next part, or nil at the end of the file.
        func next(upToCount count: Int) async throws -> Data? {
            try await BlockingWork.run { [self] in
                guard let chunk = try handle.read(upToCount: count), !chunk.isEmpty else { return nil }
                hasher.update(data: chunk)
                return chunk
            }
        }

        func sha256() -> String { hasher.finalize().hex }

        func close() { try? handle.close() }
    }

    /// Header lookup that does not depend on the case the server used.
    static func header(_ name: String, in response: HTTPResponse) -> String? {
        response.value(forHTTPHeaderField: name)
    }

    func deleteObject(bucket: String, key: String, verb: Verb) async throws {
        _ = try await client.rest(method: "DELETE", path: "/\(bucket)/\(key)", verb: verb, action: "DeleteObject")
    }

    /// Keys and sizes under `prefix`.
    func listObjects(bucket: String, prefix: String = "", verb: Verb) async throws -> [(key: String, size: Int64)] {
        let (data, _) = try await client.rest(
            method: "GET", path: "/\(bucket)", query: [("list-type", "2"), ("prefix", prefix)], verb: verb,
            action: "ListObjectsV2")
        return try XMLTree.parse(data).children.filter { $0.name == "Contents" }.map {
            ($0.string("Key") ?? "", Int64($0.string("Size") ?? "0") ?? 0)
        }
    }

    /// In-progress multipart uploads (to check that aborted ones are gone).
    func listMultipartUploads(bucket: String, verb: Verb) async throws -> [String] {
        let (data, _) = try await client.rest(
            method: "GET", path: "/\(bucket)", query: [("uploads", nil)], verb: verb, action: "ListMultipartUploads")
        return try XMLTree.parse(data).children.filter { $0.name == "Upload" }.compactMap { $0.string("UploadId") }
    }

    func getObject(bucket: String, key: String, verb: Verb) async throws -> Data {
        try await client.rest(method: "GET", path: "/\(bucket)/\(key)", verb: verb, action: "GetObject").0
    }
}

extension EC2Driver {
    /// Uploads a file to S3 by multipart upload (exposed for image staging and tests).
    public func uploadToS3(file: URL, bucket: String, key: String, progress: ProgressHandler? = nil) async throws -> String {
        let storage = S3Storage(client: s3, driver: driverName)
        try await storage.ensureBucket(bucket, region: configuration.region, verb: .importImage)
        return try await storage.uploadMultipart(
            file: file, bucket: bucket, key: key, partSize: configuration.partSize, verb: .importImage, progress: progress).etag
    }

    public func listS3Objects(bucket: String, prefix: String = "") async throws -> [(key: String, size: Int64)] {
        try await S3Storage(client: s3, driver: driverName).listObjects(bucket: bucket, prefix: prefix, verb: .listImages)
    }

    public func downloadS3Object(bucket: String, key: String) async throws -> Data {
        try await S3Storage(client: s3, driver: driverName).getObject(bucket: bucket, key: key, verb: .exportImage)
    }

    public func listS3MultipartUploads(bucket: String) async throws -> [String] {
        try await S3Storage(client: s3, driver: driverName).listMultipartUploads(bucket: bucket, verb: .listImages)
    }
}

import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One S3 bucket reached with the EC2 driver's S3 client (SigV4, retries, error mapping): what
/// backups need from an S3-compatible store. Large objects go up in multipart uploads and come
/// down in ranged GETs, so memory stays at one part whatever the object's size.
///
/// Errors are `ProviderError`s naming `s3` and the verb (`export-image` for uploads,
/// `import-image` for downloads, `list-images` for listings).
public struct S3ObjectStore: Sendable {
    public struct Configuration: Sendable, Hashable {
        public var endpoint: URL
        public var region: String
        public var bucket: String
        public var credentials: SigV4Signer.Credentials
        /// Multipart part size and ranged-GET size; S3 requires at least 5 MiB for all but the last part.
        public var partSize: Int
        /// Parts uploaded at once (memory: about this many parts).
        public var concurrency: Int

        public init(
            endpoint: URL, region: String, bucket: String, credentials: SigV4Signer.Credentials, partSize: Int = 8 << 20, concurrency: Int = 4
        ) {
            self.endpoint = endpoint
            self.region = region
            self.bucket = bucket
            self.credentials = credentials
            self.partSize = partSize
            self.concurrency = concurrency
        }
    }

    /// An object as a listing reports it.
    public struct Object: Sendable, Hashable {
        public var key: String
        public var size: Int64
    }

    public let configuration: Configuration
    let storage: S3Storage

    public init(configuration: Configuration, retry: RetryPolicy = RetryPolicy(), transport: any HTTPTransport = HTTPClientTransport()) {
        self.configuration = configuration
        let client = AWSClient(
            driver: "s3", endpoint: configuration.endpoint,
            signer: SigV4Signer(credentials: configuration.credentials, region: configuration.region, service: "s3"),
            transport: transport, retry: retry)
        self.storage = S3Storage(client: client, driver: "s3")
    }

    private var bucket: String { configuration.bucket }

    /// Creates the bucket if it does not exist.
    public func ensureBucket() async throws {
        try await storage.ensureBucket(bucket, region: configuration.region, verb: .exportImage)
    }

    /// Uploads `file` to `key` by multipart upload, `concurrency` parts in flight; a failed or
    /// cancelled upload is aborted, so no parts are left. Returns the bytes read and their SHA-256
    /// (S3's multipart ETag is no content hash).
    @discardableResult
    public func upload(file: URL, key: String, progress: ProgressHandler? = nil) async throws -> (bytes: Int64, sha256: String) {
        let uploaded = try await storage.uploadMultipart(
            file: file, bucket: bucket, key: key, partSize: configuration.partSize, concurrency: configuration.concurrency, verb: .exportImage,
            progress: progress)
        return (uploaded.bytes, uploaded.sha256)
    }

    /// Writes a small object in one PUT (a manifest).
    public func put(_ data: Data, key: String, contentType: String = "application/json") async throws {
        _ = try await storage.client.rest(
            method: "PUT", path: "/\(bucket)/\(key)", headers: ["Content-Type": contentType], body: data, verb: .exportImage,
            action: "PutObject")
    }

    /// The size of `key`, or nil when there is no such object.
    public func size(of key: String) async throws -> Int64? {
        do {
            let (_, response) = try await storage.client.rest(method: "HEAD", path: "/\(bucket)/\(key)", verb: .listImages, action: "HeadObject")
            return S3Storage.header("Content-Length", in: response).flatMap { Int64($0) }
        } catch let error as ProviderError where error.code == .notFound || error.backendCode == "HTTP404" {
            return nil
        }
    }

    /// Reads a small object whole, refusing one larger than `limit` bytes before reading it (the
    /// store's content is not trusted: a replaced object must not cost unbounded memory).
    public func get(key: String, limit: Int) async throws -> Data {
        guard let size = try await size(of: key) else {
            throw ProviderError(driver: "s3", verb: .importImage, code: .notFound, message: "no object \(key) in bucket \(bucket)")
        }
        guard size <= Int64(limit) else {
            throw ProviderError(
                driver: "s3", verb: .importImage, code: .invalidInput, message: "object \(key) is \(size) bytes; at most \(limit) expected")
        }
        // A range of an empty object is unsatisfiable (416): there is nothing to read.
        if size == 0 { return Data() }
        // At most one byte past the limit, even if the object grew since the HEAD.
        let (data, _) = try await storage.client.rest(
            method: "GET", path: "/\(bucket)/\(key)", headers: ["Range": "bytes=0-\(limit)"], responseLimit: limit + 1, verb: .importImage,
            action: "GetObject")
        guard data.count <= limit else {
            throw ProviderError(driver: "s3", verb: .importImage, code: .invalidInput, message: "object \(key) grew past \(limit) bytes")
        }
        return data
    }

    /// Downloads `key` to `destination` in ranged GETs of one part each, hashing as it writes; the
    /// file is written under a temporary name and renamed into place only when complete. Refuses an
    /// object larger than `maxBytes`. Returns the bytes written and their SHA-256.
    public func download(
        key: String, to destination: URL, maxBytes: Int64, progress: ProgressHandler? = nil
    ) async throws -> (bytes: Int64, sha256: String) {
        guard let total = try await size(of: key) else {
            throw ProviderError(driver: "s3", verb: .importImage, code: .notFound, message: "no object \(key) in bucket \(bucket)")
        }
        guard total <= maxBytes else {
            throw ProviderError(
                driver: "s3", verb: .importImage, code: .invalidInput, message: "object \(key) is \(total) bytes; at most \(maxBytes) allowed")
        }
        let temporary = destination.deletingLastPathComponent()
            .appendingPathComponent(".\(destination.lastPathComponent).partial-\(UUID().uuidString.prefix(8))")
        guard FileManager.default.createFile(atPath: temporary.path, contents: nil) else {
            throw ProviderError(driver: "s3", verb: .importImage, code: .backend, message: "cannot create \(temporary.path)")
        }
        var committed = false
        defer { if !committed { try? FileManager.default.removeItem(at: temporary) } }
        let handle = try FileHandle(forWritingTo: temporary)
        defer { try? handle.close() }
        var hasher = SHA256()
        var done: Int64 = 0
        while done < total {
            try Task.checkCancellation()
            let last = min(done + Int64(configuration.partSize), total) - 1
            // A byte more than the range may come: the length check below then names the fault.
            let (chunk, _) = try await storage.client.rest(
                method: "GET", path: "/\(bucket)/\(key)", headers: ["Range": "bytes=\(done)-\(last)"],
                responseLimit: Int(last - done) + 2, verb: .importImage, action: "GetObject")
            // A store that ignores Range answers with the whole object: refuse rather than write it.
            guard Int64(chunk.count) == last - done + 1 else {
                throw ProviderError(
                    driver: "s3", verb: .importImage, code: .backend,
                    message: "GetObject \(key) bytes \(done)-\(last) returned \(chunk.count) bytes")
            }
            try handle.write(contentsOf: chunk)
            hasher.update(data: chunk)
            done += Int64(chunk.count)
            progress?(ProgressEvent(driver: "s3", verb: .importImage, completed: done, total: total, message: "downloaded \(key)"))
        }
        try handle.synchronize()
        guard rename(temporary.path, destination.path) == 0 else {
            throw ProviderError(driver: "s3", verb: .importImage, code: .backend, message: "rename to \(destination.path) failed")
        }
        committed = true
        return (done, hasher.finalize().hex)
    }

    /// The part of a key prefix sent as the `prefix` query parameter: up to its first `/`.
    ///
    /// A `/` in a query value is sent percent-encoded, as SigV4's canonical query requires, and
    /// moto 5 then computes a different signature than the client (awscli fails the same way;
    /// moto issue 5948). Listings therefore ask the server for the first key segment only and
    /// filter the rest here; a backup bucket holds little besides backups, so this costs little.
    static func serverPrefix(_ prefix: String) -> String {
        String(prefix.prefix { $0 != "/" })
    }

    /// Pages a listing follows at most (S3 returns up to 1000 keys a page): a store that keeps
    /// answering "truncated" cannot keep us listing, nor fill memory.
    public static let maxListPages = 1000

    /// Every object under `prefix`, following continuation tokens (at most `maxListPages` pages).
    public func list(prefix: String) async throws -> [Object] {
        var objects: [Object] = []
        var token: String?
        var pages = 0
        repeat {
            pages += 1
            guard pages <= Self.maxListPages else {
                throw ProviderError(
                    driver: "s3", verb: .listImages, code: .backend,
                    message: "bucket \(bucket) lists more than \(Self.maxListPages) pages under \(prefix); refusing to go on")
            }
            var query: [(String, String?)] = [("list-type", "2"), ("prefix", Self.serverPrefix(prefix))]
            if let token { query.append(("continuation-token", token)) }
            let (data, _) = try await storage.client.rest(method: "GET", path: "/\(bucket)", query: query, verb: .listImages, action: "ListObjectsV2")
            let root = try storage.client.parse(data, verb: .listImages, action: "ListObjectsV2")
            objects += root.children.filter { $0.name == "Contents" }.map {
                Object(key: $0.string("Key") ?? "", size: Int64($0.string("Size") ?? "0") ?? 0)
            }.filter { $0.key.hasPrefix(prefix) }
            let next = root.string("IsTruncated") == "true" ? root.string("NextContinuationToken") : nil
            guard next == nil || next != token else {
                throw ProviderError(driver: "s3", verb: .listImages, code: .backend, message: "bucket \(bucket) repeated a continuation token")
            }
            token = next
        } while token != nil
        return objects
    }

    public func delete(key: String) async throws {
        try await storage.deleteObject(bucket: bucket, key: key, verb: .deregisterImage)
    }

    /// Aborts every unfinished multipart upload under `prefix` (left by a process killed mid-upload);
    /// returns how many there were. A listing page holds up to 1000 uploads; when it says there
    /// are more, the listing starts again (the aborted ones are gone), at most `maxListPages`
    /// times. Markers are not used: moto miscomputes the signature of a query value with `/`.
    @discardableResult
    public func abortUploads(prefix: String) async throws -> Int {
        var aborted = 0
        for _ in 0..<Self.maxListPages {
            let (data, _) = try await storage.client.rest(
                method: "GET", path: "/\(bucket)", query: [("uploads", nil), ("prefix", Self.serverPrefix(prefix))], verb: .listImages,
                action: "ListMultipartUploads")
            let root = try storage.client.parse(data, verb: .listImages, action: "ListMultipartUploads")
            var abortedThisPage = 0
            for upload in root.children where upload.name == "Upload" {
                guard let key = upload.string("Key"), key.hasPrefix(prefix), let id = upload.string("UploadId") else { continue }
                _ = try await storage.client.rest(
                    method: "DELETE", path: "/\(bucket)/\(key)", query: [("uploadId", id)], verb: .deregisterImage, action: "AbortMultipartUpload")
                abortedThisPage += 1
            }
            aborted += abortedThisPage
            // Done when nothing more is listed, or when a full page held nothing of ours to abort.
            guard root.string("IsTruncated") == "true", abortedThisPage > 0 else { return aborted }
        }
        return aborted
    }
}

import Foundation
import Providers

#if canImport(Glibc)
import Glibc
#endif

/// A place backups are kept: keys are `<policy>/<backupID>/<name>` (under the target's prefix).
/// Every write of a big object is all-or-nothing: a killed upload leaves no object under its key
/// (a temporary file, an unfinished multipart upload), which `discardPartial` removes.
public protocol BackupStore: Sendable {
    /// Where, for operators and the audit log.
    var location: String { get }
    /// Creates what must exist (the directory, the bucket).
    func prepare() async throws
    /// Stores `file` under `key`; returns the bytes stored and their SHA-256.
    func upload(file: URL, key: String, progress: ProgressHandler?) async throws -> (bytes: Int64, sha256: String)
    /// Removes whatever an interrupted `upload` to `key` left.
    func discardPartial(key: String) async throws
    func put(_ data: Data, key: String) async throws
    /// A small object (at most `limit` bytes), or nil when there is none.
    func get(key: String, limit: Int) async throws -> Data?
    /// Writes `key` to `destination`; refuses more than `maxBytes`. Returns bytes and SHA-256 as read.
    func download(key: String, to destination: URL, maxBytes: Int64, progress: ProgressHandler?) async throws -> (bytes: Int64, sha256: String)
    /// Keys under `prefix`.
    func list(prefix: String) async throws -> [String]
    /// Deletes `key`; a missing key is not an error.
    func delete(key: String) async throws
}

extension BackupTarget {
    /// The store this target names. S3 credentials come from `environment`.
    public func store(environment: [String: String] = ProcessInfo.processInfo.environment) throws(BackupError) -> any BackupStore {
        switch self {
        case .directory(let path):
            return DirectoryBackupStore(root: URL(fileURLWithPath: path))
        case .s3(let endpoint, let region, let bucket, let prefix):
            guard let credentials = SigV4Signer.Credentials.fromEnvironment(environment) else {
                throw .refused("target \(self) needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
            }
            return S3BackupStore(
                objects: S3ObjectStore(configuration: .init(endpoint: endpoint, region: region, bucket: bucket, credentials: credentials)),
                prefix: prefix)
        }
    }
}

/// Backups as files under a directory. Files are written under a temporary name, fsynced and
/// renamed into place, then the directory is fsynced, so a key names a complete file or nothing.
public struct DirectoryBackupStore: BackupStore {
    public let root: URL

    public init(root: URL) { self.root = root }

    public var location: String { root.path + "/" }

    func url(_ key: String) -> URL { root.appendingPathComponent(key) }

    public func prepare() async throws {
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    public func upload(file: URL, key: String, progress: ProgressHandler?) async throws -> (bytes: Int64, sha256: String) {
        let destination = url(key)
        return try await BlockingFileWork.run {
            try FileManager.default.createDirectory(at: destination.deletingLastPathComponent(), withIntermediateDirectories: true)
            let result = try BlockingFileWork.copy(from: file, to: destination) { done, total in
                progress?(ProgressEvent(driver: "directory", verb: .exportImage, completed: done, total: total, message: "copied \(key)"))
            }
            try BlockingFileWork.syncDirectory(destination.deletingLastPathComponent())
            return result
        }
    }

    public func discardPartial(key: String) async throws {
        let destination = url(key)
        let directory = destination.deletingLastPathComponent()
        let marker = ".\(destination.lastPathComponent).partial-"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [] where name.hasPrefix(marker) {
            try? FileManager.default.removeItem(at: directory.appendingPathComponent(name))
        }
    }

    public func put(_ data: Data, key: String) async throws {
        let destination = url(key)
        try await BlockingFileWork.run {
            try FileManager.default.createDirectory(at: destination.deletingLastPathComponent(), withIntermediateDirectories: true)
            try BlockingFileWork.writeDurably(data, to: destination)
        }
    }

    public func get(key: String, limit: Int) async throws -> Data? {
        let source = url(key)
        return try await BlockingFileWork.run {
            // No symbolic link, and no FIFO to hang on: only a regular file is read.
            let descriptor = open(source.path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK)
            guard descriptor >= 0 else {
                if errno == ENOENT { return nil }
                throw BackupError.refused("\(key) cannot be opened: \(String(cString: strerror(errno)))")
            }
            let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
            defer { try? handle.close() }
            guard (try? FileManager.default.attributesOfItem(atPath: source.path)[.type] as? FileAttributeType) == .typeRegular else {
                throw BackupError.refused("\(key) is not a regular file")
            }
            // One byte past the limit tells a too-large file from one exactly at it.
            let data = try handle.read(upToCount: limit + 1) ?? Data()
            guard data.count <= limit else { throw BackupError.refused("\(key) is larger than \(limit) bytes") }
            return data
        }
    }

    public func download(key: String, to destination: URL, maxBytes: Int64, progress: ProgressHandler?) async throws -> (bytes: Int64, sha256: String) {
        let source = url(key)
        return try await BlockingFileWork.run {
            let attributes = try FileManager.default.attributesOfItem(atPath: source.path)
            // Only regular files: a symbolic link planted in the store must not read another file of this host.
            guard attributes[.type] as? FileAttributeType == .typeRegular else { throw BackupError.refused("\(key) is not a regular file") }
            let size = (attributes[.size] as? NSNumber)?.int64Value ?? 0
            guard size <= maxBytes else { throw BackupError.refused("\(key) is \(size) bytes; at most \(maxBytes) allowed") }
            return try BlockingFileWork.copy(from: source, to: destination, noFollow: true) { done, total in
                progress?(ProgressEvent(driver: "directory", verb: .importImage, completed: done, total: total, message: "copied \(key)"))
            }
        }
    }

    public func list(prefix: String) async throws -> [String] {
        let base = url(prefix)
        return try await BlockingFileWork.run {
            guard let enumerator = FileManager.default.enumerator(at: base, includingPropertiesForKeys: [.isRegularFileKey]) else { return [] }
            var keys: [String] = []
            let rootPath = root.standardizedFileURL.path
            for case let file as URL in enumerator where (try? file.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true {
                let path = file.standardizedFileURL.path
                guard path.hasPrefix(rootPath + "/"), !file.lastPathComponent.hasPrefix(".") else { continue }
                keys.append(String(path.dropFirst(rootPath.count + 1)))
            }
            return keys.sorted()
        }
    }

    public func delete(key: String) async throws {
        let target = url(key)
        try await BlockingFileWork.run {
            do { try FileManager.default.removeItem(at: target) } catch CocoaError.fileNoSuchFile {}
            let directory = target.deletingLastPathComponent()
            // The backup's own directory goes when its last file does.
            if (try? FileManager.default.contentsOfDirectory(atPath: directory.path))?.isEmpty == true {
                try? FileManager.default.removeItem(at: directory)
            }
        }
    }
}

/// Backups as objects in an S3-compatible bucket (the EC2 driver's S3 client: SigV4, retries).
public struct S3BackupStore: BackupStore {
    public let objects: S3ObjectStore
    public let prefix: String

    public init(objects: S3ObjectStore, prefix: String) {
        self.objects = objects
        self.prefix = prefix
    }

    public var location: String { "s3://\(objects.configuration.bucket)/\(prefix)" }

    public func prepare() async throws { try await objects.ensureBucket() }

    public func upload(file: URL, key: String, progress: ProgressHandler?) async throws -> (bytes: Int64, sha256: String) {
        // The digest is of the file as read for the upload: S3's multipart ETag is no content hash.
        let digest = try await objects.upload(file: file, key: prefix + key, progress: progress)
        guard let stored = try await objects.size(of: prefix + key), stored == digest.bytes else {
            throw BackupError.store("\(location)\(key) holds a different size than the \(digest.bytes) bytes uploaded")
        }
        return digest
    }

    public func discardPartial(key: String) async throws { try await objects.abortUploads(prefix: prefix + key) }

    public func put(_ data: Data, key: String) async throws { try await objects.put(data, key: prefix + key) }

    public func get(key: String, limit: Int) async throws -> Data? {
        do { return try await objects.get(key: prefix + key, limit: limit) } catch let error as ProviderError where error.code == .notFound {
            return nil
        }
    }

    public func download(key: String, to destination: URL, maxBytes: Int64, progress: ProgressHandler?) async throws -> (bytes: Int64, sha256: String) {
        try await objects.download(key: prefix + key, to: destination, maxBytes: maxBytes, progress: progress)
    }

    public func list(prefix listed: String) async throws -> [String] {
        try await objects.list(prefix: prefix + listed).map { String($0.key.dropFirst(prefix.count)) }
    }

    public func delete(key: String) async throws {
        do { try await objects.delete(key: prefix + key) } catch let error as ProviderError where error.code == .notFound {}
    }
}

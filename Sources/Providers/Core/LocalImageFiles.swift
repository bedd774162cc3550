import Foundation

/// Export and import of image files kept on the local file system, shared by SimCloud and libvirt
/// (whose directory pools are plain files too).
struct LocalImageFiles: Sendable {
    var driver: String
    /// fsync copies before they are renamed into place (see `FileCopy.copy`).
    var durable = true
    /// Stored raw images are never written after they are stored (SimCloud's are not): a raw export
    /// may then be a hard link to the stored file instead of a copy, and an adopted import may link
    /// the caller's file into the store (see `FileCopy.link`).
    var linksImmutableImages = false

    /// Formats available: raw always (plain copy), the others only when `qemu-img` is installed.
    static var formats: Set<ImageFormat> { QemuImg.isAvailable ? Set(ImageFormat.allCases) : [.raw] }

    /// Writes `stored` (in `storedFormat`) to `destination` in `format`.
    func export(
        stored: URL, storedFormat: ImageFormat, contentSHA256: String?, to destination: URL, format: ImageFormat,
        failAfter: Int64? = nil, progress: ProgressHandler?
    ) async throws -> ImageFile {
        let verb = Verb.exportImage
        let driver = self.driver
        try checkFormat(format, verb: verb)
        do {
            if linksImmutableImages, failAfter == nil, format == .raw, storedFormat == .raw, let contentSHA256,
               try FileCopy.link(from: stored, to: destination) {
                // The stored file's recorded digest is its content's: no copy, no hash pass.
                let bytes = try FileManager.default.attributesOfItem(atPath: destination.path)[.size] as? Int64 ?? 0
                progress?(ProgressEvent(driver: driver, verb: verb, completed: bytes, total: bytes, message: "linked"))
                return ImageFile(
                    url: destination, format: format, fileBytes: bytes, fileSHA256: contentSHA256, contentSHA256: contentSHA256)
            }
            if format == storedFormat {
                let result = try FileCopy.copy(from: stored, to: destination, failAfter: failAfter, durable: durable) { done, total in
                    progress?(ProgressEvent(driver: driver, verb: verb, completed: done, total: total, message: "copying"))
                }
                return ImageFile(
                    url: destination, format: format, fileBytes: result.bytes, fileSHA256: result.sha256,
                    contentSHA256: contentSHA256 ?? (format == .raw ? result.sha256 : nil))
            }
            try await QemuImg.convert(stored, from: storedFormat, to: destination, format: format) { fraction in
                progress?(ProgressEvent(
                    driver: driver, verb: verb, completed: Int64(fraction * 1000), total: 1000, message: "converting to \(format)"))
            }
            let digest = try FileCopy.digest(of: destination)
            return ImageFile(
                url: destination, format: format, fileBytes: digest.bytes, fileSHA256: digest.sha256,
                contentSHA256: contentSHA256)
        } catch {
            throw mapError(error, verb: verb)
        }
    }

    /// Imports `source` (in `format`) into `stored` as `storedFormat`, verifying `expectedSHA256` of the
    /// source file. Returns the stored file's virtual size and raw-content SHA-256. On any failure
    /// nothing is left at `stored`.
    /// `adopting`: the caller gives the file up, so with `linksImmutableImages` a raw file is checked
    /// in one read pass and linked into the store instead of copied (the caller removes its name);
    /// with `digestVerified` too (the caller hashed this file as it received it) without the pass.
    /// `admission`: the checks a file from elsewhere must pass before anything is converted or stored
    /// (`ImageInspection`); nil only for one of this driver's own instance disks (a snapshot), whose
    /// backing image is part of its content.
    func importFile(
        from source: URL, format: ImageFormat, expectedSHA256: String?, into stored: URL, storedFormat: ImageFormat,
        admission: ImageAdmission?, shareLock: Bool = false, adopting: Bool = false, digestVerified: Bool = false,
        progress: ProgressHandler?
    ) async throws -> (sizeBytes: Int64, contentSHA256: String) {
        let verb = Verb.importImage
        let driver = self.driver
        try checkFormat(format, verb: verb)
        guard FileManager.default.fileExists(atPath: source.path) else {
            throw ProviderError(driver: driver, verb: verb, code: .invalidInput, message: "\(source.path) does not exist")
        }
        if let admission {
            do {
                _ = try await ImageInspection.inspect(source, format: format, admission: admission)
            } catch let refusal as ImageRefusal {
                throw ProviderError.refusedImage(driver: driver, verb: verb, source, refusal)
            } catch {
                throw mapError(error, verb: verb)
            }
        }
        do {
            if adopting, linksImmutableImages, format == .raw, storedFormat == .raw {
                if digestVerified, let expectedSHA256, expectedSHA256.count == 64 {
                    let bytes = (try FileManager.default.attributesOfItem(atPath: source.path)[.size] as? NSNumber)?.int64Value ?? 0
                    if try FileCopy.link(from: source, to: stored) { return (bytes, expectedSHA256.lowercased()) }
                }
                let digest = try FileCopy.digest(of: source) { done, total in
                    progress?(ProgressEvent(driver: driver, verb: verb, completed: done, total: total, message: "verifying"))
                }
                if let expectedSHA256, expectedSHA256.lowercased() != digest.sha256 {
                    throw checksumMismatch(source, expected: expectedSHA256, actual: digest.sha256)
                }
                if try FileCopy.link(from: source, to: stored) { return (digest.bytes, digest.sha256) }
            }
            if format == .raw && storedFormat == .raw {
                // One pass: copy and hash together, then drop the copy if the hash is wrong.
                let result = try FileCopy.copy(from: source, to: stored, durable: durable) { done, total in
                    progress?(ProgressEvent(driver: driver, verb: verb, completed: done, total: total, message: "copying"))
                }
                if let expectedSHA256, expectedSHA256.lowercased() != result.sha256 {
                    try? FileManager.default.removeItem(at: stored)
                    throw checksumMismatch(source, expected: expectedSHA256, actual: result.sha256)
                }
                return (result.bytes, result.sha256)
            }
            if let expectedSHA256 {
                let digest = try FileCopy.digest(of: source)
                if expectedSHA256.lowercased() != digest.sha256 {
                    throw checksumMismatch(source, expected: expectedSHA256, actual: digest.sha256)
                }
            }
            if admission == nil {
                // Our own disk: qemu-img's answer is trusted (the admitted path checked it above instead).
                let detected = try await QemuImg.info(source, shareLock: shareLock)
                guard ImageFormat(name: detected.format) == format || (format == .vpc && detected.format == "vpc") else {
                    throw ProviderError(
                        driver: driver, verb: verb, code: .unsupportedFormat,
                        message: "\(source.lastPathComponent) is \(detected.format), not \(format)")
                }
            }
            try await QemuImg.convert(
                source, from: format, to: stored, format: storedFormat, shareLock: shareLock,
                followsBacking: admission?.allowsReferences ?? true
            ) { fraction in
                progress?(ProgressEvent(
                    driver: driver, verb: verb, completed: Int64(fraction * 1000), total: 1000, message: "converting"))
            }
            do {
                let content = try await rawContentDigest(stored, format: storedFormat)
                return (content.bytes, content.sha256)
            } catch {
                try? FileManager.default.removeItem(at: stored)
                throw error
            }
        } catch {
            throw mapError(error, verb: verb)
        }
    }

    /// SHA-256 of the raw disk content of a file in any format.
    func rawContentDigest(_ url: URL, format: ImageFormat) async throws -> FileCopy.Result {
        if format == .raw { return try FileCopy.digest(of: url) }
        let temporary = FileManager.default.temporaryDirectory.appendingPathComponent("content-\(UUID().uuidString).raw")
        defer { try? FileManager.default.removeItem(at: temporary) }
        try await QemuImg.convert(url, from: format, to: temporary, format: .raw)
        return try FileCopy.digest(of: temporary)
    }

    func checkFormat(_ format: ImageFormat, verb: Verb) throws {
        guard Self.formats.contains(format) else {
            throw ProviderError(
                driver: driver, verb: verb, code: .unsupportedFormat,
                message: "\(format) needs qemu-img (Debian package qemu-utils), which is not installed")
        }
    }

    func checksumMismatch(_ source: URL, expected: String, actual: String) -> ProviderError {
        ProviderError(
            driver: driver, verb: .importImage, code: .checksumMismatch,
            message: "\(source.lastPathComponent) has SHA-256 \(actual), expected \(expected); nothing was imported")
    }

    func mapError(_ error: any Error, verb: Verb) -> ProviderError {
        switch error {
        case let error as ProviderError: return error
        case is CancellationError:
            return ProviderError(driver: driver, verb: verb, code: .cancelled, message: "cancelled; partial files removed")
        case let error as FileCopyError:
            if case .injectedCrash = error {
                return ProviderError(driver: driver, verb: verb, code: .injectedFault, message: "\(error); partial file removed")
            }
            return ProviderError(driver: driver, verb: verb, code: .io, message: error.description)
        case let error as QemuImgError:
            return ProviderError(driver: driver, verb: verb, code: .io, message: error.description)
        default:
            return ProviderError(driver: driver, verb: verb, code: .io, message: String(describing: error))
        }
    }
}

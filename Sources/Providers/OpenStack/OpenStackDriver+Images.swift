import Crypto
import Foundation

/// Glance v2 images. Glance keeps a digest of every image's data (`os_hash_algo`, normally sha512, and
/// `os_hash_value`): a download is checked against it before it is used, and an upload is checked
/// against the digest computed here before the image is kept. The SHA-256 of the raw disk content,
/// which identifies an image across formats and clouds, is kept as the image property
/// `intercloud_content_sha256`.
extension OpenStackDriver {
    static let contentDigestProperty = "intercloud_content_sha256"
    /// Glance formats that Nova's libvirt driver boots as they are; others are converted to qcow2 first.
    static let uploadFormats: Set<ImageFormat> = [.raw, .qcow2]

    /// A Glance image as JSON: Glance v2 puts custom properties beside its own fields.
    struct GlanceImage {
        var fields: [String: Any]
        var id: String { fields["id"] as? String ?? "" }
        var status: String { fields["status"] as? String ?? "unknown" }
        var name: String { fields["name"] as? String ?? id }
        var diskFormat: String? { fields["disk_format"] as? String }
        var containerFormat: String? { fields["container_format"] as? String }
        var hashAlgorithm: String? { fields["os_hash_algo"] as? String }
        var hashValue: String? { fields["os_hash_value"] as? String }

        /// Kernel and ramdisk images exist to boot others; they are not listed as images to boot.
        var isBootable: Bool { !["aki", "ari"].contains(containerFormat ?? "") }

        var format: ImageFormat? {
            switch diskFormat {
            case "vhd": .vpc
            case "ami": .raw
            case let name?: ImageFormat(rawValue: name)
            case nil: nil
            }
        }

        var image: Image {
            var extra: [String: String] = [:]
            for key in ["disk_format", "container_format", "visibility", "os_hash_algo", "os_hash_value", "checksum",
                        "kernel_id", "ramdisk_id", "os_command_line", "owner"] {
                if let value = fields[key] as? String { extra[key] = value }
            }
            if let virtual = fields["virtual_size"] as? Int { extra["virtual_size"] = String(virtual) }
            return Image(
                id: id, name: name, format: format, sizeBytes: (fields["virtual_size"] as? Int64) ?? (fields["size"] as? Int64)
                    ?? (fields["virtual_size"] as? Int).map(Int64.init) ?? (fields["size"] as? Int).map(Int64.init),
                sha256: fields[OpenStackDriver.contentDigestProperty] as? String, rawState: status, extra: extra)
        }
    }

    func glanceImage(_ id: String, verb: Verb) async throws -> GlanceImage {
        try checkIdentifier(id, verb: verb, what: "image")
        let (data, _) = try await call(.image, "GET", "/v2/images/\(id)", verb: verb)
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw ProviderError(driver: driverName, verb: verb, code: .backend, message: "unexpected image answer for \(id)")
        }
        return GlanceImage(fields: object)
    }

    public func listImages() async throws -> [Image] {
        var images: [Image] = []
        var next: URL?
        var pages = 0
        repeat {
            let (data, _) = try await call(
                .image, "GET", "/v2/images", query: [("limit", String(max(1, min(configuration.pageSize, 1000))))],
                verb: .listImages, absolute: next)
            guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
                  let list = object["images"] as? [[String: Any]]
            else {
                throw ProviderError(driver: driverName, verb: .listImages, code: .backend, message: "unexpected image list answer")
            }
            images += list.map(GlanceImage.init(fields:)).filter(\.isBootable).map(\.image)
            next = nil
            if let link = object["next"] as? String { next = try await sameOrigin(link, service: .image, verb: .listImages) }
            pages += 1
            if pages * configuration.pageSize > 1_000_000 || list.isEmpty { break }
        } while next != nil
        return images
    }

    public func registerImage(name: String, options: [String: String]) async throws -> Image {
        throw unsupported(.registerImage, "Glance images are made by uploading them (import-image) or by snapshot")
    }

    public func deregisterImage(id: String) async throws {
        try checkIdentifier(id, verb: .deregisterImage, what: "image")
        _ = try await call(.image, "DELETE", "/v2/images/\(id)", verb: .deregisterImage)
    }

    /// `createImage`, then waits (up to `imageTimeout`) until Glance holds the image's data.
    public func snapshot(instance id: String, name: String, progress: ProgressHandler?) async throws -> Image {
        try checkIdentifier(id, verb: .snapshot, what: "instance")
        progress?(ProgressEvent(driver: driverName, verb: .snapshot, completed: 0, total: 2, message: "createImage"))
        let body = try json(["createImage": ["name": name, "metadata": [:] as [String: String]]], verb: .snapshot)
        let (data, _) = try await call(.compute, "POST", "/servers/\(id)/action", body: body, verb: .snapshot)
        struct Created: Decodable { var image_id: String }
        let imageID = try decode(Created.self, data, verb: .snapshot, what: "createImage").image_id
        progress?(ProgressEvent(driver: driverName, verb: .snapshot, completed: 1, total: 2, message: "image \(imageID) saving"))
        let image = try await waitForActive(imageID, verb: .snapshot, progress: progress)
        progress?(ProgressEvent(driver: driverName, verb: .snapshot, completed: 2, total: 2, message: "image \(imageID) active"))
        return image.image
    }

    /// Polls Glance until the image is `active`; `killed` or `deleted` on the way is an error.
    func waitForActive(_ id: String, verb: Verb, progress: ProgressHandler?) async throws -> GlanceImage {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: configuration.imageTimeout)
        var last = ""
        while true {
            let image = try await glanceImage(id, verb: verb)
            switch image.status {
            case "active": return image
            case "killed", "deleted", "pending_delete":
                throw ProviderError(
                    driver: driverName, verb: verb, code: .backend, backendCode: image.status,
                    message: "image \(id) went to \(image.status) before its data was stored")
            default:
                if image.status != last {
                    progress?(ProgressEvent(driver: driverName, verb: verb, completed: 1, total: 2, message: "image \(id) \(image.status)"))
                    last = image.status
                }
            }
            if clock.now >= deadline {
                throw ProviderError(
                    driver: driverName, verb: verb, code: .timeout,
                    message: "image \(id) still \(image.status) after \(configuration.imageTimeout)")
            }
            do { try await Task.sleep(for: .milliseconds(500)) } catch {
                throw ProviderError(driver: driverName, verb: verb, code: .cancelled, message: "waiting for image \(id) cancelled")
            }
        }
    }

    // MARK: Export

    /// Downloads the image's data, checks it against Glance's `os_hash_value`, and converts it to
    /// `format` if Glance stores it in another.
    public func exportImage(
        id: String, to destination: URL, format: ImageFormat, progress: ProgressHandler?
    ) async throws -> ImageFile {
        let verb = Verb.exportImage
        try files.checkFormat(format, verb: verb)
        let image = try await glanceImage(id, verb: verb)
        guard image.status == "active" else {
            throw ProviderError.invalidState(driver: driverName, verb: verb, "image \(id) is \(image.status), not active")
        }
        guard let stored = image.format else {
            throw ProviderError(
                driver: driverName, verb: verb, code: .unsupportedFormat,
                message: "image \(id) has disk format \(image.diskFormat ?? "none"), which this driver does not read")
        }
        let downloaded = destination.deletingLastPathComponent()
            .appendingPathComponent(".\(destination.lastPathComponent).download-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: downloaded) }
        progress?(ProgressEvent(driver: driverName, verb: verb, completed: 0, total: 3, message: "downloading \(id)"))
        try await download(imageID: id, to: downloaded, verb: verb)
        progress?(ProgressEvent(driver: driverName, verb: verb, completed: 1, total: 3, message: "checking os_hash_value"))
        let digests = try Self.digests(of: downloaded, also: image.hashAlgorithm, verb: verb, driver: driverName)
        if let expected = image.hashValue, let actual = digests.other, expected.lowercased() != actual {
            throw ProviderError(
                driver: driverName, verb: verb, code: .checksumMismatch,
                message: "image \(id) downloaded with \(image.hashAlgorithm ?? "?") \(actual), Glance recorded \(expected); nothing was written")
        }
        do {
            if format == stored {
                try FileManager.default.moveItemReplacing(downloaded, with: destination)
                let content = try await contentDigest(known: stored == .raw ? digests.sha256 : image.image.sha256, of: destination, format: format)
                progress?(ProgressEvent(driver: driverName, verb: verb, completed: 3, total: 3, message: "written"))
                return ImageFile(
                    url: destination, format: format, fileBytes: digests.bytes, fileSHA256: digests.sha256, contentSHA256: content)
            }
            progress?(ProgressEvent(driver: driverName, verb: verb, completed: 2, total: 3, message: "converting \(stored) to \(format)"))
            try await QemuImg.convert(downloaded, from: stored, to: destination, format: format)
            let written = try FileCopy.digest(of: destination)
            let content = try await contentDigest(known: stored == .raw ? digests.sha256 : image.image.sha256, of: destination, format: format)
            progress?(ProgressEvent(driver: driverName, verb: verb, completed: 3, total: 3, message: "written"))
            return ImageFile(
                url: destination, format: format, fileBytes: written.bytes, fileSHA256: written.sha256, contentSHA256: content)
        } catch {
            throw files.mapError(error, verb: verb)
        }
    }

    /// The raw content's SHA-256: known from Glance's record or a raw download, else computed.
    func contentDigest(known: String?, of file: URL, format: ImageFormat) async throws -> String {
        if let known { return known }
        return try await files.rawContentDigest(file, format: format).sha256
    }

    func download(imageID id: String, to file: URL, verb: Verb) async throws {
        var renewed = false
        while true {
            let token = try await session.token(verb: verb)
            let url = try endpointURL(.image, path: "/v2/images/\(id)/file", query: [], token: token, verb: verb)
            var request = HTTPRequest(url: url)
            request.setValue(token.value, forHTTPHeaderField: "X-Auth-Token")
            let body: Data
            let response: HTTPResponse
            do {
                // Written to `file` as it arrives (the caller's temporary name), only if Glance answers 2xx.
                (body, response) = try await transfers.download(request, to: file, errorBodyLimit: 4096)
            } catch {
                throw transferError(error, verb: verb, action: "GET \(url.path)")
            }
            guard (200..<300).contains(response.statusCode) else {
                let failure = OpenStackHTTP.mapError(
                    status: response.statusCode, data: body, driver: driverName, verb: verb, action: "GET \(url.path)")
                if failure.code == .authentication && !renewed {
                    await session.invalidate(token.value)
                    renewed = true
                    continue
                }
                throw failure
            }
            return
        }
    }

    func transferError(_ error: any Error, verb: Verb, action: String) -> ProviderError {
        if HTTPFailure.isCancellation(error) {
            return ProviderError(driver: driverName, verb: verb, code: .cancelled, message: "\(action) cancelled")
        }
        if error is HTTPResponseTooLarge {
            return ProviderError(driver: driverName, verb: verb, code: .backend, message: "\(action): \(error)")
        }
        return ProviderError(driver: driverName, verb: verb, code: .unavailable, message: "\(action): \(HTTPFailure.describe(error))")
    }

    // MARK: Import

    /// Uploads a local image file to Glance. The file must pass `admission` and, if given, match
    /// `expectedSHA256` before an image record exists; a format Nova does not boot directly is converted
    /// to qcow2 first. After the upload Glance's `os_hash_value` must equal the digest computed here,
    /// or the image is deleted. A failure at any step deletes the record: nothing half-made remains.
    public func importImage(
        from source: URL, name: String, format: ImageFormat, expectedSHA256: String?, admission: ImageAdmission,
        progress: ProgressHandler?
    ) async throws -> Image {
        let verb = Verb.importImage
        try files.checkFormat(format, verb: verb)
        guard FileManager.default.fileExists(atPath: source.path) else {
            throw ProviderError(driver: driverName, verb: verb, code: .invalidInput, message: "\(source.path) does not exist")
        }
        let staging = source.deletingLastPathComponent().appendingPathComponent(".\(source.lastPathComponent).glance-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: staging) }
        let upload: URL
        let uploadFormat: ImageFormat
        let contentSHA256: String
        progress?(ProgressEvent(driver: driverName, verb: verb, completed: 0, total: 4, message: "checking \(source.lastPathComponent)"))
        if Self.uploadFormats.contains(format) {
            do {
                _ = try await ImageInspection.inspect(source, format: format, admission: admission)
            } catch let refusal as ImageRefusal {
                throw ProviderError.refusedImage(driver: driverName, verb: verb, source, refusal)
            } catch {
                throw files.mapError(error, verb: verb)
            }
            let digest: FileCopy.Result
            do { digest = try FileCopy.digest(of: source) } catch { throw files.mapError(error, verb: verb) }
            if let expectedSHA256, expectedSHA256.lowercased() != digest.sha256 {
                throw files.checksumMismatch(source, expected: expectedSHA256, actual: digest.sha256)
            }
            upload = source
            uploadFormat = format
            contentSHA256 = format == .raw ? digest.sha256 : try await files.rawContentDigest(source, format: format).sha256
        } else {
            let converted = try await files.importFile(
                from: source, format: format, expectedSHA256: expectedSHA256, into: staging, storedFormat: .qcow2,
                admission: admission, progress: progress)
            upload = staging
            uploadFormat = .qcow2
            contentSHA256 = converted.contentSHA256
        }
        var record: [String: Any] = [
            "name": name, "disk_format": uploadFormat.rawValue, "container_format": "bare", "visibility": "private",
            Self.contentDigestProperty: contentSHA256,
        ]
        if let kernel = configuration.kernelImage { record["kernel_id"] = try await imageID(named: kernel, verb: verb) }
        if let ramdisk = configuration.ramdiskImage { record["ramdisk_id"] = try await imageID(named: ramdisk, verb: verb) }
        if let commandLine = configuration.kernelCommandLine { record["os_command_line"] = commandLine }
        progress?(ProgressEvent(driver: driverName, verb: verb, completed: 1, total: 4, message: "creating image record"))
        let (data, _) = try await call(.image, "POST", "/v2/images", body: try json(record, verb: verb), verb: verb)
        guard let created = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any], let id = created["id"] as? String else {
            throw ProviderError(driver: driverName, verb: verb, code: .backend, message: "Glance created an image without an id")
        }
        do {
            progress?(ProgressEvent(driver: driverName, verb: verb, completed: 2, total: 4, message: "uploading to image \(id)"))
            try await uploadData(of: upload, imageID: id, verb: verb)
            progress?(ProgressEvent(driver: driverName, verb: verb, completed: 3, total: 4, message: "checking os_hash_value"))
            let image = try await waitForActive(id, verb: verb, progress: progress)
            let local = try Self.digests(of: upload, also: image.hashAlgorithm ?? "sha512", verb: verb, driver: driverName)
            guard let recorded = image.hashValue, recorded.lowercased() == local.other else {
                throw ProviderError(
                    driver: driverName, verb: verb, code: .checksumMismatch,
                    message: "Glance recorded \(image.hashAlgorithm ?? "?") \(image.hashValue ?? "none") for image \(id), the file has \(local.other ?? "?"); the image was deleted")
            }
            progress?(ProgressEvent(driver: driverName, verb: verb, completed: 4, total: 4, message: "image \(id) active"))
            return image.image
        } catch {
            // Not cancelled with the caller: the record must go even when the import was cancelled.
            await Task { [self] in try? await deregisterImage(id: id) }.value
            throw ProviderError.wrap(error, driver: driverName, verb: verb)
        }
    }

    func uploadData(of file: URL, imageID id: String, verb: Verb) async throws {
        var renewed = false
        while true {
            let token = try await session.token(verb: verb)
            let url = try endpointURL(.image, path: "/v2/images/\(id)/file", query: [], token: token, verb: verb)
            var request = HTTPRequest(url: url, method: "PUT")
            request.setValue(token.value, forHTTPHeaderField: "X-Auth-Token")
            request.setValue("application/octet-stream", forHTTPHeaderField: "Content-Type")
            let data: Data
            let response: HTTPResponse
            do {
                (data, response) = try await transfers.upload(request, file: file)
            } catch {
                throw transferError(error, verb: verb, action: "PUT \(url.path)")
            }
            let status = response.statusCode
            if (200..<300).contains(status) { return }
            let failure = OpenStackHTTP.mapError(status: status, data: data, driver: driverName, verb: verb, action: "PUT \(url.path)")
            if failure.code == .authentication && !renewed {
                await session.invalidate(token.value)
                renewed = true
                continue
            }
            throw failure
        }
    }

    /// An image id given as an id or a unique name.
    func imageID(named reference: String, verb: Verb) async throws -> String {
        if let image = try? await glanceImage(reference, verb: verb) { return image.id }
        let (data, _) = try await call(.image, "GET", "/v2/images", query: [("name", reference)], verb: verb)
        let list = ((try? JSONSerialization.jsonObject(with: data)) as? [String: Any])?["images"] as? [[String: Any]] ?? []
        let ids = list.compactMap { $0["id"] as? String }
        guard ids.count == 1 else {
            throw ProviderError(
                driver: driverName, verb: verb, code: ids.isEmpty ? .notFound : .invalidInput,
                message: ids.isEmpty ? "no image named \(reference)" : "\(ids.count) images are named \(reference); give an id")
        }
        return ids[0]
    }

    /// SHA-256 of a file, and in the same pass the digest Glance keeps (`sha512`, `sha384`, `sha256`).
    static func digests(of file: URL, also algorithm: String?, verb: Verb, driver: String) throws -> (bytes: Int64, sha256: String, other: String?) {
        guard let handle = FileHandle(forReadingAtPath: file.path) else {
            throw ProviderError(driver: driver, verb: verb, code: .io, message: "cannot open \(file.path)")
        }
        defer { try? handle.close() }
        var sha256 = SHA256()
        var sha384 = SHA384()
        var sha512 = SHA512()
        var bytes: Int64 = 0
        while true {
            try Task.checkCancellation()
            let chunk: Data
            do { chunk = try handle.read(upToCount: FileCopy.chunkSize) ?? Data() } catch {
                throw ProviderError(driver: driver, verb: verb, code: .io, message: "reading \(file.path): \(error)")
            }
            if chunk.isEmpty { break }
            bytes += Int64(chunk.count)
            sha256.update(data: chunk)
            switch algorithm {
            case "sha512": sha512.update(data: chunk)
            case "sha384": sha384.update(data: chunk)
            default: break
            }
        }
        let first = sha256.finalize().hex
        let other: String? = switch algorithm {
        case "sha512": sha512.finalize().hex
        case "sha384": sha384.finalize().hex
        case "sha256": first
        default: nil
        }
        return (bytes, first, other)
    }
}

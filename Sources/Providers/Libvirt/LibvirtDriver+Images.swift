import Foundation

/// Images as files in `imageDirectory`: `<id>.<format>` plus `<id>.json` (name, format, size, SHA-256
/// of the raw content). libvirt's own volume upload/download is not used: the test driver lacks it and
/// a directory pool is plain files anyway, which `qemu-img` converts directly.
extension LibvirtDriver {
    struct ImageManifest: Codable {
        var id: String
        var name: String
        var format: ImageFormat
        var sizeBytes: Int64
        var sha256: String
        var createdAt: Date
    }

    struct StoredImage {
        var manifest: ImageManifest
        var file: URL
        var format: ImageFormat { manifest.format }
    }

    private func requireImageDirectory(_ verb: Verb) throws -> URL {
        guard let directory = configuration.imageDirectory else {
            throw unsupported(verb, "no image directory is configured for this libvirt connection")
        }
        return directory
    }

    func imageManifest(_ id: String) throws -> StoredImage? {
        guard let directory = configuration.imageDirectory,
              id.range(of: "^[A-Za-z0-9._-]+$", options: .regularExpression) != nil
        else { return nil }
        let url = directory.appendingPathComponent("\(id).json")
        guard let data = try? Data(contentsOf: url) else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let manifest = try decoder.decode(ImageManifest.self, from: data)
        return StoredImage(manifest: manifest, file: directory.appendingPathComponent("\(id).\(manifest.format.rawValue)"))
    }

    func image(_ stored: StoredImage) -> Image {
        Image(
            id: stored.manifest.id, name: stored.manifest.name, format: stored.format, sizeBytes: stored.manifest.sizeBytes,
            sha256: stored.manifest.sha256, rawState: "available", extra: ["file": stored.file.path])
    }

    public func listImages() async throws -> [Image] {
        let directory = try requireImageDirectory(.listImages)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return try names.filter { $0.hasSuffix(".json") }.sorted().compactMap { name in
            try imageManifest(String(name.dropLast(5))).map(image)
        }
    }

    /// Registers a file already on this host. Options: `path` (required), `format` (default from
    /// `qemu-img info`), `sha256` (checked). The file is converted or copied into the image directory.
    public func registerImage(name: String, options: [String: String]) async throws -> Image {
        guard let path = options["path"] else {
            throw ProviderError(driver: driverName, verb: .registerImage, code: .invalidInput, message: "options must include \"path\"")
        }
        let url = URL(fileURLWithPath: path)
        let format: ImageFormat
        if let name = options["format"] {
            guard let parsed = ImageFormat(name: name) else {
                throw ProviderError(driver: driverName, verb: .registerImage, code: .unsupportedFormat, message: "unknown format \(name)")
            }
            format = parsed
        } else {
            let detected = try await libvirt(.registerImage) { try await QemuImg.info(url) }
            guard let parsed = ImageFormat(name: detected.format) else {
                throw ProviderError(
                    driver: driverName, verb: .registerImage, code: .unsupportedFormat, message: "unsupported format \(detected.format)")
            }
            format = parsed
        }
        var image = try await importImage(from: url, name: name, format: format, expectedSHA256: options["sha256"], progress: nil)
        image.extra["registeredFrom"] = path
        return image
    }

    public func deregisterImage(id: String) async throws {
        _ = try requireImageDirectory(.deregisterImage)
        guard let stored = try imageManifest(id) else { throw ProviderError.notFound(driver: driverName, verb: .deregisterImage, "image \(id)") }
        try? FileManager.default.removeItem(at: stored.file)
        try? FileManager.default.removeItem(at: configuration.imageDirectory!.appendingPathComponent("\(id).json"))
    }

    public func exportImage(id: String, to destination: URL, format: ImageFormat, progress: ProgressHandler?) async throws -> ImageFile {
        _ = try requireImageDirectory(.exportImage)
        guard let stored = try imageManifest(id) else { throw ProviderError.notFound(driver: driverName, verb: .exportImage, "image \(id)") }
        return try await files.export(
            stored: stored.file, storedFormat: stored.format, contentSHA256: stored.manifest.sha256, to: destination,
            format: format, progress: progress)
    }

    /// Imports into the image directory, keeping raw as raw and storing everything else as qcow2 (what
    /// QEMU runs best from and what overlays are made on).
    public func importImage(
        from source: URL, name: String, format: ImageFormat, expectedSHA256: String?, admission: ImageAdmission,
        progress: ProgressHandler?
    ) async throws -> Image {
        try await store(from: source, name: name, format: format, expectedSHA256: expectedSHA256, admission: admission,
                        verb: .importImage, shareLock: false, progress: progress)
    }

    /// Flattens the instance's disk (overlay + backing image) into a new qcow2 image. A running guest
    /// gives a crash-consistent copy; stop or suspend it first for a clean one.
    public func snapshot(instance id: String, name: String, progress: ProgressHandler?) async throws -> Image {
        _ = try requireImageDirectory(.snapshot)
        let status = try await libvirt(.snapshot) { try await connection.status(of: id) }
        guard let disk = Self.parseDomain(status.xml).disk else {
            throw ProviderError(driver: driverName, verb: .snapshot, code: .invalidState, message: "instance \(id) has no disk")
        }
        // The instance's own disk: its backing image is part of its content (admission nil).
        return try await store(
            from: URL(fileURLWithPath: disk), name: name, format: .qcow2, expectedSHA256: nil, admission: nil, verb: .snapshot,
            shareLock: true, progress: progress)
    }

    private func store(
        from source: URL, name: String, format: ImageFormat, expectedSHA256: String?, admission: ImageAdmission?, verb: Verb,
        shareLock: Bool, progress: ProgressHandler?
    ) async throws -> Image {
        let directory = try requireImageDirectory(verb)
        let id = "img-" + UUID().uuidString.prefix(12).lowercased()
        let storedFormat: ImageFormat = format == .raw ? .raw : .qcow2
        let file = directory.appendingPathComponent("\(id).\(storedFormat.rawValue)")
        let manifestURL = directory.appendingPathComponent("\(id).json")
        do {
            let result = try await files.importFile(
                from: source, format: format, expectedSHA256: expectedSHA256, into: file, storedFormat: storedFormat,
                admission: admission, shareLock: shareLock, progress: progress)
            let manifest = ImageManifest(
                id: id, name: name, format: storedFormat, sizeBytes: result.sizeBytes, sha256: result.contentSHA256,
                createdAt: Date())
            let encoder = JSONEncoder()
            encoder.dateEncodingStrategy = .iso8601
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(manifest).write(to: manifestURL, options: .atomic)
            try chown(file)
            return image(StoredImage(manifest: manifest, file: file))
        } catch {
            try? FileManager.default.removeItem(at: file)
            try? FileManager.default.removeItem(at: manifestURL)
            var mapped = files.mapError(error, verb: verb)
            mapped.verb = verb
            throw mapped
        }
    }
}

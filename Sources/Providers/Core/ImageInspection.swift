import Foundation

/// What an image from elsewhere (a peer's migration, an operator's `provider import`) must satisfy
/// before any byte of it is converted or stored.
public struct ImageAdmission: Sendable, Equatable {
    /// The largest virtual disk accepted, in bytes (a migration: the disk of the size it reserved).
    /// `nil`: no limit beyond the driver's own.
    public var maxVirtualSizeBytes: Int64?
    /// Skips the checks that refuse images naming other files. Only an operator may set it, for one
    /// call (`intercloud provider import --allow-unsafe-image`); never for a peer's image.
    public var allowsReferences: Bool
    /// Limits on the `qemu-img info` that inspects the image.
    public var inspectionLimits: QemuImg.Limits

    public init(maxVirtualSizeBytes: Int64? = nil, allowsReferences: Bool = false, inspectionLimits: QemuImg.Limits = .inspection) {
        self.maxVirtualSizeBytes = maxVirtualSizeBytes
        self.allowsReferences = allowsReferences
        self.inspectionLimits = inspectionLimits
    }

    /// Every check, no size limit: the default for any import.
    public static let strict = ImageAdmission()
}

/// Inspects an image file from elsewhere, in the format it was declared to be in, and refuses it
/// when it names any other file or protocol, or describes a disk larger than allowed.
///
/// Two independent checks, both before any conversion: `DiskImageHeader` on the file's own bytes
/// (no program opens the file before it passes), then `qemu-img info` on the declared format (never
/// probed) under `QemuImg.Limits` (address space, CPU time, wall time), whose answer is refused if
/// anything in it names another file: a backing file in any form, an external data file, an extent
/// that is not the file itself. The conversion afterwards opens the file with no backing at all
/// (`QemuImg.isolatedSource`).
public enum ImageInspection {
    public struct Report: Sendable, Equatable {
        public var format: ImageFormat
        public var virtualSizeBytes: Int64
        public var fileBytes: Int64
    }

    public static func inspect(_ file: URL, format: ImageFormat, admission: ImageAdmission) async throws -> Report {
        let fileBytes = try fileSize(file)
        if format == .raw {
            // A raw disk is its bytes: its virtual size is its length, and no program opens it to tell.
            try checkSize(fileBytes, admission)
            return Report(format: .raw, virtualSizeBytes: fileBytes, fileBytes: fileBytes)
        }
        let (head, tail) = try readEnds(of: file, fileBytes: fileBytes)
        if !admission.allowsReferences {
            try DiskImageHeader.check(format: format, head: head, tail: tail, fileBytes: fileBytes)
        }
        let output: String
        do {
            output = try await QemuImg.run(
                ["info", "--output=json", "-f", format.rawValue, file.path], limits: admission.inspectionLimits)
        } catch let error as QemuImgError where error.timedOut || error.status > 0 {
            // A file qemu-img cannot read as its declared format, or reads past the limits, is refused.
            throw ImageRefusal(
                error.timedOut ? .inspectionLimit : .notDeclaredFormat,
                "qemu-img info -f \(format) refused it: \(error.output.trimmingCharacters(in: .whitespacesAndNewlines).suffix(300))")
        }
        guard let info = try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
              let virtualSize = (info["virtual-size"] as? NSNumber)?.int64Value, virtualSize >= 0
        else { throw ImageRefusal(.unsupportedStructure, "qemu-img info gave no virtual size") }
        if !admission.allowsReferences {
            if let reference = otherFile(in: info, inspected: file.path) {
                throw ImageRefusal(.referencesOtherFile, reference)
            }
        }
        try checkSize(virtualSize, admission)
        return Report(format: format, virtualSizeBytes: virtualSize, fileBytes: fileBytes)
    }

    /// The first thing in `qemu-img info`'s answer that names a file other than `inspected`, described;
    /// nil when there is none. Keys that always name another file are refused whatever their value;
    /// every `filename` anywhere (VMDK extents, nested children) must be the inspected file.
    static func otherFile(in info: Any, inspected: String) -> String? {
        let alwaysAnotherFile: Set<String> = [
            "backing-filename", "full-backing-filename", "backing-filename-format", "backing-image", "data-file",
        ]
        if let object = info as? [String: Any] {
            for key in object.keys.sorted() {
                let value = object[key]!
                if alwaysAnotherFile.contains(key) {
                    return "the image names \(key) \(String(describing: value).prefix(200))"
                }
                if key == "filename", let name = value as? String, name != inspected {
                    return "the image reads another file: \(name.prefix(200))"
                }
                if let found = otherFile(in: value, inspected: inspected) { return found }
            }
        } else if let array = info as? [Any] {
            for element in array {
                if let found = otherFile(in: element, inspected: inspected) { return found }
            }
        }
        return nil
    }

    static func checkSize(_ virtualSize: Int64, _ admission: ImageAdmission) throws {
        if let limit = admission.maxVirtualSizeBytes, virtualSize > limit {
            throw ImageRefusal(.tooLarge, "its virtual disk is \(virtualSize) bytes, larger than the \(limit) bytes allowed")
        }
    }

    static func fileSize(_ file: URL) throws -> Int64 {
        let attributes = try FileManager.default.attributesOfItem(atPath: file.path)
        guard attributes[.type] as? FileAttributeType == .typeRegular else {
            throw ImageRefusal(.unsupportedStructure, "\(file.lastPathComponent) is not a regular file")
        }
        return (attributes[.size] as? NSNumber)?.int64Value ?? 0
    }

    static func readEnds(of file: URL, fileBytes: Int64) throws -> (head: [UInt8], tail: [UInt8]) {
        let handle = try FileHandle(forReadingFrom: file)
        defer { try? handle.close() }
        let head = [UInt8](try handle.read(upToCount: DiskImageHeader.headBytes) ?? Data())
        let tailStart = max(0, fileBytes - Int64(DiskImageHeader.tailBytes))
        try handle.seek(toOffset: UInt64(tailStart))
        let tail = [UInt8](try handle.read(upToCount: DiskImageHeader.tailBytes) ?? Data())
        return (head, tail)
    }
}

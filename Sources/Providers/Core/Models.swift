import Foundation

/// A running or stopped machine as any driver reports it (Libcloud's `Node`).
public struct Instance: Sendable, Hashable, Codable, Identifiable {
    public var id: String
    public var name: String
    /// The `InstanceSize.id` it was created with, when known.
    public var sizeID: String?
    /// The `Image.id` it was created from, when known.
    public var imageID: String?
    public var state: InstanceState
    /// The provider's own state, untouched (`running`, `shutting-down`, `shutoff:destroyed`, ...).
    public var rawState: String
    public var addresses: [String]
    public var createdAt: Date?
    /// Provider-specific fields, named explicitly rather than hidden in the normalized ones.
    public var extra: [String: String]

    public init(
        id: String, name: String, sizeID: String? = nil, imageID: String? = nil, state: InstanceState,
        rawState: String, addresses: [String] = [], createdAt: Date? = nil, extra: [String: String] = [:]
    ) {
        self.id = id
        self.name = name
        self.sizeID = sizeID
        self.imageID = imageID
        self.state = state
        self.rawState = rawState
        self.addresses = addresses
        self.createdAt = createdAt
        self.extra = extra
    }
}

/// A price per hour in a currency. Decimal, never floating point, because these end up on invoices.
public struct Price: Sendable, Hashable, Codable, CustomStringConvertible {
    public var amount: Decimal
    /// ISO 4217 code.
    public var currency: String

    public init(_ amount: Decimal, _ currency: String = "USD") {
        self.amount = amount
        self.currency = currency
    }

    public init?(string: String, currency: String = "USD") {
        guard let amount = Decimal(string: string, locale: Locale(identifier: "en_US_POSIX")) else { return nil }
        self.init(amount, currency)
    }

    public var description: String { "\(amount) \(currency)" }
}

/// An instance type / flavour (Libcloud's `NodeSize`).
public struct InstanceSize: Sendable, Hashable, Codable, Identifiable {
    public var id: String
    public var name: String
    public var vCPU: Int
    public var memoryMiB: Int
    public var diskGiB: Int
    public var pricePerHour: Price?
    public var extra: [String: String]

    public init(
        id: String, name: String? = nil, vCPU: Int, memoryMiB: Int, diskGiB: Int, pricePerHour: Price? = nil,
        extra: [String: String] = [:]
    ) {
        self.id = id
        self.name = name ?? id
        self.vCPU = vCPU
        self.memoryMiB = memoryMiB
        self.diskGiB = diskGiB
        self.pricePerHour = pricePerHour
        self.extra = extra
    }
}

/// Disk image formats, named as `qemu-img` names them.
public enum ImageFormat: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    case raw, qcow2, vmdk, vdi, vhdx
    /// VHD (Azure, Hyper-V gen 1). `qemu-img` needs `-o force_size=on` to keep the exact size.
    case vpc

    public var description: String { rawValue }

    /// Parses a format name, also accepting common aliases (`vhd`, `img`).
    public init?(name: String) {
        switch name.lowercased() {
        case "vhd": self = .vpc
        case "img": self = .raw
        default:
            guard let format = ImageFormat(rawValue: name.lowercased()) else { return nil }
            self = format
        }
    }
}

/// A bootable image (Libcloud's `NodeImage`).
public struct Image: Sendable, Hashable, Codable, Identifiable {
    public var id: String
    public var name: String
    /// The format the backend stores it in, when known.
    public var format: ImageFormat?
    /// Size of the virtual disk content in bytes, when known.
    public var sizeBytes: Int64?
    /// SHA-256 (lowercase hex) of the raw disk content, when known. Conversions between formats keep
    /// the raw content, so this stays the same across export/import in any format.
    public var sha256: String?
    /// The provider's own image state (`available`, `pending`), if it has one.
    public var rawState: String?
    public var extra: [String: String]

    public init(
        id: String, name: String, format: ImageFormat? = nil, sizeBytes: Int64? = nil, sha256: String? = nil,
        rawState: String? = nil, extra: [String: String] = [:]
    ) {
        self.id = id
        self.name = name
        self.format = format
        self.sizeBytes = sizeBytes
        self.sha256 = sha256
        self.rawState = rawState
        self.extra = extra
    }
}

/// What a backend can still host. `nil` means the backend does not say (EC2 quotas are not visible).
public struct Capacity: Sendable, Hashable, Codable {
    public var maxInstances: Int?
    public var usedInstances: Int
    public var maxVCPU: Int?
    public var usedVCPU: Int
    public var maxMemoryMiB: Int?
    public var usedMemoryMiB: Int

    public init(
        maxInstances: Int? = nil, usedInstances: Int = 0, maxVCPU: Int? = nil, usedVCPU: Int = 0,
        maxMemoryMiB: Int? = nil, usedMemoryMiB: Int = 0
    ) {
        self.maxInstances = maxInstances
        self.usedInstances = usedInstances
        self.maxVCPU = maxVCPU
        self.usedVCPU = usedVCPU
        self.maxMemoryMiB = maxMemoryMiB
        self.usedMemoryMiB = usedMemoryMiB
    }

    /// Whether one more instance of `size` fits.
    public func admits(_ size: InstanceSize) -> Bool {
        if let maxInstances, usedInstances + 1 > maxInstances { return false }
        if let maxVCPU, usedVCPU + size.vCPU > maxVCPU { return false }
        if let maxMemoryMiB, usedMemoryMiB + size.memoryMiB > maxMemoryMiB { return false }
        return true
    }
}

/// What to create.
public struct CreateInstanceRequest: Sendable, Hashable, Codable {
    public var name: String
    public var sizeID: String
    public var imageID: String
    /// Provider-specific options (`keyName`, `securityGroup`, `userData`, `subnetId`), Libcloud's `ex_`.
    public var extra: [String: String]

    public init(name: String, sizeID: String, imageID: String, extra: [String: String] = [:]) {
        self.name = name
        self.sizeID = sizeID
        self.imageID = imageID
        self.extra = extra
    }
}

/// The result of writing an image to a local file.
public struct ImageFile: Sendable, Hashable, Codable {
    public var url: URL
    public var format: ImageFormat
    /// Bytes of the file as written.
    public var fileBytes: Int64
    /// SHA-256 of the file as written (for transfer checks).
    public var fileSHA256: String
    /// SHA-256 of the raw disk content (equals `Image.sha256`).
    public var contentSHA256: String?

    public init(url: URL, format: ImageFormat, fileBytes: Int64, fileSHA256: String, contentSHA256: String?) {
        self.url = url
        self.format = format
        self.fileBytes = fileBytes
        self.fileSHA256 = fileSHA256
        self.contentSHA256 = contentSHA256
    }
}

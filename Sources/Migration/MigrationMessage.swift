import Foundation
import Providers

/// A message of `urn:intercloud:migration:0`, exchanged between the source and the destination
/// broker of one migration, cold or live (`MigrationProposal.live`). Every message the source sends
/// is a request the destination answers with exactly one message:
///
/// | source sends      | destination answers                                         |
/// |-------------------|-------------------------------------------------------------|
/// | `propose`         | `reserved`, or `abort` (refused, nothing reserved)          |
/// | `transferred`     | `started` (running and confirmed), or `abort` (rolled back) |
/// | `liveMigrated`    | `started` (the guest runs here), or `state` (not yet)       |
/// | `cutover`         | `state` (`completed`, or the state it is in instead)        |
/// | `abort`           | `state` (`rolledBack`, `completed` if it is too late, ...)  |
/// | `status`          | `state`                                                     |
///
/// One request goes the other way: a destination that has held a reservation for a while asks the
/// source `status`, and the source answers `state` with its own phase (`sourcePhase`); a source
/// that rolled back without its `abort` arriving is how a reservation is released before it expires.
///
/// Requests are idempotent: a repeated request gets the answer its first copy got (or the answer for
/// the state the destination has reached since), which is what makes retries and resumes safe.
public struct MigrationMessage: Codable, Sendable, Hashable {
    /// The XML namespace / protocol identifier of these messages.
    public static let namespace = "urn:intercloud:migration:0"
    /// Largest encoded message accepted from a peer.
    public static let maximumEncodedBytes = 16 * 1024

    public var migrationID: String
    public var body: Body

    public init(migrationID: String, body: Body) {
        self.migrationID = migrationID
        self.body = body
    }

    public enum Body: Codable, Sendable, Hashable {
        /// Source → destination: move this instance to you under this agreement.
        case propose(MigrationProposal)
        /// Destination → source: capacity reserved, here is where to send the disk.
        case reserved(MigrationReservation)
        /// Source → destination: the source instance is stopped and its disk was sent.
        case transferred(TransferredImage)
        /// Source → destination, live only: the hypervisor moved the guest; it is gone from the
        /// source. The destination answers `started` once it sees the guest run there.
        case liveMigrated
        /// Destination → source: the instance runs at the destination (checked, not just requested).
        case started(StartedInstance)
        /// Source → destination: commit. After the answer the destination no longer rolls back.
        case cutover
        /// Either way: give up and undo. As an answer: the request failed and was undone.
        case abort(reason: String)
        /// Source → destination: what do you know about this migration? (after a restart)
        case status
        /// Destination → source: its own state for this migration.
        case state(MigrationPeerState)
    }

    /// A short name for logs and errors.
    public var kind: String {
        switch body {
        case .propose: "propose"
        case .reserved: "reserved"
        case .transferred: "transferred"
        case .liveMigrated: "liveMigrated"
        case .started: "started"
        case .cutover: "cutover"
        case .abort: "abort"
        case .status: "status"
        case .state: "state"
        }
    }
}

/// Cold (stop, copy the disk, start there) or live (the hypervisors move the running guest).
public enum MigrationMode: String, Codable, Sendable, Hashable, CaseIterable {
    case cold, live
}

/// What the source asks the destination to host.
public struct MigrationProposal: Codable, Sendable, Hashable {
    /// The agreement (negotiated with `urn:intercloud:negotiation:0`) the migration runs under.
    public var agreementID: String
    public var instance: MigratingInstanceSpec
    /// Present for a live migration: what the destination needs to prepare for the guest.
    public var live: LiveMigrationRequest?

    public init(agreementID: String, instance: MigratingInstanceSpec, live: LiveMigrationRequest? = nil) {
        self.agreementID = agreementID
        self.instance = instance
        self.live = live
    }

    public var mode: MigrationMode { live == nil ? .cold : .live }
}

/// The source's part of a live migration proposal.
public struct LiveMigrationRequest: Codable, Sendable, Hashable {
    /// The guest's identity on both hypervisors (libvirt keeps the domain UUID across a migration):
    /// the destination looks for it to know whether the guest arrived.
    public var instanceID: String
    /// The virtual size of the guest's disk; the destination prepares an empty disk of this size.
    public var diskBytes: Int64

    public init(instanceID: String, diskBytes: Int64) {
        self.instanceID = instanceID
        self.diskBytes = diskBytes
    }
}

/// Where a live-migrated guest lands, as the destination tells the source: its hypervisor's URI
/// (as the source's hypervisor must reach it) and the files it prepared there.
public struct LiveMigrationOffer: Codable, Sendable, Hashable {
    public var uri: String
    public var diskPath: String
    public var consoleLogPath: String

    public init(uri: String, diskPath: String, consoleLogPath: String) {
        self.uri = uri
        self.diskPath = diskPath
        self.consoleLogPath = consoleLogPath
    }
}

/// What a live migration's destination sees of the guest on its hypervisor.
public enum GuestPresence: String, Codable, Sendable, Hashable, CaseIterable {
    /// No such guest.
    case absent = "absent"
    /// Defined but not running: an incoming migration still in progress (or one that failed and
    /// has not been cleaned up by the hypervisor yet).
    case arriving = "arriving"
    case running = "running"
}

/// The instance being moved, as the source describes it.
public struct MigratingInstanceSpec: Codable, Sendable, Hashable {
    public var name: String
    /// The source's instance type (size id); the destination maps it to one of its own sizes.
    public var instanceType: String
    public var vCPU: Int
    public var memoryMiB: Int
    public var diskGiB: Int
    /// Formats the source can export its disk in directly.
    public var imageFormats: [ImageFormat]
    /// Whether the source can convert its disk to other formats (it has `qemu-img`).
    public var canConvert: Bool
    public var addresses: [String]
    public var networkName: String?
    /// The destination region asked for, if any.
    public var region: String?

    public init(
        name: String, instanceType: String, vCPU: Int, memoryMiB: Int, diskGiB: Int, imageFormats: [ImageFormat],
        canConvert: Bool, addresses: [String] = [], networkName: String? = nil, region: String? = nil
    ) {
        self.name = name
        self.instanceType = instanceType
        self.vCPU = vCPU
        self.memoryMiB = memoryMiB
        self.diskGiB = diskGiB
        self.imageFormats = imageFormats
        self.canConvert = canConvert
        self.addresses = addresses
        self.networkName = networkName
        self.region = region
    }
}

/// Where the disk should go. The transport fields are opaque to this module: the transfer channel
/// (mutual TLS between the brokers) interprets them.
public struct TransferOffer: Codable, Sendable, Hashable {
    public var host: String
    public var port: String
    public var token: String

    public init(host: String, port: String, token: String) {
        self.host = host
        self.port = port
        self.token = token
    }
}

/// The destination's answer to a proposal.
public struct MigrationReservation: Codable, Sendable, Hashable {
    /// The destination size the instance will get.
    public var sizeID: String
    /// Formats the destination imports, most preferred first.
    public var acceptedFormats: [ImageFormat]
    public var region: String
    /// Cold migration: where to send the disk. Empty for a live migration.
    public var offer: TransferOffer
    /// Live migration: where the guest goes.
    public var live: LiveMigrationOffer?

    public init(sizeID: String, acceptedFormats: [ImageFormat], region: String, offer: TransferOffer, live: LiveMigrationOffer? = nil) {
        self.sizeID = sizeID
        self.acceptedFormats = acceptedFormats
        self.region = region
        self.offer = offer
        self.live = live
    }
}

/// The file the source sent.
public struct TransferredImage: Codable, Sendable, Hashable {
    public var format: ImageFormat
    public var bytes: Int64
    /// SHA-256 (lowercase hex) of the file as sent.
    public var sha256: String

    public init(format: ImageFormat, bytes: Int64, sha256: String) {
        self.format = format
        self.bytes = bytes
        self.sha256 = sha256
    }
}

/// The instance now running at the destination.
public struct StartedInstance: Codable, Sendable, Hashable {
    public var instanceID: String
    public var addresses: [String]

    public init(instanceID: String, addresses: [String]) {
        self.instanceID = instanceID
        self.addresses = addresses
    }
}

/// The destination's state for one migration, as it tells the source.
public struct MigrationPeerState: Codable, Sendable, Hashable {
    public var phase: DestinationPhase
    public var instance: StartedInstance?
    public var reason: String?
    /// Live migration, in answer to `status`: what the destination's hypervisor shows of the guest
    /// (looked up for the answer, not remembered).
    public var guest: GuestPresence?
    /// In the source's answer to a destination's `status` (`phase` is then `unknown`: it holds no
    /// destination record): the source's own phase, so that a destination still holding a
    /// reservation learns that the source rolled back without reaching it.
    public var sourcePhase: SourcePhase?

    public init(
        phase: DestinationPhase, instance: StartedInstance? = nil, reason: String? = nil, guest: GuestPresence? = nil,
        sourcePhase: SourcePhase? = nil
    ) {
        self.phase = phase
        self.instance = instance
        self.reason = reason
        self.guest = guest
        self.sourcePhase = sourcePhase
    }
}

// MARK: - Validation of peer input

/// A message from a peer that is too large, malformed, or out of bounds.
public struct MigrationMessageError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "invalid migration message: \(message)" }
}

extension MigrationMessage {
    static let maximumIdentifierLength = 128
    static let maximumTextLength = 512
    static let maximumListLength = 16

    /// Encodes the message as the JSON carried in the protocol element.
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(self)
    }

    /// Decodes and validates a peer's message: size first (before parsing), then shape, then bounds.
    public static func decode(_ data: Data) throws(MigrationMessageError) -> MigrationMessage {
        guard data.count <= maximumEncodedBytes else {
            throw MigrationMessageError("\(data.count) bytes exceeds the \(maximumEncodedBytes)-byte limit")
        }
        let message: MigrationMessage
        do { message = try JSONDecoder().decode(MigrationMessage.self, from: data) } catch {
            throw MigrationMessageError("not a migration message (\(error))")
        }
        try message.validate()
        return message
    }

    /// Checks every field against the protocol's bounds.
    public func validate() throws(MigrationMessageError) {
        try Self.checkIdentifier(migrationID, "migration id")
        switch body {
        case .propose(let proposal):
            try Self.checkIdentifier(proposal.agreementID, "agreement id")
            let spec = proposal.instance
            try Self.checkText(spec.name, "instance name", allowEmpty: false)
            try Self.checkIdentifier(spec.instanceType, "instance type")
            guard (1...4096).contains(spec.vCPU) else { throw MigrationMessageError("vCPU \(spec.vCPU) out of range 1...4096") }
            guard (1...(64 << 20)).contains(spec.memoryMiB) else { throw MigrationMessageError("memory \(spec.memoryMiB) MiB out of range") }
            guard (0...(1 << 20)).contains(spec.diskGiB) else { throw MigrationMessageError("disk \(spec.diskGiB) GiB out of range") }
            guard !spec.imageFormats.isEmpty || spec.canConvert else { throw MigrationMessageError("no image format offered") }
            try Self.checkList(spec.imageFormats.count, "image formats")
            try Self.checkAddresses(spec.addresses)
            if let network = spec.networkName { try Self.checkText(network, "network name", allowEmpty: false) }
            if let region = spec.region { try Self.checkText(region, "region", allowEmpty: false) }
            if let live = proposal.live {
                try Self.checkIdentifier(live.instanceID, "live instance id")
                guard (1...(Int64(1) << 50)).contains(live.diskBytes) else {
                    throw MigrationMessageError("live disk of \(live.diskBytes) bytes out of range")
                }
            }
        case .reserved(let reservation):
            try Self.checkIdentifier(reservation.sizeID, "size id")
            try Self.checkList(reservation.acceptedFormats.count, "accepted formats")
            try Self.checkText(reservation.region, "region", allowEmpty: true)
            if let live = reservation.live {
                // A live reservation moves no file: its transfer offer is empty.
                try Self.checkLiveOffer(live)
            } else {
                guard !reservation.acceptedFormats.isEmpty else { throw MigrationMessageError("no accepted image format") }
                try Self.checkOffer(reservation.offer)
            }
        case .transferred(let image):
            guard image.bytes > 0 else { throw MigrationMessageError("image of \(image.bytes) bytes") }
            try Self.checkSHA256(image.sha256)
        case .started(let started):
            try Self.checkIdentifier(started.instanceID, "instance id")
            try Self.checkAddresses(started.addresses)
        case .cutover, .status, .liveMigrated:
            break
        case .abort(let reason):
            try Self.checkText(reason, "reason", allowEmpty: true)
        case .state(let state):
            if let instance = state.instance {
                try Self.checkIdentifier(instance.instanceID, "instance id")
                try Self.checkAddresses(instance.addresses)
            }
            if let reason = state.reason { try Self.checkText(reason, "reason", allowEmpty: true) }
        }
    }

    /// Identifiers end up in file names and SQL keys: letters, digits and `._:@-` only.
    static func checkIdentifier(_ value: String, _ what: String) throws(MigrationMessageError) {
        guard !value.isEmpty, value.utf8.count <= maximumIdentifierLength else {
            throw MigrationMessageError("\(what) must have 1...\(maximumIdentifierLength) bytes")
        }
        guard value.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "._:@-".unicodeScalars.contains($0)) }),
              value != ".", value != ".."
        else { throw MigrationMessageError("\(what) \"\(value.prefix(40))\" has characters other than letters, digits and ._:@-") }
    }

    /// A local failure text made fit for a reason sent to the peer: control characters (a backend's
    /// multi-line error body, such as an HTTP 500 page) become spaces, and the text is cut to 400
    /// UTF-8 bytes on a character boundary. Without it the message fails `validate()`, so the peer
    /// could never be told of the rollback and an abort that must be confirmed would retry forever.
    static func reasonText(_ text: String) -> String {
        var result = ""
        var bytes = 0
        for character in text {
            let cleaned = character.unicodeScalars.contains { $0.properties.generalCategory == .control } ? " " : String(character)
            bytes += cleaned.utf8.count
            if bytes > 400 { break }
            result += cleaned
        }
        return result
    }

    static func checkText(_ value: String, _ what: String, allowEmpty: Bool) throws(MigrationMessageError) {
        guard allowEmpty || !value.isEmpty else { throw MigrationMessageError("\(what) is empty") }
        guard value.utf8.count <= maximumTextLength else { throw MigrationMessageError("\(what) longer than \(maximumTextLength) bytes") }
        guard !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw MigrationMessageError("\(what) contains control characters")
        }
    }

    static func checkList(_ count: Int, _ what: String) throws(MigrationMessageError) {
        guard count <= maximumListLength else { throw MigrationMessageError("more than \(maximumListLength) \(what)") }
    }

    static func checkAddresses(_ addresses: [String]) throws(MigrationMessageError) {
        try checkList(addresses.count, "addresses")
        for address in addresses {
            guard !address.isEmpty, address.utf8.count <= 64,
                  address.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || ".:/%-".unicodeScalars.contains($0)) })
            else { throw MigrationMessageError("address \"\(address.prefix(40))\" is not an IP address or prefix") }
        }
    }

    static func checkOffer(_ offer: TransferOffer) throws(MigrationMessageError) {
        try checkText(offer.host, "transfer host", allowEmpty: false)
        try checkText(offer.port, "transfer port", allowEmpty: false)
        try checkText(offer.token, "transfer token", allowEmpty: false)
    }

    /// The schemes of libvirt URIs a source's hypervisor may be asked to connect to.
    static let liveURISchemes: Set<String> = ["qemu", "qemu+unix", "qemu+tcp", "qemu+tls", "qemu+ssh"]

    /// A hypervisor URI a peer's hypervisor may be told to connect to (the `[migration] live_uri`
    /// setting is checked with the same rule as the URI a peer sends).
    public static func checkLiveURI(_ uri: String) throws(MigrationMessageError) {
        guard !uri.isEmpty, uri.utf8.count <= maximumTextLength,
              uri.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "+:/._-?=&@[]%,~".unicodeScalars.contains($0)) }),
              let separator = uri.range(of: "://"), liveURISchemes.contains(String(uri[..<separator.lowerBound]))
        else {
            throw MigrationMessageError("live target \"\(uri.prefix(60))\" is not a libvirt QEMU URI (\(liveURISchemes.sorted().joined(separator: ", ")))")
        }
    }

    /// The destination's hypervisor URI and paths go into the source's hypervisor (its connection
    /// target and, between single quotes, the domain XML): a libvirt QEMU URI, and absolute paths of
    /// plain characters, nothing that could end an XML attribute or start a shell word.
    static func checkLiveOffer(_ live: LiveMigrationOffer) throws(MigrationMessageError) {
        try checkLiveURI(live.uri)
        for (path, what) in [(live.diskPath, "live disk path"), (live.consoleLogPath, "live console log path")] {
            guard path.hasPrefix("/"), path.utf8.count <= maximumTextLength,
                  path.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "/._-".unicodeScalars.contains($0)) }),
                  !path.split(separator: "/").contains("..")
            else { throw MigrationMessageError("\(what) \"\(path.prefix(60))\" is not an absolute path of letters, digits and /._-") }
        }
    }

    static func checkSHA256(_ value: String) throws(MigrationMessageError) {
        guard value.utf8.count == 64, value.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }) else {
            throw MigrationMessageError("sha256 must be 64 lowercase hex digits")
        }
    }
}

// MARK: - Wire form

/// The JSON of `urn:intercloud:migration:0` (docs/protocol/migration.md), written out by hand:
/// every name on the wire is a string literal here, so renaming a Swift property or case cannot
/// change it. (The same coding serves the migration journal.)
extension MigrationMessage {
    private enum WireKey: String, CodingKey {
        case migrationID = "migrationID"
        case body = "body"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        self.init(migrationID: try container.decode(String.self, forKey: .migrationID), body: try container.decode(Body.self, forKey: .body))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        try container.encode(migrationID, forKey: .migrationID)
        try container.encode(body, forKey: .body)
    }
}

/// A body is an object with exactly one member, named by the message kind, whose value is an
/// object: `{"propose":{"_0":PROPOSAL}}`, `{"cutover":{}}`, `{"abort":{"reason":"…"}}`.
extension MigrationMessage.Body {
    private enum Kind: String, CodingKey {
        case propose = "propose"
        case reserved = "reserved"
        case transferred = "transferred"
        case liveMigrated = "liveMigrated"
        case started = "started"
        case cutover = "cutover"
        case abort = "abort"
        case status = "status"
        case state = "state"
    }

    private enum ValueKey: String, CodingKey {
        case value = "_0"
        case reason = "reason"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Kind.self)
        guard container.allKeys.count == 1, let kind = container.allKeys.first else {
            throw DecodingError.dataCorrupted(.init(
                codingPath: container.codingPath, debugDescription: "a migration body has exactly one known message kind"))
        }
        let value = try container.nestedContainer(keyedBy: ValueKey.self, forKey: kind)
        switch kind {
        case .propose: self = .propose(try value.decode(MigrationProposal.self, forKey: .value))
        case .reserved: self = .reserved(try value.decode(MigrationReservation.self, forKey: .value))
        case .transferred: self = .transferred(try value.decode(TransferredImage.self, forKey: .value))
        case .liveMigrated: self = .liveMigrated
        case .started: self = .started(try value.decode(StartedInstance.self, forKey: .value))
        case .cutover: self = .cutover
        case .abort: self = .abort(reason: try value.decode(String.self, forKey: .reason))
        case .status: self = .status
        case .state: self = .state(try value.decode(MigrationPeerState.self, forKey: .value))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Kind.self)
        switch self {
        case .propose(let proposal):
            var value = container.nestedContainer(keyedBy: ValueKey.self, forKey: .propose)
            try value.encode(proposal, forKey: .value)
        case .reserved(let reservation):
            var value = container.nestedContainer(keyedBy: ValueKey.self, forKey: .reserved)
            try value.encode(reservation, forKey: .value)
        case .transferred(let image):
            var value = container.nestedContainer(keyedBy: ValueKey.self, forKey: .transferred)
            try value.encode(image, forKey: .value)
        case .liveMigrated:
            _ = container.nestedContainer(keyedBy: ValueKey.self, forKey: .liveMigrated)
        case .started(let instance):
            var value = container.nestedContainer(keyedBy: ValueKey.self, forKey: .started)
            try value.encode(instance, forKey: .value)
        case .cutover:
            _ = container.nestedContainer(keyedBy: ValueKey.self, forKey: .cutover)
        case .abort(let reason):
            var value = container.nestedContainer(keyedBy: ValueKey.self, forKey: .abort)
            try value.encode(reason, forKey: .reason)
        case .status:
            _ = container.nestedContainer(keyedBy: ValueKey.self, forKey: .status)
        case .state(let state):
            var value = container.nestedContainer(keyedBy: ValueKey.self, forKey: .state)
            try value.encode(state, forKey: .value)
        }
    }
}

extension MigrationProposal {
    private enum WireKey: String, CodingKey {
        case agreementID = "agreementID"
        case instance = "instance"
        case live = "live"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        self.init(
            agreementID: try container.decode(String.self, forKey: .agreementID),
            instance: try container.decode(MigratingInstanceSpec.self, forKey: .instance),
            live: try container.decodeIfPresent(LiveMigrationRequest.self, forKey: .live))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        try container.encode(agreementID, forKey: .agreementID)
        try container.encode(instance, forKey: .instance)
        try container.encodeIfPresent(live, forKey: .live)
    }
}

extension LiveMigrationRequest {
    private enum WireKey: String, CodingKey {
        case instanceID = "instanceID"
        case diskBytes = "diskBytes"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        self.init(instanceID: try container.decode(String.self, forKey: .instanceID), diskBytes: try container.decode(Int64.self, forKey: .diskBytes))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        try container.encode(instanceID, forKey: .instanceID)
        try container.encode(diskBytes, forKey: .diskBytes)
    }
}

extension LiveMigrationOffer {
    private enum WireKey: String, CodingKey {
        case uri = "uri"
        case diskPath = "diskPath"
        case consoleLogPath = "consoleLogPath"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        self.init(
            uri: try container.decode(String.self, forKey: .uri), diskPath: try container.decode(String.self, forKey: .diskPath),
            consoleLogPath: try container.decode(String.self, forKey: .consoleLogPath))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        try container.encode(uri, forKey: .uri)
        try container.encode(diskPath, forKey: .diskPath)
        try container.encode(consoleLogPath, forKey: .consoleLogPath)
    }
}

extension MigratingInstanceSpec {
    private enum WireKey: String, CodingKey {
        case name = "name"
        case instanceType = "instanceType"
        case vCPU = "vCPU"
        case memoryMiB = "memoryMiB"
        case diskGiB = "diskGiB"
        case imageFormats = "imageFormats"
        case canConvert = "canConvert"
        case addresses = "addresses"
        case networkName = "networkName"
        case region = "region"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        self.init(
            name: try container.decode(String.self, forKey: .name), instanceType: try container.decode(String.self, forKey: .instanceType),
            vCPU: try container.decode(Int.self, forKey: .vCPU), memoryMiB: try container.decode(Int.self, forKey: .memoryMiB),
            diskGiB: try container.decode(Int.self, forKey: .diskGiB),
            imageFormats: try container.decodeWireValues(ImageFormat.self, forKey: .imageFormats),
            canConvert: try container.decode(Bool.self, forKey: .canConvert), addresses: try container.decode([String].self, forKey: .addresses),
            networkName: try container.decodeIfPresent(String.self, forKey: .networkName),
            region: try container.decodeIfPresent(String.self, forKey: .region))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        try container.encode(name, forKey: .name)
        try container.encode(instanceType, forKey: .instanceType)
        try container.encode(vCPU, forKey: .vCPU)
        try container.encode(memoryMiB, forKey: .memoryMiB)
        try container.encode(diskGiB, forKey: .diskGiB)
        try container.encode(imageFormats.map(\.migrationWireName), forKey: .imageFormats)
        try container.encode(canConvert, forKey: .canConvert)
        try container.encode(addresses, forKey: .addresses)
        try container.encodeIfPresent(networkName, forKey: .networkName)
        try container.encodeIfPresent(region, forKey: .region)
    }
}

extension TransferOffer {
    private enum WireKey: String, CodingKey {
        case host = "host"
        case port = "port"
        case token = "token"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        self.init(
            host: try container.decode(String.self, forKey: .host), port: try container.decode(String.self, forKey: .port),
            token: try container.decode(String.self, forKey: .token))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        try container.encode(host, forKey: .host)
        try container.encode(port, forKey: .port)
        try container.encode(token, forKey: .token)
    }
}

extension MigrationReservation {
    private enum WireKey: String, CodingKey {
        case sizeID = "sizeID"
        case acceptedFormats = "acceptedFormats"
        case region = "region"
        case offer = "offer"
        case live = "live"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        self.init(
            sizeID: try container.decode(String.self, forKey: .sizeID),
            acceptedFormats: try container.decodeWireValues(ImageFormat.self, forKey: .acceptedFormats),
            region: try container.decode(String.self, forKey: .region), offer: try container.decode(TransferOffer.self, forKey: .offer),
            live: try container.decodeIfPresent(LiveMigrationOffer.self, forKey: .live))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        try container.encode(sizeID, forKey: .sizeID)
        try container.encode(acceptedFormats.map(\.migrationWireName), forKey: .acceptedFormats)
        try container.encode(region, forKey: .region)
        try container.encode(offer, forKey: .offer)
        try container.encodeIfPresent(live, forKey: .live)
    }
}

extension TransferredImage {
    private enum WireKey: String, CodingKey {
        case format = "format"
        case bytes = "bytes"
        case sha256 = "sha256"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        self.init(
            format: try container.decodeWireValue(ImageFormat.self, forKey: .format), bytes: try container.decode(Int64.self, forKey: .bytes),
            sha256: try container.decode(String.self, forKey: .sha256))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        try container.encode(format.migrationWireName, forKey: .format)
        try container.encode(bytes, forKey: .bytes)
        try container.encode(sha256, forKey: .sha256)
    }
}

extension StartedInstance {
    private enum WireKey: String, CodingKey {
        case instanceID = "instanceID"
        case addresses = "addresses"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        self.init(instanceID: try container.decode(String.self, forKey: .instanceID), addresses: try container.decode([String].self, forKey: .addresses))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        try container.encode(instanceID, forKey: .instanceID)
        try container.encode(addresses, forKey: .addresses)
    }
}

extension MigrationPeerState {
    private enum WireKey: String, CodingKey {
        case phase = "phase"
        case instance = "instance"
        case reason = "reason"
        case guest = "guest"
        case sourcePhase = "sourcePhase"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        self.init(
            phase: try container.decodeWireValue(DestinationPhase.self, forKey: .phase),
            instance: try container.decodeIfPresent(StartedInstance.self, forKey: .instance),
            reason: try container.decodeIfPresent(String.self, forKey: .reason),
            guest: try container.decodeWireValueIfPresent(GuestPresence.self, forKey: .guest),
            sourcePhase: try container.decodeWireValueIfPresent(SourcePhase.self, forKey: .sourcePhase))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        try container.encode(phase.migrationWireName, forKey: .phase)
        try container.encodeIfPresent(instance, forKey: .instance)
        try container.encodeIfPresent(reason, forKey: .reason)
        try container.encodeIfPresent(guest?.migrationWireName, forKey: .guest)
        try container.encodeIfPresent(sourcePhase?.migrationWireName, forKey: .sourcePhase)
    }
}

/// A value named on the wire by a string written out here (the phases and image formats are
/// defined with the state machines and providers; their names in these messages are fixed here).
protocol MigrationWireValue: CaseIterable {
    var migrationWireName: String { get }
}

extension GuestPresence: MigrationWireValue {
    var migrationWireName: String {
        switch self {
        case .absent: "absent"
        case .arriving: "arriving"
        case .running: "running"
        }
    }
}

extension ImageFormat: MigrationWireValue {
    var migrationWireName: String {
        switch self {
        case .raw: "raw"
        case .qcow2: "qcow2"
        case .vmdk: "vmdk"
        case .vdi: "vdi"
        case .vhdx: "vhdx"
        case .vpc: "vpc"
        }
    }
}

extension DestinationPhase: MigrationWireValue {
    var migrationWireName: String {
        switch self {
        case .unknown: "unknown"
        case .authorizing: "authorizing"
        case .inspecting: "inspecting"
        case .offering: "offering"
        case .preparing: "preparing"
        case .reserved: "reserved"
        case .receiving: "receiving"
        case .importing: "importing"
        case .creating: "creating"
        case .starting: "starting"
        case .arriving: "arriving"
        case .started: "started"
        case .completing: "completing"
        case .completed: "completed"
        case .rollingBack: "rollingBack"
        case .rolledBack: "rolledBack"
        }
    }
}

extension SourcePhase: MigrationWireValue {
    var migrationWireName: String {
        switch self {
        case .authorizing: "authorizing"
        case .proposing: "proposing"
        case .stopping: "stopping"
        case .poweringOff: "poweringOff"
        case .snapshotting: "snapshotting"
        case .exporting: "exporting"
        case .converting: "converting"
        case .transferring: "transferring"
        case .migratingLive: "migratingLive"
        case .verifyingLive: "verifyingLive"
        case .announcing: "announcing"
        case .cuttingOver: "cuttingOver"
        case .terminating: "terminating"
        case .cleaningUp: "cleaningUp"
        case .handingOverMetering: "handingOverMetering"
        case .completed: "completed"
        case .rollingBack: "rollingBack"
        case .rolledBack: "rolledBack"
        }
    }
}

extension KeyedDecodingContainer {
    fileprivate func decodeWireValue<Value: MigrationWireValue>(_ type: Value.Type, forKey key: Key) throws -> Value {
        let name = try decode(String.self, forKey: key)
        guard let value = Value.allCases.first(where: { $0.migrationWireName == name }) else {
            throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "unknown \(Value.self) \"\(name.prefix(40))\"")
        }
        return value
    }

    fileprivate func decodeWireValueIfPresent<Value: MigrationWireValue>(_ type: Value.Type, forKey key: Key) throws -> Value? {
        guard contains(key), try !decodeNil(forKey: key) else { return nil }
        return try decodeWireValue(type, forKey: key)
    }

    fileprivate func decodeWireValues<Value: MigrationWireValue>(_ type: Value.Type, forKey key: Key) throws -> [Value] {
        try decode([String].self, forKey: key).map { name in
            guard let value = Value.allCases.first(where: { $0.migrationWireName == name }) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "unknown \(Value.self) \"\(name.prefix(40))\"")
            }
            return value
        }
    }
}

/// The first check of a disk image that came from someone else, before any program opens it.
///
/// `qemu-img` follows what an image names: a qcow2 backing file (a path, a `json:` spec, a protocol
/// URL), a qcow2 external data file, a VMDK descriptor's extents, a VHD parent. Each makes another
/// file's bytes part of the disk, so a peer could read our host's files through an image it sends.
/// This parser reads the format's own header, with no IO and no allocation beyond the input, and
/// refuses every structure that can name another file, and every file whose magic is not the
/// declared format's (a file is never probed: what the sender declared is what it must be).
/// OpenStack's format inspector (Glance, Nova) takes the same approach for the same reason.
///
/// It is the first of two checks: `ImageInspection` then asks `qemu-img info` on the declared format
/// and refuses whatever names another file there too, so a structure this parser does not know
/// still cannot slip through.
public enum DiskImageHeader {
    /// The bytes this check needs from the start of the file.
    public static let headBytes = 4096
    /// The bytes this check needs from the end of the file (VHD's footer).
    public static let tailBytes = 512

    /// Checks the header of a file declared as `format`. `head` is the first bytes of the file (up to
    /// `headBytes`), `tail` the last (up to `tailBytes`), `fileBytes` its size.
    /// Throws `ImageRefusal` naming the reason.
    public static func check(format: ImageFormat, head: [UInt8], tail: [UInt8], fileBytes: Int64) throws(ImageRefusal) {
        switch format {
        case .raw:
            // A raw disk is its bytes: nothing to follow. Opened as raw, never probed.
            return
        case .qcow2: try checkQcow2(head)
        case .vmdk: try checkVMDK(head)
        case .vdi: try checkVDI(head)
        case .vhdx: try checkVHDX(head)
        case .vpc: try checkVPC(head: head, tail: tail)
        }
    }

    // MARK: qcow2 (https://gitlab.com/qemu-project/qemu/-/blob/master/docs/interop/qcow2.txt)

    static func checkQcow2(_ head: [UInt8]) throws(ImageRefusal) {
        guard head.count >= 72, head.starts(with: [0x51, 0x46, 0x49, 0xFB]) else {
            throw ImageRefusal(.notDeclaredFormat, "the file does not start with the qcow2 magic QFI\\xfb")
        }
        let version = bigEndian32(head, at: 4)
        guard version == 2 || version == 3 else {
            throw ImageRefusal(.unsupportedStructure, "qcow2 version \(version) (only 2 and 3 are read)")
        }
        // Bytes 8–15: offset of the backing file name; 0 when there is none.
        if bigEndian64(head, at: 8) != 0 || bigEndian32(head, at: 16) != 0 {
            throw ImageRefusal(.referencesOtherFile, "the qcow2 header names a backing file")
        }
        guard version == 3 else { return }
        guard head.count >= 104 else { throw ImageRefusal(.truncated, "the qcow2 v3 header is truncated") }
        // Bytes 72–79: incompatible features. Bit 2: an external data file holds the guest data.
        let incompatible = bigEndian64(head, at: 72)
        if incompatible & (1 << 2) != 0 {
            throw ImageRefusal(.referencesOtherFile, "the qcow2 image keeps its data in an external data file")
        }
        // Bits this reader does not know may change how the file is read: refuse rather than guess.
        let known: UInt64 = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4)
        if incompatible & ~(known | (1 << 2)) != 0 {
            throw ImageRefusal(.unsupportedStructure, "the qcow2 image sets unknown incompatible feature bits \(String(incompatible, radix: 16))")
        }
    }

    // MARK: VMDK (VMware Virtual Disk Format 1.1)

    static func checkVMDK(_ head: [UInt8]) throws(ImageRefusal) {
        // A text descriptor ("# Disk DescriptorFile") is nothing but a list of other files (extents):
        // only the hosted sparse formats, whose first extent is the file itself, are accepted.
        guard head.count >= 512, head.starts(with: [0x4B, 0x44, 0x4D, 0x56]) else {
            throw ImageRefusal(
                .referencesOtherFile,
                "the VMDK is not a single sparse file (magic KDMV): a descriptor file lists other files as its extents")
        }
        // The embedded descriptor may still name more extents or a parent: `qemu-img info` lists
        // those, and `ImageInspection` refuses any that is not this file.
    }

    // MARK: VDI (VirtualBox)

    static func checkVDI(_ head: [UInt8]) throws(ImageRefusal) {
        guard head.count >= 0x50, littleEndian32(head, at: 0x40) == 0xBEDA_107F else {
            throw ImageRefusal(.notDeclaredFormat, "the file has no VDI signature 0xbeda107f at byte 64")
        }
        // Image type at 0x4c: 1 dynamic, 2 fixed; 3 undo and 4 differencing depend on another image.
        let type = littleEndian32(head, at: 0x4C)
        guard type == 1 || type == 2 else {
            throw ImageRefusal(.referencesOtherFile, "the VDI image is of type \(type) (undo or differencing images depend on another file)")
        }
    }

    // MARK: VHDX (MS-VHDX)

    static func checkVHDX(_ head: [UInt8]) throws(ImageRefusal) {
        guard head.count >= 8, head.starts(with: Array("vhdxfile".utf8)) else {
            throw ImageRefusal(.notDeclaredFormat, "the file does not start with the VHDX signature vhdxfile")
        }
        // A differencing VHDX names its parent in the metadata region: `qemu-img info` reports it as
        // a backing file, which `ImageInspection` refuses (QEMU does not open differencing VHDX).
    }

    // MARK: VHD (Virtual Hard Disk Image Format Specification)

    static func checkVPC(head: [UInt8], tail: [UInt8]) throws(ImageRefusal) {
        let cookie = Array("conectix".utf8)
        // Dynamic disks carry a copy of the footer at the start; fixed disks only the footer at the end.
        let footer: ArraySlice<UInt8>
        if head.starts(with: cookie), head.count >= 512 {
            footer = head[0..<512]
        } else if tail.count >= 512, tail[(tail.count - 512)...].starts(with: cookie) {
            footer = tail[(tail.count - 512)...]
        } else {
            throw ImageRefusal(.notDeclaredFormat, "the file has no VHD footer (cookie conectix)")
        }
        // Disk type at footer offset 60: 2 fixed, 3 dynamic, 4 differencing (names a parent file).
        let type = bigEndian32(Array(footer), at: 60)
        guard type == 2 || type == 3 else {
            throw ImageRefusal(.referencesOtherFile, "the VHD disk is of type \(type) (a differencing disk names a parent file)")
        }
    }

    // MARK: Byte access

    static func bigEndian32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        guard offset + 4 <= bytes.count else { return 0 }
        return bytes[offset..<offset + 4].reduce(0) { $0 << 8 | UInt32($1) }
    }

    static func bigEndian64(_ bytes: [UInt8], at offset: Int) -> UInt64 {
        guard offset + 8 <= bytes.count else { return 0 }
        return bytes[offset..<offset + 8].reduce(0) { $0 << 8 | UInt64($1) }
    }

    static func littleEndian32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        guard offset + 4 <= bytes.count else { return 0 }
        return bytes[offset..<offset + 4].reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }
}

/// Why an image was refused before it was stored.
public struct ImageRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: String, Sendable, Equatable {
        /// The image names another file or a protocol (backing file, data file, extent, parent).
        case referencesOtherFile = "references-other-file"
        /// The file is not in the format it was declared to be in.
        case notDeclaredFormat = "not-declared-format"
        /// A structure this reader does not know, refused rather than guessed at.
        case unsupportedStructure = "unsupported-structure"
        /// The disk it describes is larger than what was agreed or reserved.
        case tooLarge = "too-large"
        /// The file ends inside its own header.
        case truncated
        /// Inspecting it took longer, or more memory, than the limits allow.
        case inspectionLimit = "inspection-limit"
    }

    public var reason: Reason
    public var detail: String

    public init(_ reason: Reason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }

    public var description: String { "\(reason.rawValue): \(detail)" }
}

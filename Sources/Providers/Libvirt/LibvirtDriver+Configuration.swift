import Foundation

extension LibvirtDriver {
    /// Boot a kernel and initramfs directly (the tiny test guest; also handy for appliances).
    public struct DirectBoot: Sendable, Hashable {
        public var kernel: URL
        public var initrd: URL
        public var commandLine: String

        public init(kernel: URL, initrd: URL, commandLine: String = "console=ttyS0") {
            self.kernel = kernel
            self.initrd = initrd
            self.commandLine = commandLine
        }
    }

    /// Owner for files the driver creates, when the hypervisor runs as another user (a session daemon
    /// started for an unprivileged user while the broker runs as root).
    public struct FileOwner: Sendable, Hashable {
        public var uid: UInt32
        public var gid: UInt32
        public init(uid: UInt32, gid: UInt32) {
            self.uid = uid
            self.gid = gid
        }
    }

    public struct Configuration: Sendable {
        /// `test:///default`, `qemu:///session`, `qemu+unix:///session?socket=/run/.../libvirt-sock`, ...
        public var uri: String
        /// Where images live as files plus a JSON manifest each. Without it, images are unsupported.
        public var imageDirectory: URL?
        /// Where per-instance overlay disks and console logs go (defaults to `imageDirectory/../instances`).
        public var instanceDirectory: URL?
        public var sizes: [InstanceSize]
        /// `qemu` (TCG software emulation), `kvm`, or `test` for the test driver.
        public var domainType: String
        public var directBoot: DirectBoot?
        public var fileOwner: FileOwner?
        /// Text the guest prints on its serial console once it has booted (the test guest prints
        /// `INTERCLOUD-GUEST-READY`). With it, a domain whose QEMU process runs but whose console log
        /// does not show the marker yet is reported `.pending` (raw state `+booting`), so waiting for
        /// `.running` waits for the guest itself, not just for its emulator. QEMU truncates the log
        /// each time the domain starts, so a marker found there is from the current boot.
        public var bootMarker: String?

        public init(
            uri: String, imageDirectory: URL? = nil, instanceDirectory: URL? = nil,
            sizes: [InstanceSize] = LibvirtDriver.defaultSizes, domainType: String? = nil, directBoot: DirectBoot? = nil,
            fileOwner: FileOwner? = nil, bootMarker: String? = nil
        ) {
            self.uri = uri
            self.imageDirectory = imageDirectory
            self.instanceDirectory = instanceDirectory
                ?? imageDirectory?.deletingLastPathComponent().appendingPathComponent("instances")
            self.sizes = sizes
            self.domainType = domainType ?? (uri.hasPrefix("test:") ? "test" : "qemu")
            self.directBoot = directBoot
            self.fileOwner = fileOwner
            self.bootMarker = bootMarker
        }
    }

    /// Flavours for a private libvirt host; no price (operators set one through configuration).
    public static let defaultSizes: [InstanceSize] = [
        InstanceSize(id: "lv.tiny", vCPU: 1, memoryMiB: 256, diskGiB: 1),
        InstanceSize(id: "lv.small", vCPU: 1, memoryMiB: 512, diskGiB: 10),
        InstanceSize(id: "lv.medium", vCPU: 2, memoryMiB: 2048, diskGiB: 20),
        InstanceSize(id: "lv.large", vCPU: 4, memoryMiB: 4096, diskGiB: 40),
    ]
}

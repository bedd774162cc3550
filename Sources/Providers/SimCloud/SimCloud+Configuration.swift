import Foundation

extension SimCloud {
    /// How long each transition takes. Zero makes every transition instant (unit tests); the defaults
    /// look like a small real cloud in a demo.
    public struct Delays: Sendable, Hashable {
        public var boot: Duration
        public var shutdown: Duration
        public var reboot: Duration
        public var save: Duration
        public var terminate: Duration

        public init(
            boot: Duration = .seconds(2), shutdown: Duration = .seconds(1), reboot: Duration = .seconds(1),
            save: Duration = .milliseconds(500), terminate: Duration = .milliseconds(500)
        ) {
            self.boot = boot
            self.shutdown = shutdown
            self.reboot = reboot
            self.save = save
            self.terminate = terminate
        }

        public static let instant = Delays(boot: .zero, shutdown: .zero, reboot: .zero, save: .zero, terminate: .zero)
    }

    public struct Limits: Sendable, Hashable {
        public var maxInstances: Int?
        public var maxVCPU: Int?
        public var maxMemoryMiB: Int?

        public init(maxInstances: Int? = 20, maxVCPU: Int? = 64, maxMemoryMiB: Int? = 131_072) {
            self.maxInstances = maxInstances
            self.maxVCPU = maxVCPU
            self.maxMemoryMiB = maxMemoryMiB
        }
    }

    public struct Configuration: Sendable {
        /// Holds `simcloud.sqlite` (unless a database is passed in), `images/` and `disks/`.
        public var dataDirectory: URL
        public var delays: Delays
        public var limits: Limits
        public var sizes: [InstanceSize]
        /// Create the seed image on first start when no image exists.
        public var seedImage: Bool
        /// fsync image and disk files before they count as written (off only for benchmarks/tests
        /// that accept losing files on power failure; a process crash still never leaves half files).
        public var durableWrites: Bool = true

        public init(
            dataDirectory: URL, delays: Delays = Delays(), limits: Limits = Limits(),
            sizes: [InstanceSize] = SimCloud.defaultSizes, seedImage: Bool = true
        ) {
            self.dataDirectory = dataDirectory
            self.delays = delays
            self.limits = limits
            self.sizes = sizes
            self.seedImage = seedImage
        }
    }

    /// A small catalog shaped like a public cloud's general-purpose family.
    public static let defaultSizes: [InstanceSize] = [
        InstanceSize(id: "sim.nano", vCPU: 1, memoryMiB: 512, diskGiB: 1, pricePerHour: Price(Decimal(string: "0.0050")!)),
        InstanceSize(id: "sim.small", vCPU: 1, memoryMiB: 2048, diskGiB: 20, pricePerHour: Price(Decimal(string: "0.0230")!)),
        InstanceSize(id: "sim.medium", vCPU: 2, memoryMiB: 4096, diskGiB: 40, pricePerHour: Price(Decimal(string: "0.0460")!)),
        InstanceSize(id: "sim.large", vCPU: 4, memoryMiB: 8192, diskGiB: 80, pricePerHour: Price(Decimal(string: "0.0920")!)),
        InstanceSize(id: "sim.xlarge", vCPU: 8, memoryMiB: 16384, diskGiB: 160, pricePerHour: Price(Decimal(string: "0.1840")!)),
    ]

    /// Faults for reliability tests of the layers above (migration, federation).
    public enum Fault: Sendable, Hashable {
        /// The next `times` calls of `verb` fail before doing anything.
        case fail(Verb, times: Int = 1)
        /// The next `times` calls of `verb` fail after doing their work, which must then be undone.
        case failAfterWork(Verb, times: Int = 1)
        /// The next export stops after `afterBytes` bytes, as if the process died mid-copy.
        case crashExport(afterBytes: Int64)
    }
}

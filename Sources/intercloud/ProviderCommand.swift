import ArgumentParser
import Broker
import Foundation
import Providers

/// `intercloud provider ...`: inspect and drive the cloud backends of this broker.
///
/// The driver is the `[provider]` of `--config FILE` (the broker's own cloud), or chosen with flags:
/// `--driver simcloud --data-dir DIR`, `--driver libvirt --uri URI`, `--driver ec2 --endpoint URL --region R`
/// (EC2 credentials from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`), `--driver openstack --auth-url URL`
/// (credentials from the `OS_*` variables the `openstack` CLI reads), and any option with `--option KEY=VALUE`.
struct ProviderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "provider",
        abstract: "List and drive cloud providers (SimCloud, libvirt, EC2, OpenStack).",
        subcommands: [List.self, Lifecycle.self, Instances.self, Images.self, Sizes.self, Create.self, Stop.self, Start.self, Terminate.self, Import.self])

    enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
        case table, json
    }

    struct Options: ParsableArguments {
        @Option(help: "Broker configuration file (TOML): use its [provider] (the driver flags are then ignored).")
        var config: String?
        @Option(help: "Driver kind: \(DriverRegistry.kinds.keys.sorted().joined(separator: ", ")).")
        var driver: String = "simcloud"
        @Option(name: .customLong("data-dir"), help: "SimCloud data directory.")
        var dataDir: String = "intercloud-simcloud"
        @Option(help: "libvirt connection URI (test:///default, qemu:///session, ...).")
        var uri: String?
        @Option(name: .customLong("image-dir"), help: "libvirt image directory.")
        var imageDir: String?
        @Option(help: "EC2 endpoint URL.")
        var endpoint: String?
        @Option(help: "Region: EC2's (default us-east-1), or OpenStack's (default OS_REGION_NAME, else the catalog's only one).")
        var region: String?
        @Option(name: .customLong("auth-url"), help: "OpenStack Keystone URL (default OS_AUTH_URL). Credentials: OS_APPLICATION_CREDENTIAL_ID/_SECRET, or OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME.")
        var authURL: String?
        @Option(
            name: .customLong("option"),
            help: ArgumentHelp(
                "Any driver option, as in a [provider] options table; repeatable (--option prices=ic.tiny=0.01).",
                valueName: "key=value"))
        var extraOptions: [String] = []
        @Option(help: "Output format: table or json.")
        var output: OutputFormat = .table

        var settings: DriverSettings {
            get throws {
                var options: [String: String] = [:]
                switch driver {
                case "simcloud": options["data-dir"] = dataDir
                case "libvirt":
                    options["uri"] = uri ?? "qemu:///session"
                    if let imageDir { options["image-dir"] = imageDir }
                case "ec2":
                    if let endpoint { options["endpoint"] = endpoint }
                    options["region"] = region ?? "us-east-1"
                case "openstack":
                    if let authURL { options["auth-url"] = authURL }
                    if let region { options["region"] = region }
                default: break
                }
                for entry in extraOptions {
                    guard let equals = entry.firstIndex(of: "="), equals != entry.startIndex else {
                        throw ValidationError("--option takes KEY=VALUE, not \(entry)")
                    }
                    options[String(entry[..<equals])] = String(entry[entry.index(after: equals)...])
                }
                return DriverSettings(kind: driver, options: options)
            }
        }

        func makeDriver() async throws -> any CloudDriver {
            if let config {
                guard let provider = try loadConfiguration(config).provider else {
                    throw ValidationError("\(config) has no [provider] section")
                }
                return try await DriverRegistry.make(DriverSettings(kind: provider.driver, options: provider.options))
            }
            return try await DriverRegistry.make(try settings)
        }

        func emit<T: Encodable>(_ value: T, header: [String], rows: [[String]]) throws {
            switch output {
            case .json:
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                encoder.dateEncodingStrategy = .iso8601
                print(String(decoding: try encoder.encode(value), as: UTF8.self))
            case .table:
                print(Table.render(header: header, rows: rows))
            }
        }
    }

    /// Progress of long operations on stderr, so `--output json` stays clean on stdout.
    static let progress: ProgressHandler = { event in
        FileHandle.standardError.write(Data("\(event)\n".utf8))
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the configured driver and what it can do.")
        @OptionGroup var options: Options

        struct Row: Encodable {
            var driver: String
            var verbs: [String]
            var exportFormats: [String]
            var importFormats: [String]
        }

        func run() async throws {
            let driver = try await options.makeDriver()
            let capabilities = driver.capabilities
            let row = Row(
                driver: driver.driverName, verbs: capabilities.verbs.map(\.rawValue).sorted(),
                exportFormats: capabilities.exportFormats.map(\.rawValue).sorted(),
                importFormats: capabilities.importFormats.map(\.rawValue).sorted())
            try options.emit([row], header: ["DRIVER", "VERBS", "EXPORT", "IMPORT"], rows: [[
                row.driver, row.verbs.joined(separator: ","), row.exportFormats.joined(separator: ","),
                row.importFormats.joined(separator: ","),
            ]])
        }
    }

    struct Lifecycle: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print which lifecycle operations each driver kind supports, without connecting.",
            discussion: """
                One row per operation (create, poll, shutdown, cancel, start, reboot, suspend, resume, save, \
                restore, snapshot, image export and import, cold and live migration, terminate), one column \
                per driver kind. A cell is `yes`, `no`, or `with OPTION` when a driver option turns the \
                operation on (libvirt's image verbs need `image-dir`; EC2's import needs \
                `import-export = true`), followed by the image formats where they matter. Cold migration \
                is split by side: the source snapshots and exports the instance's disk, the destination \
                imports it. Live migration needs the same hypervisor (libvirt) on both sides.

                Generated from each driver's declared capabilities, the same declaration a connected \
                driver's capabilities come from; an operation a driver does not support fails with \
                `unsupported` naming the driver and the verb. README's "Lifecycle table" is the \
                markdown output. What a configured driver can do right now: `intercloud provider list`.

                Examples:
                  intercloud provider lifecycle
                  intercloud provider lifecycle --output markdown
                  intercloud provider lifecycle --output json | jq '.operations[].cells.ec2'
                """)

        @Option(help: "text (aligned columns), markdown (README's table) or json.")
        var output: LifecycleTable.Format = .text

        func run() throws {
            print(LifecycleTable.drivers.render(output), terminator: "")
        }
    }

    struct Instances: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List instances.")
        @OptionGroup var options: Options

        func run() async throws {
            let instances = try await options.makeDriver().listInstances()
            try options.emit(instances, header: ["ID", "NAME", "SIZE", "IMAGE", "STATE", "RAW STATE", "ADDRESSES"], rows: instances.map {
                [$0.id, $0.name, $0.sizeID ?? "-", $0.imageID ?? "-", $0.state.rawValue, $0.rawState, $0.addresses.joined(separator: ",")]
            })
        }
    }

    struct Images: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List images.")
        @OptionGroup var options: Options

        func run() async throws {
            let images = try await options.makeDriver().listImages()
            try options.emit(images, header: ["ID", "NAME", "FORMAT", "SIZE", "SHA-256"], rows: images.map {
                [$0.id, $0.name, $0.format?.rawValue ?? "-", $0.sizeBytes.map { String($0) } ?? "-", $0.sha256.map { String($0.prefix(16)) } ?? "-"]
            })
        }
    }

    struct Sizes: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List instance sizes with prices.")
        @OptionGroup var options: Options

        func run() async throws {
            let sizes = try await options.makeDriver().listSizes()
            try options.emit(sizes, header: ["ID", "VCPU", "MEMORY MIB", "DISK GIB", "PRICE/HOUR"], rows: sizes.map {
                [$0.id, String($0.vCPU), String($0.memoryMiB), String($0.diskGiB), $0.pricePerHour?.description ?? "-"]
            })
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an instance and wait until it runs.")
        @OptionGroup var options: Options
        @Argument(help: "Instance name.") var name: String
        @Option(help: "Size id (see `provider sizes`).") var size: String
        @Option(help: "Image id (see `provider images`).") var image: String
        @Option(help: "Seconds to wait for the instance to run (0: do not wait).") var wait: Int = 120

        func run() async throws {
            let driver = try await options.makeDriver()
            var instance = try await driver.create(
                CreateInstanceRequest(name: name, sizeID: size, imageID: image), progress: ProviderCommand.progress)
            if wait > 0 {
                ProviderCommand.progress(ProgressEvent(
                    driver: driver.driverName, verb: .create, completed: 0, total: nil, message: "waiting for \(instance.id) to run"))
                instance = try await driver.waitFor(instance: instance.id, state: .running, timeout: .seconds(wait))
            }
            try options.emit(instance, header: ["ID", "NAME", "STATE", "RAW STATE"], rows: [[instance.id, instance.name, instance.state.rawValue, instance.rawState]])
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import", abstract: "Import a disk image file as an image of this cloud.",
            discussion: """
                The file is read in the format you declare (never guessed) and checked before anything \
                is stored, exactly like a peer's image: it must not name another file (a qcow2 backing \
                file or external data file, VMDK extents, a VHD/VDI parent), its header must be the \
                declared format's, and `qemu-img info` must read it within 1 GiB, 30 s of CPU and 60 s. \
                A refusal says why and stores nothing.

                --allow-unsafe-image skips the checks for other files, for this one call, and follows \
                them (a qcow2 overlay is flattened with its backing file): only for images you built \
                yourself. It is logged.
                """)
        @OptionGroup var options: Options
        @Argument(help: "Image file.") var file: String
        @Option(help: "Image name.") var name: String
        @Option(help: "Image format: raw, qcow2, vmdk, vdi, vhdx or vhd.") var format: String = "raw"
        @Option(help: "Refuse a virtual disk larger than this many GiB.") var maxVirtualGib: Int?
        @Flag(help: "Accept an image that names other files (backing file, extents) and read them. Your own images only.")
        var allowUnsafeImage = false

        func run() async throws {
            guard let imageFormat = ImageFormat(name: format) else {
                throw ValidationError("--format must be one of raw, qcow2, vmdk, vdi, vhdx, vhd")
            }
            if let maxVirtualGib, maxVirtualGib < 1 { throw ValidationError("--max-virtual-gib must be ≥ 1") }
            if allowUnsafeImage {
                FileHandle.standardError.write(Data(
                    "warning: --allow-unsafe-image: \(file) may read other files of this host (backing files, extents), and their bytes become part of the image\n".utf8))
            }
            let admission = ImageAdmission(
                maxVirtualSizeBytes: maxVirtualGib.map { Int64($0) << 30 }, allowsReferences: allowUnsafeImage)
            let driver = try await options.makeDriver()
            let image = try await driver.importImage(
                from: URL(fileURLWithPath: file), name: name, format: imageFormat, expectedSHA256: nil, admission: admission,
                progress: ProviderCommand.progress)
            try options.emit(image, header: ["ID", "NAME", "FORMAT", "SIZE"], rows: [[image.id, image.name, image.format?.rawValue ?? "-", image.sizeBytes.map { String($0) } ?? "-"]])
        }
    }

    struct Stop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop an instance (graceful shutdown, or --force).")
        @OptionGroup var options: Options
        @Argument var id: String
        @Flag(help: "Hard stop (destroy) instead of a graceful shutdown.") var force = false
        @Option(help: "Seconds to wait for it to stop (0: do not wait).") var wait: Int = 120

        func run() async throws {
            let driver = try await options.makeDriver()
            var instance = try await driver.perform(force ? .destroy : .shutdown, instance: id)
            if wait > 0 { instance = try await driver.waitFor(instance: id, state: .stopped, timeout: .seconds(wait)) }
            try options.emit(instance, header: ["ID", "STATE", "RAW STATE"], rows: [[instance.id, instance.state.rawValue, instance.rawState]])
        }
    }

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start a stopped instance.")
        @OptionGroup var options: Options
        @Argument var id: String
        @Option(help: "Seconds to wait for it to run (0: do not wait).") var wait: Int = 120

        func run() async throws {
            let driver = try await options.makeDriver()
            var instance = try await driver.start(id)
            if wait > 0 { instance = try await driver.waitFor(instance: id, state: .running, timeout: .seconds(wait)) }
            try options.emit(instance, header: ["ID", "STATE", "RAW STATE"], rows: [[instance.id, instance.state.rawValue, instance.rawState]])
        }
    }

    struct Terminate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete an instance for good.")
        @OptionGroup var options: Options
        @Argument var id: String

        func run() async throws {
            let driver = try await options.makeDriver()
            try await driver.terminate(instance: id)
            let instance = try await driver.waitFor(instance: id, state: .terminated, timeout: .seconds(120))
            try options.emit(instance, header: ["ID", "STATE"], rows: [[instance.id, instance.state.rawValue]])
        }
    }
}

/// Plain aligned columns.
enum Table {
    static func render(header: [String], rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0.indices.contains(column) ? $0[column].count : 0 }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}

extension LifecycleTable.Format: ExpressibleByArgument {}

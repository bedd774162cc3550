// swift-tools-version: 6.1
import PackageDescription

/// Settings shared by every Swift target: Swift 6 language mode (strict concurrency), explicit
/// `any` for existentials, and members from another module's extensions usable only in files that
/// import that module.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    // One section per function in release builds, so the linker can lay out the executable's
    // code in the order `startupOrder` gives (below).
    .unsafeFlags(["-Xfrontend", "-function-sections"], .when(platforms: [.linux], configuration: .release)),
]

/// The functions a broker runs while it starts, placed together at link time in the order it
/// first runs them; scripts/startup-order.sh writes the list. The kernel maps executable code
/// 64 KiB at a time around each page first touched: spread through the executable's 16 MB of
/// code, the ~1 MiB of startup code kept ~9 MiB of it resident in every idle broker. Linked with
/// lld (`--symbol-ordering-file`): gold's `--section-ordering-file` left each listed function
/// among its own module's code. Functions of dependencies come without a section of their own
/// (their flags are theirs), so only whole files of theirs move, and a name that one of their files
/// also defines is left out of the list (it would move that whole file). A stale list only costs memory.
/// Release builds on Linux only.
///
/// Also: relative relocations packed (DT_RELR, glibc 2.36, Debian 12): the dynamic loader reads
/// every relocation record at start, and the ~52 000 pointers in Swift metadata made 1.2 MiB of
/// them; packed, 10 KiB.
let startupOrder: [LinkerSetting] = [
    .unsafeFlags(
        ["-use-ld=lld", "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/scripts/startup-order.txt",
         "-Xlinker", "--no-warn-symbol-ordering", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"],
        .when(platforms: [.linux], configuration: .release)),
]

/// The Swift runtime and Foundation linked in from the toolchain's static archives (release
/// builds on Linux), for the broker and for the benchmarks that measure its code. As eleven
/// shared libraries they kept ~17 MiB resident in every idle broker (each library's pages the
/// loader relocates and its start-up code, whatever the broker used of it); linked in, only what
/// is used comes along, laid out with the startup code above, and calls into the runtime are
/// direct. `-static-stdlib` brings the runtime's own archives; Foundation's C parts are named here
/// because the compiler records only `Foundation` itself for a module that imports it.
let staticRuntime: [LinkerSetting] = [
    .unsafeFlags(
        ["-static-stdlib", "-lCoreFoundation", "-l_FoundationICU", "-l_FoundationCShims", "-l_FoundationCollections"],
        .when(platforms: [.linux], configuration: .release)),
]

/// Developers working on one module in parallel can build and test it alone, without the other
/// modules having to compile at that moment: `INTERCLOUD_ONLY=Catalog swift test --scratch-path
/// .build-catalog`. Unset (as in CI), the whole package is built. The selection is each named
/// module, its tests, and every target they depend on, read from the targets' own dependencies.
func selectedTargets(of targets: [Target]) -> Set<String>? {
    guard let only = Context.environment["INTERCLOUD_ONLY"], !only.isEmpty else { return nil }
    let targetsByName = Dictionary(uniqueKeysWithValues: targets.map { ($0.name, $0) })
    var selected = Set<String>()
    var pending = only.split(separator: ",").flatMap { name in [String(name), "\(name)Tests"] }
    while let name = pending.popLast() {
        guard let target = targetsByName[name], !selected.contains(name) else { continue }
        selected.insert(name)
        for dependency in target.dependencies {
            switch dependency {
            case .targetItem(let name, _), .byNameItem(let name, _): pending.append(name)
            default: continue
            }
        }
    }
    return selected
}

let package = Package(
    name: "Intercloud",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "intercloud", targets: ["intercloud"]),
        .executable(name: "sparql-conformance", targets: ["sparql-conformance"]),
        .executable(name: "intercloud-bench", targets: ["intercloud-bench"]),
        .library(name: "XMPP", targets: ["XMPP"]),
        .library(name: "Catalog", targets: ["Catalog"]),
        .library(name: "Providers", targets: ["Providers"]),
        .library(name: "Trust", targets: ["Trust"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
    ],
    targets: [
        // C libraries: one thin target each (a system library with modulemap + shim.h; CLibvirt and
        // CRaptor small C targets that load their library on first use).
        .systemLibrary(name: "CStrophe", pkgConfig: "libstrophe", providers: [.apt(["libstrophe-dev"])]),
        // libvirt is opened with dlopen when a libvirt driver first connects, and Raptor when RDF
        // is first parsed, not linked: most brokers never use libvirt, one without [catalog]
        // files parses no RDF until a peer answers with some, and linking maps a library and its
        // dependencies into every process. Their headers
        // still come from libvirt-dev and libraptor2-dev.
        .target(name: "CRaptor", linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "CLibvirt", linkerSettings: [.linkedLibrary("dl")]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),

        .target(
            name: "XMPP",
            dependencies: [
                "CStrophe",
                "XMLModel",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // TOMLKit behind one process-wide lock (see SerializedTOML).
        .target(
            name: "TOMLParsing",
            dependencies: [.product(name: "TOMLKit", package: "TOMLKit")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Storage",
            dependencies: [.product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: swiftSettings
        ),
        // The one XML element model (value, serializers, payload parser) of stanzas and protocol
        // payloads alike.
        .target(name: "XMLModel", swiftSettings: swiftSettings),
        .target(
            name: "Trust",
            dependencies: [
                "Storage",
                "XMLModel",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "GRDB", package: "GRDB.swift"),
                // SQLite's C API, for the one statement on the envelope path (PinStatusCache).
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Catalog",
            dependencies: [
                "CRaptor",
                "XMLModel",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Providers",
            dependencies: [
                "CLibvirt",
                "Storage",
                "XMLModel",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Broker",
            dependencies: ["XMLModel",
                "Backup", "XMPP", "Storage", "Trust", "Catalog", "Providers", "Policy", "Metering", "Migration", "Transfer", "Federation",
                "Peering", "Negotiation", "CatalogQueries", "Discovery",
                .product(name: "GRDB", package: "GRDB.swift"),
                "TOMLParsing",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // What every protocol service is built from (`BrokerContext`) and the one interface it
        // reaches peers through (`SignedTransport`).
        .target(
            name: "Peering",
            dependencies: [
                "XMPP", "Trust", "Policy",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Discovery: the peer-discovery machine (presence, exchange rooms, direct peering), the peer
        // registry it keeps, the announcement brokers put in their presence.
        .target(
            name: "Discovery",
            dependencies: ["XMLModel",
                "Peering", "Storage", "Trust", "XMPP",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: swiftSettings
        ),
        // Catalog queries between brokers: answering peers' (signed) SPARQL, asking peers, the
        // broker's catalog with its self-description and live inventory.
        .target(
            name: "CatalogQueries",
            dependencies: ["XMLModel",
                "Catalog", "Peering", "Providers", "Trust", "XMPP",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Contract negotiation between brokers: the service, its journal and agreements store, the wire.
        .target(
            name: "Negotiation",
            dependencies: ["XMLModel",
                "Peering", "Policy", "Trust", "XMPP", "Storage",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Policy",
            dependencies: ["TOMLParsing"],
            swiftSettings: swiftSettings
        ),
        // Usage records, the bilateral ledger, bills and SLA measurement.
        .target(
            name: "Metering",
            dependencies: ["XMLModel",
                "Policy", "Storage", "Negotiation", "Peering", "Providers", "Trust", "XMPP",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The image transfer channel: mutual TLS with the brokers' certificates, chunk-hashed, resumable.
        .target(
            name: "Transfer",
            dependencies: [
                "COpenSSL",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Migration state machines (source and destination) and the journaled orchestrator.
        .target(
            name: "Migration",
            dependencies: ["XMLModel",
                "Providers", "Policy", "Storage", "Peering", "Negotiation", "Metering", "Transfer", "Trust", "XMPP",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Service federation: server templates, the provisioning state machine and its journaled runner.
        .target(
            name: "Federation",
            dependencies: ["XMLModel",
                "Providers", "Policy", "Storage", "TOMLParsing", "Catalog", "Metering", "Negotiation", "Peering", "Trust", "XMPP",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Clusters: named collections of server templates launched, stopped and torn down together
        // (the cluster machine, its journal and runner; peer members through service federation).
        .target(
            name: "Clusters",
            dependencies: [
                "Federation", "Providers", "Storage", "TOMLParsing", "Trust",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Backups: scheduled image backups of instances to a directory or an S3-compatible store,
        // retention and restore (the run and restore machines, their journal, stores and runner).
        .target(
            name: "Backup",
            dependencies: [
                "Providers", "Storage", "TOMLParsing", "Trust",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "intercloud",
            dependencies: [
                "Backup", "Broker", "Clusters", "Trust", "Providers", "Catalog", "Policy", "Storage", "Metering", "Migration", "XMPP", "Negotiation", "Peering", "Federation",
                "CatalogQueries", "Discovery", "TOMLParsing",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings,
            linkerSettings: startupOrder + staticRuntime
        ),
        .executableTarget(
            name: "sparql-conformance",
            dependencies: ["Catalog"],
            swiftSettings: swiftSettings
        ),
        // Benchmarks (bench/): what every benchmark shares (timing, percentiles, baseline ratios,
        // the report), and the one executable with a subcommand per benchmark. Production modules
        // hold no benchmark code; what a benchmark needs of their internals is `package`.
        .target(name: "BenchmarkHarness", path: "bench/Sources/BenchmarkHarness", swiftSettings: swiftSettings),
        .executableTarget(
            name: "intercloud-bench",
            dependencies: ["XMLModel",
                "BenchmarkHarness", "Broker", "CatalogQueries", "Discovery", "Migration", "Negotiation", "Peering", "Policy", "Providers", "Storage",
                "Transfer", "Trust", "XMPP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "X509", package: "swift-certificates"),
            ],
            path: "bench/Sources/intercloud-bench",
            swiftSettings: swiftSettings,
            linkerSettings: staticRuntime
        ),

        // Starts the real services tests talk to (Prosody), shared by the integration tests.
        .target(name: "TestSupport", path: "Tests/TestSupport", swiftSettings: swiftSettings),
        .testTarget(name: "XMLModelTests", dependencies: ["XMLModel"], swiftSettings: swiftSettings),
        .testTarget(name: "XMPPTests", dependencies: ["XMLModel", "XMPP", "TestSupport"], swiftSettings: swiftSettings),
        .testTarget(
            name: "StorageTests",
            dependencies: [
                "Storage",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "TrustTests",
            dependencies: ["XMLModel",
                "Trust", "Storage",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "CatalogTests",
            dependencies: [
                "Catalog",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "ProvidersTests",
            dependencies: [
                "Providers", "Storage", "TestSupport",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "BrokerTests",
            dependencies: ["XMLModel",
                "Broker", "XMPP", "Trust", "Catalog", "Providers", "Policy", "Metering", "Migration", "Transfer", "Federation",
                "Negotiation", "Peering", "CatalogQueries", "Discovery", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings),
        // Suites that run brokers against real services (Prosody, SQLite, libvirt/QEMU, moto),
        // with their shared fixtures in Fixtures/; the unit suites stay with their modules.
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["XMLModel",
                "Broker", "Clusters", "XMPP", "Trust", "Catalog", "Providers", "Policy", "Metering", "Migration", "Transfer", "Federation",
                "Negotiation", "Peering", "CatalogQueries", "Discovery", "Storage", "TestSupport",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "X509", package: "swift-certificates"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(name: "PolicyTests", dependencies: ["Policy", "TOMLParsing"], swiftSettings: swiftSettings),
        .testTarget(name: "PeeringTests", dependencies: ["Peering"], swiftSettings: swiftSettings),
        .testTarget(name: "DiscoveryTests", dependencies: ["XMLModel", "Discovery", "XMPP"], swiftSettings: swiftSettings),
        .testTarget(name: "NegotiationTests", dependencies: ["Negotiation", "Policy", "XMPP"], swiftSettings: swiftSettings),
        .testTarget(
            name: "MeteringTests",
            dependencies: [
                "Metering", "Policy", "Storage",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "FederationTests",
            dependencies: [
                "Federation", "Providers", "Policy", "TOMLParsing", "TestSupport", "Storage", "XMPP",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "BackupTests",
            dependencies: [
                "Backup", "Providers", "Storage", "TestSupport", "TOMLParsing", "Trust",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "ClustersTests",
            dependencies: ["Clusters", "Federation", "Providers", "Storage", "TestSupport", "TOMLParsing", "Trust"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "TransferTests",
            dependencies: [
                "Transfer", "Trust",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "X509", package: "swift-certificates"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "MigrationTests",
            dependencies: [
                "Migration", "Providers", "Policy", "TestSupport", "XMPP",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(name: "BenchmarkHarnessTests", dependencies: ["BenchmarkHarness"], path: "bench/Tests/BenchmarkHarnessTests", swiftSettings: swiftSettings),
    ]
)

// scripts/fuzz.sh: INTERCLOUD_FUZZ=1 adds the libFuzzer harness of every wire decoder and file
// loader, and instruments the project's own Swift modules for it (coverage, AddressSanitizer).
// Unset (every ordinary build and CI), the package is as above.
if Context.environment["INTERCLOUD_FUZZ"] == "1" {
    let instrumented: [SwiftSetting] = [.unsafeFlags(["-sanitize=fuzzer,address"])]
    for target in package.targets where target.type == .regular {
        target.swiftSettings = (target.swiftSettings ?? []) + instrumented
    }
    // The harness's main() is its own (SwiftPM names it), so libFuzzer comes without one:
    // clang's libclang_rt.fuzzer_no_main, whose path scripts/fuzz.sh finds in the toolchain.
    let fuzzerLibrary = Context.environment["INTERCLOUD_FUZZER_LIBRARY"] ?? ""
    package.targets.append(.target(name: "CLibFuzzer", path: "Sources/CLibFuzzer"))
    package.targets.append(.executableTarget(
        name: "intercloud-fuzz",
        dependencies: ["XMLModel", "CLibFuzzer", "Broker", "Discovery", "Federation", "Metering", "Migration", "Negotiation", "Policy", "Providers", "Transfer", "Trust", "XMPP"],
        swiftSettings: swiftSettings + instrumented + [.unsafeFlags(["-parse-as-library"])],
        linkerSettings: [.unsafeFlags(["-sanitize=address", "-Xlinker", fuzzerLibrary, "-lstdc++"])]))
    package.products.append(.executable(name: "intercloud-fuzz", targets: ["intercloud-fuzz"]))
}

if let selected = selectedTargets(of: package.targets) {
    package.targets = package.targets.filter { selected.contains($0.name) }
    package.products = package.products.filter { selected.contains($0.name) }
}

// swift-tools-version: 6.1
// Stand-alone runner for `TrustBenchmark` (Sources/Trust/Benchmark), kept outside the root
// manifest so it can be run without touching it. Build it in release mode:
//   cd bench/trust && INTERCLOUD_ONLY=Trust swift run -c release --scratch-path ../../.build-trust-release trust-bench
// INTERCLOUD_ONLY=Trust makes the root package expose only the Trust library (and its deps).
import PackageDescription

let package = Package(
    name: "TrustBench",
    platforms: [.macOS(.v14)],
    dependencies: [.package(name: "Intercloud", path: "../..")],
    targets: [
        .executableTarget(
            name: "trust-bench",
            dependencies: [.product(name: "Trust", package: "Intercloud")],
            path: "Sources/TrustBench",
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        )
    ]
)

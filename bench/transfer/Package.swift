// swift-tools-version: 6.1
// Stand-alone runner for the transfer benchmark, kept outside the root manifest (which exports no
// Transfer library product). Modules/Transfer and Modules/COpenSSL are symlinks to the real
// sources, so this builds exactly the code the broker uses. Driven by run.sh.
import PackageDescription

let package = Package(
    name: "TransferBench",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
    ],
    targets: [
        .systemLibrary(name: "COpenSSL", path: "Modules/COpenSSL", pkgConfig: "openssl"),
        .target(
            name: "Transfer",
            dependencies: [
                "COpenSSL",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Modules/Transfer",
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        ),
        .executableTarget(
            name: "transfer-bench",
            dependencies: ["Transfer"],
            path: "TransferBench",
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        ),
    ]
)

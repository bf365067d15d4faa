// swift-tools-version:6.1
import PackageDescription

// No unsafe flags (SwiftPM refuses them in a versioned dependency): the kernels build at SwiftPM's own level (-O2 in
// release) and unroll their small accumulator loops themselves (PL_UNROLL in kernels_internal.h), which is what -O3
// did for them. The private headers are found from the target's root.
let kernelFlags: [CSetting] = [.headerSearchPath(".")]

let package = Package(
    name: "PocketLM",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "PocketLM", targets: ["PocketLM"]),
        .library(name: "PocketLMServer", targets: ["PocketLMServer"]),
        .executable(name: "pocketlm", targets: ["pocketlm"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .target(name: "CKernels", cSettings: kernelFlags),
        // POSIX calls Swift cannot see (O_DIRECT), kept apart from the portable core.
        .target(name: "CPlatform"),
        .target(
            name: "PocketLM",
            dependencies: ["CKernels", "CPlatform", "COpenBLAS"]
        ),
        // The OpenAI-compatible HTTP server over the library (`pocketlm serve`); an app can embed it too.
        .target(
            name: "PocketLMServer",
            dependencies: [
                "PocketLM",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "pocketlm",
            dependencies: [
                "PocketLM",
                "PocketLMServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "PocketLMTests",
            dependencies: ["PocketLM"]
        ),
        .testTarget(
            name: "PocketLMServerTests",
            dependencies: [
                "PocketLMServer",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ]
)

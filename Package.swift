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
        .executable(name: "pocketlm", targets: ["pocketlm"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
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
        .executableTarget(
            name: "pocketlm",
            dependencies: [
                "PocketLM",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "PocketLMTests",
            dependencies: ["PocketLM"]
        ),
    ]
)

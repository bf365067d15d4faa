// swift-tools-version:6.1
import PackageDescription

// Hot C kernels are compiled at -O3 even in debug builds: the test suite runs real models.
let kernelFlags: [CSetting] = [.headerSearchPath("."), .unsafeFlags(["-O3", "-fno-math-errno"])]

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

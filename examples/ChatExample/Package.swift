// swift-tools-version:6.1
import PackageDescription

// An app's view of PocketLM: a package that depends on it and uses only its public API (here by path, which the
// test suite can build from a clone; a versioned dependency on the repository additionally needs PocketLM to drop
// its -O3 `unsafeFlags` for the C kernels, which SwiftPM refuses in versioned dependencies — not done yet).
let package = Package(
    name: "ChatExample",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "PocketLM", path: "../.."),
    ],
    targets: [
        .executableTarget(name: "ChatExample", dependencies: [.product(name: "PocketLM", package: "PocketLM")]),
    ]
)

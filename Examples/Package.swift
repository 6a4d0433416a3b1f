// swift-tools-version: 6.1
import PackageDescription

// Runnable examples for swift-allocation-tracking. A package of their own (like Benchmarks/), depending on the
// library by path, so they can use build settings the library itself must not (`unsafeFlags`).
let package = Package(
    name: "swift-allocation-tracking-examples",
    dependencies: [.package(name: "swift-allocation-tracking", path: "..")],
    targets: [
        .executableTarget(
            name: "LeakyCacheDemo",
            dependencies: [.product(name: "AllocationTracking", package: "swift-allocation-tracking")],
            // Export the executable's own symbols so dladdr() can name its functions in the demo's output.
            linkerSettings: [.unsafeFlags(["-Xlinker", "--export-dynamic"])]
        ),
    ]
)

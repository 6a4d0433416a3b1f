// swift-tools-version: 6.1
import PackageDescription

// Runnable examples for swift-allocation-tracking. A package of their own (like Benchmarks/), depending on the
// library by path, as an application would depend on it by URL.
let package = Package(
    name: "swift-allocation-tracking-examples",
    dependencies: [.package(name: "swift-allocation-tracking", path: "..")],
    targets: [
        .executableTarget(
            name: "LeakyCacheDemo",
            dependencies: [.product(name: "AllocationTracking", package: "swift-allocation-tracking")]
        ),
        .executableTarget(
            name: "OOMDemo",
            dependencies: [.product(name: "AllocationTracking", package: "swift-allocation-tracking")]
        ),
        // The README's Quick start, verbatim.
        .executableTarget(
            name: "QuickStart",
            dependencies: [.product(name: "AllocationTracking", package: "swift-allocation-tracking")]
        ),
        // The README's "Allocation tests" examples, budgets included: `swift test --package-path Examples`.
        .testTarget(
            name: "AllocationTestsExample",
            dependencies: [
                .product(name: "AllocationTracking", package: "swift-allocation-tracking"),
                .product(name: "AllocationTrackingTesting", package: "swift-allocation-tracking"),
            ],
            exclude: ["allocation-budgets.json"]  // read by path in the budget test, as the README shows
        ),
    ]
)

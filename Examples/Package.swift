// swift-tools-version: 6.1
import PackageDescription

// Runnable examples for swift-allocation-tracking. A package of their own (like Benchmarks/), depending on the
// library by path, as an application would depend on it by URL.
let package = Package(
    name: "swift-allocation-tracking-examples",
    dependencies: [
        .package(name: "swift-allocation-tracking", path: ".."),
        // For the profile-endpoint examples only.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        // PrometheusLeakDemo: swift-prometheus's registry served over plain SwiftNIO HTTP/1 (no web framework).
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "LeakyCacheDemo",
            dependencies: [.product(name: "AllocationTracking", package: "swift-allocation-tracking")]
        ),
        .executableTarget(
            name: "OOMDemo",
            dependencies: [.product(name: "AllocationTracking", package: "swift-allocation-tracking")]
        ),
        // A leaking service with its heap at http://127.0.0.1:6060/debug/pprof/heap (AllocationProfileServer in a
        // ServiceGroup): the README's endpoint example.
        .executableTarget(
            name: "ProfiledService",
            dependencies: [
                .product(name: "AllocationTracking", package: "swift-allocation-tracking"),
                .product(name: "AllocationTrackingHTTP", package: "swift-allocation-tracking"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The same routes on a Hummingbird app's own router, through AllocationProfileResponder.
        .executableTarget(
            name: "HummingbirdProfiling",
            dependencies: [
                .product(name: "AllocationTracking", package: "swift-allocation-tracking"),
                .product(name: "AllocationTrackingHTTP", package: "swift-allocation-tracking"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ]
        ),
        // The real-service benchmark's service (Benchmarks/service_bench.py); here for its Hummingbird dependency.
        .executableTarget(
            name: "ServiceBench",
            dependencies: [
                .product(name: "AllocationTracking", package: "swift-allocation-tracking"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
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
        // A leaking service publishing the AllocationTrackingMetrics gauges through swift-prometheus on
        // http://127.0.0.1:<port>/metrics; Examples/prometheus/e2e.sh scrapes it with a real Prometheus.
        .executableTarget(
            name: "PrometheusLeakDemo",
            dependencies: [
                .product(name: "AllocationTracking", package: "swift-allocation-tracking"),
                .product(name: "AllocationTrackingMetrics", package: "swift-allocation-tracking"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
    ]
)

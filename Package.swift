// swift-tools-version: 6.1
import PackageDescription

// swift-allocation-tracking: an in-process native-heap profiler for Swift on Linux.
//
// `CAllocationTracking` (C) owns what must run inside malloc without Swift: the interposed malloc family,
// the per-thread reentrancy guard and stack capture. `AllocationTracking` (Swift) owns the lock-free tables
// and the public API. Only `AllocationTracking` imports the C target.
//
// No unsafe compiler or linker flags: packages depended on by URL cannot use them. Everything the C code needs (initial-exec
// TLS, frame pointers) is requested with attributes in the source.
let package = Package(
    name: "swift-allocation-tracking",
    products: [
        .library(name: "AllocationTracking", targets: ["AllocationTracking"]),
        // Allocation assertions for tests (no-leak, count and byte limits, budgets), on the public API only.
        .library(name: "AllocationTrackingTesting", targets: ["AllocationTrackingTesting"]),
        // The tracker's figures (heap, RSS, cgroup working set, growth, time to the limit, reports) as swift-metrics
        // gauges and counters, for Prometheus or OpenTelemetry. The core stays without dependencies.
        .library(name: "AllocationTrackingMetrics", targets: ["AllocationTrackingMetrics"]),
        // MARK: AllocationTrackingHTTP
        // Go's /debug/pprof/heap endpoint (and this library's own routes) on SwiftNIO, a swift-service-lifecycle
        // Service; plus a framework-neutral responder for apps that mount the routes on their own router.
        .library(name: "AllocationTrackingHTTP", targets: ["AllocationTrackingHTTP"]),
        // MARK: alloc-track
        // The tracker as a shared library for LD_PRELOAD: an unmodified program (C, C++, Swift, Python) gets the
        // interposer and the Swift core; ALLOCATION_TRACKING configures it. `alloc-track run` sets both.
        .library(name: "AllocationTrackingPreload", type: .dynamic, targets: ["AllocationTrackingPreload"]),
        // Runs programs tracked; reads, diffs and converts saved snapshots and report directories.
        .executable(name: "alloc-track", targets: ["alloc-track"]),
    ],
    // Only the integration products use these: the core and the testing kit depend on nothing.
    dependencies: [
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    ],
    targets: [
        .target(
            name: "CAllocationTracking",
            linkerSettings: [.linkedLibrary("dl"), .linkedLibrary("pthread")]
        ),
        .target(
            name: "AllocationTracking",
            dependencies: ["CAllocationTracking", "CZlib"]
        ),
        // The system zlib, to gzip pprof profiles (see Sources/CZlib/module.modulemap): a system-library target,
        // because Swift needs <zlib.h>'s declarations and a linker setting alone gives none. Not a package
        // dependency: Debian's zlib1g-dev, which Swift's Linux images carry.
        .systemLibrary(
            name: "CZlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .target(
            name: "AllocationTrackingTesting",
            dependencies: ["AllocationTracking"]
        ),
        // On the public API only, and on CoreMetrics only (what an integration needs, as swift-metrics advises).
        .target(
            name: "AllocationTrackingMetrics",
            dependencies: ["AllocationTracking", .product(name: "CoreMetrics", package: "swift-metrics")]
        ),
        // C helpers for the tests: allocations from a known C function, a second malloc interposer for the
        // RTLD_NEXT chaining test, raw libc calls (strdup, getline) whose allocations must be seen.
        .target(
            name: "AllocationTrackingTestSupport",
            path: "Tests/AllocationTrackingTestSupport"
        ),
        // Scenarios that need a process of their own (fork, environment start-up, LD_PRELOAD chaining, a
        // missing libunwind); the tests spawn it and assert on what it prints.
        // The `.trackerExclusive` suite trait, shared by both test targets.
        .target(
            name: "TrackerTestSupport",
            dependencies: ["AllocationTrackingTestSupport"],
            path: "Tests/TrackerTestSupport"
        ),
        .executableTarget(
            name: "TrackerScenarios",
            dependencies: ["AllocationTracking", "AllocationTrackingTestSupport"],
            path: "Tests/TrackerScenarios"
        ),
        .testTarget(
            name: "AllocationTrackingTests",
            dependencies: ["AllocationTracking", "AllocationTrackingTestSupport", "TrackerTestSupport", "TrackerScenarios"]
        ),
        .testTarget(
            name: "AllocationTrackingMetricsTests",
            dependencies: ["AllocationTrackingMetrics", "TrackerTestSupport",
                           .product(name: "MetricsTestKit", package: "swift-metrics")]
        ),
        .testTarget(
            name: "AllocationTrackingTestingTests",
            dependencies: ["AllocationTrackingTesting", "AllocationTrackingTestSupport", "TrackerTestSupport"]
        ),
        // The flame-graph page of `alloc-track flamegraph` (one self-contained HTML file), on the core's public API.
        .target(
            name: "AllocationTrackingFlameGraph",
            dependencies: ["AllocationTracking"]
        ),
        // The page's HTML, and the page opened in a real headless Chromium (Tests/.../cdp_driver.py).
        .testTarget(
            name: "AllocationTrackingFlameGraphTests",
            dependencies: ["AllocationTrackingFlameGraph", "AllocationTracking", "TrackerTestSupport"],
            exclude: ["cdp_driver.py"]
        ),
        // MARK: AllocationTrackingHTTP (public API of the core only)
        .target(
            name: "AllocationTrackingHTTP",
            dependencies: [
                "AllocationTracking",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Real HTTP on loopback, read by curl and go tool pprof.
        .testTarget(
            name: "AllocationTrackingHTTPTests",
            dependencies: [
                "AllocationTrackingHTTP", "AllocationTracking", "AllocationTrackingTestSupport", "TrackerTestSupport",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // MARK: alloc-track (public API of the core only)
        // The preload library (C: a constructor): the core, plus keeping the tracker out of child processes unless
        // asked, and standing aside when the program already links the library.
        .target(
            name: "AllocationTrackingPreload",
            dependencies: ["AllocationTracking", "CAllocationTracking"]
        ),
        .executableTarget(
            name: "alloc-track",
            dependencies: ["AllocationTracking", "AllocationTrackingFlameGraph",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // A Swift program that does not link the library, for `alloc-track run`'s tests.
        .executableTarget(
            name: "UntrackedSwiftProgram",
            path: "Tests/UntrackedSwiftProgram"
        ),
        // Runs the built `alloc-track` as a subprocess, as users do.
        .testTarget(
            name: "AllocTrackTests",
            dependencies: ["AllocationTracking", "alloc-track", "UntrackedSwiftProgram", "TrackerScenarios", "TrackerTestSupport"]
        ),
    ]
)

// swift-tools-version: 6.1
import PackageDescription

// Benchmarks for swift-allocation-tracking, run with ordo-one/benchmark:
//
//     cd Benchmarks && swift package --disable-sandbox benchmark
//
// Targets:
// - `TrackingOverhead` (links AllocationTracking): workloads M (malloc storm) and W (service-like Swift code),
//   each untracked ("off": library linked, tracking stopped), tracked with `.framePointers` and tracked with
//   `.libunwind`; plus the mallocCountTotal check (N = 1000 malloc calls per iteration).
// - `NotLinkedBaseline` (does NOT link AllocationTracking): the same workloads with the library absent, so
//   "linked but off" can be compared with "not linked" in the same run.
// - `Symbolication`: a symbolicated snapshot of 10 000 distinct stacks, with an empty and with a warm symbol
//   cache.
// - `TrackerMemory` (plain executable, not a benchmark): tracker metadata bytes per live block
//   (`swift run -c release TrackerMemory`).
// - `SymbolicationCost` (plain executable): cold and warm lookups of N distinct addresses of a large binary
//   (`swift run -c release SymbolicationCost 10000`).
// - `WorkloadTiming` (plain executable): the same workloads timed without ordo-one/benchmark in the process,
//   with 1 and 2 threads (`swift run -c release WorkloadTiming`).
//
// Only the MallocInterposer trait of ordo-one/benchmark is enabled: its default traits also pull in
// swift-runtime-interposer (ARC counters on Swift 6.3), which is not needed here.
let package = Package(
    name: "swift-allocation-tracking-benchmarks",
    dependencies: [
        // The checkout directory may have any name (a path dependency's identity is its directory name), so the
        // package is named explicitly.
        .package(name: "swift-allocation-tracking", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // The workloads, shared by both benchmark targets (no dependency on AllocationTracking).
        .target(name: "CWorkloads"),
        .target(name: "Workloads", dependencies: ["CWorkloads"]),
        .executableTarget(
            name: "TrackingOverhead",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "AllocationTracking", package: "swift-allocation-tracking"),
                "Workloads",
                "CWorkloads",
            ],
            path: "Benchmarks/TrackingOverhead",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "Symbolication",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "AllocationTracking", package: "swift-allocation-tracking"),
                "Workloads",
            ],
            path: "Benchmarks/Symbolication",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "NotLinkedBaseline",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                "Workloads",
                "CWorkloads",
            ],
            path: "Benchmarks/NotLinkedBaseline",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "TrackerMemory",
            dependencies: [
                .product(name: "AllocationTracking", package: "swift-allocation-tracking"),
            ]
        ),
        // Plain executable: cold and warm symbolication of N distinct addresses of a large binary (it links
        // SwiftNIO through AllocationTrackingHTTP), the cost per call of a batch, and the memory it adds.
        .executableTarget(
            name: "SymbolicationCost",
            dependencies: [
                .product(name: "AllocationTracking", package: "swift-allocation-tracking"),
                .product(name: "AllocationTrackingHTTP", package: "swift-allocation-tracking"),
            ]
        ),
        // Plain timing of the workloads without ordo-one/benchmark (and its malloc interposer) in the process.
        .executableTarget(
            name: "WorkloadTiming",
            dependencies: [
                .product(name: "AllocationTracking", package: "swift-allocation-tracking"),
                "Workloads",
            ]
        ),
    ]
)

// Overhead of swift-allocation-tracking on two workloads, in one run of the benchmark tool:
//
//   M/off, W/off                        library linked, tracking stopped (the baseline for the ratios)
//   M/framePointers, W/framePointers    tracking on, .framePointers, maxFrames 32
//   M/libunwind, W/libunwind            tracking on, .libunwind, maxFrames 32
//   M/sampled512KiB, W/sampled512KiB    tracking on, sampled every 512 KiB on average (also 64KiB, 4MiB), .libunwind
//
// Tracking is started in the benchmark's setup and stopped in its teardown, so start/stop costs are excluded.
// The same workloads with the library not linked at all are in the NotLinkedBaseline target.
//
// MallocCount/* checks that ordo-one/benchmark's own malloc counting (.mallocCountTotal, from its
// MallocInterposer trait: a second malloc interposer, a shared library that our interposer forwards to with
// dlsym(RTLD_NEXT)) still reports exactly 1000 mallocs per iteration for a body that makes exactly 1000.
// MallocCountW/* compares the same counters on a small W run across the modes. Both run without the report
// watchdog (M and W run with it, the default configuration): its own allocations would be counted too.

import AllocationTracking
import Benchmark
import CWorkloads
import Workloads

typealias Unwinder = AllocationTracker.Configuration.Unwinder
typealias Sampling = AllocationTracker.Configuration.Sampling

let timeMetrics: [BenchmarkMetric] = [.wallClock, .cpuTotal]
let mallocsMetric = BenchmarkMetric.custom("workload mallocs", useScalingFactor: false)
let tracedMetric = BenchmarkMetric.custom("traced allocations", useScalingFactor: false)
let droppedMetric = BenchmarkMetric.custom("dropped allocations", useScalingFactor: false)
/// Exact counts (not K/M) and milliseconds, so the text output can be read off directly.
var exactUnits: [BenchmarkMetric: BenchmarkUnits] { [
    .mallocCountTotal: .count, .freeCountTotal: .count, mallocsMetric: .count, tracedMetric: .count, droppedMetric: .count,
] }

/// Setup/teardown that start and stop tracking (nil: tracking stays off). `watchdog: false` turns the report
/// features off, so no watchdog thread runs: ordo's malloc counters are process-wide and would count the
/// watchdog's own allocations (resolving names for the allocation-failure report, cold at start).
func trackingHooks(_ unwinder: Unwinder?, _ sampling: Sampling, watchdog: Bool = true)
    -> (setup: Benchmark.BenchmarkSetupHook, teardown: Benchmark.BenchmarkTeardownHook) {
    let limits: AllocationTracker.Configuration.Limits = watchdog
        ? .init() : .init(containerFraction: nil, onAllocationFailure: false)
    let setup: Benchmark.BenchmarkSetupHook = {
        AllocationTracker.stop()
        if let unwinder {
            try AllocationTracker.start(.init(maxFrames: 32, unwinder: unwinder, limits: limits, sampling: sampling))
            precondition(AllocationTracker.isTracing, "tracking did not start")
        }
    }
    let teardown: Benchmark.BenchmarkTeardownHook = {
        AllocationTracker.stop()
    }
    return (setup, teardown)
}

/// The timed workloads' configuration: tracked modes run fewer, longer iterations.
func workloadConfiguration(_ metrics: [BenchmarkMetric], tracked: Bool) -> Benchmark.Configuration {
    .init(
        metrics: timeMetrics + metrics + (tracked ? [tracedMetric, droppedMetric] : []),
        timeUnits: .milliseconds,
        units: exactUnits,
        warmupIterations: 1,
        scalingFactor: .one,
        maxDuration: .seconds(tracked ? 10 : 3),
        maxIterations: tracked ? 7 : 21
    )
}

/// Records the tracker's counters for one iteration (tracked modes only).
func recordTracking(_ benchmark: Benchmark, from before: TracedMemory, to after: TracedMemory, tracked: Bool) {
    guard tracked else { return }
    benchmark.measurement(tracedMetric, after.totalAllocations - before.totalAllocations)
    benchmark.measurement(droppedMetric, after.droppedAllocations - before.droppedAllocations)
}

let modes: [(name: String, unwinder: Unwinder?, sampling: Sampling)] = [
    ("off", nil, .exact), ("framePointers", .framePointers, .exact), ("libunwind", .libunwind, .exact),
    ("sampled64KiB", .libunwind, .poisson(meanBytes: 64 << 10)),
    ("sampled512KiB", .libunwind, .poisson(meanBytes: 512 << 10)),
    ("sampled4MiB", .libunwind, .poisson(meanBytes: 4 << 20)),
]

let benchmarks: @Sendable () -> Void = {
    // The number of mallocs of one M run (deterministic), reported alongside the timings.
    let stormMallocs = MallocStorm.mallocCount()

    for mode in modes {
        let hooks = trackingHooks(mode.unwinder, mode.sampling)
        let countingHooks = trackingHooks(mode.unwinder, mode.sampling, watchdog: false)
        let tracked = mode.unwinder != nil

        // M: malloc storm, 2 threads x 2,000,000 steps over 1024 slots each.
        Benchmark(
            "M/\(mode.name)",
            configuration: workloadConfiguration([mallocsMetric], tracked: tracked),
            closure: { benchmark in
                let before = AllocationTracker.tracedMemory
                let mallocs = MallocStorm.run()
                let after = AllocationTracker.tracedMemory
                benchmark.stopMeasurement()
                if mallocs != stormMallocs { benchmark.error("M made \(mallocs) mallocs, expected \(stormMallocs)") }
                benchmark.measurement(mallocsMetric, mallocs)
                recordTracking(benchmark, from: before, to: after, tracked: tracked)
            },
            setup: hooks.setup,
            teardown: hooks.teardown
        )

        // W: service-like Swift code (JSON coding of nested Codable values, dictionaries, arrays, strings).
        Benchmark(
            "W/\(mode.name)",
            configuration: workloadConfiguration([], tracked: tracked),
            closure: { benchmark in
                let before = AllocationTracker.tracedMemory
                blackHole(ServiceWorkload.run())
                let after = AllocationTracker.tracedMemory
                benchmark.stopMeasurement()
                recordTracking(benchmark, from: before, to: after, tracked: tracked)
            },
            setup: hooks.setup,
            teardown: hooks.teardown
        )

        // mallocCountTotal check: exactly 1000 malloc (and 1000 free) calls per iteration.
        Benchmark(
            "MallocCount/\(mode.name)",
            configuration: .init(
                metrics: [.mallocCountTotal, .freeCountTotal],
                timeUnits: .milliseconds,
                units: exactUnits,
                warmupIterations: 1,
                scalingFactor: .one,
                maxDuration: .seconds(1),
                maxIterations: 200
            ),
            closure: { _ in
                cw_malloc_free_n(1000, 64)
            },
            setup: countingHooks.setup,
            teardown: countingHooks.teardown
        )

        // The same counters on a small W run (2 threads x 50 requests): the count should not depend on the mode.
        Benchmark(
            "MallocCountW/\(mode.name)",
            configuration: .init(
                metrics: [.mallocCountTotal, .freeCountTotal],
                timeUnits: .milliseconds,
                units: exactUnits,
                warmupIterations: 1,
                scalingFactor: .one,
                maxDuration: .seconds(1),
                maxIterations: 20
            ),
            closure: { _ in
                blackHole(ServiceWorkload.run(requests: 50))
            },
            setup: countingHooks.setup,
            teardown: countingHooks.teardown
        )
    }
}

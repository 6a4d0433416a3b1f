// Cost of a symbolicated snapshot of 10 000 distinct call stacks (sites), cold (empty symbol cache: every
// address resolved through the Runtime module's ELF/DWARF reading) and warm (a second snapshot of the same
// program: cache hits only). Budget: under 1 s cold and under 50 ms warm.
//
// The sites are 10 000 distinct paths through a binary recursion 14 levels deep (`SiteTree`), each holding one
// live 16-byte block, as a service's many stacks share most of their functions. The number of distinct return
// addresses is reported as a metric, since the cold cost is per address and the warm cost per frame.

@_spi(Testing) import AllocationTracking
import Benchmark
import Workloads

let addressesMetric = BenchmarkMetric.custom("distinct addresses", useScalingFactor: false)
let sitesMetric = BenchmarkMetric.custom("sites", useScalingFactor: false)

func configuration() -> Benchmark.Configuration {
    .init(metrics: [.wallClock, sitesMetric, addressesMetric], timeUnits: .milliseconds,
          units: [sitesMetric: .count, addressesMetric: .count],
          warmupIterations: 0, scalingFactor: .one, maxDuration: .seconds(10), maxIterations: 10)
}

func setup() throws {
    AllocationTracker.stop()
    try AllocationTracker.start(.init(maxFrames: 32, unwinder: .libunwind))
    SiteTree.build(sites: 10_000)
}

func teardown() {
    SiteTree.release()
    AllocationTracker.stop()
}

func record(_ benchmark: Benchmark, _ snapshot: Snapshot) {
    let sites = snapshot.traces.filter { $0.size == SiteTree.blockSize && $0.count == 1 }.count
    benchmark.measurement(sitesMetric, sites)
    benchmark.measurement(addressesMetric, Set(snapshot.traces.flatMap { $0.traceback.frames.map(\.address) }).count)
    if sites < 10_000 { benchmark.error("only \(sites) sites in the snapshot") }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark("Snapshot 10k sites/cold", configuration: configuration(), closure: { benchmark in
        benchmark.stopMeasurement()
        AllocationTracker._removeCachedSymbols()
        benchmark.startMeasurement()
        let snapshot = try AllocationTracker.takeSnapshot()
        benchmark.stopMeasurement()
        record(benchmark, snapshot)
    }, setup: { try setup() }, teardown: { teardown() })

    Benchmark("Snapshot 10k sites/warm", configuration: configuration(), closure: { benchmark in
        benchmark.stopMeasurement()
        _ = try AllocationTracker.takeSnapshot()  // fills the cache
        benchmark.startMeasurement()
        let snapshot = try AllocationTracker.takeSnapshot()
        benchmark.stopMeasurement()
        record(benchmark, snapshot)
    }, setup: { try setup() }, teardown: { teardown() })

    Benchmark("Snapshot 10k sites/unsymbolicated", configuration: configuration(), closure: { benchmark in
        let snapshot = try AllocationTracker.takeSnapshot(symbolicate: false)
        benchmark.stopMeasurement()
        benchmark.measurement(sitesMetric, snapshot.traces.count)
    }, setup: { try setup() }, teardown: { teardown() })
}

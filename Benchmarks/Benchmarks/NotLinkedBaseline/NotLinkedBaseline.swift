// The workloads of TrackingOverhead in an executable that does not link swift-allocation-tracking at all: the
// "not linked" baseline for the "linked but off" case (M/off, W/off there). ordo-one/benchmark's own malloc
// interposer is present in both executables.

import Benchmark
import CWorkloads
import Workloads

let benchmarks: @Sendable () -> Void = {
    let stormMallocs = MallocStorm.mallocCount()
    let mallocsMetric = BenchmarkMetric.custom("workload mallocs", useScalingFactor: false)
    let exactUnits: [BenchmarkMetric: BenchmarkUnits] = [.mallocCountTotal: .count, .freeCountTotal: .count,
                                                         mallocsMetric: .count]

    Benchmark(
        "M/notLinked",
        configuration: .init(metrics: [.wallClock, .cpuTotal, mallocsMetric], timeUnits: .milliseconds,
                             units: exactUnits, warmupIterations: 1,
                             scalingFactor: .one, maxDuration: .seconds(3), maxIterations: 21),
        closure: { benchmark in
            let mallocs = MallocStorm.run()
            benchmark.stopMeasurement()
            if mallocs != stormMallocs { benchmark.error("M made \(mallocs) mallocs, expected \(stormMallocs)") }
            benchmark.measurement(mallocsMetric, mallocs)
        }
    )

    Benchmark(
        "W/notLinked",
        configuration: .init(metrics: [.wallClock, .cpuTotal], timeUnits: .milliseconds,
                             units: exactUnits, warmupIterations: 1,
                             scalingFactor: .one, maxDuration: .seconds(3), maxIterations: 21),
        closure: { _ in
            blackHole(ServiceWorkload.run())
        }
    )

    Benchmark(
        "MallocCount/notLinked",
        configuration: .init(metrics: [.mallocCountTotal, .freeCountTotal], timeUnits: .milliseconds,
                             units: exactUnits, warmupIterations: 1,
                             scalingFactor: .one, maxDuration: .seconds(1), maxIterations: 200),
        closure: { _ in
            cw_malloc_free_n(1000, 64)
        }
    )

    Benchmark(
        "MallocCountW/notLinked",
        configuration: .init(metrics: [.mallocCountTotal, .freeCountTotal], timeUnits: .milliseconds,
                             units: exactUnits, warmupIterations: 1,
                             scalingFactor: .one, maxDuration: .seconds(1), maxIterations: 20),
        closure: { _ in
            blackHole(ServiceWorkload.run(requests: 50))
        }
    )
}

// Cross-check of the benchmark numbers without ordo-one/benchmark in the process (its malloc interposer adds a
// header to every block and an extra call to every malloc/free): times workloads M and W with tracking off,
// .framePointers and .libunwind (maxFrames 32), and sampled (libunwind; 64 KiB, 512 KiB, 4 MiB), with 1 and 2 threads, and prints wall and CPU time medians.
//
//     swift run -c release WorkloadTiming [repetitions [workload [mode]]]   (defaults: 5, M and W, every mode)
//     WATCHDOG=off swift run -c release WorkloadTiming …                (tracked without the report watchdog)
//
// Prints a markdown table, then every sample (ms, in order) so drift across repetitions is visible.

import AllocationTracking
import Workloads

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

func now(_ clock: clockid_t) -> Double {
    var ts = timespec()
    clock_gettime(clock, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted[sorted.count / 2]
}

let repetitions = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 5 : 5
let modes: [(String, AllocationTracker.Configuration.Unwinder?, AllocationTracker.Configuration.Sampling)] = [
    ("off", nil, .exact), ("framePointers", .framePointers, .exact), ("libunwind", .libunwind, .exact),
    ("sampled64KiB", .libunwind, .poisson(meanBytes: 64 << 10)),
    ("sampled512KiB", .libunwind, .poisson(meanBytes: 512 << 10)),
    ("sampled4MiB", .libunwind, .poisson(meanBytes: 4 << 20)),
]
let only = CommandLine.arguments.count > 2 ? CommandLine.arguments[2] : nil
// One mode (and `off`, the ratios' base), e.g. for `perf record` of that mode alone.
let onlyMode = CommandLine.arguments.count > 3 ? CommandLine.arguments[3] : nil
let workloads: [(String, (Int) -> Int)] = [
    ("M", { MallocStorm.run(threads: $0) }),
    ("W", { ServiceWorkload.run(threads: $0) }),
].filter { only == nil || $0.0 == only }
var samples: [String] = []
// WATCHDOG=off: no report features, so no watchdog thread (the default configuration runs one).
let limits: AllocationTracker.Configuration.Limits = getenv("WATCHDOG").map { String(cString: $0) } == "off"
    ? .init(containerFraction: nil, onAllocationFailure: false) : .init()

print("| workload | threads | mode | wall p50 (ms) | CPU p50 (ms) | wall ratio vs off | CPU ratio vs off | traced allocations / run |")
print("|---|---:|---|---:|---:|---:|---:|---:|")
for (name, workload) in workloads {
    for threads in [1, 2] {
        var offWall = 0.0, offCPU = 0.0
        for (modeName, unwinder, sampling) in modes where onlyMode == nil || modeName == onlyMode || unwinder == nil {
            AllocationTracker.stop()
            if let unwinder { try AllocationTracker.start(.init(maxFrames: 32, unwinder: unwinder, limits: limits, sampling: sampling)) }
            _ = workload(threads)  // warm-up
            var walls: [Double] = [], cpus: [Double] = []
            var traced = 0
            for _ in 0..<repetitions {
                let before = AllocationTracker.tracedMemory.totalAllocations
                let w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID)
                _ = workload(threads)
                walls.append((now(CLOCK_MONOTONIC) - w0) * 1000)
                cpus.append((now(CLOCK_PROCESS_CPUTIME_ID) - c0) * 1000)
                traced = AllocationTracker.tracedMemory.totalAllocations - before
            }
            AllocationTracker.stop()
            let wall = median(walls), cpu = median(cpus)
            if unwinder == nil { offWall = wall; offCPU = cpu }
            func f(_ x: Double) -> String { String(Int(x.rounded())) }
            func r(_ x: Double) -> String { String((x * 100).rounded() / 100) }
            samples.append("\(name) \(threads) thread(s) \(modeName): wall \(walls.map(f)) CPU \(cpus.map(f))")
            print("| \(name) | \(threads) | \(modeName) | \(f(wall)) | \(f(cpu)) | \(r(wall / offWall)) | \(r(cpu / offCPU)) | \(traced) |")
        }
    }
}
print()
for line in samples { print(line) }
print("M mallocs per run (2 threads): \(MallocStorm.mallocCount()), (1 thread): \(MallocStorm.mallocCount(threads: 1))")

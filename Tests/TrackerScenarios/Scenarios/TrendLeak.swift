@_spi(Testing) import AllocationTracking
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One steadily leaking line among a cache that warms up then holds and noisy, bounded churn, in a fake cgroup
/// v2 tree whose usage this process writes as a function of the monotonic clock (so its rate is exact):
/// 1. noise just under the limit (1 s): no predictive report, however the first few samples happen to lie;
/// 2. steady growth (1.5 s) with a far limit: the time to the limit and the suspects, against the truth;
/// 3. the limit moved to one second ahead: the predictive report, once.
/// Arguments: the fake tree's root (with `proc_cgroup` and `cg/test/`), the report directory.
enum TrendLeakScenario: Scenario {
    static let name = "trend-leak"
    static let leakBytes = 1000
    static let leakRate = 100_000.0  // bytes per second, by the clock
    static let usageRate = 200e6
    static let inactive = 50_000_000
    nonisolated(unsafe) static var leakLine = 0
    nonisolated(unsafe) static var cacheLine = 0
    nonisolated(unsafe) static var churnLine = 0

    @inline(never) static func leak() -> UnsafeMutableRawPointer? {
        let block = malloc(leakBytes); leakLine = #line
        return block
    }

    @inline(never) static func cache() -> UnsafeMutableRawPointer? {
        let block = malloc(2000); cacheLine = #line
        return block
    }

    @inline(never) static func churn(_ size: Int) -> UnsafeMutableRawPointer? {
        let block = malloc(size); churnLine = #line
        return block
    }

    static func run(_ arguments: ArraySlice<String>) {
        let root = String(arguments.dropFirst().first!)
        let directory = String(arguments.dropFirst(2).first!)
        let group = root + "/cg/test"
        func write(_ file: String, _ value: Int) {
            try! "\(value)\n".write(toFile: group + "/" + file, atomically: true, encoding: .utf8)
        }
        try! "anon 1\ninactive_file \(inactive)\nactive_file 7\n".write(toFile: group + "/memory.stat", atomically: true,
                                                                         encoding: .utf8)
        write("memory.max", 1_000_000_000)
        write("memory.current", 1_030_000_000)

        var configuration = AllocationTracker.Configuration(
            report: .init(directory: directory, standardError: false),
            limits: .init(containerFraction: nil, onAllocationFailure: false, pollInterval: 0.01))
        configuration.limits.cgroupRoot = root + "/cg"
        configuration.limits.procSelfCgroup = root + "/proc_cgroup"
        configuration.limits.predictedExhaustion = .milliseconds(1500)
        configuration.trend.interval = .milliseconds(50)
        configuration.trend.length = .seconds(10)
        try! AllocationTracker.start(configuration)

        var random = SplitMix(seed: 14)
        var leaked: [UnsafeMutableRawPointer?] = []
        leaked.reserveCapacity(10_000)
        var cached: [UnsafeMutableRawPointer?] = []
        cached.reserveCapacity(1000)
        var churned = [UnsafeMutableRawPointer?](repeating: nil, count: 256)
        let start = now()

        /// One tick of the workload, at elapsed time `t`: the leak catches up with the clock, the cache fills for
        /// its first half second, 20 churn slots are replaced with blocks of random size.
        func tick(_ t: Double) {
            while Double(leaked.count * leakBytes) < leakRate * t { leaked.append(leak()) }
            while t < 0.5, cached.count < Int(t * 500) { cached.append(cache()) }
            for _ in 0..<20 {
                let slot = Int(random.next() % 256)
                free(churned[slot])
                churned[slot] = churn(64 + Int(random.next() % 8192))
            }
            usleep(5000)
        }

        // One loop, so that every tick is called from the same place: the sites' stacks are the same in every
        // phase, and the names the warm-up snapshot resolved serve the trend's suspects and the report later (a
        // cold lookup in this debug binary takes longer than the phases; a service's names are warm by then).
        var phase = 1
        var phaseEnd = start + 1.0
        var warmed = false
        var t1 = 0.0
        var phase3Deadline = Double.infinity
        func usage() -> Int { 1_030_000_000 + Int(usageRate * (now() - t1)) }
        while true {
            let t = now() - start
            switch phase {
            case 1:
                // 1. Noise: the working set 980 MB ± 15 MB, 20 MB under the 1 GB limit.
                write("memory.current", 1_030_000_000 + Int(random.next() % 30_000_001) - 15_000_000)
                if !warmed, t > 0.3 {
                    _ = try! AllocationTracker.takeSnapshot()
                    warmed = true
                    phaseEnd = now() + 1.2  // the leak's catch-up after the pause stays out of phase 2's windows
                }
            case 2:
                write("memory.current", usage())
            default:
                write("memory.current", usage())
            }
            tick(t)
            guard now() >= phaseEnd else { continue }
            if phase == 1 {
                print("phase1Reports=\(reports(directory).count)")
                // 2. Steady growth at 200 MB/s from 1.03 GB of usage, the limit 4 GB away.
                write("memory.max", 4_000_000_000)
                t1 = now()
                phase = 2
                phaseEnd = t1 + 1.5
            } else if phase == 2 {
                let long = try! AllocationTracker.trend(over: .milliseconds(2400))
                let trend = try! AllocationTracker.trend(over: .seconds(1))
                let truth = (4_000_000_000 - Double(usage() - inactive)) / usageRate
                print("eta=\(trend.timeToContainerLimit.map { String(describing: $0) } ?? "nil") truthEta=\(truth)")
                print("etaSeconds=\(trend.timeToContainerLimit.map { Double($0.components.seconds) + Double($0.components.attoseconds) * 1e-18 } ?? -1)")
                for (index, suspect) in long.suspects.enumerated() {
                    print("suspect\(index)=\(suspect.traceback.frames.first { $0.file?.hasSuffix("TrendLeak.swift") == true }?.line ?? 0) "
                          + "rate=\(suspect.bytesPerSecond) fit=\(suspect.fit) live=\(suspect.liveBytes)")
                }
                print("truthRate=\(leakRate) leakLine=\(leakLine) cacheLine=\(cacheLine) churnLine=\(churnLine)")
                print("phase2Reports=\(reports(directory).count)")
                // 3. The limit one second ahead of the working set: within the 1.5 s horizon.
                write("memory.max", usage() - inactive + Int(usageRate))
                phase = 3
                phaseEnd = now() + 0.6
                phase3Deadline = now() + 30
            } else if reportIsComplete(directory) || now() > phase3Deadline {
                // Until the report is complete (its .json comes after its .txt), not a fixed time: its names
                // outside the warmed sites (the C library's frames) may take seconds in this debug binary, and
                // stopping sooner would abandon it. At most 30 s.
                break
            }
        }
        let files = reports(directory)
        print("phase3Reports=\(files.count)")
        for file in files {
            let text = try! String(contentsOfFile: directory + "/" + file, encoding: .utf8)
            print("REPORT \(file)\n\(text)END REPORT")
        }
        AllocationTracker.stop()
        for block in leaked + cached + churned { free(block) }
    }

    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
    }

    static func reportIsComplete(_ directory: String) -> Bool {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).contains { $0.hasSuffix(".json") }
    }

    static func reports(_ directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasPrefix("alloc-report-") && $0.hasSuffix(".txt") }.sorted()
    }
}

/// A seeded generator (SplitMix64), so the noise is the same on every run.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

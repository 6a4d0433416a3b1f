@_spi(Testing) import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

enum SoftLimitScenario: Scenario {
    static let name = "softlimit"

    static func run(_ arguments: ArraySlice<String>) {
        // Crosses a tracked-bytes soft limit once, then oscillates around it: exactly one report. `softlimit <dir>
        // sampled`: the same in sampled mode, T = 128 KiB: a 1 MiB block is sampled with p = 1 − e^−8 = 0.9997 and
        // weighs 1.0003 MiB, so the estimate of the 10 blocks crosses 8 MiB unless 3 were missed (P < 1e-8).
        let directory = String(arguments.dropFirst().first!)
        let sampled = arguments.dropFirst(2).first == "sampled"
        let calls = Atomic<Int>(0)
        AllocationTracker.onReport = { _ in calls.add(1, ordering: .relaxed) }
        try! AllocationTracker.start(.init(report: .init(directory: directory, standardError: false),
                                           limits: .init(trackedBytes: 8 << 20, containerFraction: nil,
                                                         minimumInterval: 60, pollInterval: 0.02),
                                           sampling: sampled ? .poisson(meanBytes: 128 << 10) : .exact))
        if sampled { AllocationTracker._seedSampling(1) }
        var blocks = [UnsafeMutableRawPointer?](repeating: nil, count: 10)
        var line: Int32 = 0
        for i in 0..<10 { blocks[i] = ats_malloc_touched(1 << 20, &line) }
        usleep(300_000)
        for _ in 0..<15 {  // below the re-arm level and back over the limit, inside the minimum interval
            for i in 0..<3 { free(blocks[i]); blocks[i] = nil }
            usleep(50_000)
            for i in 0..<3 { blocks[i] = ats_malloc_touched(1 << 20, &line) }
            usleep(50_000)
        }
        AllocationTracker.stop()
        for block in blocks { free(block) }
        print("line=\(line) callbacks=\(calls.load(ordering: .relaxed))")
    }
}

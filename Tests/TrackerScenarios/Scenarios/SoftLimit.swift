import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

enum SoftLimitScenario: Scenario {
    static let name = "softlimit"

    static func run(_ arguments: ArraySlice<String>) {
        // Crosses a tracked-bytes soft limit once, then oscillates around it: exactly one report.
        let directory = String(arguments.dropFirst().first!)
        let calls = Atomic<Int>(0)
        AllocationTracker.onReport = { _ in calls.add(1, ordering: .relaxed) }
        try! AllocationTracker.start(.init(report: .init(directory: directory, standardError: false),
                                           limits: .init(trackedBytes: 8 << 20, containerFraction: nil,
                                                         minimumInterval: 60, pollInterval: 0.02)))
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

import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum ContainerGrowScenario: Scenario {
    static let name = "container-grow"

    static func run(_ arguments: ArraySlice<String>) {
        // Grows by 1 MiB every 20 ms (pages touched) until the kernel's OOM killer ends it; the report must be
        // written before that, at 90 % of the cgroup's limit (so within ~0.25 s of crossing it, at this rate).
        let directory = String(arguments.dropFirst().first!)
        try! AllocationTracker.start(.init(report: .init(directory: directory),
                                           limits: .init(containerFraction: 0.9, pollInterval: 0.02)))
        var line: Int32 = 0
        var kept: [UnsafeMutableRawPointer?] = []
        kept.reserveCapacity(100_000)
        // The growing site's names resolved before the growth (as a service's are by the time it nears its limit):
        // a cold lookup in this debug binary on a loaded machine can outlast the ~0.3 s between the crossing and
        // the kill, and the report waits for names (this scenario's budget is 30 s) before it is written.
        // One loop, so that every block has the same stack as the one the snapshot resolved.
        var warmed = false
        while true {
            kept.append(ats_malloc_touched(1 << 20, &line))
            if !warmed {
                _ = try! AllocationTracker.takeSnapshot()
                warmed = true
            }
            usleep(20_000)
        }
    }
}

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
        while true {
            kept.append(ats_malloc_touched(1 << 20, &line))
            usleep(20_000)
        }
    }
}

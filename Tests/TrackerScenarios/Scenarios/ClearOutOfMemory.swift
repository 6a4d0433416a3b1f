import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum ClearOutOfMemoryScenario: Scenario {
    static let name = "clear-out-of-memory"

    static func run(_ arguments: ArraySlice<String>) {
        // clearTraces when not even the smallest tables can be mapped: tracking stops the whole way, the watchdog
        // thread included, rather than leaving it to poll for a tracker that is gone. A soft limit that is never
        // reached keeps a watchdog running whose polls do not allocate (no names to refresh, no report).
        try! AllocationTracker.start(.init(limits: .init(trackedBytes: 1 << 40, containerFraction: nil,
                                                         onAllocationFailure: false, pollInterval: 0.01)))
        let smallest = AllocationTracker.trackerMemory
        // Enough live blocks that the tables grow well past their first size.
        let count = 200_000
        let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: count)
        guard ats_allocate("malloc", count, 16, blocks) == count else { fail("could not allocate the blocks") }
        let grown = AllocationTracker.trackerMemory
        usleep(50_000)
        let threadsBefore = threads()
        // The address space mapped now less the tables clearTraces unmaps, less 1 MiB: nothing more can be mapped
        // once they are gone. (Below the address space in use: Linux allows that, and refuses new mappings.)
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &limit)
        limit.rlim_cur = rlim_t(mappedBytes() - grown - (1 << 20))
        guard setrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &limit) == 0 else { fail("setrlimit") }
        AllocationTracker.clearTraces()
        _ = ats_unlimit_address_space()
        let tracing = AllocationTracker.isTracing
        usleep(200_000)  // 20 polls: a watchdog told to stop has exited
        let threadsAfter = threads()
        ats_free_all(blocks, count)
        blocks.deallocate()
        print("tables_grew=\(grown > 2 * smallest) tracing=\(tracing) watchdog_exited=\(threadsBefore - threadsAfter == 1)")
    }

    /// The process's threads.
    static func threads() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? 0 }

    /// The process's mapped address space (`/proc/self/statm`'s first field, in pages).
    static func mappedBytes() -> Int {
        let text = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? ""
        return (Int(text.split(separator: " ").first ?? "") ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}

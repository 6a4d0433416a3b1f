import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum AccountingScenario: Scenario {
    static let name = "accounting"

    static func run(_ arguments: ArraySlice<String>) {
        // Exact process-wide counters: nothing else in this process allocates between the readings.
        var checks = 0
        func check(_ condition: Bool, _ what: @autoclosure () -> String) {
            checks += 1
            if !condition { fail(what()) }
        }
        let functions = ["malloc", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc", "memalign",
                         "valloc", "pvalloc", "strdup", "new"]
        // Per-site totals: the stacks whose totals grew between two snapshots, with what they allocated in between.
        // (By the totals' growth, not by helper frames: with frame pointers a stack through libc or libstdc++ may
        // lose the helper, and may then be the warm-up's stack too.) Snapshots are the tracker's own work, untracked.
        func snapshot() -> Snapshot { try! AllocationTracker.takeSnapshot(symbolicate: false) }
        func sitesAllocating(between earlier: Snapshot, and later: Snapshot)
            -> [(trace: Trace, blocks: Int, bytes: Int, liveBlocks: Int, liveBytes: Int)] {
            var known: [Traceback: Trace] = [:]
            for trace in earlier.traces { known[trace.traceback] = trace }
            return later.traces.compactMap { trace in
                let old = known[trace.traceback] ?? Trace(traceback: trace.traceback, size: 0, count: 0)
                let blocks = trace.allocatedCount - old.allocatedCount, bytes = trace.allocatedSize - old.allocatedSize
                return blocks == 0 && bytes == 0 ? nil : (trace, blocks, bytes, trace.count - old.count, trace.size - old.size)
            }
        }
        for unwinder in [AllocationTracker.Configuration.Unwinder.libunwind, .framePointers] {
            do { try AllocationTracker.start(.init(maxFrames: 32, unwinder: unwinder, limits: quiet)) } catch { fail("\(error)") }
            // The tracker's own threads start, name and suspend themselves without a traced allocation (usleep and
            // reading the counters allocate nothing).
            let justStarted = AllocationTracker.tracedMemory
            usleep(200_000)
            let settled = AllocationTracker.tracedMemory
            check(settled.totalAllocations == justStarted.totalAllocations,
                  "the tracker's threads allocated as they started: \(justStarted) -> \(settled)")
            var blocks = [UnsafeMutableRawPointer?](repeating: nil, count: 40)
            // Warm-up: the first capture on a thread, and one-time lazy work of the first calls, happen here.
            for function in functions {
                let name = strdup(function)
                _ = ats_allocate(name, 1, 8, &blocks)
                if function == "new" { ats_delete_all(&blocks, 1) } else { ats_free_all(&blocks, 1) }
                free(name)
            }
            for function in functions {
                let count = 40, size = 1001
                // The C string is made before the first reading (bridging a Swift string may allocate).
                let name = strdup(function)
                defer { free(name) }
                let sitesBefore = snapshot()
                let before = AllocationTracker.tracedMemory
                _ = ats_allocate(name, count, size, &blocks)
                let during = AllocationTracker.tracedMemory
                let grew = during.current - before.current == count * size
                    && during.liveBlocks - before.liveBlocks == count
                    && during.totalAllocations - before.totalAllocations == count
                    && during.totalAllocatedBytes - before.totalAllocatedBytes == count * size
                    && during.peak >= during.current
                check(grew, "\(function)/\(unwinder): \(before) -> \(during)")
                if function == "new" { ats_delete_all(&blocks, count) } else { ats_free_all(&blocks, count) }
                let after = AllocationTracker.tracedMemory
                check(after.current == before.current && after.liveBlocks == before.liveBlocks
                      && after.peak == during.peak && after.droppedAllocations == 0,
                      "\(function)/\(unwinder) after free: \(before) -> \(after)")
                // Its one site holds nothing more than before (nothing at all when the stack is new; with frame
                // pointers, strdup's stack is also the one that made `name`) and keeps what it allocated.
                let sites = sitesAllocating(between: sitesBefore, and: snapshot())
                check(sites.count == 1 && sites[0].liveBlocks == 0 && sites[0].liveBytes == 0 && sites[0].blocks == count
                      && sites[0].bytes == count * size
                      && (sites[0].trace.count == 0 || sitesBefore.traces.contains { $0.traceback == sites[0].trace.traceback }),
                      "\(function)/\(unwinder) site totals: \(sites)")
            }
            AllocationTracker.stop()
        }
        // Blocks allocated before start and freed after it are unknown to the tables: the counters do not move.
        var early = [UnsafeMutableRawPointer?](repeating: nil, count: 100)
        let earlyName = strdup("malloc")
        _ = ats_allocate(earlyName, 100, 4096, &early)
        free(earlyName)
        do { try AllocationTracker.start(.init(unwinder: .framePointers, limits: quiet)) } catch { fail("\(error)") }
        let beforeEarlyFrees = AllocationTracker.tracedMemory
        ats_free_all(&early, 100)
        let afterEarlyFrees = AllocationTracker.tracedMemory
        check(afterEarlyFrees == beforeEarlyFrees, "frees of blocks from before start: \(beforeEarlyFrees) -> \(afterEarlyFrees)")
        // realloc(p, 0) frees p (glibc): current falls by exactly its size. Impossible sizes record nothing.
        let shrinking = ats_realloc(nil, 64)
        let beforeRealloc = AllocationTracker.tracedMemory
        let reallocated = ats_realloc(shrinking, 0)
        let afterRealloc = AllocationTracker.tracedMemory
        check(reallocated == nil && afterRealloc.current == beforeRealloc.current - 64
              && afterRealloc.liveBlocks == beforeRealloc.liveBlocks - 1, "realloc(p, 0): \(beforeRealloc) -> \(afterRealloc)")
        var impossible: UnsafeMutableRawPointer? = nil
        let impossibleName = strdup("calloc")
        let beforeImpossible = AllocationTracker.tracedMemory
        let impossibleResult = ats_allocate(impossibleName, 1, Int.max, &impossible)
        let afterImpossible = AllocationTracker.tracedMemory
        free(impossibleName)
        check(impossibleResult == 0 && afterImpossible == beforeImpossible, "calloc(Int.max): \(beforeImpossible) -> \(afterImpossible)")
        // A partially freed site: live what is left, totals everything it allocated.
        var partial = [UnsafeMutableRawPointer?](repeating: nil, count: 10)
        let partialName = strdup("malloc")
        let sitesBeforePartial = snapshot()
        _ = ats_allocate(partialName, 10, 300, &partial)
        ats_free_all(&partial, 4)
        let partialSites = sitesAllocating(between: sitesBeforePartial, and: snapshot())
        check(partialSites.count == 1 && partialSites[0].trace.count == 6 && partialSites[0].trace.size == 1800
              && partialSites[0].trace.allocatedCount == 10 && partialSites[0].trace.allocatedSize == 3000
              && partialSites[0].blocks == 10, "partially freed site: \(partialSites)")
        partial.withUnsafeMutableBufferPointer { ats_free_all($0.baseAddress! + 4, 6) }
        free(partialName)
        // Peak: rises only when blocks are added; resetPeak sets it to current; clearTraces zeroes both.
        let base = AllocationTracker.tracedMemory
        let big = ats_malloc_at_depth(1 << 20, 1)
        let high = AllocationTracker.tracedMemory
        free(big)
        let low = AllocationTracker.tracedMemory
        check(high.peak == base.current + (1 << 20) && low.peak == high.peak && low.current == base.current,
              "peak: \(base) \(high) \(low)")
        AllocationTracker.resetPeak()
        check(AllocationTracker.tracedMemory.peak == low.current, "resetPeak")
        let held = ats_malloc_at_depth(100, 1)
        AllocationTracker.clearTraces()
        let cleared = AllocationTracker.tracedMemory
        check(cleared.current == 0 && cleared.peak == 0 && cleared.liveBlocks == 0, "clearTraces: \(cleared)")
        free(held)
        check(AllocationTracker.tracedMemory.current == 0, "free after clearTraces")
        AllocationTracker.stop()
        print("accounting ok checks=\(checks)")
    }
}

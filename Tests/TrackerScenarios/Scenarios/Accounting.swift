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
        for unwinder in [AllocationTracker.Configuration.Unwinder.libunwind, .framePointers] {
            do { try AllocationTracker.start(.init(maxFrames: 32, unwinder: unwinder, limits: quiet)) } catch { fail("\(error)") }
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

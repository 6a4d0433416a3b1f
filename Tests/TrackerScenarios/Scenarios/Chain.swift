import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum ChainScenario: Scenario {
    static let name = "chain"

    static func run(_ arguments: ArraySlice<String>) {
        // Run with LD_PRELOAD of a counting interposer: its malloc is the "next" one we forward to.
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "counting_interposer_mallocs") else {
            fail("counting interposer not preloaded")
        }
        let counter = symbol.assumingMemoryBound(to: UInt64.self)
        do { try AllocationTracker.start(.init(maxFrames: 16, unwinder: .framePointers, limits: quiet)) } catch { fail("\(error)") }
        var blocks = [UnsafeMutableRawPointer?](repeating: nil, count: 1000)
        // Warm up once: the first capture on a thread reads its stack bounds (pthread_getattr_np allocates,
        // untracked), and first calls do one-time lazy work.
        _ = ats_allocate("malloc", 1000, 48, &blocks)
        ats_free_all(&blocks, 1000)
        let name = strdup("malloc")  // bridging a Swift string to a C string may allocate: do it outside the window
        let seenBefore = counter.pointee
        let trackedBefore = AllocationTracker.tracedMemory.totalAllocations
        _ = ats_allocate(name, 1000, 48, &blocks)
        let seen = counter.pointee - seenBefore
        let tracked = AllocationTracker.tracedMemory.totalAllocations - trackedBefore
        let held = helperBytes(try! AllocationTracker.takeSnapshot())
        ats_free_all(&blocks, 1000)
        free(name)
        print("next_allocator_mallocs=\(seen)")
        print("tracked_allocations=\(tracked)")
        print("helper_bytes=\(held.size) helper_blocks=\(held.count)")
    }
}

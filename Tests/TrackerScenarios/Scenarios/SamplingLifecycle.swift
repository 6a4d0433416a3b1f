@_spi(Testing) import AllocationTracking
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Sampled mode: no sampled block double-counted or lost across realloc, clearTraces, fork and stop/start, and
/// measurements exact. In a process where nothing else allocates, so the process-wide estimates must return to
/// exactly 0 when every block is freed (a free subtracts exactly what its allocation added, and a block from
/// before a clear or a restart subtracts nothing).
enum SamplingLifecycleScenario: Scenario {
    static let name = "sampling-lifecycle"

    static func run(_ arguments: ArraySlice<String>) {
        var checks = 0
        func check(_ condition: Bool, _ what: @autoclosure () -> String) {
            checks += 1
            if !condition { fail(what()) }
        }
        // T = 4 KiB: many samples from a few thousand blocks, so every path below sees sampled blocks.
        let sampled = AllocationTracker.Configuration(maxFrames: 8, unwinder: .framePointers, limits: quiet,
                                                      sampling: .poisson(meanBytes: 4096))
        func start(_ configuration: AllocationTracker.Configuration) {
            do { try AllocationTracker.start(configuration) } catch { fail("\(error)") }
            AllocationTracker._seedSampling(42)
        }
        // (An autoclosure: interpolating a value allocates, and the first time fills runtime caches for good.)
        func zero(_ what: @autoclosure () -> String) {
            let m = AllocationTracker.tracedMemory
            check(m.current == 0 && m.liveBlocks == 0, "\(what()): current=\(m.current) liveBlocks=\(m.liveBlocks)")
        }
        // Every array is made before the first reading: its own storage would be a (possibly sampled) live block.
        var blocks = [UnsafeMutableRawPointer?](repeating: nil, count: 4000)
        var after = [UnsafeMutableRawPointer?](repeating: nil, count: 1000)
        var second = [UnsafeMutableRawPointer?](repeating: nil, count: 1000)
        func allocateAll(_ size: (Int) -> Int) {
            for i in blocks.indices { blocks[i] = malloc(size(i)) }
        }
        func freeAll() {
            for i in blocks.indices { free(blocks[i]); blocks[i] = nil }
        }
        let scopes = [AllocationTracker.MeasurementScope.thread, .process]
        func measured(_ scope: AllocationTracker.MeasurementScope) -> (AllocationMeasurement, TracedMemory, TracedMemory) {
            let before = AllocationTracker.tracedMemory
            let measurement: AllocationMeasurement
            do {
                measurement = try AllocationTracker.measure(scope) {
                    for i in 0..<1000 { blocks[i] = malloc(24) }
                }
            } catch { fail("\(error)") }
            return (measurement, before, AllocationTracker.tracedMemory)
        }
        // Warm-up, before tracking (a measurement starts and stops it): what the first measurements leave
        // allocated for good (the Swift runtime's metadata caches) is made here, and is unknown to the sessions below.
        for scope in scopes {
            _ = measured(scope)
            for i in 0..<1000 { free(blocks[i]); blocks[i] = nil }
        }

        // 1. realloc: every block grows and shrinks through sizes around T; each step removes the old block's
        //    weight (if it was sampled) and adds the new one's (if it is).
        start(sampled)
        allocateAll { 16 + $0 % 300 }
        let grown = AllocationTracker.tracedMemory
        check(grown.current > 0 && grown.liveBlocks > 0, "nothing sampled: \(grown)")
        for round in 0..<4 {
            for i in blocks.indices { blocks[i] = realloc(blocks[i], [9000, 100, 70000, 1][round] + i % 7) }
        }
        freeAll()
        zero("after realloc and free")

        // 2. clearTraces: blocks from before the clear are not in the new table (nor its free filter); freeing them
        //    after it subtracts nothing.
        allocateAll { 100 + $0 }
        AllocationTracker.clearTraces()
        zero("right after clearTraces")
        for i in after.indices { after[i] = malloc(5000 + i) }
        let held = AllocationTracker.tracedMemory
        check(held.current > 0, "nothing sampled after clearTraces")
        freeAll()  // the old blocks
        check(AllocationTracker.tracedMemory.current == held.current, "freeing pre-clear blocks changed current: \(held) -> \(AllocationTracker.tracedMemory)")
        for i in after.indices { free(after[i]); after[i] = nil }
        zero("after clearTraces and free")

        // 3. fork: the child inherits the table; freeing every block there returns its estimate to 0, and the
        //    parent's too.
        allocateAll { 64 + $0 * 3 }
        let child = fork()
        if child == 0 {
            freeAll()
            let m = AllocationTracker.tracedMemory
            _exit(m.current == 0 && m.liveBlocks == 0 ? 0 : 3)
        }
        var status: Int32 = 0
        waitpid(child, &status, 0)
        check(status == 0, "the forked child's estimate did not return to 0 (status \(status))")
        freeAll()
        zero("parent after fork and free")

        // 4. Measurements stay exact in sampled mode (weight 1 each): thread scope and process scope.
        for scope in scopes {
            let (measurement, before, during) = measured(scope)
            check(measurement.allocations == 1000 && measurement.allocatedBytes == 24_000,
                  "\(scope) measurement: \(measurement.allocations) allocations, \(measurement.allocatedBytes) B")
            // The global counters saw them with weight 1 too (the measurement's own work is untracked).
            check(during.totalAllocations - before.totalAllocations == 1000
                  && during.totalAllocatedBytes - before.totalAllocatedBytes == 24_000,
                  "\(scope): global counters moved by \(during.totalAllocations - before.totalAllocations) blocks, "
                  + "\(during.totalAllocatedBytes - before.totalAllocatedBytes) B")
            for i in 0..<1000 { free(blocks[i]); blocks[i] = nil }
            zero("after the \(scope) measurement's frees")
        }
        // After a measurement the thread samples again: the estimate of 4000 blocks of 100 B at T = 4 KiB is
        // within 4σ = 4·√(4000·(1 − p)/p) = 1610 of 4000 (p = 1 − e^(−100/4096)), and it is not exactly 4000 (as
        // it would be if they were all recorded with weight 1): k sampled blocks of weight 1/p = 41.46 estimate
        // 41.46·k, which is never 4000.
        let before = AllocationTracker.tracedMemory
        allocateAll { _ in 100 }
        let estimate = AllocationTracker.tracedMemory.totalAllocations - before.totalAllocations
        freeAll()
        check(abs(estimate - 4000) <= 1610 && estimate != 4000, "the estimate of 4000 blocks after a measurement: \(estimate)")
        zero("after sampling again")
        // 5. stop/start with another interval: the first session's blocks are unknown to the second.
        allocateAll { 200 + $0 }
        AllocationTracker.stop()
        start(.init(maxFrames: 8, unwinder: .framePointers, limits: quiet, sampling: .poisson(meanBytes: 65536)))
        for i in second.indices { second[i] = malloc(3000 + i) }
        let mid = AllocationTracker.tracedMemory
        freeAll()
        check(AllocationTracker.tracedMemory == mid, "freeing the first session's blocks changed the second's: \(mid) -> \(AllocationTracker.tracedMemory)")
        for i in second.indices { free(second[i]); second[i] = nil }
        zero("after stop/start and free")

        AllocationTracker.stop()
        print("sampling-lifecycle ok checks=\(checks)")
    }
}

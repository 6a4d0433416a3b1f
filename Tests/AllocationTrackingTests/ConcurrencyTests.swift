import AllocationTracking
import AllocationTrackingTestSupport
import CAllocationTracking
import Foundation
import Testing

/// A worker thread's pool of blocks, driven by `ats_stress_step` (inside the helper section).
final class StressPool: @unchecked Sendable {
    var slots: [UnsafeMutableRawPointer?]
    var sizes: [Int]
    var rng: UInt64
    var held = 0

    init(slots: Int, seed: UInt64) {
        self.slots = Array(repeating: nil, count: slots)
        self.sizes = Array(repeating: 0, count: slots)
        self.rng = seed
    }

    func run(steps: Int) {
        slots.withUnsafeMutableBufferPointer { slots in
            sizes.withUnsafeMutableBufferPointer { sizes in
                for _ in 0..<steps {
                    ats_stress_step(slots.baseAddress, sizes.baseAddress, slots.count, &rng, &held)
                }
            }
        }
    }

    func freeAll() {
        for i in slots.indices {
            free(slots[i])
            slots[i] = nil
            sizes[i] = 0
        }
        held = 0
    }
}

/// Runs `body` on `count` new threads and waits for them.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    for index in 0..<count {
        group.enter()
        let thread = Thread {
            body(index)
            group.leave()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
    group.wait()
}

final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}

extension TrackerTests {
    @Suite struct Concurrency {
        /// 2 threads x 1 M random malloc/realloc/free, with concurrent snapshots and start/stop toggling, then a
        /// tracked phase whose result must be exact: the helper traces hold exactly what the threads still hold.
        @Test(arguments: allUnwinders)
        func stress(unwinder: AllocationTracker.Configuration.Unwinder) throws {
            let configuration = AllocationTracker.Configuration(maxFrames: 16, unwinder: unwinder)
            let pools = [StressPool(slots: 1024, seed: 0x9E37_79B9), StressPool(slots: 1024, seed: 0x7F4A_7C15)]
            let stepsPerThread = 1_000_000
            // Phase 1: churn while another thread toggles tracking and takes snapshots.
            let done = Flag()
            let toggler = Thread {
                var round = 0
                while !done.isSet {
                    round += 1
                    try? AllocationTracker.start(configuration)
                    _ = try? AllocationTracker.takeSnapshot()
                    if round % 3 == 0 { AllocationTracker.clearTraces() }
                    _ = AllocationTracker.tracedMemory
                    if round % 2 == 0 { AllocationTracker.stop() }
                }
            }
            toggler.start()
            onThreads(2) { pools[$0].run(steps: stepsPerThread / 2) }
            done.set()
            while toggler.isExecuting || !toggler.isFinished { usleep(1000) }
            AllocationTracker.stop()
            for pool in pools { pool.freeAll() }

            // Phase 2: tracked from the start, snapshots concurrently.
            try withTracking(configuration) {
                let finished = Flag()
                let snapshotter = Thread {
                    while !finished.isSet { _ = try? AllocationTracker.takeSnapshot() }
                }
                snapshotter.start()
                onThreads(2) { pools[$0].run(steps: stepsPerThread / 2) }
                finished.set()
                while !snapshotter.isFinished { usleep(1000) }
                let held = pools.reduce(0) { $0 + $1.held }
                let heldBlocks = pools.reduce(0) { $0 + $1.slots.filter { $0 != nil }.count }
                let totals = helperTotals(try AllocationTracker.takeSnapshot())
                #expect(totals.size == held)
                #expect(totals.count == heldBlocks)
                #expect(AllocationTracker.tracedMemory.droppedAllocations == 0)
                for pool in pools { pool.freeAll() }
                let totals4161 = try helperTotals(AllocationTracker.takeSnapshot())
                #expect(totals4161.count == 0)
            }
        }

        /// The hook never allocates: whatever it needs is on the stack or in mapped tables. (Allocations made
        /// while a thread is inside the hook are counted by the interposer.)
        /// Sampled mode too (T = 4 KiB, so that the stress pools' blocks are sampled often): drawing the next
        /// interval (log() from libm) and the weights allocate nothing either.
        @Test(arguments: allUnwinders, [AllocationTracker.Configuration.Sampling.exact, .poisson(meanBytes: 4096)])
        func theHookMakesNoAllocationsOfItsOwn(unwinder: AllocationTracker.Configuration.Unwinder,
                                              sampling: AllocationTracker.Configuration.Sampling) throws {
            let before = cat_debug_internal_allocations()
            try withTracking(.init(maxFrames: 64, unwinder: unwinder, sampling: sampling)) {
                let pool = StressPool(slots: 4096, seed: 42)
                onThreads(2) { _ in
                    let local = StressPool(slots: 4096, seed: 7)
                    local.run(steps: 100_000)
                    local.freeAll()
                }
                pool.run(steps: 100_000)
                pool.freeAll()
                _ = try AllocationTracker.takeSnapshot()
            }
            #expect(cat_debug_internal_allocations() == before)
        }
    }
}

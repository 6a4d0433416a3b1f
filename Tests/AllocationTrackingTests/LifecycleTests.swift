import AllocationTracking
import AllocationTrackingTestSupport
import CAllocationTracking
import Foundation
import Testing

extension TrackerTests {
    /// start/stop/clear/peak semantics (tracemalloc's).
    @Suite struct Lifecycle {
        @Test func stoppedTrackerReportsNothingAndRefusesSnapshots() throws {
            AllocationTracker.stop()
            #expect(!AllocationTracker.isTracing)
            #expect(AllocationTracker.tracedMemory == TracedMemory())
            #expect(AllocationTracker.configuration == nil)
            #expect(AllocationTracker.tracebackLimit == 0)
            let error = #expect(throws: AllocationTrackingError.self) { try AllocationTracker.takeSnapshot() }
            #expect(error?.code == .notTracing)
        }

        @Test func startWhileTracingIsANoOp() throws {
            try withTracking(.init(maxFrames: 7, unwinder: .framePointers)) {
                try AllocationTracker.start(.init(maxFrames: 20, unwinder: .libunwind))
                #expect(AllocationTracker.configuration?.maxFrames == 7)
                #expect(AllocationTracker.configuration?.unwinder == .framePointers)
            }
            #expect(!AllocationTracker.isTracing)
        }

        @Test func stopForgetsEverythingAndFreesTheTables() throws {
            var blocks = [UnsafeMutableRawPointer?](repeating: nil, count: 50)
            try AllocationTracker.start(.init(unwinder: .framePointers))
            _ = ats_allocate("malloc", 50, 1000, &blocks)
            #expect(AllocationTracker.tracedMemory.current >= 50_000)
            #expect(AllocationTracker.trackerMemory > 0)
            AllocationTracker.stop()
            #expect(AllocationTracker.tracedMemory == TracedMemory())
            #expect(AllocationTracker.trackerMemory == 0)
            // Freed after stop and after a restart: ignored, `current` never goes negative.
            try withTracking(.init(unwinder: .framePointers)) {
                let unchanged = blocks.withUnsafeMutableBufferPointer { buffer in
                    someWindowLeavesCurrentUnchanged(batches: 10) { ats_free_all(buffer.baseAddress! + $0 * 5, 5) }
                }
                #expect(unchanged)
                #expect(AllocationTracker.tracedMemory.current >= 0)
            }
        }

        // Blocks allocated before start and freed after it leave the counters unchanged: checked exactly in a
        // quiet child process (`exactCountersInAQuietProcess`), since here other suites allocate meanwhile.

        @Test func clearTracesResetsAndKeepsTracing() throws {
            try withTracking(.init(unwinder: .framePointers)) {
                var old = [UnsafeMutableRawPointer?](repeating: nil, count: 10)
                _ = ats_allocate("malloc", 10, 5000, &old)
                AllocationTracker.clearTraces()
                #expect(AllocationTracker.isTracing)
                let cleared = AllocationTracker.tracedMemory
                // Only what the test runner's other threads allocated since (exact values: the quiet-process test).
                #expect(cleared.peak >= cleared.current)
                #expect(cleared.peak < 5000)
                let totals3378 = try helperTotals(AllocationTracker.takeSnapshot())
                #expect(totals3378.count == 0)
                // Old blocks freed later do not disturb the accounting.
                let unchanged = old.withUnsafeMutableBufferPointer { buffer in
                    someWindowLeavesCurrentUnchanged(batches: 10) { ats_free_all(buffer.baseAddress! + $0, 1) }
                }
                #expect(unchanged)
                // New blocks are traced.
                var fresh = [UnsafeMutableRawPointer?](repeating: nil, count: 3)
                _ = ats_allocate("malloc", 3, 10, &fresh)
                let totals3900 = try helperTotals(AllocationTracker.takeSnapshot())
                #expect(totals3900 == Totals(size: 30, count: 3))
                ats_free_all(&fresh, 3)
            }
        }

        @Test func peakRisesOnlyWhenBlocksAreAddedAndResets() throws {
            try withTracking(.init(unwinder: .framePointers)) {
                var blocks = [UnsafeMutableRawPointer?](repeating: nil, count: 4)
                let start = AllocationTracker.tracedMemory
                _ = ats_allocate("malloc", 4, 250_000, &blocks)
                let high = AllocationTracker.tracedMemory
                // The runner's threads may free their own blocks between the readings (current fell by 522 B in one
                // CI-like run): the same 64 KiB allowance as below; exact in the quiet child.
                #expect(high.peak >= start.current + 1_000_000 - (64 << 10), "\(start) -> \(high)")
                #expect(high.peak >= 1_000_000)
                ats_free_all(&blocks, 4)
                let low = AllocationTracker.tracedMemory
                #expect(low.peak >= high.peak)  // freeing never lowers the peak
                // The test runner's threads allocate meanwhile: within 64 KiB here, exact in the quiet child
                // (`exactCountersInAQuietProcess`).
                #expect(abs(low.current - (high.current - 1_000_000)) < 64 << 10, "\(high) -> \(low)")
                AllocationTracker.resetPeak()
                let reset = AllocationTracker.tracedMemory
                #expect(reset.peak < high.peak)
                #expect(reset.peak >= reset.current)
            }
        }

        @Test func invalidConfigurationIsRejected() throws {
            for bad in [AllocationTracker.Configuration(maxFrames: 0), .init(maxFrames: 257), .init(maxTraces: 0)] {
                let error = #expect(throws: AllocationTrackingError.self) { try AllocationTracker.start(bad) }
                #expect(error?.code == .invalidConfiguration)
                #expect(!AllocationTracker.isTracing)
            }
        }

        @Test func environmentSyntax() throws {
            typealias C = AllocationTracker.Configuration
            #expect(try C.parse(environmentValue: "1") == C())
            #expect(try C.parse(environmentValue: "off") == nil)
            #expect(try C.parse(environmentValue: " frames=24 , unwinder=framepointers ")
                    == C(maxFrames: 24, unwinder: .framePointers))
            #expect(try C.parse(environmentValue: "max_traces=100") == C(maxTraces: 100))
            for bad in ["frames=0", "frames=x", "unwinder=dwarf", "colour=blue", "frames", "=3"] {
                let error = #expect(throws: AllocationTrackingError.self) { try C.parse(environmentValue: bad) }
                #expect(error?.code == .invalidConfiguration, "\(bad)")
            }
        }

        /// A full trace table drops further new stacks, counts them, and never fails the allocation.
        @Test func fullTraceTableCountsDroppedAllocations() throws {
            try withTracking(.init(maxFrames: 8, unwinder: .framePointers, maxTraces: 16)) {
                var blocks: [UnsafeMutableRawPointer] = []
                for depth in 1...64 { blocks.append(try #require(ats_malloc_at_depth(32, Int32(depth)))) }
                let memory = AllocationTracker.tracedMemory
                #expect(memory.droppedAllocations > 0)
                let snapshot = try AllocationTracker.takeSnapshot()
                #expect(snapshot.droppedAllocations >= memory.droppedAllocations)  // others may drop in between
                #expect(snapshot.traces.count <= 16)
                for block in blocks { free(block) }  // dropped blocks are simply unknown when freed
                #expect(AllocationTracker.tracedMemory.current >= 0)
            }
        }
    }
}

import AllocationTracking
import AllocationTrackingTestSupport
import CAllocationTracking
import Foundation
import TrackerTestSupport
import Testing

extension TrackerTests {
    /// N blocks of a known size from a known C function: `current` rises by exactly their sum, the snapshot has
    /// their trace with `count == N`, and freeing them restores `current`.
    @Suite struct Accounting {
        static let directFunctions = ["malloc", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc",
                                      "memalign", "valloc", "pvalloc"]

        @Test(arguments: directFunctions, allUnwinders)
        func exactAccounting(function: String, unwinder: AllocationTracker.Configuration.Unwinder) throws {
            try withTracking(.init(maxFrames: 32, unwinder: unwinder)) {
                let count = 25, size = 777
                var blocks = [UnsafeMutableRawPointer?](repeating: nil, count: count)
                let baseline = helperTotals(try AllocationTracker.takeSnapshot())
                #expect(baseline.count == 0)
                let before = AllocationTracker.tracedMemory
                #expect(ats_allocate(function, count, size, &blocks) == Int32(count))
                let during = AllocationTracker.tracedMemory
                let snapshot = try AllocationTracker.takeSnapshot()
                _ = baseline
                let traces = helperTraces(snapshot)
                // One call site, one stack: exactly one trace, holding all N blocks.
                #expect(traces.count == 1)
                #expect(traces.first?.count == count)
                #expect(traces.first?.size == count * size)
                // The most recent frame is in the helper itself (the tracker's own frames are skipped).
                #expect(traces.first.map { helperText.contains($0.traceback.frames[0].address) } == true)
                #expect(during.totalAllocations - before.totalAllocations >= count)
                ats_free_all(&blocks, count)
                let totals = try helperTotals(AllocationTracker.takeSnapshot())
                #expect(totals.count == 0)
            }
        }

        /// The process-wide counters, exactly: in a child process where no other thread allocates, `current`,
        /// `liveBlocks`, `totalAllocations` and `totalAllocatedBytes` move by exactly the blocks' counts and
        /// bytes, for every malloc-family function and both unwinders, and return on free; peak semantics too. The
        /// per-site totals too: N blocks of size S allocated and freed leave their site with live 0 and allocated
        /// N×S in N blocks; a partially freed site keeps its totals.
        @Test func exactCountersInAQuietProcess() throws {
            let result = try runChild(productURL("TrackerScenarios"), ["accounting"])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            #expect(result.output.contains("accounting ok checks=76"), "\(result.output)")
        }

        /// Allocations made inside libc (strdup, getline) and libstdc++ (operator new) are seen: with libunwind
        /// the stack reaches the C helper through the frames that lack frame pointers.
        @Test(arguments: ["strdup", "new"])
        func allocationsInsideLibraries(function: String) throws {
            try withTracking(.init(unwinder: .libunwind)) {
                let count = 10, size = 300
                var blocks = [UnsafeMutableRawPointer?](repeating: nil, count: count)
                #expect(ats_allocate(function, count, size, &blocks) == Int32(count))
                let traces = helperTraces(try AllocationTracker.takeSnapshot())
                #expect(traces.count == 1)
                #expect(traces.first?.count == count)
                #expect(traces.first?.size == count * size)
                // The helper is not the most recent frame: libc/libstdc++ called malloc.
                #expect(traces.first.map { !helperText.contains($0.traceback.frames[0].address) } == true)
                if function == "new" { ats_delete_all(&blocks, count) } else { ats_free_all(&blocks, count) }
                let totals3658 = try helperTotals(AllocationTracker.takeSnapshot())
                #expect(totals3658.count == 0)
            }
        }

        @Test func getlineIsSeen() throws {
            let text = Array("a line of text\n".utf8CString)
            try withTracking(.init(unwinder: .libunwind)) {
                var copy = text
                try copy.withUnsafeMutableBufferPointer { buffer in
                    let file = try #require(fmemopen(buffer.baseAddress, buffer.count - 1, "r"))
                    defer { fclose(file) }
                    let line = try #require(ats_getline(file))
                    #expect(String(cString: line) == "a line of text\n")
                    // The line buffer (and the stream's own buffer, allocated on its first read) come from libc
                    // called by the helper.
                    let traceback = try #require(AllocationTracker.traceback(of: line))
                    #expect(traceback.frames.contains { helperText.contains($0.address) })
                    #expect(!helperText.contains(traceback.frames[0].address))
                    free(line)
                }
            }
        }

        /// Swift's own allocations (class instances through swift_allocObject) are traced with their size.
        @Test(arguments: allUnwinders)
        func swiftRuntimeAllocations(unwinder: AllocationTracker.Configuration.Unwinder) throws {
            final class Payload { var bytes = (0, 0, 0, 0, 0, 0, 0, 0) }
            try withTracking(.init(unwinder: unwinder)) {
                let before = AllocationTracker.tracedMemory
                let objects = (0..<1000).map { _ in Payload() }
                let after = AllocationTracker.tracedMemory
                // 1000 objects of 16 bytes of header + 64 bytes, plus the array.
                #expect(after.totalAllocations - before.totalAllocations >= 1000)
                #expect(after.current - before.current >= 1000 * 80)
                withExtendedLifetime(objects) {}
            }
        }

        /// realloc moves the whole block to the realloc call site; growth, shrink and move all account exactly.
        @Test(arguments: allUnwinders)
        func reallocMovesTheBlockToTheReallocSite(unwinder: AllocationTracker.Configuration.Unwinder) throws {
            try withTracking(.init(unwinder: unwinder)) {
                var block: UnsafeMutableRawPointer? = nil
                #expect(ats_allocate("malloc", 1, 100, &block) == 1)
                let mallocTrace = try #require(helperTraces(try AllocationTracker.takeSnapshot()).first)
                for size in [5000, 40, 1 << 20, 7] {  // grow, shrink, grow (moves: mmap'd), shrink
                    block = ats_realloc(block, size)
                    let traces = helperTraces(try AllocationTracker.takeSnapshot())
                    #expect(traces.count == 1)
                    #expect(traces.first?.size == size)
                    #expect(traces.first?.count == 1)
                    #expect(traces.first?.traceback != mallocTrace.traceback)
                }
                free(block)
                let totals6507 = try helperTotals(AllocationTracker.takeSnapshot())
                #expect(totals6507.count == 0)
            }
        }

        /// `maxFrames` bounds the frames kept; `totalFrames` keeps the true depth.
        @Test(arguments: allUnwinders)
        func maxFramesAndTotalFrames(unwinder: AllocationTracker.Configuration.Unwinder) throws {
            try withTracking(.init(maxFrames: 4, unwinder: unwinder)) {
                let shallow = try #require(ats_malloc_at_depth(64, 1))
                let deep = try #require(ats_malloc_at_depth(64, 40))
                let traces = helperTraces(try AllocationTracker.takeSnapshot())
                #expect(traces.count == 2)
                for trace in traces { #expect(trace.traceback.frames.count == 4) }
                let depths = traces.map(\.traceback.totalFrames).sorted()
                #expect(depths.count == 2 && depths[1] - depths[0] == 39)
                #expect(AllocationTracker.tracebackLimit == 4)
                free(shallow)
                free(deep)
            }
        }

        /// A 0-byte allocation is traced with size 0.
        @Test func zeroByteAllocation() throws {
            try withTracking(.init(unwinder: .framePointers)) {
                var blocks = [UnsafeMutableRawPointer?](repeating: nil, count: 3)
                #expect(ats_allocate("malloc", 3, 0, &blocks) == 3)
                let traces = helperTraces(try AllocationTracker.takeSnapshot())
                #expect(traces.count == 1 && traces[0].count == 3 && traces[0].size == 0)
                ats_free_all(&blocks, 3)
            }
        }

        /// `traceback(of:)` finds the stack of a live block (tracemalloc's get_object_traceback).
        @Test func tracebackOfABlock() throws {
            try withTracking(.init(unwinder: .framePointers)) {
                var block: UnsafeMutableRawPointer? = nil
                _ = ats_allocate("malloc", 1, 10, &block)
                let allocated = try #require(block)
                let traceback = try #require(AllocationTracker.traceback(of: allocated))
                #expect(helperText.contains(traceback.frames[0].address))
                free(block)
                #expect(AllocationTracker.traceback(of: UnsafeRawPointer(bitPattern: 0x1000)!) == nil)
            }
        }

        /// A call stack whose blocks were all freed stays in a `.now` snapshot with live 0 and its totals
        /// (`allocatedSize`, `allocatedCount`); a partially freed one keeps live and totals apart; statistics skip
        /// the freed one; the totals survive a save and a load.
        @Test(arguments: allUnwinders)
        func freedSitesKeepTheirTotals(unwinder: AllocationTracker.Configuration.Unwinder) throws {
            try withTracking(.init(unwinder: unwinder)) {
                var freed = [UnsafeMutableRawPointer?](repeating: nil, count: 20)
                var partial = [UnsafeMutableRawPointer?](repeating: nil, count: 10)
                #expect(ats_allocate("malloc", 20, 333, &freed) == 20)
                #expect(ats_allocate("calloc", 10, 100, &partial) == 10)
                ats_free_all(&freed, 20)
                ats_free_all(&partial, 4)
                defer { partial.withUnsafeMutableBufferPointer { ats_free_all($0.baseAddress! + 4, 6) } }
                let snapshot = try AllocationTracker.takeSnapshot()
                let sites = allHelperTraces(snapshot).sorted { $0.allocatedSize > $1.allocatedSize }
                #expect(sites.count == 2, "\(sites)")
                #expect(sites.first.map { [$0.size, $0.count, $0.allocatedSize, $0.allocatedCount] } == [0, 0, 6660, 20])
                #expect(sites.last.map { [$0.size, $0.count, $0.allocatedSize, $0.allocatedCount] } == [600, 6, 1000, 10])
                #expect(helperTraces(snapshot).count == 1)
                // Statistics are of live memory: the freed site is no key, not even with size 0.
                let stats = try snapshot.statistics(groupedBy: .traceback)
                #expect(!stats.contains { $0.traceback == sites.first?.traceback })
                #expect(stats.contains { $0.traceback == sites.last?.traceback && $0.size == 600 && $0.count == 6 })
                // At the peak: only stacks that held blocks then (the freed site's 20 blocks were live before the
                // calloc, which moved the peak past them only if nothing else freed meanwhile: not asserted).
                #expect(try AllocationTracker.takeSnapshot(at: .peak).traces.allSatisfy { $0.count > 0 })
                // Saved and loaded: the same traces, totals included, and the same images.
                let loaded = try Snapshot(jsonData: snapshot.jsonData())
                #expect(loaded.traces == snapshot.traces)
                #expect(loaded.images == snapshot.images && !loaded.images.isEmpty)
                #expect(allHelperTraces(loaded).map(\.allocatedSize).sorted() == [1000, 6660])
            }
        }

        /// A measurement's `leaked` holds only what is still live: a site of the scope whose blocks were all
        /// freed leaked nothing and is not in it.
        @Test func measuredLeaksHoldOnlyLiveBlocks() throws {
            try withTracking(.init(unwinder: .framePointers)) {
                var blocks = [UnsafeMutableRawPointer?](repeating: nil, count: 8)
                var kept = [UnsafeMutableRawPointer?](repeating: nil, count: 3)
                let m = try AllocationTracker.measure {
                    _ = ats_allocate("malloc", 8, 64, &blocks)
                    ats_free_all(&blocks, 8)
                    _ = ats_allocate("calloc", 3, 32, &kept)
                }
                defer { ats_free_all(&kept, 3) }
                #expect(m.leaked.traces.allSatisfy { $0.count > 0 }, "\(m.leaked.traces)")
                let leaked = allHelperTraces(m.leaked)
                #expect(leaked.count == 1 && leaked.first?.count == 3 && leaked.first?.size == 96, "\(leaked)")
                #expect(m.allocations >= 11 && m.frees >= 8)
            }
        }
    }
}

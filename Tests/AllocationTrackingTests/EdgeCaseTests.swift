import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
import Testing

extension TrackerTests {
    /// The interposed functions behave exactly like glibc's at their edges, tracking on or off.
    @Suite struct EdgeCases {
        /// What a call returned: NULL-ness and errno.
        struct Outcome: Equatable {
            var isNull: Bool
            var error: Int32
        }

        func outcome(_ body: () -> UnsafeMutableRawPointer?) -> Outcome {
            errno = 0
            let pointer = body()
            let result = Outcome(isNull: pointer == nil, error: pointer == nil ? errno : 0)
            free(pointer)
            return result
        }

        /// Runs `body` untracked and tracked; the outcomes must match.
        func sameTrackedAndUntracked<T: Equatable>(_ body: () -> T) throws -> T {
            AllocationTracker.stop()
            let untracked = body()
            let tracked = try withTracking(.init(unwinder: .framePointers)) { body() }
            #expect(untracked == tracked)
            return tracked
        }

        @Test func freeOfNullAndErrnoPreservation() throws {
            try withTracking(.init(unwinder: .framePointers)) {
                free(nil)
                #expect(ats_errno_after_free(malloc(10), 1234) == 1234)
                #expect(ats_errno_after_free(nil, 4321) == 4321)
            }
        }

        @Test func impossibleSizesFailWithENOMEMAndRecordNothing() throws {
            // Through the C helpers: the optimiser may elide a malloc/free pair written directly in Swift.
            let huge = Int.max
            func viaHelper(_ function: String, _ size: Int) -> UnsafeMutableRawPointer? {
                var block: UnsafeMutableRawPointer? = nil
                _ = ats_allocate(function, 1, size, &block)
                return block
            }
            #expect(try sameTrackedAndUntracked { outcome { viaHelper("malloc", huge) } } == Outcome(isNull: true, error: ENOMEM))
            #expect(try sameTrackedAndUntracked { outcome { viaHelper("calloc", huge) } } == Outcome(isNull: true, error: ENOMEM))
            #expect(try sameTrackedAndUntracked { outcome { reallocarray(nil, huge / 2, 4) } }
                    == Outcome(isNull: true, error: ENOMEM))
            try withTracking(.init(unwinder: .framePointers)) {
                let before = AllocationTracker.tracedMemory
                #expect(someWindowLeavesCurrentUnchanged(batches: 10) { _ in
                    _ = viaHelper("malloc", huge)
                    _ = viaHelper("calloc", huge)
                })
                let after = AllocationTracker.tracedMemory
                #expect(after.droppedAllocations == before.droppedAllocations)
            }
        }

        @Test func posixMemalignWithABadAlignment() throws {
            for alignment in [0, 3, 24, 4 + 8] {
                let result = try sameTrackedAndUntracked { () -> Int32 in
                    var pointer: UnsafeMutableRawPointer? = UnsafeMutableRawPointer(bitPattern: 0xdead)
                    let code = posix_memalign(&pointer, alignment, 64)
                    if code == 0 { free(pointer) }
                    return code
                }
                #expect(result == EINVAL, "alignment \(alignment)")
            }
        }

        @Test func oddAlignmentsBehaveAsTheNextAllocator() throws {
            for alignment in [1, 2, 3, 7, 24, 48, 4096, 1 << 40] {
                _ = try sameTrackedAndUntracked { outcome { aligned_alloc(alignment, 100) } }
                _ = try sameTrackedAndUntracked { outcome { ats_memalign(alignment, 100) } }
            }
        }

        @Test func reallocEdges() throws {
            try withTracking(.init(unwinder: .framePointers)) {
                // realloc(NULL, n) allocates and is traced at the realloc site.
                let block = try #require(ats_realloc(nil, 64))
                let totals3473 = try helperTotals(AllocationTracker.takeSnapshot())
                #expect(totals3473 == Totals(size: 64, count: 1))
                // realloc(p, 0): glibc frees p and returns NULL; the block leaves its site.
                #expect(ats_realloc(block, 0) == nil)
                let totals3846 = try helperTotals(AllocationTracker.takeSnapshot())
                #expect(totals3846.count == 0)
                // A failing realloc leaves the old block live and tracked.
                let kept = try #require(ats_realloc(nil, 32))
                errno = 0
                #expect(ats_realloc(kept, Int.max) == nil)
                #expect(errno == ENOMEM)
                let totals4197 = try helperTotals(AllocationTracker.takeSnapshot())
                #expect(totals4197 == Totals(size: 32, count: 1))
                #expect(reallocarray(kept, Int.max / 2, 4) == nil)
                let totals4370 = try helperTotals(AllocationTracker.takeSnapshot())
                #expect(totals4370 == Totals(size: 32, count: 1))
                free(kept)
            }
        }

        @Test func usableSizePassesThrough() throws {
            try withTracking(.init(unwinder: .framePointers)) {
                let block = try #require(malloc(100))
                #expect(ats_usable_size(block) >= 100)
                free(block)
            }
        }
    }
}

import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum PeakScenario: Scenario {
    static let name = "peak"

    static func run(_ arguments: ArraySlice<String>) {
        // Who held the memory at the peak: exact per-site values in a process where only this thread allocates.
        func helperSites(_ snapshot: Snapshot) -> [Int] {  // the sites holding live blocks
            let range = ats_alloc_text_start()..<ats_alloc_text_end()
            return snapshot.traces.filter { $0.count > 0 && $0.traceback.frames.contains { range.contains($0.address) } }
                .map(\.size).sorted()
        }
        var a = [UnsafeMutableRawPointer?](repeating: nil, count: 10)
        var b = [UnsafeMutableRawPointer?](repeating: nil, count: 3)
        var c = [UnsafeMutableRawPointer?](repeating: nil, count: 2)
        var checks = 0
        func check(_ ok: Bool, _ what: @autoclosure () -> String) {
            if !ok { fail(what()) }
            checks += 1
        }
        do { try AllocationTracker.start(.init(maxFrames: 16, unwinder: .libunwind, limits: quiet)) } catch { fail("\(error)") }
        // Between here and the snapshots only the C helpers allocate (the arrays above exist already).
        _ = ats_allocate("malloc", 10, 1000, &a)        // 10 000
        ats_free_all(&a, 5)                             //  5 000
        _ = ats_allocate("calloc", 3, 4000, &b)         // 17 000: the peak
        ats_free_all(&b, 3)                             //  5 000
        _ = ats_allocate("realloc", 2, 3000, &c)        // 11 000
        let memory = AllocationTracker.tracedMemory
        let atPeak = try! AllocationTracker.takeSnapshot(at: .peak)
        let now = try! AllocationTracker.takeSnapshot()
        // (The runtime and libunwind make a few small allocations of their own on first use: the helper sites are
        // exact, the totals are compared with the counters.)
        check(memory.peak >= 17_000 && memory.current >= 11_000, "counters \(memory)")
        check(atPeak.moment == .peak && now.moment == .now, "moments")
        check(helperSites(atPeak) == [5_000, 12_000], "peak sites \(helperSites(atPeak))")
        check(atPeak.totalSize == memory.peak, "peak total \(atPeak.totalSize) != \(memory.peak)")
        check(atPeak.traces.filter { $0.size == 5_000 || $0.size == 12_000 }.map(\.count).sorted() == [3, 5],
              "peak blocks \(atPeak.traces.map(\.count))")
        check(helperSites(now) == [5_000, 6_000], "now sites \(helperSites(now))")
        check(now.totalSize == memory.current, "now total \(now.totalSize)")
        // The site that set the peak, named at the peak: calloc's line in the C helper.
        let top = try! atPeak.statistics(groupedBy: .line)[0]
        check(top.size == 12_000 && top.count == 3 && (top.traceback.frames[0].file ?? "").hasSuffix("support.c"),
              "top at peak \(top)")
        // A new, higher peak moves the peak snapshot; resetPeak makes it "now". (From here on, `top` and the
        // statistics' own blocks are live and tracked too, so totals are compared with the counters.)
        var d = [UnsafeMutableRawPointer?](repeating: nil, count: 1)
        _ = ats_allocate("malloc", 1, 20_000, &d)       // 31 000: a new peak
        ats_free_all(&d, 1)                             // 11 000
        let second = try! AllocationTracker.takeSnapshot(at: .peak)
        let secondMemory = AllocationTracker.tracedMemory
        check(second.totalSize == secondMemory.peak && helperSites(second) == [5_000, 6_000, 20_000],
              "second peak \(second.totalSize) vs \(secondMemory) \(helperSites(second))")
        AllocationTracker.resetPeak()
        let reset = try! AllocationTracker.takeSnapshot(at: .peak)
        let resetMemory = AllocationTracker.tracedMemory
        check(helperSites(reset) == [5_000, 6_000] && reset.totalSize == resetMemory.current,
              "after resetPeak \(helperSites(reset)) \(reset.totalSize) vs \(resetMemory)")
        a.withUnsafeMutableBufferPointer { ats_free_all($0.baseAddress! + 5, 5) }
        ats_free_all(&c, 2)
        // Frees do not move the peak: it still shows the blocks just freed.
        let finalMemory = AllocationTracker.tracedMemory
        let afterFrees = try! AllocationTracker.takeSnapshot(at: .peak)
        check(afterFrees.totalSize == finalMemory.peak && helperSites(afterFrees) == [5_000, 6_000],
              "peak kept after frees \(afterFrees.totalSize) vs \(finalMemory)")
        AllocationTracker.stop()
        print("peak ok checks=\(checks)")
    }
}

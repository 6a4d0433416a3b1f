@_spi(Testing) import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum WarmUpScenario: Scenario {
    static let name = "warm-up"

    static func run(_ arguments: ArraySlice<String>) {
        // A refresh (what the watchdog runs once a second) names only the sites the allocation-failure report can
        // print; it resolves nothing ahead of time for the others (a service's many new sites cost a core at every
        // start when it did). The sites hold nothing live, so they are not top sites: their addresses must stay
        // unresolved. No watchdog here (the scenario calls refresh itself).
        try! AllocationTracker.start(.init(limits: quiet))
        var blocks: [UnsafeMutableRawPointer] = []
        for depth in 1...40 { blocks.append(ats_malloc_at_depth(48, Int32(depth))!) }
        let raw = try! AllocationTracker.takeSnapshot(symbolicate: false)
        for block in blocks { free(block) }
        // Only the recursion's own frames: the callers' frames are shared with sites that are in the top.
        let recursion = ats_alloc_text_start()..<ats_alloc_text_end()
        var addresses = Set<UInt>()
        for trace in raw.traces {
            for frame in trace.traceback.frames where recursion.contains(UInt(frame.address)) { addresses.insert(frame.address) }
        }
        let uncachedAtStart = AllocationTracker._uncachedAddressCount(addresses)
        _EmergencyNames.refresh()
        let uncachedAfter = AllocationTracker._uncachedAddressCount(addresses)
        AllocationTracker.stop()
        print("addresses=\(addresses.count) uncached_at_start=\(uncachedAtStart) uncached_after=\(uncachedAfter)")
    }
}

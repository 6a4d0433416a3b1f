@_spi(Testing) import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum WarmUpScenario: Scenario {
    static let name = "warm-up"

    static func run(_ arguments: ArraySlice<String>) {
        // A refresh (what the watchdog runs once a second) resolves the addresses of new sites, bounded per call, so
        // that a soft-limit report's snapshot finds them cached. The sites hold nothing live, so naming the top sites
        // does not touch them: only the warm-up can. No watchdog here (the scenario calls refresh itself).
        try! AllocationTracker.start(.init(limits: quiet))
        var blocks: [UnsafeMutableRawPointer] = []
        for depth in 1...40 { blocks.append(ats_malloc_at_depth(48, Int32(depth))!) }
        let raw = try! AllocationTracker.takeSnapshot(symbolicate: false)
        for block in blocks { free(block) }
        var addresses = Set<UInt>()
        for trace in raw.traces where trace.traceback.frames.contains(where: { (ats_alloc_text_start()..<ats_alloc_text_end()).contains(UInt($0.address)) }) {
            for frame in trace.traceback.frames { addresses.insert(frame.address) }
        }
        let uncachedAtStart = AllocationTracker._uncachedAddressCount(addresses)
        _EmergencyNames.refresh()
        let uncachedAfter = AllocationTracker._uncachedAddressCount(addresses)
        AllocationTracker.stop()
        print("addresses=\(addresses.count) uncached_at_start=\(uncachedAtStart) uncached_after=\(uncachedAfter)")
    }
}

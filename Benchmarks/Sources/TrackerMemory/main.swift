// Tracker metadata per live block: with tracking on, allocate N live 64-byte blocks (from one call site) and
// print AllocationTracker.trackerMemory / liveBlocks, for N = 1,000,000, 100,000 and 10,000, with each unwinder.
//
//     swift run -c release TrackerMemory

import AllocationTracking

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

@inline(never)
func allocateBlocks(into slots: UnsafeMutablePointer<UnsafeMutableRawPointer?>, count: Int) {
    for i in 0..<count { slots[i] = malloc(64) }
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
}

let counts = [1_000_000, 100_000, 10_000]
let slots = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: counts.max()!)  // before start: untracked

print("| unwinder | live blocks (N) | liveBlocks reported | trackerMemory at start | trackerMemory with N live | bytes / live block | (memory - start) / block |")
print("|---|---:|---:|---:|---:|---:|---:|")
for unwinder in [AllocationTracker.Configuration.Unwinder.framePointers, .libunwind] {
    for count in counts {
        try AllocationTracker.start(.init(maxFrames: 32, unwinder: unwinder))
        let empty = AllocationTracker.trackerMemory
        allocateBlocks(into: slots, count: count)
        let traced = AllocationTracker.tracedMemory
        let memory = AllocationTracker.trackerMemory
        for i in 0..<count { free(slots[i]) }
        AllocationTracker.stop()
        let perBlock = Double(memory) / Double(max(traced.liveBlocks, 1))
        let marginal = Double(memory - empty) / Double(max(traced.liveBlocks, 1))
        print("| \(unwinder) | \(count) | \(traced.liveBlocks) | \(empty) | \(memory) | "
              + "\((perBlock * 10).rounded() / 10) | \((marginal * 10).rounded() / 10) |")
    }
}
slots.deallocate()

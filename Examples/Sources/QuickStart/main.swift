// The README's Quick start, verbatim (ReadmeTests checks that every Swift block of the README stands in a file
// that is compiled), with the two workloads it calls. `swift run --package-path Examples QuickStart` runs it.
import AllocationTracking
import Foundation  // URL

try AllocationTracker.start(.init(maxFrames: 32, unwinder: .libunwind))   // or .framePointers
runWorkload()

let memory = AllocationTracker.tracedMemory   // current, peak, liveBlocks, totalAllocations,
print(memory)                                 // totalAllocatedBytes, droppedAllocations

let before = try AllocationTracker.takeSnapshot()        // throws .notTracing when stopped
runMoreWork()
let after = try AllocationTracker.takeSnapshot()

print(try after.report(top: 10))                         // "[ Top 10 ]" by line, with tracebacks
for stat in try after.statistics(groupedBy: .line).prefix(10) { print(stat) }   // .line .function .file .traceback
let callers = try after.statistics(groupedBy: .function, cumulative: true)      // every frame counts
for diff in try after.compared(to: before, groupedBy: .line).prefix(10) { print(diff) }
print(try after.report(comparedTo: before, top: 10))     // "[ Top 10 differences ]"
let mine = after.filtered(by: [Filter(inclusive: true, filePattern: "*/Sources/MyApp/*"),
                               Filter(inclusive: false, functionPattern: "*Logger*")])
let atPeak = try AllocationTracker.takeSnapshot(at: .peak)  // who held the memory when the peak was set

try after.write(to: URL(fileURLWithPath: "/tmp/heap.json"))          // versioned JSON with symbols
let loaded = try Snapshot(contentsOf: URL(fileURLWithPath: "/tmp/heap.json"))  // read and diff anywhere

AllocationTracker.resetPeak()      // peak = current (and the peak snapshot = what is live now)
AllocationTracker.clearTraces()    // forget everything, current = peak = 0, keep tracing
AllocationTracker.stop()           // stop and forget everything (like tracemalloc.stop)


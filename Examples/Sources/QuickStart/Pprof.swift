import AllocationTracking
import Foundation

/// The README's pprof example, verbatim (compiled here; `theReadmeExampleRuns` runs the same lines with the file
/// in a temporary directory).
func pprofExample() throws -> (Data, Data, Data, String) {
    let snapshot = try AllocationTracker.takeSnapshot()
    try snapshot.write(pprofTo: URL(fileURLWithPath: "heap.pb.gz"))             // go tool pprof heap.pb.gz
    let allocs = try snapshot.pprof(.init(defaultSampleType: .allocSpace))      // Go's /debug/pprof/allocs
    let peak = try AllocationTracker.takeSnapshot(at: .peak).pprof()            // who held the memory at the peak
    let growth = try AllocationTracker.takeSnapshot().pprof(comparedTo: snapshot) // what grew since (Go's ?seconds=N)
    let folded = try snapshot.foldedStacks(.inuseSpace)                         // "root;…;leaf 4096" lines
    return (allocs, peak, growth, folded)
}

import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif
import TrackerTestSupport

/// Every suite that starts the process-wide tracker nests in this one, so they run one at a time.
@Suite(.serialized, .trackerExclusive) enum TrackerTests {}

/// Both unwinders, for parameterised tests.
let allUnwinders: [AllocationTracker.Configuration.Unwinder] = [.libunwind, .framePointers]

/// Runs `body` with tracking on, and stops afterwards.
func withTracking<R>(_ configuration: AllocationTracker.Configuration = .init(),
                     _ body: () throws -> R) throws -> R {
    try AllocationTracker.start(configuration)
    defer { AllocationTracker.stop() }
    return try body()
}

/// True when `batch(i)` leaves tracked `current` unchanged for at least one of `batches` windows.
///
/// Process-wide counters also move with the test runner's own threads (Swift Testing reports events while other
/// suites run), so an exact "unchanged" check over one window is flaky. Each window does one batch of the work;
/// a window disturbed by another thread is simply not counted. A real bug (the batch itself moving `current`)
/// shows in every window, so the check still fails. Windows are 2 ms apart, so that they do not all fall in the
/// same burst of another suite's allocations. Exact single-window values: `exactCountersInAQuietProcess`.
func someWindowLeavesCurrentUnchanged(batches: Int, _ batch: (Int) -> Void) -> Bool {
    var unchanged = false
    for index in 0..<batches {
        if index > 0 { usleep(2_000) }
        let before = AllocationTracker.tracedMemory.current
        batch(index)
        if AllocationTracker.tracedMemory.current == before { unchanged = true }
    }
    return unchanged
}

/// The address range of the C test helpers (their own section).
let helperText = ats_alloc_text_start()..<ats_alloc_text_end()

/// Live bytes and blocks of the traces that have a frame inside the C test helpers.
func helperTotals(_ snapshot: Snapshot) -> Totals {
    var totals = Totals(size: 0, count: 0)
    for trace in helperTraces(snapshot) {
        totals.size += trace.size
        totals.count += trace.count
    }
    return totals
}

struct Totals: Equatable {
    var size: Int
    var count: Int
}

/// The traces holding live blocks that have a frame inside the C test helpers (a snapshot also keeps the stacks
/// whose blocks were all freed, for their totals: `allHelperTraces`).
func helperTraces(_ snapshot: Snapshot) -> [Trace] {
    allHelperTraces(snapshot).filter { $0.count > 0 }
}

/// Every trace with a frame inside the C test helpers, those whose blocks were all freed included.
func allHelperTraces(_ snapshot: Snapshot) -> [Trace] {
    snapshot.traces.filter { $0.traceback.frames.contains { helperText.contains($0.address) } }
}

struct ChildResult {
    var status: Int32
    var output: String
    var error: String
}

/// Runs `TrackerScenarios` (or another program) and collects its output (the shared runner: files, not pipes,
/// and killed after 5 minutes so that a hang fails its test). `status` is the signal's number when a signal ended it.
func runChild(_ executable: URL, _ arguments: [String], environment: [String: String] = [:]) throws -> ChildResult {
    let result = try runChildProcess(executable, arguments, environment: environment)
    return ChildResult(status: result.status, output: result.text, error: result.error)
}

// What the scenarios share: quiet limits, a failure line, threads that churn the heap, the C helpers' bytes.
import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A scenario: a program run in a process of its own (see main.swift).
protocol Scenario {
    /// The name the tests pass as the first argument.
    static var name: String { get }
    /// Runs the scenario. `arguments` is the command line after the program: the scenario's name, then its own
    /// arguments.
    static func run(_ arguments: ArraySlice<String>)
}

nonisolated(unsafe) var scenarioRunning = true

/// A thread that allocates and frees until `scenarioRunning` is cleared.
func churn(_: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    var blocks = [UnsafeMutableRawPointer?](repeating: nil, count: 64)
    var i = 0
    while scenarioRunning {
        i = (i + 1) & 63
        blocks[i].map { free($0) }
        blocks[i] = malloc(32 + i)
    }
    for block in blocks { free(block) }
    return nil
}

/// `YYYYMMDDTHHMMSSZ` for Unix seconds (the report file's timestamp).
func _utcCompact(_ seconds: Int64) -> String {
    var t = time_t(seconds)
    var parts = tm()
    gmtime_r(&t, &parts)
    func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
    return "\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday))T\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))Z"
}

/// No watchdog, no report features: scenarios that count every allocation in the process need it quiet.
let quiet = AllocationTracker.Configuration.Limits(containerFraction: nil, onAllocationFailure: false)

func fail(_ message: String) -> Never {
    print("FAIL \(message)")
    exit(1)
}

func helperBytes(_ snapshot: Snapshot) -> (size: Int, count: Int) {
    let range = ats_alloc_text_start()..<ats_alloc_text_end()
    var size = 0, count = 0
    for trace in snapshot.traces where trace.traceback.frames.contains(where: { range.contains($0.address) }) {
        size += trace.size
        count += trace.count
    }
    return (size, count)
}


// MARK: - The oom scenarios (OOM.swift, OOMThreads.swift)

/// State of the oom scenarios.
enum OOM {
    static let threadCount = 4
    static let go = Atomic<Int>(0)
    static let ready = Atomic<Int>(0)
    static let enomemThreads = Atomic<Int>(0)
    nonisolated(unsafe) static var resolveNames = true
}

func oomThread(_: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    let capacity = 4096
    let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: capacity)
    var failure: Int32 = 0, line: Int32 = 0
    // One block, then wait (called from inside the C loop, so every block shares one stack: one site), then
    // allocate until malloc fails.
    let count = ats_allocate_until_failure(1 << 20, 1, {
        OOM.ready.add(1, ordering: .releasing)
        while OOM.go.load(ordering: .acquiring) == 0 { sched_yield() }
    }, blocks, capacity, &failure, &line)
    if failure == ENOMEM { OOM.enomemThreads.add(1, ordering: .relaxed) }
    ats_free_all(blocks, count)
    blocks.deallocate()
    return nil
}

/// Called once from inside the allocation loop: names the sites (as the watchdog would), then limits the address
/// space to what is mapped now plus 64 MiB.
func oomAfterWarmup() {
    // Every site the loop uses is named now (this also waits for a refresh the watchdog has in progress), and
    // nothing below allocates: no new site appears, so the watchdog finds nothing to symbolicate — and does not
    // allocate — while the loop exhausts memory. (Symbolication maps debug info: it cannot run under the limit.)
    if OOM.resolveNames { _EmergencyNames.refresh(ignoringBudget: true) }
    let result = ats_limit_address_space(64 << 20)
    if result != 0 { fail("setrlimit: \(result)") }
}

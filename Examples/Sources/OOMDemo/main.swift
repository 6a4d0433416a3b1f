// The classic OOM demo, with a report before the end: a "service" that keeps a 1 MiB chunk every 20 ms, under a
// tracked soft limit of 64 MiB. When the limit is crossed, the watchdog writes a top-allocators report to
// stderr (and to a file when a directory is configured) naming the line that holds the memory — what
// `kubectl logs --previous` would show after an OOMKilled pod.
//
//     swift run --package-path Examples OOMDemo
//     ALLOCATION_TRACKING=report_dir=/tmp,container=0.9 swift run --package-path Examples OOMDemo --env
import AllocationTracking
#if canImport(Glibc)
import Glibc
#endif

final class SessionStore {
    private var sessions: [[UInt8]] = []

    /// The leak: every session is kept.
    @inline(never)
    func open(_ id: Int) {
        sessions.append([UInt8](repeating: UInt8(truncatingIfNeeded: id), count: 1 << 20))
    }
}

if !CommandLine.arguments.contains("--env") {
    try AllocationTracker.start(.init(
        report: .init(directory: nil, topSites: 5),
        limits: .init(trackedBytes: 64 << 20, containerFraction: 0.9, signal: SIGUSR2)))
}
AllocationTracker.onReport = { report in
    print("onReport: \(report.trigger.rawValue) report written (\(report.text.count) characters)")
}

let store = SessionStore()
for id in 0..<100 {                 // stops at 100 MiB, before this machine would mind
    store.open(id)
    usleep(20_000)
}
AllocationTracker.stop()

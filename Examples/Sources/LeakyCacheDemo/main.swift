// A small service-like workload with a leak: an unbounded cache that keeps every response it builds, next to
// work that allocates and frees. AllocationTracking shows which lines hold the live memory, what grew between
// two snapshots, and who held the memory at the peak.
//
//     swift run --package-path Examples LeakyCacheDemo [snapshot.json]
//
// With a path, it also saves the second snapshot there (for `alloc-track`: top, diff, pprof, flamegraph).
import AllocationTracking
import Foundation
#if canImport(Glibc)
import Glibc
#endif

final class ResponseCache {
    private var entries: [Int: [UInt8]] = [:]

    /// The leak: nothing is ever evicted.
    @inline(never)
    func remember(_ key: Int, _ body: [UInt8]) { entries[key] = body }
}

@inline(never)
func renderResponse(for request: Int) -> [UInt8] {
    Array(repeating: UInt8(truncatingIfNeeded: request), count: 1024 + request % 512)
}

@inline(never)
func formatLogLine(for request: Int) -> String {
    "request \(request) handled in \(request % 17) ms by worker \(request % 4)"
}

@inline(never)
func handle(_ request: Int, cache: ResponseCache) {
    let body = renderResponse(for: request)
    cache.remember(request, body)                 // kept forever
    let line = formatLogLine(for: request)        // temporary: freed at the end of the call
    _ = line.utf8.count
}

/// A burst of temporary work: 4 MiB held for a moment, then released. It sets the peak.
@inline(never)
func buildReport() -> Int {
    let rows = (0..<64).map { row in [UInt8](repeating: UInt8(row), count: 64 * 1024) }
    return rows.reduce(0) { $0 + $1.count }
}

do {
    try AllocationTracker.start(.init(maxFrames: 32, unwinder: .libunwind))
} catch {
    print("cannot start tracking: \(error)")
    exit(1)
}

let cache = ResponseCache()
for request in 0..<1_000 { handle(request, cache: cache) }
let first = try AllocationTracker.takeSnapshot()

_ = buildReport()
for request in 1_000..<2_000 { handle(request, cache: cache) }
let second = try AllocationTracker.takeSnapshot()
if CommandLine.arguments.count > 1 {
    try second.write(to: URL(fileURLWithPath: CommandLine.arguments[1]))
    print("snapshot saved to \(CommandLine.arguments[1])")
}

// Only this program's own lines (drop the test harness, the runtime's caches and the like).
let mine = [Filter(inclusive: true, filePattern: "*/LeakyCacheDemo/*")]
print(try second.filtered(by: mine).report(top: 10, tracebacks: 1, tracebackDepth: 4))
print(try second.filtered(by: mine).report(comparedTo: first.filtered(by: mine), top: 5, tracebacks: 0))
print(try AllocationTracker.takeSnapshot(at: .peak).filtered(by: mine).report(top: 3, tracebacks: 0))
print("Tracker's own tables: \(AllocationTracker.trackerMemory / 1024) KiB")
withExtendedLifetime(cache) {}
AllocationTracker.stop()

// A small service-like workload with a leak: an unbounded cache that keeps every response it builds, next to
// work that allocates and frees. AllocationTracking shows which call sites hold the live memory.
//
//     swift run --package-path Examples LeakyCacheDemo
import AllocationTracking
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

// MARK: - Naming frames (this demo's own, minimal symbolication: function names, no file:line)

@_silgen_name("swift_demangle")
func _swiftDemangle(_ mangled: UnsafePointer<CChar>?, _ length: Int, _ output: UnsafeMutablePointer<CChar>?,
                    _ outputLength: UnsafeMutablePointer<Int>?, _ flags: UInt32) -> UnsafeMutablePointer<CChar>?

/// glibc's Dl_info (dladdr needs _GNU_SOURCE, which the Glibc module does not define).
struct DynamicLinkInfo {
    var dli_fname: UnsafePointer<CChar>? = nil
    var dli_fbase: UnsafeMutableRawPointer? = nil
    var dli_sname: UnsafePointer<CChar>? = nil
    var dli_saddr: UnsafeMutableRawPointer? = nil
}

@_silgen_name("dladdr")
func _dladdr(_ address: UnsafeRawPointer?, _ info: UnsafeMutablePointer<DynamicLinkInfo>) -> Int32

/// "image: function" for a return address, via dladdr (which sees this executable's functions because it is
/// linked with --export-dynamic) and the Swift runtime's demangler.
func describe(_ frame: Frame) -> (image: String, function: String) {
    var info = DynamicLinkInfo()
    guard _dladdr(UnsafeRawPointer(bitPattern: frame.address &- 1), &info) != 0 else { return ("?", "\(frame)") }
    let image = info.dli_fname.map { String(cString: $0).split(separator: "/").last.map(String.init) ?? "?" } ?? "?"
    guard let symbol = info.dli_sname else { return (image, "\(frame)") }
    if let demangled = _swiftDemangle(symbol, strlen(symbol), nil, nil, 0) {
        defer { free(demangled) }
        return (image, String(cString: demangled))
    }
    return (image, String(cString: symbol))
}

/// The first frame that is not the allocator, the Swift runtime or the standard library: the user's call site.
func callSite(_ traceback: Traceback) -> String {
    let system = ["libc.so", "libswiftCore.so", "libswiftSwiftOnoneSupport", "libstdc++", "libFoundation", "libswift_Concurrency", "libdispatch"]
    for frame in traceback.frames {
        let (image, function) = describe(frame)
        if !system.contains(where: image.hasPrefix) { return function }
    }
    return traceback.frames.first.map { describe($0).function } ?? "<no frames>"
}

func formatBytes(_ bytes: Int) -> String {
    bytes >= 10 * 1024 * 1024 ? "\(bytes / (1024 * 1024)) MiB" : bytes >= 10 * 1024 ? "\(bytes / 1024) KiB" : "\(bytes) B"
}

// MARK: - Run

do {
    try AllocationTracker.start(.init(maxFrames: 32, unwinder: .libunwind))
} catch {
    print("cannot start tracking: \(error)")
    exit(1)
}

let cache = ResponseCache()
for request in 0..<2_000 { handle(request, cache: cache) }

let snapshot = try AllocationTracker.takeSnapshot()
let memory = AllocationTracker.tracedMemory

// Group the traces by the user's call site and print the top 5 by live bytes.
var bySite: [String: (size: Int, count: Int)] = [:]
for trace in snapshot.traces {
    let site = callSite(trace.traceback)
    bySite[site, default: (0, 0)].size += trace.size
    bySite[site, default: (0, 0)].count += trace.count
}
print("[ Top 5 allocation sites by live bytes ]")
for (rank, entry) in bySite.sorted(by: { $0.value.size > $1.value.size }).prefix(5).enumerated() {
    let average = entry.value.count > 0 ? entry.value.size / entry.value.count : 0
    print("#\(rank + 1) \(entry.key): size=\(formatBytes(entry.value.size)), count=\(entry.value.count), average=\(average) B")
}
print("")
print("Traced memory: current=\(formatBytes(memory.current)), peak=\(formatBytes(memory.peak)), "
      + "allocations=\(memory.totalAllocations), dropped=\(memory.droppedAllocations)")
print("Tracker's own tables: \(formatBytes(AllocationTracker.trackerMemory))")
withExtendedLifetime(cache) {}
AllocationTracker.stop()

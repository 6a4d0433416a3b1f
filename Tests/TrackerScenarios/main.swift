// Scenarios run in a process of their own; AllocationTrackingTests spawns this executable and asserts on its
// output and exit status. Each prints `key=value` lines.
@_spi(Testing) import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
import CAllocationTracking
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

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

let arguments = CommandLine.arguments.dropFirst()
switch arguments.first {
case "env":
    // Started (or not) by ALLOCATION_TRACKING before main.
    print("tracing=\(AllocationTracker.isTracing)")
    print("configuration=\(AllocationTracker.configuration.map { "\($0)" } ?? "none")")

case "fork":
    let unwinder: AllocationTracker.Configuration.Unwinder = arguments.dropFirst().first == "framepointers"
        ? .framePointers : .libunwind
    do { try AllocationTracker.start(.init(maxFrames: 16, unwinder: unwinder, limits: quiet)) } catch { fail("\(error)") }
    // Other threads allocate and free while we fork.
    var threads: [pthread_t] = []
    for _ in 0..<2 {
        var thread = pthread_t()
        pthread_create(&thread, nil, churn, nil)
        threads.append(thread)
    }
    var parentBlocks = [UnsafeMutableRawPointer?](repeating: nil, count: 10)
    _ = ats_allocate("malloc", 10, 100, &parentBlocks)
    let parentBefore = helperBytes(try! AllocationTracker.takeSnapshot())
    for round in 0..<20 {
        let pid = fork()
        if pid == 0 {
            // Child: only this thread exists now.
            var blocks = [UnsafeMutableRawPointer?](repeating: nil, count: 7)
            let before = AllocationTracker.tracedMemory.current
            guard ats_allocate("malloc", 7, 333, &blocks) == 7 else { _exit(2) }
            let during = AllocationTracker.tracedMemory.current
            guard let snapshot = try? AllocationTracker.takeSnapshot() else { _exit(3) }
            let held = helperBytes(snapshot)
            ats_free_all(&blocks, 7)
            let after = AllocationTracker.tracedMemory.current
            // Inherited: the parent's 10 x 100 bytes; added: 7 x 333.
            guard held.size == 1000 + 7 * 333, held.count == 17, during - before == 7 * 333, after == before else {
                _exit(4)
            }
            AllocationTracker.stop()
            _exit(0)
        }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        guard status == 0 else { fail("child \(round) exited with status \(status)") }
    }
    scenarioRunning = false
    for thread in threads { pthread_join(thread, nil) }
    let parentAfter = helperBytes(try! AllocationTracker.takeSnapshot())
    guard parentAfter == parentBefore, parentAfter.size == 1000 else {
        fail("parent changed: \(parentBefore) -> \(parentAfter)")
    }
    ats_free_all(&parentBlocks, 10)
    print("forks=20 ok")

case "chain":
    // Run with LD_PRELOAD of a counting interposer: its malloc is the "next" one we forward to.
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "counting_interposer_mallocs") else {
        fail("counting interposer not preloaded")
    }
    let counter = symbol.assumingMemoryBound(to: UInt64.self)
    do { try AllocationTracker.start(.init(maxFrames: 16, unwinder: .framePointers, limits: quiet)) } catch { fail("\(error)") }
    var blocks = [UnsafeMutableRawPointer?](repeating: nil, count: 1000)
    // Warm up once: the first capture on a thread reads its stack bounds (pthread_getattr_np allocates,
    // untracked), and first calls do one-time lazy work.
    _ = ats_allocate("malloc", 1000, 48, &blocks)
    ats_free_all(&blocks, 1000)
    let name = strdup("malloc")  // bridging a Swift string to a C string may allocate: do it outside the window
    let seenBefore = counter.pointee
    let trackedBefore = AllocationTracker.tracedMemory.totalAllocations
    _ = ats_allocate(name, 1000, 48, &blocks)
    let seen = counter.pointee - seenBefore
    let tracked = AllocationTracker.tracedMemory.totalAllocations - trackedBefore
    let held = helperBytes(try! AllocationTracker.takeSnapshot())
    ats_free_all(&blocks, 1000)
    free(name)
    print("next_allocator_mallocs=\(seen)")
    print("tracked_allocations=\(tracked)")
    print("helper_bytes=\(held.size) helper_blocks=\(held.count)")

case "accounting":
    // Exact process-wide counters: nothing else in this process allocates between the readings.
    var checks = 0
    func check(_ condition: Bool, _ what: @autoclosure () -> String) {
        checks += 1
        if !condition { fail(what()) }
    }
    let functions = ["malloc", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc", "memalign",
                     "valloc", "pvalloc", "strdup", "new"]
    // Per-site totals: the stacks whose totals grew between two snapshots, with what they allocated in between.
    // (By the totals' growth, not by helper frames: with frame pointers a stack through libc or libstdc++ may
    // lose the helper, and may then be the warm-up's stack too.) Snapshots are the tracker's own work, untracked.
    func snapshot() -> Snapshot { try! AllocationTracker.takeSnapshot(symbolicate: false) }
    func sitesAllocating(between earlier: Snapshot, and later: Snapshot)
        -> [(trace: Trace, blocks: Int, bytes: Int, liveBlocks: Int, liveBytes: Int)] {
        var known: [Traceback: Trace] = [:]
        for trace in earlier.traces { known[trace.traceback] = trace }
        return later.traces.compactMap { trace in
            let old = known[trace.traceback] ?? Trace(traceback: trace.traceback, size: 0, count: 0)
            let blocks = trace.allocatedCount - old.allocatedCount, bytes = trace.allocatedSize - old.allocatedSize
            return blocks == 0 && bytes == 0 ? nil : (trace, blocks, bytes, trace.count - old.count, trace.size - old.size)
        }
    }
    for unwinder in [AllocationTracker.Configuration.Unwinder.libunwind, .framePointers] {
        do { try AllocationTracker.start(.init(maxFrames: 32, unwinder: unwinder, limits: quiet)) } catch { fail("\(error)") }
        var blocks = [UnsafeMutableRawPointer?](repeating: nil, count: 40)
        // Warm-up: the first capture on a thread, and one-time lazy work of the first calls, happen here.
        for function in functions {
            let name = strdup(function)
            _ = ats_allocate(name, 1, 8, &blocks)
            if function == "new" { ats_delete_all(&blocks, 1) } else { ats_free_all(&blocks, 1) }
            free(name)
        }
        for function in functions {
            let count = 40, size = 1001
            // The C string is made before the first reading (bridging a Swift string may allocate).
            let name = strdup(function)
            defer { free(name) }
            let sitesBefore = snapshot()
            let before = AllocationTracker.tracedMemory
            _ = ats_allocate(name, count, size, &blocks)
            let during = AllocationTracker.tracedMemory
            let grew = during.current - before.current == count * size
                && during.liveBlocks - before.liveBlocks == count
                && during.totalAllocations - before.totalAllocations == count
                && during.totalAllocatedBytes - before.totalAllocatedBytes == count * size
                && during.peak >= during.current
            check(grew, "\(function)/\(unwinder): \(before) -> \(during)")
            if function == "new" { ats_delete_all(&blocks, count) } else { ats_free_all(&blocks, count) }
            let after = AllocationTracker.tracedMemory
            check(after.current == before.current && after.liveBlocks == before.liveBlocks
                  && after.peak == during.peak && after.droppedAllocations == 0,
                  "\(function)/\(unwinder) after free: \(before) -> \(after)")
            // Its one site holds nothing more than before (nothing at all when the stack is new; with frame
            // pointers, strdup's stack is also the one that made `name`) and keeps what it allocated.
            let sites = sitesAllocating(between: sitesBefore, and: snapshot())
            check(sites.count == 1 && sites[0].liveBlocks == 0 && sites[0].liveBytes == 0 && sites[0].blocks == count
                  && sites[0].bytes == count * size
                  && (sites[0].trace.count == 0 || sitesBefore.traces.contains { $0.traceback == sites[0].trace.traceback }),
                  "\(function)/\(unwinder) site totals: \(sites)")
        }
        AllocationTracker.stop()
    }
    // Blocks allocated before start and freed after it are unknown to the tables: the counters do not move.
    var early = [UnsafeMutableRawPointer?](repeating: nil, count: 100)
    let earlyName = strdup("malloc")
    _ = ats_allocate(earlyName, 100, 4096, &early)
    free(earlyName)
    do { try AllocationTracker.start(.init(unwinder: .framePointers, limits: quiet)) } catch { fail("\(error)") }
    let beforeEarlyFrees = AllocationTracker.tracedMemory
    ats_free_all(&early, 100)
    let afterEarlyFrees = AllocationTracker.tracedMemory
    check(afterEarlyFrees == beforeEarlyFrees, "frees of blocks from before start: \(beforeEarlyFrees) -> \(afterEarlyFrees)")
    // realloc(p, 0) frees p (glibc): current falls by exactly its size. Impossible sizes record nothing.
    let shrinking = ats_realloc(nil, 64)
    let beforeRealloc = AllocationTracker.tracedMemory
    let reallocated = ats_realloc(shrinking, 0)
    let afterRealloc = AllocationTracker.tracedMemory
    check(reallocated == nil && afterRealloc.current == beforeRealloc.current - 64
          && afterRealloc.liveBlocks == beforeRealloc.liveBlocks - 1, "realloc(p, 0): \(beforeRealloc) -> \(afterRealloc)")
    var impossible: UnsafeMutableRawPointer? = nil
    let impossibleName = strdup("calloc")
    let beforeImpossible = AllocationTracker.tracedMemory
    let impossibleResult = ats_allocate(impossibleName, 1, Int.max, &impossible)
    let afterImpossible = AllocationTracker.tracedMemory
    free(impossibleName)
    check(impossibleResult == 0 && afterImpossible == beforeImpossible, "calloc(Int.max): \(beforeImpossible) -> \(afterImpossible)")
    // A partially freed site: live what is left, totals everything it allocated.
    var partial = [UnsafeMutableRawPointer?](repeating: nil, count: 10)
    let partialName = strdup("malloc")
    let sitesBeforePartial = snapshot()
    _ = ats_allocate(partialName, 10, 300, &partial)
    ats_free_all(&partial, 4)
    let partialSites = sitesAllocating(between: sitesBeforePartial, and: snapshot())
    check(partialSites.count == 1 && partialSites[0].trace.count == 6 && partialSites[0].trace.size == 1800
          && partialSites[0].trace.allocatedCount == 10 && partialSites[0].trace.allocatedSize == 3000
          && partialSites[0].blocks == 10, "partially freed site: \(partialSites)")
    partial.withUnsafeMutableBufferPointer { ats_free_all($0.baseAddress! + 4, 6) }
    free(partialName)
    // Peak: rises only when blocks are added; resetPeak sets it to current; clearTraces zeroes both.
    let base = AllocationTracker.tracedMemory
    let big = ats_malloc_at_depth(1 << 20, 1)
    let high = AllocationTracker.tracedMemory
    free(big)
    let low = AllocationTracker.tracedMemory
    check(high.peak == base.current + (1 << 20) && low.peak == high.peak && low.current == base.current,
          "peak: \(base) \(high) \(low)")
    AllocationTracker.resetPeak()
    check(AllocationTracker.tracedMemory.peak == low.current, "resetPeak")
    let held = ats_malloc_at_depth(100, 1)
    AllocationTracker.clearTraces()
    let cleared = AllocationTracker.tracedMemory
    check(cleared.current == 0 && cleared.peak == 0 && cleared.liveBlocks == 0, "clearTraces: \(cleared)")
    free(held)
    check(AllocationTracker.tracedMemory.current == 0, "free after clearTraces")
    AllocationTracker.stop()
    print("accounting ok checks=\(checks)")

case "peak":
    // Who held the memory at the peak: exact per-site values in a process where only this thread allocates.
    func helperSites(_ snapshot: Snapshot) -> [Int] {  // the sites holding live blocks
        let range = ats_alloc_text_start()..<ats_alloc_text_end()
        return snapshot.traces.filter { $0.count > 0 && $0.traceback.frames.contains { range.contains($0.address) } }
            .map(\.size).sorted()
    }
    var a = [UnsafeMutableRawPointer?](repeating: nil, count: 10)
    var b = [UnsafeMutableRawPointer?](repeating: nil, count: 3)
    var c = [UnsafeMutableRawPointer?](repeating: nil, count: 2)
    var checks = 0
    func check(_ ok: Bool, _ what: @autoclosure () -> String) {
        if !ok { fail(what()) }
        checks += 1
    }
    do { try AllocationTracker.start(.init(maxFrames: 16, unwinder: .libunwind, limits: quiet)) } catch { fail("\(error)") }
    // Between here and the snapshots only the C helpers allocate (the arrays above exist already).
    _ = ats_allocate("malloc", 10, 1000, &a)        // 10 000
    ats_free_all(&a, 5)                             //  5 000
    _ = ats_allocate("calloc", 3, 4000, &b)         // 17 000: the peak
    ats_free_all(&b, 3)                             //  5 000
    _ = ats_allocate("realloc", 2, 3000, &c)        // 11 000
    let memory = AllocationTracker.tracedMemory
    let atPeak = try! AllocationTracker.takeSnapshot(at: .peak)
    let now = try! AllocationTracker.takeSnapshot()
    // (The runtime and libunwind make a few small allocations of their own on first use: the helper sites are
    // exact, the totals are compared with the counters.)
    check(memory.peak >= 17_000 && memory.current >= 11_000, "counters \(memory)")
    check(atPeak.moment == .peak && now.moment == .now, "moments")
    check(helperSites(atPeak) == [5_000, 12_000], "peak sites \(helperSites(atPeak))")
    check(atPeak.totalSize == memory.peak, "peak total \(atPeak.totalSize) != \(memory.peak)")
    check(atPeak.traces.filter { $0.size == 5_000 || $0.size == 12_000 }.map(\.count).sorted() == [3, 5],
          "peak blocks \(atPeak.traces.map(\.count))")
    check(helperSites(now) == [5_000, 6_000], "now sites \(helperSites(now))")
    check(now.totalSize == memory.current, "now total \(now.totalSize)")
    // The site that set the peak, named at the peak: calloc's line in the C helper.
    let top = try! atPeak.statistics(groupedBy: .line)[0]
    check(top.size == 12_000 && top.count == 3 && (top.traceback.frames[0].file ?? "").hasSuffix("support.c"),
          "top at peak \(top)")
    // A new, higher peak moves the peak snapshot; resetPeak makes it "now". (From here on, `top` and the
    // statistics' own blocks are live and tracked too, so totals are compared with the counters.)
    var d = [UnsafeMutableRawPointer?](repeating: nil, count: 1)
    _ = ats_allocate("malloc", 1, 20_000, &d)       // 31 000: a new peak
    ats_free_all(&d, 1)                             // 11 000
    let second = try! AllocationTracker.takeSnapshot(at: .peak)
    let secondMemory = AllocationTracker.tracedMemory
    check(second.totalSize == secondMemory.peak && helperSites(second) == [5_000, 6_000, 20_000],
          "second peak \(second.totalSize) vs \(secondMemory) \(helperSites(second))")
    AllocationTracker.resetPeak()
    let reset = try! AllocationTracker.takeSnapshot(at: .peak)
    let resetMemory = AllocationTracker.tracedMemory
    check(helperSites(reset) == [5_000, 6_000] && reset.totalSize == resetMemory.current,
          "after resetPeak \(helperSites(reset)) \(reset.totalSize) vs \(resetMemory)")
    a.withUnsafeMutableBufferPointer { ats_free_all($0.baseAddress! + 5, 5) }
    ats_free_all(&c, 2)
    // Frees do not move the peak: it still shows the blocks just freed.
    let finalMemory = AllocationTracker.tracedMemory
    let afterFrees = try! AllocationTracker.takeSnapshot(at: .peak)
    check(afterFrees.totalSize == finalMemory.peak && helperSites(afterFrees) == [5_000, 6_000],
          "peak kept after frees \(afterFrees.totalSize) vs \(finalMemory)")
    AllocationTracker.stop()
    print("peak ok checks=\(checks)")

case "softlimit":
    // Crosses a tracked-bytes soft limit once, then oscillates around it: exactly one report.
    let directory = String(arguments.dropFirst().first!)
    let calls = Atomic<Int>(0)
    AllocationTracker.onReport = { _ in calls.add(1, ordering: .relaxed) }
    try! AllocationTracker.start(.init(report: .init(directory: directory, standardError: false),
                                       limits: .init(trackedBytes: 8 << 20, containerFraction: nil,
                                                     minimumInterval: 60, pollInterval: 0.02)))
    var blocks = [UnsafeMutableRawPointer?](repeating: nil, count: 10)
    var line: Int32 = 0
    for i in 0..<10 { blocks[i] = ats_malloc_touched(1 << 20, &line) }
    usleep(300_000)
    for _ in 0..<15 {  // below the re-arm level and back over the limit, inside the minimum interval
        for i in 0..<3 { free(blocks[i]); blocks[i] = nil }
        usleep(50_000)
        for i in 0..<3 { blocks[i] = ats_malloc_touched(1 << 20, &line) }
        usleep(50_000)
    }
    AllocationTracker.stop()
    for block in blocks { free(block) }
    print("line=\(line) callbacks=\(calls.load(ordering: .relaxed))")

case "container-fake":
    // A fake cgroup v2 tree: usage below, then above 90 % of memory.max.
    let root = String(arguments.dropFirst().first!)
    let directory = String(arguments.dropFirst(2).first!)
    try! AllocationTracker.start(.init(report: .init(directory: directory, standardError: false),
                                       limits: .init(containerFraction: 0.9, pollInterval: 0.02,
                                                     cgroupRoot: root + "/cg", procSelfCgroup: root + "/proc_cgroup")))
    var line: Int32 = 0
    let block = ats_malloc_touched(100_000, &line)
    usleep(200_000)
    print("before=\(try! FileManager.default.contentsOfDirectory(atPath: directory).count)")
    try! "9500000\n".write(toFile: root + "/cg/test/memory.current", atomically: true, encoding: .utf8)
    usleep(400_000)
    AllocationTracker.stop()
    free(block)
    print("line=\(line)")

case "container-grow":
    // Grows by 1 MiB every 20 ms (pages touched) until the kernel's OOM killer ends it; the report must be
    // written before that, at 90 % of the cgroup's limit (so within ~0.25 s of crossing it, at this rate).
    let directory = String(arguments.dropFirst().first!)
    try! AllocationTracker.start(.init(report: .init(directory: directory),
                                       limits: .init(containerFraction: 0.9, pollInterval: 0.02)))
    var line: Int32 = 0
    var kept: [UnsafeMutableRawPointer?] = []
    kept.reserveCapacity(100_000)
    while true {
        kept.append(ats_malloc_touched(1 << 20, &line))
        usleep(20_000)
    }

case "signal":
    let directory = String(arguments.dropFirst().first!)
    try! AllocationTracker.start(.init(report: .init(directory: directory, standardError: false),
                                       limits: .init(containerFraction: nil, signal: SIGUSR2, pollInterval: 0.02)))
    var threads: [pthread_t] = []
    for _ in 0..<2 {
        var thread = pthread_t()
        pthread_create(&thread, nil, churn, nil)
        threads.append(thread)
    }
    var line: Int32 = 0
    let block = ats_malloc_touched(123_456, &line)
    kill(getpid(), SIGUSR2)
    var files = 0
    for _ in 0..<1500 where files == 0 {  // up to 15 s: a cold symbolication on a loaded machine is slow
        usleep(10_000)
        files = (try? FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".txt") }.count) ?? 0
    }
    scenarioRunning = false
    for thread in threads { pthread_join(thread, nil) }
    AllocationTracker.stop()
    free(block)
    print("line=\(line) reports=\(files)")

case "failure-pause":
    // failure-pause <directory>: an allocation fails for want of memory, then the report signal arrives. The
    // watchdog stays off the heap for pauseAfterAllocationFailure (2 s) after the failure: the signal's report is
    // written only after the pause, and then the failure's follow-up (onReport, the peak snapshot's JSON).
    let directory = String(arguments.dropFirst().first!)
    try! AllocationTracker.start(.init(report: .init(directory: directory, standardError: false),
                                       limits: .init(containerFraction: nil, signal: SIGUSR2, minimumInterval: 2,
                                                     pauseAfterAllocationFailure: 2, pollInterval: 0.02)))
    func reports(_ kind: String) -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter {
            ((try? String(contentsOfFile: directory + "/" + $0, encoding: .utf8)) ?? "").contains("report: \(kind)")
        }.count
    }
    let seen = Mutex<[AllocationReport]>([])
    AllocationTracker.onReport = { report in seen.withLock { $0.append(report) } }
    var line: Int32 = 0
    let held = ats_malloc_touched(3 << 20, &line)  // the peak's biggest site
    // A real shortage: 256 MiB with 64 MiB of address space left (the names are resolved first, so that the
    // watchdog has nothing to symbolicate under the limit).
    _EmergencyNames.refresh(warmingEverything: true)
    var big: UnsafeMutableRawPointer? = nil
    let mallocName = strdup("malloc")
    guard ats_limit_address_space(64 << 20) == 0 else { fail("setrlimit") }
    let failedAt = cat_monotonic_ns()
    let succeeded = ats_allocate(mallocName, 1, 256 << 20, &big)
    _ = ats_unlimit_address_space()
    kill(getpid(), SIGUSR2)
    usleep(600_000)
    let duringPause = reports("signal")
    let checkedAfter = Double(cat_monotonic_ns() - failedAt) / 1e9
    var afterPause = 0
    for _ in 0..<1500 where afterPause == 0 {  // up to 15 s
        usleep(10_000)
        afterPause = reports("signal")
    }
    let writtenAfter = Double(cat_monotonic_ns() - failedAt) / 1e9
    // The signal report's callback runs just after its file is written: wait for it (up to 5 s). Counted before
    // the impossible size below, which writes a report of its own.
    for _ in 0..<500 where seen.withLock({ $0.count }) < 2 { usleep(10_000) }
    let reportsSeen = seen.withLock { $0 }
    let failureReportFiles = reports("allocation failure")
    // An impossible size (more than the machine's memory) fails too, but is no sign of pressure: no pause.
    var huge: UnsafeMutableRawPointer? = nil
    _ = ats_allocate(mallocName, 1, 1 << 62, &huge)
    print("impossible_size_pauses=\(cat_emergency_memory_short(cat_monotonic_ns(), 1_000_000_000))")
    free(mallocName)
    AllocationTracker.stop()
    free(held)
    // The allocation failure's follow-up (after the pause): the callback, and the peak snapshot's JSON.
    let failures = reportsSeen.filter { $0.trigger == .allocationFailure }
    print("failure_callbacks=\(failures.count) callbacks=\(reportsSeen.count)")
    if let failure = failures.first {
        print("failure_reason=\(failure.reason.replacingOccurrences(of: " ", with: "_"))")
        print("failure_text_matches_file=\(failure.file.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) } == failure.text)")
        let loaded = failure.snapshotFile.flatMap { try? Snapshot(contentsOf: URL(fileURLWithPath: $0)) }
        print("failure_json_loaded=\(loaded != nil) json_moment=\(loaded.map { "\($0.moment)" } ?? "none")")
        let top = (try? loaded?.statistics(groupedBy: .line).first).flatMap { $0 }
        print("json_top=\(top.map { "\($0.traceback.frames.first?.file?.split(separator: "/").last ?? "?"):\($0.traceback.frames.first?.line ?? 0)" } ?? "none") held_line=\(line)")
    }
    print("malloc_succeeded=\(succeeded) failure_reports=\(failureReportFiles)")
    print("signal_during_pause=\(duringPause) checked_after=\(checkedAfter)")
    print("signal_after_pause=\(afterPause) written_after=\(writtenAfter)")

case "warm-up":
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

case "dlclose":
    // dlclose <library>: a block allocated by a dlopen'ed library stays live after the library is unloaded. The
    // snapshots before and after must work: the symbol cache and image maps start over, the unloaded frames lose
    // their names, the block stays accounted to its site and the caller's frames keep theirs.
    let path = String(arguments.dropFirst().first!)
    try! AllocationTracker.start(.init(unwinder: .libunwind, limits: quiet))
    guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else { fail("dlopen: \(String(cString: dlerror()))") }
    typealias Allocate = @convention(c) (Int) -> UnsafeMutableRawPointer?
    let allocate = unsafeBitCast(dlsym(handle, "ats_plugin_allocate")!, to: Allocate.self)
    let block = allocate(4242)!
    func site(_ snapshot: Snapshot) -> Trace? { snapshot.traces.first { $0.size == 4242 && $0.count == 1 } }
    func named(_ trace: Trace?) -> Bool { trace?.traceback.frames.contains { $0.function == "ats_plugin_allocate" } == true }
    func callerNamed(_ trace: Trace?) -> Bool {
        trace?.traceback.frames.contains { $0.file?.hasSuffix("main.swift") == true } == true
    }
    let before = site(try! AllocationTracker.takeSnapshot())
    let unloaded = dlclose(handle) == 0
    let after = site(try! AllocationTracker.takeSnapshot())
    print("named_before=\(named(before)) caller_before=\(callerNamed(before)) unloaded=\(unloaded)")
    print("site_after=\(after != nil) named_after=\(named(after)) caller_after=\(callerNamed(after))")
    free(block)
    AllocationTracker.stop()

case "report-symlink":
    // Symlinks planted at the report's first names are not followed: the report gets the next free name.
    let directory = String(arguments.dropFirst().first!)
    let target = String(arguments.dropFirst(2).first!)
    try! AllocationTracker.start(.init(report: .init(directory: directory, standardError: false),
                                       limits: .init(containerFraction: nil, onAllocationFailure: false)))
    let now = Int64(time(nil))
    for second in now...(now + 3) {
        let name = "\(directory)/alloc-report-\(getpid())-\(_utcCompact(second)).txt"
        symlink(target, name)
    }
    let report = try! AllocationTracker.writeReport(reason: "symlink test")
    AllocationTracker.stop()
    print("file=\(report.file ?? "none")")

case "at-exit":
    // An on-demand report, then more growth, then exit: the at-exit report lists what is still live and what
    // grew since the first report.
    let directory = String(arguments.dropFirst().first!)
    try! AllocationTracker.start(.init(report: .init(directory: URL(fileURLWithPath: directory), standardError: false),
                                       limits: .init(containerFraction: nil, onAllocationFailure: false,
                                                     reportAtExit: true)))
    var line: Int32 = 0
    var blocks: [UnsafeMutableRawPointer?] = [ats_malloc_touched(50_000, &line)]
    try! AllocationTracker.writeReport(reason: "before growth")
    for _ in 0..<4 { blocks.append(ats_malloc_touched(50_000, &line)) }
    print("line=\(line)")
    withExtendedLifetime(blocks) {}
    exit(0)

case "report-unwritable":
    try! AllocationTracker.start(.init(report: .init(directory: "/nonexistent-allocation-reports/x"),
                                       limits: .init(containerFraction: nil, onAllocationFailure: false)))
    let report = try! AllocationTracker.writeReport(reason: "unwritable test")
    AllocationTracker.stop()
    print("file=\(report.file ?? "none") problems=\(report.problems.count)")

case "availability":
    // Built with --sanitize=address/thread, the interposer is compiled out and start() says so.
    print("available=\(AllocationTracker.isAvailable)")
    do {
        try AllocationTracker.start()
        print("started=true")
    } catch let error as AllocationTrackingError {
        print("code=\(error.code)")
    }

case "libunwind":
    do {
        try AllocationTracker.start(.init(unwinder: .libunwind))
        print("started=true")
    } catch let error as AllocationTrackingError {
        print("code=\(error.code)")
        print("message=\(error.message)")
    }
    print("tracing=\(AllocationTracker.isTracing)")

case "oom":
    // oom <directory> [nonames]: allocate 1 MiB blocks from one C line until malloc fails under RLIMIT_AS; the
    // allocation-failure report is written from inside the failing malloc. With `nonames` the watchdog's refresh
    // is skipped, so the report falls back to image+offset with build ids.
    let rest = Array(arguments.dropFirst())
    guard let directory = rest.first else { fail("oom needs a directory") }
    OOM.resolveNames = !rest.contains("nonames")
    // With names, the default limits: the watchdog runs (and must stay off the heap once malloc failed).
    // Without, no watchdog at all, so that no refresh can name the site before the failure.
    let limits = OOM.resolveNames ? AllocationTracker.Configuration.Limits() : .init(containerFraction: nil, onAllocationFailure: false)
    do { try AllocationTracker.start(.init(maxFrames: 32, unwinder: .libunwind, limits: limits)) } catch { fail("\(error)") }
    AllocationTracker._configureEmergencyReport(directory: directory, topSites: 20, minimumInterval: 10, enabled: true)
    print("pid=\(getpid())")
    let capacity = 1 << 16
    let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: capacity)
    var failure: Int32 = 0, line: Int32 = 0
    let internalBefore = cat_debug_internal_allocations()
    let count = ats_allocate_until_failure(1 << 20, 4, { oomAfterWarmup() }, blocks, capacity, &failure, &line)
    let internalDuring = cat_debug_internal_allocations() &- internalBefore
    // A second failure inside the minimum interval: no second report.
    var huge: UnsafeMutableRawPointer? = nil
    let second = ats_allocate("malloc", 1, 1 << 36, &huge)
    let secondErrno = errno
    // The program's own error path: give the memory back, then report.
    ats_free_all(blocks, count)
    var written: UInt64 = 0, skipped: UInt64 = 0
    cat_emergency_stats(&written, &skipped)
    if count < capacity, failure == ENOMEM, second == 0, secondErrno == ENOMEM { print("error path ran") }
    print("blocks=\(count) errno=\(failure) line=\(line)")
    print("internal_allocations=\(internalDuring)")
    print("reports=\(written) skipped=\(skipped)")
    blocks.deallocate()
    exit(0)

case "oom-threads":
    // oom-threads <directory>: four threads allocate until malloc fails at about the same time. One report is
    // written; every other failure is skipped (a report in progress, or the minimum interval), and counted.
    guard let directory = arguments.dropFirst().first else { fail("oom-threads needs a directory") }
    do { try AllocationTracker.start(.init(maxFrames: 32, unwinder: .libunwind)) } catch { fail("\(error)") }
    AllocationTracker._configureEmergencyReport(directory: directory, topSites: 20, minimumInterval: 10, enabled: true)
    var threads: [pthread_t] = []
    for _ in 0..<OOM.threadCount {
        var thread = pthread_t()
        pthread_create(&thread, nil, oomThread, nil)
        threads.append(thread)
    }
    // Each thread first holds one block from its (only) allocation site, so the sites exist and are named before
    // the limit: the watchdog has nothing to symbolicate while memory runs out.
    while OOM.ready.load(ordering: .acquiring) < OOM.threadCount { usleep(1_000) }
    oomAfterWarmup()  // names the sites, then the limit, with every thread's stack mapped already
    OOM.go.store(1, ordering: .releasing)
    for thread in threads { pthread_join(thread, nil) }
    var written: UInt64 = 0, skipped: UInt64 = 0
    cat_emergency_stats(&written, &skipped)
    print("enomem_threads=\(OOM.enomemThreads.load(ordering: .relaxed))")
    print("reports=\(written) skipped=\(skipped)")
    exit(0)

case "oom-configured": oomConfiguredScenario(Array(arguments.dropFirst()))
case "pause-after-failure": pauseAfterFailureScenario(Array(arguments.dropFirst()))
default:
    fail("unknown scenario \(arguments.first ?? "<none>")")
}

/// State of the oom scenarios (static members: initialised on first use, unlike top-level globals below the switch).
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
    if OOM.resolveNames { _EmergencyNames.refresh(warmingEverything: true) }
    let result = ats_limit_address_space(64 << 20)
    if result != 0 { fail("setrlimit: \(result)") }
}

import AllocationTracking
import CAllocationTracking
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The tracker's threads allocate from a private heap (tracker_heap.c), so that their memory is counted: blocks of
/// every kind come from it and keep their contents, sizes and alignment; any thread may free them; freed blocks
/// are reused; its resident bytes as reported equal what /proc/self/smaps shows for its mapping; the tracker's own
/// threads use it; and a child of fork() can free its blocks.
@_silgen_name("malloc_usable_size") private func usableSize(_ block: UnsafeMutableRawPointer?) -> Int

enum TrackerHeapScenario: Scenario {
    static let name = "tracker-heap"

    /// What the thread allocates: (size, alignment; 0: malloc, 1: calloc, 2: realloc from 10 bytes).
    static let requests: [(size: Int, alignment: Int)] = [
        (1, 0), (16, 0), (17, 0), (100, 0), (1000, 0), (5000, 0), (40_000, 0), (200_000, 0),
        (100, 64), (5000, 4096), (1000, 1), (100_000, 2), (0, 0),
    ]
    static let rounds = 20
    nonisolated(unsafe) static var blocks = [UnsafeMutableRawPointer?](repeating: nil, count: requests.count * rounds)
    nonisolated(unsafe) static var threadProblems = 0

    static func pattern(_ index: Int) -> UInt8 { UInt8(truncatingIfNeeded: index &* 31 &+ 7) }

    /// On a thread made by cat_thread_create (the tracker's threads' way): allocates every request `rounds` times
    /// and fills each block with its pattern. Only C allocation calls, so that the blocks are exactly these.
    static func allocateOnTrackerThread() {
        var thread = pthread_t()
        let created = cat_thread_create(&thread, { _ in
            if cat_thread_uses_private_heap() == 0 { TrackerHeapScenario.threadProblems += 1 }
            for index in 0..<TrackerHeapScenario.blocks.count {
                let (size, alignment) = TrackerHeapScenario.requests[index % TrackerHeapScenario.requests.count]
                var block: UnsafeMutableRawPointer?
                switch alignment {
                case 0: block = malloc(size)
                case 1:
                    block = calloc(size / 10, 10)
                    if let block, (0..<size).contains(where: { block.load(fromByteOffset: $0, as: UInt8.self) != 0 }) {
                        TrackerHeapScenario.threadProblems += 1
                    }
                case 2:
                    block = realloc(malloc(10), size)
                default:
                    if posix_memalign(&block, alignment, size) != 0 { block = nil }
                }
                if let block { memset(block, Int32(TrackerHeapScenario.pattern(index)), size) }
                TrackerHeapScenario.blocks[index] = block
            }
            return nil
        }, nil)
        if created != 0 { fail("cat_thread_create: \(created)") }
        pthread_join(thread, nil)
        if threadProblems != 0 { fail("the thread did not use the heap, or calloc did not zero (\(threadProblems))") }
    }

    static func heap() -> (resident: Int, live: Int, blocks: Int, stacks: Int) {
        var resident: UInt64 = 0, live: UInt64 = 0, blocks: UInt64 = 0, stacks: UInt64 = 0
        cat_tracker_threads_memory(&resident, &live, &blocks, &stacks)
        return (Int(resident), Int(live), Int(blocks), Int(stacks))
    }

    /// The Rss of the mapping that starts at `base`, from /proc/self/smaps.
    static func smapsResident(base: UInt64) -> Int? {
        // Read to the end (the file's size is 0 to stat, so not with String(contentsOfFile:)).
        let fd = open("/proc/self/smaps", O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while case let n = read(fd, &buffer, buffer.count), n > 0 { bytes += buffer[0..<n] }
        let text = String(decoding: bytes, as: UTF8.self)
        var inHeap = false
        for line in text.split(separator: "\n") {
            if let dash = line.firstIndex(of: "-"), let start = UInt64(line[..<dash], radix: 16),
               line[line.index(after: dash)...].first?.isHexDigit == true {
                inHeap = start == base
            } else if inHeap, line.hasPrefix("Rss:") {
                return Int(line.split(separator: " ")[1]).map { $0 * 1024 }
            }
        }
        return nil
    }

    static func run(_ arguments: ArraySlice<String>) {
        var checks = 0
        func check(_ ok: Bool, _ what: @autoclosure () -> String) {
            if !ok { fail(what()) }
            checks += 1
        }
        allocateOnTrackerThread()
        var base: UInt64 = 0, limit: UInt64 = 0
        cat_tracker_heap_range(&base, &limit)
        check(base != 0 && limit > base, "no heap: [\(base), \(limit))")
        // 1. Every block is in the heap, intact, as large and as aligned as asked; the main thread frees them.
        let afterFirst = heap()
        for (index, block) in blocks.enumerated() {
            let (size, alignment) = requests[index % requests.count]
            guard let block else { fail("request \(index) (\(size) B) returned NULL") }
            let address = UInt64(UInt(bitPattern: block))
            check(address >= base && address < limit, "block \(index) at \(address) outside the heap")
            check(usableSize(block) >= size, "usable size \(usableSize(block)) < \(size)")
            if alignment > 2 { check(address % UInt64(alignment) == 0, "block \(index) not aligned to \(alignment)") }
            check((0..<size).allSatisfy { block.load(fromByteOffset: $0, as: UInt8.self) == pattern(index) },
                  "block \(index) (\(size) B) lost its contents")
        }
        check(afterFirst.blocks >= blocks.count, "live blocks \(afterFirst.blocks) < \(blocks.count)")
        // 2. The reported resident bytes are what the kernel shows for the mapping.
        if let rss = smapsResident(base: base) {
            check(rss == afterFirst.resident, "smaps Rss \(rss) vs reported \(afterFirst.resident)")
        } else {
            fail("the heap's mapping at \(String(base, radix: 16)) is not in /proc/self/smaps")
        }
        // Exact across the frees alone: the Swift runtime may free on this thread blocks the tracker-made thread
        // allocated (its caches grow here and free their old storage), so the count is taken right before.
        let beforeFrees = heap()
        for index in blocks.indices { free(blocks[index]) }
        let freed = heap()
        check(freed.blocks == beforeFrees.blocks - blocks.count, "live blocks after the frees \(freed) (before \(beforeFrees))")
        // 3. Freed blocks are reused: a second round touches no new memory (large blocks' pages were given back and
        //    are touched again; one page of slack for the thread's own start-up).
        allocateOnTrackerThread()
        let second = heap()
        check(second.resident <= afterFirst.resident + 4096, "resident grew on reuse: \(afterFirst.resident) -> \(second.resident)")
        // 4. A child of fork() frees a heap block and allocates.
        let child = fork()
        if child == 0 {
            free(blocks[0])
            let block = malloc(100)
            _exit(block == nil ? 1 : 0)
        }
        var status: Int32 = 0
        waitpid(child, &status, 0)
        check(status == 0, "the child exited with status \(status)")
        for index in blocks.indices { free(blocks[index]) }
        // 5. The tracker's own threads allocate there: a report by signal (its names resolved on the tracker's
        //    threads) leaves blocks and resident pages in the heap, and the breakdown counts them.
        let before = heap()
        let reported = DispatchSemaphore(value: 0)
        AllocationTracker.onReport = { _ in reported.signal() }
        do {
            try AllocationTracker.start(.init(report: .init(standardError: false),
                                              limits: .init(containerFraction: nil, onAllocationFailure: false, signal: SIGUSR2)))
        } catch { fail("\(error)") }
        let held = (0..<50).map { _ in malloc(1000) }
        // To the process, not this thread (raise): a test runner's child may start with SIGUSR2 blocked on its main
        // thread (a libdispatch thread's mask); the watchdog takes a process-directed one.
        kill(getpid(), SIGUSR2)
        check(reported.wait(timeout: .now() + 30) == .success, "no report within 30 s")
        let after = heap()
        let breakdown = AllocationTracker.trackerMemoryBreakdown
        check(after.resident >= before.resident && after.blocks > before.blocks - 1 && after.stacks > 0,
              "the tracker's threads: heap \(before) -> \(after)")
        check(breakdown.threads >= after.resident && breakdown.total >= breakdown.tables + breakdown.threads,
              "breakdown \(breakdown) vs heap \(after)")
        AllocationTracker.stop()
        held.forEach { free($0) }
        print("heap \(after) breakdown \(breakdown)")
        print("tracker-heap ok checks=\(checks)")
    }
}

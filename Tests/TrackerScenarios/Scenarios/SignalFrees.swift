import AllocationTracking
import CAllocationTracking
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A SIGUSR1 handler that frees, allocates and reallocates blocks of a shared array (and makes a malloc/free
/// pair of its own), hit every ~20 µs by another thread while the main thread mallocs and frees in a loop: first
/// untracked, then tracked with frame pointers, the same loop in the same process. Many signals land inside the
/// tracker's hook; their frees and allocations must be recorded all the same (queued until the hook exits), so
/// the tracked loop stays within 2× the untracked one, the counters come back exactly to their baseline once
/// every block is freed, and every allocation the handler made is counted.
///
/// Allocator safety of the handler itself (glibc is not async-signal-safe): the main loop uses one size (its
/// tcache bin goes 1 → 0 → 1, never touching the arena lock after the warm-up) and the handler other sizes, so
/// a handler that interrupts glibc works on other tcache bins, and when it needs the arena lock the main
/// thread does not hold it.
enum SignalFreesScenario: Scenario {
    static let name = "signal-frees"

    static func run(_ arguments: ArraySlice<String>) {
        let iterations = arguments.dropFirst().first.flatMap { Int($0) } ?? 300_000
        SignalFrees.work = arguments.dropFirst(2).first.flatMap { Int($0) } ?? 600
        SignalFrees.prepare()
        var action = sigaction()
        action.__sigaction_handler.sa_handler = signalFreesHandler
        sigemptyset(&action.sa_mask)
        action.sa_flags = SA_RESTART
        guard sigaction(SIGUSR1, &action, nil) == 0 else { fail("sigaction: errno \(errno)") }
        // A blocked mask is inherited across exec (the test runner's may block SIGUSR1): this thread takes it.
        var mask = sigset_t()
        sigemptyset(&mask)
        sigaddset(&mask, SIGUSR1)
        pthread_sigmask(SIG_UNBLOCK, &mask, nil)
        SignalFrees.target = pthread_self()
        var sender = pthread_t()
        guard pthread_create(&sender, nil, signalFreesSender, nil) == 0 else { fail("pthread_create") }
        SignalFrees.loop(1000)  // warm-up: the loop's tcache bin, lazy work of the first calls

        // Untracked.
        let untracked = SignalFrees.timedLoop(iterations, cpuLimit: nil)
        SignalFrees.freeBlocks()
        let untrackedSignals = SignalFrees.handled.load(ordering: .relaxed)

        // Tracked, frame pointers.
        do { try AllocationTracker.start(.init(maxFrames: 32, unwinder: .framePointers, limits: quiet)) } catch { fail("\(error)") }
        SignalFrees.loop(1000)  // the main thread's first capture reads its stack bounds (a rare path)
        let baseline = AllocationTracker.tracedMemory
        let internalBefore = cat_debug_internal_allocations()
        var deferredBefore: (frees: UInt64, allocations: UInt64, overflows: UInt64) = (0, 0, 0)
        cat_debug_deferred_events(&deferredBefore.frees, &deferredBefore.allocations, &deferredBefore.overflows)
        let allocationsBefore = SignalFrees.allocations.load(ordering: .relaxed)
        let framesBefore = SignalFrees.handled.load(ordering: .relaxed)
        // Twice the untracked time is the bound: the loop stops there (before the fix, 300 k iterations took
        // more than a minute).
        let tracked = SignalFrees.timedLoop(iterations, cpuLimit: 2 * untracked.cpu)
        let handlerAllocations = SignalFrees.allocations.load(ordering: .relaxed) - allocationsBefore
        let trackedSignals = SignalFrees.handled.load(ordering: .relaxed) - framesBefore
        let during = AllocationTracker.tracedMemory
        let liveHandlerBlocks = SignalFrees.freeBlocks()
        let after = AllocationTracker.tracedMemory
        var deferred: (frees: UInt64, allocations: UInt64, overflows: UInt64) = (0, 0, 0)
        cat_debug_deferred_events(&deferred.frees, &deferred.allocations, &deferred.overflows)
        deferred = (deferred.frees - deferredBefore.frees, deferred.allocations - deferredBefore.allocations,
                    deferred.overflows - deferredBefore.overflows)
        let internalAllocations = cat_debug_internal_allocations() - internalBefore
        AllocationTracker.stop()
        SignalFrees.running.store(false, ordering: .releasing)
        pthread_join(sender, nil)

        func seconds(_ s: Double) -> String { String(format: "%.3f", s) }
        print("iterations=\(iterations)")
        print("untracked cpu_s=\(seconds(untracked.cpu)) wall_s=\(seconds(untracked.wall)) signals=\(untrackedSignals)")
        print("tracked cpu_s=\(seconds(tracked.cpu)) wall_s=\(seconds(tracked.wall)) signals=\(trackedSignals) "
              + "completed=\(tracked.completed) ratio_cpu=\(String(format: "%.2f", tracked.cpu / untracked.cpu))")
        print("handler_allocations=\(handlerAllocations) live_handler_blocks_at_end=\(liveHandlerBlocks)")
        print("deferred_frees=\(deferred.frees) deferred_allocations=\(deferred.allocations) "
              + "overflows=\(deferred.overflows) internal_allocations=\(internalAllocations)")
        print("baseline: \(baseline)")
        print("during:   \(during)")
        print("after:    \(after)")

        guard tracked.completed == iterations else {
            fail("tracked loop exceeded 2x the untracked CPU time (\(seconds(untracked.cpu)) s) after "
                 + "\(tracked.completed) of \(iterations) iterations")
        }
        // Every allocation counted: the loop's and the handler's (inside the hook or not).
        let expectedAllocations = iterations + handlerAllocations
        guard during.totalAllocations - baseline.totalAllocations == expectedAllocations else {
            fail("totalAllocations grew by \(during.totalAllocations - baseline.totalAllocations), expected "
                 + "\(expectedAllocations) (\(iterations) loop + \(handlerAllocations) handler)")
        }
        // The handler's live blocks are exactly what the tables hold beyond the baseline; all freed, nothing left.
        guard during.liveBlocks - baseline.liveBlocks == liveHandlerBlocks.count,
              during.current - baseline.current == liveHandlerBlocks.bytes else {
            fail("live beyond the baseline: \(during.liveBlocks - baseline.liveBlocks) blocks, "
                 + "\(during.current - baseline.current) B; the handler holds \(liveHandlerBlocks)")
        }
        guard after.current == baseline.current, after.liveBlocks == baseline.liveBlocks else {
            fail("phantom blocks: \(after.liveBlocks - baseline.liveBlocks) blocks, \(after.current - baseline.current) B")
        }
        guard trackedSignals > 100 else { fail("only \(trackedSignals) signals arrived: the loop was not interrupted") }
        // The handler's events inside the hook were queued (the path under test ran) and none was lost.
        guard deferred.frees > 0, deferred.allocations > 0 else { fail("no signal landed inside the hook: \(deferred)") }
        guard deferred.overflows == 0, after.droppedAllocations == baseline.droppedAllocations else {
            fail("events were dropped: \(deferred), dropped \(baseline.droppedAllocations) -> \(after.droppedAllocations)")
        }
        // Every allocation the handler made inside the hook was queued: the hook itself allocated nothing.
        guard internalAllocations == deferred.allocations else { fail("internal allocations \(internalAllocations) != queued \(deferred.allocations)") }
        print("signal-frees ok")
    }
}

/// The handler's and the sender's state: made before the handler is installed (Swift globals are initialised
/// lazily, which must not happen in a handler), then plain memory and atomics.
enum SignalFrees {
    static let slots = 64
    nonisolated(unsafe) static let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: slots)
    nonisolated(unsafe) static let sizes = UnsafeMutablePointer<Int>.allocate(capacity: slots)
    static let handled = Atomic<Int>(0)
    static let allocations = Atomic<Int>(0)
    static let sending = Atomic<Bool>(false)
    static let running = Atomic<Bool>(true)
    static let senderRounds = Atomic<Int>(0)
    nonisolated(unsafe) static var target = pthread_t()
    nonisolated(unsafe) static var sink: UInt64 = 0
    /// Multiply-adds per iteration (the work on the block).
    nonisolated(unsafe) static var work = 600
    /// The last block the loop or the handler freed: stored so the optimiser cannot elide a malloc/free pair
    /// (an atomic: the handler stores it too, and a Swift variable's exclusivity check is not for handlers).
    static let escaped = Atomic<Int>(0)

    static func prepare() {
        blocks.initialize(repeating: nil, count: slots)
        sizes.initialize(repeating: 0, count: slots)
        _ = handled.load(ordering: .relaxed)
        _ = allocations.load(ordering: .relaxed)
        _ = sending.load(ordering: .relaxed)
        _ = running.load(ordering: .relaxed)
        _ = senderRounds.load(ordering: .relaxed)
        sink = 0
        escaped.store(0, ordering: .relaxed)
    }

    /// The loop under test: one malloc and one free per iteration, with some work on the block (about a
    /// microsecond untracked, so the comparison measures the tracker, not a bare malloc).
    @inline(never)
    @discardableResult
    static func loop(_ iterations: Int) -> Int {
        var checksum: UInt64 = sink
        for i in 0..<iterations {
            guard let block = malloc(96) else { fail("malloc(96) failed") }
            let words = block.assumingMemoryBound(to: UInt64.self)
            for w in 0..<12 { words[w] = UInt64(truncatingIfNeeded: i &+ w) }
            for k in 0..<work { checksum = checksum &* 6_364_136_223_846_793_005 &+ words[k % 12] }
            escaped.store(Int(bitPattern: block), ordering: .relaxed)
            free(block)
        }
        sink = checksum
        return iterations
    }

    static func timedLoop(_ iterations: Int, cpuLimit: Double?) -> (cpu: Double, wall: Double, completed: Int) {
        let startCPU = now(CLOCK_THREAD_CPUTIME_ID), startWall = now(CLOCK_MONOTONIC)
        sending.store(true, ordering: .releasing)
        var completed = 0
        while completed < iterations {
            completed += loop(min(1024, iterations - completed))
            if let cpuLimit, now(CLOCK_THREAD_CPUTIME_ID) - startCPU > cpuLimit { break }
        }
        let cpu = now(CLOCK_THREAD_CPUTIME_ID) - startCPU, wall = now(CLOCK_MONOTONIC) - startWall
        stopSending()
        return (cpu, wall, completed)
    }

    /// Returns once no signal can arrive any more: the sender went through a whole round after seeing the flag,
    /// and a system call of this thread delivered any signal still pending.
    static func stopSending() {
        sending.store(false, ordering: .releasing)
        let round = senderRounds.load(ordering: .acquiring)
        while senderRounds.load(ordering: .acquiring) < round + 2 { sched_yield() }
        var pause = timespec(tv_sec: 0, tv_nsec: 1_000_000)
        nanosleep(&pause, nil)
    }

    /// Frees every block the handler left in the array; returns how many and their bytes. Signals stopped.
    @discardableResult
    static func freeBlocks() -> (count: Int, bytes: Int) {
        var count = 0, bytes = 0
        for slot in 0..<slots {
            guard let block = blocks[slot] else { continue }
            count += 1
            bytes += sizes[slot]
            free(block)
            blocks[slot] = nil
            sizes[slot] = 0
        }
        return (count, bytes)
    }

    static func now(_ clock: clockid_t) -> Double {
        var t = timespec()
        clock_gettime(clock, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }
}

/// The SIGUSR1 handler: frees and allocates (even signals) or reallocates (odd ones) a block of the shared
/// array, then mallocs and frees a block of its own (a pair that must net out).
func signalFreesHandler(_: Int32) {
    let n = SignalFrees.handled.add(1, ordering: .relaxed).oldValue
    let slot = (n / 2) % SignalFrees.slots
    let blocks = SignalFrees.blocks, sizes = SignalFrees.sizes
    if n % 2 == 0 {
        if let old = blocks[slot] { free(old) }
        blocks[slot] = malloc(333)
        sizes[slot] = blocks[slot] == nil ? 0 : 333
        if blocks[slot] != nil { SignalFrees.allocations.add(1, ordering: .relaxed) }
    } else {
        let size = sizes[slot] == 333 ? 444 : 333
        if let moved = realloc(blocks[slot], size) {  // a realloc counts as one allocation (and one free)
            blocks[slot] = moved
            sizes[slot] = size
            SignalFrees.allocations.add(1, ordering: .relaxed)
        }
    }
    if let own = malloc(222) {
        SignalFrees.allocations.add(1, ordering: .relaxed)
        SignalFrees.escaped.store(Int(bitPattern: own), ordering: .relaxed)  // the optimiser may not drop the pair
        free(own)
    }
}

/// Sends SIGUSR1 to the main thread every ~20 µs while `sending` is set.
func signalFreesSender(_: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    var mask = sigset_t()
    sigemptyset(&mask)
    sigaddset(&mask, SIGUSR1)
    pthread_sigmask(SIG_BLOCK, &mask, nil)
    var pause = timespec(tv_sec: 0, tv_nsec: 20_000)
    while SignalFrees.running.load(ordering: .acquiring) {
        if SignalFrees.sending.load(ordering: .acquiring) { pthread_kill(SignalFrees.target, SIGUSR1) }
        SignalFrees.senderRounds.add(1, ordering: .releasing)
        nanosleep(&pause, nil)
    }
    return nil
}

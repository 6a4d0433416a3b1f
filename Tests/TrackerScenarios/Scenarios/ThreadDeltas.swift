@_spi(Testing) import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Exact mode keeps per-thread counter deltas (`_UnsafeThreadDeltas`): a thread's exit folds them, a read is
/// exact, and the peak is off by less than 64 KiB per other thread holding deltas. In a child where only these
/// threads allocate.
enum ThreadDeltasScenario: Scenario {
    static let name = "threadDeltas"
    static let bound = 64 << 10  // CAT_D_BOUND_BYTES
    nonisolated(unsafe) static var lateKey = pthread_key_t()
    nonisolated(unsafe) static let sharedBlocks = UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutableRawPointer?>>.allocate(capacity: 1)
    nonisolated(unsafe) static let lateBlocks: UnsafeMutablePointer<UnsafeMutableRawPointer?> = {
        let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 10)
        blocks.initialize(repeating: nil, count: 10)
        return blocks
    }()

    /// A thread that runs `steps` one at a time, each when `go` is posted, posting `done` after each: it stays
    /// alive (its deltas pending) between steps and after the last, until `join`.
    final class Stepper: @unchecked Sendable {
        var go = sem_t(), done = sem_t()
        var thread = pthread_t()
        let steps: [() -> Void]
        init(_ steps: [() -> Void]) {
            self.steps = steps
            sem_init(&go, 0, 0)
            sem_init(&done, 0, 0)
            let box = Unmanaged.passRetained(self).toOpaque()
            pthread_create(&thread, nil, { raw in
                let me = Unmanaged<Stepper>.fromOpaque(raw!).takeRetainedValue()
                for step in me.steps {
                    sem_wait(&me.go)
                    step()
                    sem_post(&me.done)
                }
                sem_wait(&me.go)  // join: exit now
                return nil
            }, box)
        }
        func step() {
            sem_post(&go)
            sem_wait(&done)
        }
        func join() {
            sem_post(&go)
            pthread_join(thread, nil)
        }
    }

    static func run(_ arguments: ArraySlice<String>) {
        func helperSites(_ snapshot: Snapshot) -> (bytes: Int, blocks: Int) {
            let range = ats_alloc_text_start()..<ats_alloc_text_end()
            let sites = snapshot.traces.filter { $0.traceback.frames.contains { range.contains($0.address) } }
            return (sites.reduce(0) { $0 + $1.size }, sites.reduce(0) { $0 + $1.count })
        }
        var checks = 0
        func check(_ ok: Bool, _ what: @autoclosure () -> String) {
            if !ok { fail(what()) }
            checks += 1
        }
        let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 128)
        blocks.initialize(repeating: nil, count: 128)
        let big = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 1)
        big.initialize(to: nil)
        do { try AllocationTracker.start(.init(maxFrames: 16, unwinder: .framePointers, limits: quiet)) } catch { fail("\(error)") }

        // 1. A thread's exit folds its deltas. The peak is set high first, so that the thread's ten small blocks
        //    (below every flush bound) stay pending in its deltas until it exits.
        _ = ats_allocate("malloc", 1, 1 << 20, big)
        ats_free_all(big, 1)
        let exiting = Stepper([{ _ = ats_allocate("malloc", 10, 100, blocks) }])
        exiting.step()
        exiting.join()  // the blocks are still pending in its deltas until here
        let afterExit = helperSites(try! AllocationTracker.takeSnapshot())
        check(afterExit.bytes == 1000 && afterExit.blocks == 10, "after the thread's exit: \(afterExit)")
        ats_free_all(blocks, 10)

        // 2. The peak's bound. Y allocates 40 KiB (each block a new peak: flushed); X frees 30 KiB of it, which
        //    stays pending in X's deltas; Y allocates 30 KiB more. True current and peak: 40 KiB above the base.
        //    Y's view of current misses X's pending frees, so the peak reads up to 30 KiB high: within the bound
        //    of 64 KiB for the one other thread holding deltas. A read is exact.
        AllocationTracker.clearTraces()
        let y = Stepper([{ _ = ats_allocate("malloc", 40, 1024, blocks) },
                         { _ = ats_allocate("malloc", 30, 1024, blocks + 40) }])
        let x = Stepper([{ ats_free_all(blocks, 30) }])
        y.step()
        x.step()
        y.step()
        // What is live now is the most that ever was since clearTraces (the threads' 40 KiB, the steppers' own
        // few blocks): the true peak is `current`.
        let now = try! AllocationTracker.takeSnapshot()
        let memory = now.tracedMemory!
        check(helperSites(now).bytes == 40 * 1024 && helperSites(now).blocks == 40, "sites now \(helperSites(now))")
        check(now.totalSize == memory.current, "current \(memory.current) vs the sites' sum \(now.totalSize)")
        check(abs(memory.peak - memory.current) < bound, "peak \(memory.peak) vs true \(memory.current): beyond the bound")
        let atPeak = try! AllocationTracker.takeSnapshot(at: .peak)
        check(abs(helperSites(atPeak).bytes - 40 * 1024) < bound, "sites at the peak \(helperSites(atPeak))")
        x.join()
        y.join()
        print("peak error \(memory.peak - memory.current) B")
        ats_free_all(blocks + 30, 40)
        let freed = try! AllocationTracker.takeSnapshot()
        check(helperSites(freed).blocks == 0 && freed.totalSize == freed.tracedMemory!.current, "after the frees \(freed.tracedMemory!)")
        // 3. A thread whose first allocation comes after its key destructors have run (in the last of glibc's four
        //    rounds) exits with its deltas registered and unfolded. They are in static memory, so a read folds them
        //    exactly, even after another thread reused the exited thread's stack (and TLS). With the deltas in TLS,
        //    this read a dead thread's memory (the release suite crashed there).
        var late = pthread_t()
        pthread_create(&late, nil, { _ in
            var key = pthread_key_t()
            pthread_key_create(&key) { value in
                // Re-armed for rounds 1-3 (glibc runs at most 4); the allocation only in round 4.
                let round = Int(bitPattern: value)
                if round < 4 {
                    pthread_setspecific(ThreadDeltasScenario.lateKey, UnsafeRawPointer(bitPattern: round + 1))
                } else {
                    _ = ats_allocate("malloc", 10, 100, ThreadDeltasScenario.lateBlocks)
                }
            }
            ThreadDeltasScenario.lateKey = key
            pthread_setspecific(key, UnsafeRawPointer(bitPattern: 1))
            return nil
        }, nil)
        pthread_join(late, nil)
        var reuse = pthread_t()
        pthread_create(&reuse, nil, { _ in nil }, nil)  // glibc reuses the cached stack, its TLS initialised again
        pthread_join(reuse, nil)
        let afterLate = helperSites(try! AllocationTracker.takeSnapshot())
        check(afterLate.bytes == 1000 && afterLate.blocks == 10, "a thread that registered after its destructors: \(afterLate)")
        ats_free_all(lateBlocks, 10)

        // 4. A thread that has not registered (its first event is a free: frees do not register) frees blocks still
        //    pending in another thread's deltas: the site's shared counters go below zero until a fold. A reader
        //    that does not fold (the allocation-failure report's top sites) shows no such site, not one of 16 EiB;
        //    a snapshot folds and is exact.
        let pending = Stepper([{ _ = ats_allocate("malloc", 10, 100, blocks) }])
        pending.step()
        sharedBlocks.pointee = blocks
        var freer = pthread_t()
        pthread_create(&freer, nil, { _ in
            ats_free_all(ThreadDeltasScenario.sharedBlocks.pointee, 10)  // nothing allocated before: unregistered
            return nil
        }, nil)
        pthread_join(freer, nil)
        let unfolded = AllocationTracker._unfoldedTopSites(20)
        check(unfolded.allSatisfy { $0.bytes >= 0 && $0.bytes < 1 << 40 && $0.blocks >= 0 && $0.blocks < 1 << 40 },
              "an unfolded reader saw a wrapped site: \(unfolded)")
        let afterFreer = helperSites(try! AllocationTracker.takeSnapshot())
        check(afterFreer.bytes == 0 && afterFreer.blocks == 0, "after another thread's frees: \(afterFreer)")
        pending.join()
        AllocationTracker.stop()

        // 4. The watchdog's trend samples fold the threads' deltas (cat_deltas_try_fold_all; the gate is free
        //    here): a thread's ten small blocks, pending in its deltas, are in the newest sample's tracked bytes.
        //    Nothing the tracker records happens between that sample and the read (sleeping, the semaphores and
        //    trend(over:), which is not recorded, allocate nothing traced).
        let sampled = AllocationTracker.Configuration(
            maxFrames: 16, unwinder: .framePointers,
            limits: .init(containerFraction: nil, onAllocationFailure: false, pollInterval: 0.02),
            trend: .init(interval: .milliseconds(50)))
        do { try AllocationTracker.start(sampled) } catch { fail("\(error)") }
        _ = ats_allocate("malloc", 1, 1 << 20, big)  // the peak high, so that the thread's blocks stay pending
        ats_free_all(big, 1)
        let holder = Stepper([{ _ = ats_allocate("malloc", 10, 100, blocks) }])
        holder.step()
        usleep(400_000)
        let latest = (try? AllocationTracker.trend(over: .seconds(60)))?.tracked?.latest
        let exact = AllocationTracker.tracedMemory.current
        check(latest == exact, "the newest trend sample's tracked bytes \(latest.map(String.init) ?? "none") vs \(exact)")
        holder.join()
        ats_free_all(blocks, 10)
        AllocationTracker.stop()
        print("threadDeltas ok checks=\(checks)")
    }
}

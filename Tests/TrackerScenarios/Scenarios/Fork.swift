import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum ForkScenario: Scenario {
    static let name = "fork"

    static func run(_ arguments: ArraySlice<String>) {
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
    }
}

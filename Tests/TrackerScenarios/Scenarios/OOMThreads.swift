import AllocationTracking
import CAllocationTracking
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

enum OOMThreadsScenario: Scenario {
    static let name = "oom-threads"

    static func run(_ arguments: ArraySlice<String>) {
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
    }
}

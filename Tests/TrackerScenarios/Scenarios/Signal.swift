import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum SignalScenario: Scenario {
    static let name = "signal"

    static func run(_ arguments: ArraySlice<String>) {
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
        // As in a service up for a second: the names thread has named the top sites (this waits for its first
        // refresh, which loads the debug information). A report resolves names within a budget, and the first
        // lookups of a process, in a large debug binary on a loaded machine, can take longer than that
        // (ReportFreshnessTests covers names not ready in time).
        _EmergencyNames.refresh()
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
    }
}

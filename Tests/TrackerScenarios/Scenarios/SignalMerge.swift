@_spi(Testing) import AllocationTracking
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Three report signals sent while the first signal's report is still being delivered (from its `onReport`, on
/// the watchdog's thread, so that no poll can take them one by one): the next report answers all three and says
/// it merged two; the counter says so too.
enum SignalMergeScenario: Scenario {
    static let name = "signal-merge"

    static let texts = Mutex<[String]>([])

    static func run(_ arguments: ArraySlice<String>) {
        AllocationTracker.onReport = { report in
            guard report.trigger == .signal else { return }
            let first = texts.withLock { texts in
                texts.append(report.text)
                return texts.count == 1
            }
            if first { for _ in 0..<3 { kill(getpid(), SIGUSR2) } }
        }
        AllocationTracker._reportNameBudget = .milliseconds(500)  // the library's default: latency is tested
        try! AllocationTracker.start(.init(report: .init(standardError: false),
                                           limits: .init(containerFraction: nil, signal: SIGUSR2, pollInterval: 0.02)))
        kill(getpid(), SIGUSR2)
        for _ in 0..<3000 where texts.withLock({ $0.count }) < 2 { usleep(10_000) }
        usleep(200_000)  // a third report, were there one, would be written by now
        let all = texts.withLock { $0 }
        let merged = AllocationTracker.reportSignalsMerged
        let written = AllocationTracker.reportsWritten[.signal] ?? 0
        AllocationTracker.stop()
        print("reports=\(all.count) written=\(written) merged=\(merged)")
        for (index, text) in all.enumerated() {
            let line = text.split(separator: "\n").first { $0.hasPrefix("signals: ") } ?? "(none)"
            print("report\(index + 1)_signals=\(line)")
        }
    }
}

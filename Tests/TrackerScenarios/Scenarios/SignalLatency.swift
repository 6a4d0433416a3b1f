@_spi(Testing) import AllocationTracking
import AllocationTrackingTestSupport
import CAllocationTracking
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// 20 report signals under allocation load from several threads, with the symbolicator kept busy by another
/// thread (cold, whole-snapshot batches: what a large binary's lookups, the allocation-failure names or an HTTP
/// snapshot do to it), each answered before the next is sent. Prints each signal's latency (sent → report written,
/// files and JSON included), their p95 and maximum, and whether every report said when its content was taken.
enum SignalLatencyScenario: Scenario {
    static let name = "signal-latency"
    static let signals = 20

    static let written = Mutex<[(at: UInt64, text: String)]>([])
    static let busyRounds = Atomic<Int>(0)

    static func run(_ arguments: ArraySlice<String>) {
        let directory = String(arguments.dropFirst().first!)
        AllocationTracker.onReport = { report in
            guard report.trigger == .signal else { return }
            let now = cat_monotonic_ns()
            written.withLock { $0.append((now, report.text)) }
        }
        // The production settings but for the report's destination: the default poll interval.
        AllocationTracker._reportNameBudget = .milliseconds(500)  // the library's default: latency is tested
        try! AllocationTracker.start(.init(report: .init(directory: directory, standardError: false),
                                           limits: .init(containerFraction: nil, signal: SIGUSR2)))
        var threads: [pthread_t] = []
        for _ in 0..<3 {
            var thread = pthread_t()
            pthread_create(&thread, nil, churn, nil)
            threads.append(thread)
        }
        // Sites that hold memory, at many depths (a stack per depth).
        var thread = pthread_t()
        pthread_create(&thread, nil, { _ in
            var held: [UnsafeMutableRawPointer?] = Array(repeating: nil, count: 400)
            var i = 0
            while scenarioRunning {
                free(held[i])
                held[i] = ats_malloc_at_depth(64 + i, Int32(1 + i % 40))
                i = (i + 1) % held.count
            }
            for block in held { free(block) }
            return nil
        }, nil)
        threads.append(thread)
        // The busy symbolicator.
        pthread_create(&thread, nil, { _ in
            while scenarioRunning {
                AllocationTracker._removeCachedSymbols()
                _ = try? AllocationTracker.takeSnapshot()
                SignalLatencyScenario.busyRounds.add(1, ordering: .relaxed)
            }
            return nil
        }, nil)
        threads.append(thread)
        usleep(300_000)

        var latencies: [Double] = []
        for index in 0..<signals {
            let sent = cat_monotonic_ns()
            kill(getpid(), SIGUSR2)
            var answer: UInt64?
            while answer == nil, cat_monotonic_ns() - sent < 30_000_000_000 {
                usleep(1000)
                answer = written.withLock { $0.count > index ? $0[index].at : nil }
            }
            guard let answer else { fail("signal \(index + 1) not answered within 30 s") }
            latencies.append(Double(answer - sent) / 1e9)
            usleep(100_000)
        }
        scenarioRunning = false
        for thread in threads { pthread_join(thread, nil) }
        let texts = written.withLock { $0.map(\.text) }
        AllocationTracker.stop()
        let sorted = latencies.sorted()
        let p95 = sorted[Int((Double(sorted.count) * 0.95).rounded(.up)) - 1]
        func ms(_ seconds: Double) -> String { String(Int((seconds * 1000).rounded())) }
        print("latencies_ms=\(latencies.map(ms).joined(separator: ","))")
        print("p95_ms=\(ms(p95)) max_ms=\(ms(sorted.last!)) median_ms=\(ms(sorted[sorted.count / 2]))")
        print("reports=\(texts.count) with_content_time=\(texts.filter { $0.contains("\ncontent: as of ") }.count) "
              + "with_unnamed=\(texts.filter { $0.contains("\nnames: ") }.count) busy_rounds=\(busyRounds.load(ordering: .relaxed))")
    }
}

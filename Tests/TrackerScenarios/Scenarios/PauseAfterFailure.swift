@_spi(Testing) import AllocationTracking
import AllocationTrackingTestSupport
import CAllocationTracking
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// pause-after-failure <directory> <minimumInterval> <pauseAfterAllocationFailure>: an allocation fails for want
/// of memory, then the report signal arrives at once. The watchdog stays off the heap for its pause after the
/// failure, so the signal's report is written only once the pause is over. Prints how long after the failure
/// that was (`signal_report_after`, seconds; `none` when not within 20 s).
enum PauseAfterFailureScenario: Scenario {
    static let name = "pause-after-failure"

    static func run(_ commandLine: ArraySlice<String>) {
        let arguments = Array(commandLine.dropFirst())
        guard arguments.count == 3, let minimumInterval = Double(arguments[1]), let pause = Double(arguments[2]) else {
            print("FAIL pause-after-failure needs a directory, a minimum interval and a pause")
            exit(1)
        }
        let signalReportWritten = Atomic<UInt64>(0)  // monotonic ns; 0: not yet
        AllocationTracker.onReport = { report in
            if report.trigger == .signal { signalReportWritten.store(cat_monotonic_ns(), ordering: .releasing) }
        }
        do {
            try AllocationTracker.start(.init(report: .init(directory: arguments[0], standardError: false),
                                              limits: .init(containerFraction: nil, signal: SIGUSR2,
                                                            minimumInterval: minimumInterval,
                                                            pauseAfterAllocationFailure: pause, pollInterval: 0.02)))
        } catch {
            print("FAIL \(error)")
            exit(1)
        }
        // A real shortage: 80 MiB with 64 MiB of address space left (not more than the whole limit, which is what is
        // mapped now plus 64 MiB: that would be an impossible request, with no report and no pause). The names are
        // resolved first, so that the watchdog has nothing to symbolicate under the limit.
        _EmergencyNames.refresh(ignoringBudget: true)
        let mallocName = strdup("malloc")
        var big: UnsafeMutableRawPointer? = nil
        guard ats_limit_address_space(64 << 20) == 0 else {
            print("FAIL setrlimit")
            exit(1)
        }
        let failedAt = cat_monotonic_ns()
        let succeeded = ats_allocate(mallocName, 1, 80 << 20, &big)
        _ = ats_unlimit_address_space()
        kill(getpid(), SIGUSR2)
        for _ in 0..<2000 where signalReportWritten.load(ordering: .acquiring) == 0 { usleep(10_000) }  // up to 20 s
        let written = signalReportWritten.load(ordering: .acquiring)
        AllocationTracker.stop()
        free(mallocName)
        print("malloc_succeeded=\(succeeded)")
        print("signal_report_after=\(written == 0 ? "none" : "\(Double(written - failedAt) / 1e9)")")
        exit(0)
    }
}

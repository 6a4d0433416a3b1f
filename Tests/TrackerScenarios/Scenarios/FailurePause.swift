import AllocationTracking
import AllocationTrackingTestSupport
import CAllocationTracking
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

enum FailurePauseScenario: Scenario {
    static let name = "failure-pause"

    static func run(_ arguments: ArraySlice<String>) {
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
        // A real shortage: 80 MiB with 64 MiB of address space left (not more than the whole limit, which is what is
        // mapped now plus 64 MiB: that would be an impossible request, with no report and no pause). The names are
        // resolved first, so that the watchdog has nothing to symbolicate under the limit.
        _EmergencyNames.refresh(ignoringBudget: true)
        var big: UnsafeMutableRawPointer? = nil
        let mallocName = strdup("malloc")
        guard ats_limit_address_space(64 << 20) == 0 else { fail("setrlimit") }
        let failedAt = cat_monotonic_ns()
        let succeeded = ats_allocate(mallocName, 1, 80 << 20, &big)
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
        // The signal report's callback runs just after its file is written: wait for it (up to 5 s).
        for _ in 0..<500 where seen.withLock({ $0.count }) < 2 { usleep(10_000) }
        let reportsSeen = seen.withLock { $0 }
        let failureReportFiles = reports("allocation failure")
        // An impossible size (more than the machine's memory) fails too, but is no sign of pressure: no pause (and
        // no report: impossibleSizeTakesNoReport).
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
    }
}

@_spi(Testing) import AllocationTracking
import AllocationTrackingTestSupport
import CAllocationTracking
#if canImport(Glibc)
import Glibc
#endif

/// report-killed <directory> <on-demand|allocation-failure>: the process is killed while a report's file is being
/// written — RLIMIT_FSIZE 0 with SIGXFSZ's default action, so the kernel kills it at the first byte written to the
/// file (as an OOM kill can land at any moment). The copy on stderr must already be complete: it is the one a
/// container's log keeps. The allocation-failure report is made longer than the C writer's 4 KiB buffer (64 sites
/// with names), so that a copy written buffer by buffer, file and stderr interleaved, would be cut.
enum ReportKilledScenario: Scenario {
    static let name = "report-killed"

    static func run(_ commandLine: ArraySlice<String>) {
        let arguments = Array(commandLine.dropFirst())
        guard arguments.count == 2 else { fail("report-killed needs a directory and a kind") }
        let (directory, kind) = (arguments[0], arguments[1])
        do {
            try AllocationTracker.start(.init(maxFrames: 32, unwinder: .libunwind,
                                              report: .init(directory: directory, topSites: 64),
                                              limits: .init(containerFraction: nil)))
        } catch { fail("\(error)") }
        // 60 sites: one stack each (the same line at 60 call depths).
        var held: [UnsafeMutableRawPointer?] = []
        for depth in 1...60 { held.append(ats_malloc_at_depth(64 + depth, Int32(depth))) }
        // Default action, unblocked (a test runner may spawn this child with it ignored or blocked).
        signal(SIGXFSZ, SIG_DFL)
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGXFSZ)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        var limit = rlimit(rlim_cur: 0, rlim_max: rlim_t.max)  // RLIM_INFINITY
        guard setrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &limit) == 0 else { fail("setrlimit") }
        switch kind {
        case "on-demand":
            _ = try? AllocationTracker.writeReport(reason: "killed while writing")
        case "allocation-failure":
            _EmergencyNames.refresh(ignoringBudget: true)
            guard ats_limit_address_space(64 << 20) == 0 else { fail("setrlimit") }
            var big: UnsafeMutableRawPointer? = nil
            _ = ats_allocate("malloc", 1, 80 << 20, &big)
        default:
            fail("unknown kind \(kind)")
        }
        print("survived")  // not reached: SIGXFSZ
        for block in held { free(block) }
        exit(0)
    }
}

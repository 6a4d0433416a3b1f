@_spi(Testing) import AllocationTracking
import AllocationTrackingTestSupport
import CAllocationTracking
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// report-disk-full <directory> <file size limit in bytes|none> <stderr on|off>: reports written where files cannot
/// be written completely — a full filesystem (the test mounts one) or RLIMIT_FSIZE (SIGXFSZ ignored, so writes past
/// the limit fail with EFBIG: a real kernel limit, no root needed). An on-demand report, then an allocation failure
/// (its report from inside malloc, then the watchdog's follow-up), then `Snapshot.write(to:)` over an existing
/// file `<directory>/explicit.json`. Prints what each said (`problem=` lines, spaces as `_`) and, at the end, every
/// entry of the directory with its size and mode (`entry=<name>:<bytes>:<mode>`).
enum ReportDiskFullScenario: Scenario {
    static let name = "report-disk-full"

    static func run(_ commandLine: ArraySlice<String>) {
        let arguments = Array(commandLine.dropFirst())
        guard arguments.count == 3 else { fail("report-disk-full needs a directory, a size limit and stderr on|off") }
        let directory = arguments[0]
        let standardError = arguments[2] == "on"
        let failures = Mutex<[AllocationReport]>([])
        AllocationTracker.onReport = { report in
            if report.trigger == .allocationFailure { failures.withLock { $0.append(report) } }
        }
        do {
            try AllocationTracker.start(.init(maxFrames: 32, unwinder: .libunwind,
                                              report: .init(directory: directory, standardError: standardError),
                                              limits: .init(containerFraction: nil, pauseAfterAllocationFailure: 0.2,
                                                            pollInterval: 0.02)))
        } catch { fail("\(error)") }
        let explicit = directory + "/explicit.json"
        let before = (try? Data(contentsOf: URL(fileURLWithPath: explicit))) ?? Data()
        signal(SIGXFSZ, SIG_IGN)
        if let bytes = UInt(arguments[1]) {
            var limit = rlimit(rlim_cur: rlim_t(bytes), rlim_max: rlim_t.max)  // RLIM_INFINITY
            guard setrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &limit) == 0 else { fail("setrlimit") }
        }
        func show(_ label: String, _ report: AllocationReport) {
            print("\(label)_file=\(report.file ?? "none") \(label)_json=\(report.snapshotFile ?? "none")")
            for problem in report.problems { print("\(label)_problem=\(problem.replacingOccurrences(of: " ", with: "_"))") }
        }
        do { show("on_demand", try AllocationTracker.writeReport(reason: "disk full")) } catch { fail("\(error)") }

        // A real shortage (80 MiB with 64 MiB of address space left), names resolved first.
        _EmergencyNames.refresh(ignoringBudget: true)
        let mallocName = strdup("malloc")
        var big: UnsafeMutableRawPointer? = nil
        guard ats_limit_address_space(64 << 20) == 0 else { fail("setrlimit") }
        let succeeded = ats_allocate(mallocName, 1, 80 << 20, &big)
        _ = ats_unlimit_address_space()
        free(mallocName)
        print("malloc_succeeded=\(succeeded)")
        for _ in 0..<1000 where failures.withLock({ $0.isEmpty }) { usleep(10_000) }  // up to 10 s
        if let failure = failures.withLock({ $0.first }) { show("failure", failure) } else { print("failure=none") }

        do {
            let snapshot = try AllocationTracker.takeSnapshot()
            try snapshot.write(to: URL(fileURLWithPath: explicit))
            print("explicit=written")
        } catch let error as AllocationTrackingError {
            print("explicit_error=\(error.code)")
        } catch { print("explicit_error=\(error)") }
        let after = (try? Data(contentsOf: URL(fileURLWithPath: explicit))) ?? Data()
        print("explicit_unchanged=\(after == before)")
        AllocationTracker.stop()
        for name in ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted() {
            var status = stat()
            lstat(directory + "/" + name, &status)
            print("entry=\(name):\(status.st_size):\(String(status.st_mode & 0o777, radix: 8))")
        }
        exit(0)
    }
}

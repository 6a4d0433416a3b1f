@_spi(Testing) import AllocationTracking
import AllocationTrackingTestSupport
import CAllocationTracking
#if canImport(Glibc)
import Glibc
#endif

/// oom-configured <directory> <fake root>: the allocation-failure report takes its settings from the
/// configuration given to `AllocationTracker.start`, as the other reports do: `standardError: false` (the report
/// goes to its file only) and the memory cgroup found under `cgroupRoot` / `procSelfCgroup` (a fake cgroup v2
/// tree the test made under <fake root>). 1 MiB blocks are allocated from one C line until malloc fails under
/// RLIMIT_AS; the report is written from inside the failing malloc.
enum OOMConfiguredScenario: Scenario {
    static let name = "oom-configured"

    static func run(_ commandLine: ArraySlice<String>) {
        let arguments = Array(commandLine.dropFirst())
        guard arguments.count == 2 else {
            print("FAIL oom-configured needs a directory and a fake cgroup root")
            exit(1)
        }
        let (directory, root) = (arguments[0], arguments[1])
        var limits = AllocationTracker.Configuration.Limits(containerFraction: nil)
        limits.cgroupRoot = root + "/cg"
        limits.procSelfCgroup = root + "/proc_cgroup"
        do {
            try AllocationTracker.start(.init(maxFrames: 32, unwinder: .libunwind,
                                              report: .init(directory: directory, standardError: false),
                                              limits: limits))
        } catch {
            print("FAIL \(error)")
            exit(1)
        }
        print("pid=\(getpid())")
        let capacity = 1 << 16
        let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: capacity)
        var failure: Int32 = 0, line: Int32 = 0
        let count = ats_allocate_until_failure(1 << 20, 4, { OOMConfiguredScenario.oomConfiguredAfterWarmup() }, blocks, capacity, &failure,
                                               &line)
        ats_free_all(blocks, count)
        var written: UInt64 = 0, skipped: UInt64 = 0
        cat_emergency_stats(&written, &skipped)
        print("blocks=\(count) errno=\(failure) line=\(line)")
        print("reports=\(written)")
        blocks.deallocate()
        exit(0)
    }

    /// Names the sites while memory is plentiful (the watchdog then has nothing to symbolicate under the limit, where
    /// an allocation of its own would trap), then limits the address space to what is mapped now plus 64 MiB.
    static func oomConfiguredAfterWarmup() {
        _EmergencyNames.refresh(ignoringBudget: true)
        let result = ats_limit_address_space(64 << 20)
        if result != 0 {
            print("FAIL setrlimit: \(result)")
            exit(1)
        }
    }
}

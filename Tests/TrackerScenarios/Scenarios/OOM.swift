import AllocationTracking
import AllocationTrackingTestSupport
import CAllocationTracking
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

enum OOMScenario: Scenario {
    static let name = "oom"

    static func run(_ arguments: ArraySlice<String>) {
        // oom <directory> [nonames] [sampled]: (sampled: Poisson sampling every 512 KiB on average) allocate 1 MiB blocks from one C line until malloc fails under RLIMIT_AS; the
        // allocation-failure report is written from inside the failing malloc. With `nonames` the watchdog's refresh
        // is skipped, so the report falls back to image+offset with build ids.
        let rest = Array(arguments.dropFirst())
        guard let directory = rest.first else { fail("oom needs a directory") }
        OOM.resolveNames = !rest.contains("nonames")
        // With names, the default limits: the watchdog runs (and must stay off the heap once malloc failed).
        // Without, no watchdog at all, so that no refresh can name the site before the failure.
        let limits = OOM.resolveNames ? AllocationTracker.Configuration.Limits() : .init(containerFraction: nil, onAllocationFailure: false)
        let sampling: AllocationTracker.Configuration.Sampling = rest.contains("sampled") ? .poisson(meanBytes: 512 << 10) : .exact
        do { try AllocationTracker.start(.init(maxFrames: 32, unwinder: .libunwind, limits: limits, sampling: sampling)) } catch { fail("\(error)") }
        AllocationTracker._configureEmergencyReport(directory: directory, topSites: 20, minimumInterval: 10, enabled: true)
        print("pid=\(getpid())")
        let capacity = 1 << 16
        let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: capacity)
        var failure: Int32 = 0, line: Int32 = 0
        let internalBefore = cat_debug_internal_allocations()
        let count = ats_allocate_until_failure(1 << 20, 4, { oomAfterWarmup() }, blocks, capacity, &failure, &line)
        let internalDuring = cat_debug_internal_allocations() &- internalBefore
        // A second failure inside the minimum interval: no second report. A size the limit could hold (16 MiB, not
        // more than the address-space limit: that would be an impossible request, which is not rate-limited).
        var huge: UnsafeMutableRawPointer? = nil
        let second = ats_allocate("malloc", 1, 16 << 20, &huge)
        let secondErrno = errno
        // The program's own error path: give the memory back, then report.
        ats_free_all(blocks, count)
        var written: UInt64 = 0, skipped: UInt64 = 0
        cat_emergency_stats(&written, &skipped)
        if count < capacity, failure == ENOMEM, second == 0, secondErrno == ENOMEM { print("error path ran") }
        print("blocks=\(count) errno=\(failure) line=\(line)")
        print("internal_allocations=\(internalDuring)")
        print("reports=\(written) skipped=\(skipped)")
        blocks.deallocate()
        exit(0)
    }
}

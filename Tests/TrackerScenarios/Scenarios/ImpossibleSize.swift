@_spi(Testing) import AllocationTracking
import AllocationTrackingTestSupport
import CAllocationTracking
#if canImport(Glibc)
import Glibc
#endif

/// impossible-size <directory>: requests no machine could satisfy, then a real exhaustion. `malloc(SIZE_MAX)`
/// 1,000 times, `new char[machine + 1 GiB]` (caught bad_alloc), and — once RLIMIT_AS is set after start — a
/// request larger than that limit but smaller than the machine: none of them writes the allocation-failure
/// report or takes its rate limit (one stderr line in all, counted). Then 1 MiB blocks until malloc fails under
/// that limit: that failure gets the full report.
enum ImpossibleSizeScenario: Scenario {
    static let name = "impossible-size"

    static func run(_ commandLine: ArraySlice<String>) {
        guard let directory = commandLine.dropFirst().first else { fail("impossible-size needs a directory") }
        do {
            try AllocationTracker.start(.init(maxFrames: 32, unwinder: .libunwind,
                                              report: .init(directory: directory),
                                              limits: .init(containerFraction: nil)))
        } catch { fail("\(error)") }
        print("pid=\(getpid())")
        let machine = cat_emergency_machine_bytes()
        var failed = 0
        for _ in 0..<1000 {
            var block: UnsafeMutableRawPointer? = nil
            if ats_allocate("malloc", 1, Int(bitPattern: UInt.max), &block) == 0 { failed += 1 }  // SIZE_MAX
        }
        var newFailed = false
        if machine < UInt64(Int.max) - (1 << 31) {
            let block = ats_cxx_try_new(Int(machine + (1 << 30)))
            newFailed = block == nil
            if let block { ats_cxx_delete(block) }  // overcommit_memory=1 grants it
        }
        // No pause for the watchdog either: the same definition.
        let pauses = cat_emergency_memory_short(cat_monotonic_ns(), 1_000_000_000)
        // Names first (the watchdog must have nothing to symbolicate under the limit), then the limit, set after
        // start: the report must read it at the failure, not at configuration time.
        _EmergencyNames.refresh(ignoringBudget: true)
        guard ats_limit_address_space(64 << 20) == 0 else { fail("setrlimit") }
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &limit)
        let overLimit = UInt64(limit.rlim_cur) + (16 << 20)
        var block: UnsafeMutableRawPointer? = nil
        let overLimitFailed = overLimit < machine && ats_allocate("malloc", 1, Int(overLimit), &block) == 0
        var beforeExhaustion: (UInt64, UInt64) = (0, 0)
        cat_emergency_stats(&beforeExhaustion.0, &beforeExhaustion.1)
        let capacity = 1 << 16
        let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: capacity)
        var failure: Int32 = 0, line: Int32 = 0
        let count = ats_allocate_until_failure(1 << 20, 1, {}, blocks, capacity, &failure, &line)
        ats_free_all(blocks, count)
        _ = ats_unlimit_address_space()
        var written: UInt64 = 0, skipped: UInt64 = 0
        cat_emergency_stats(&written, &skipped)
        print("malloc_max_failed=\(failed) new_failed=\(newFailed) over_limit_failed=\(overLimitFailed)")
        print("impossible_pauses=\(pauses)")
        print("reports_before_exhaustion=\(beforeExhaustion.0) skipped_before_exhaustion=\(beforeExhaustion.1)")
        print("exhaustion_errno=\(failure)")
        print("reports=\(written) skipped=\(skipped) impossible=\(cat_emergency_impossible_requests())")
        blocks.deallocate()
        exit(0)
    }
}

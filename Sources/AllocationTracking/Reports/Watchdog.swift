import CAllocationTracking
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The background thread that watches the soft limits and the report signal.
///
/// Every `pollInterval` it reads tracked bytes (the state words), RSS (`/proc/self/statm`) and the cgroup's
/// usage and limit, each with a stack buffer and `read(2)`: a poll does not allocate. When a trigger
/// (`cat_limit_trigger`: once per crossing, hysteresis, minimum interval) fires, or the signal arrived, it
/// writes a report — that path allocates, with the thread's tracking suspended, while memory is still there:
/// the soft limits exist to report *before* the kernel's OOM killer sends its uncatchable SIGKILL.
enum _Watchdog {
    /// The running watchdog's state (nil while none runs). Guarded by `lock`.
    final class Running: @unchecked Sendable {
        let configuration: AllocationTracker.Configuration
        let stopRequested = Atomic<Bool>(false)
        var thread = pthread_t()
        /// The process the thread runs in: a forked child inherits this state but not the thread.
        let processID = getpid()
        let triggers = UnsafeMutablePointer<cat_limit_trigger>.allocate(capacity: 3)  // tracked, rss, container
        var cgroup = cat_cgroup()
        var hasCgroup = false
        var containerLimit: UInt64 = 0

        init(_ configuration: AllocationTracker.Configuration) {
            self.configuration = configuration
            triggers.initialize(repeating: cat_limit_trigger(), count: 3)
        }

        deinit { triggers.deallocate() }
    }

    static let lock = Mutex<Running?>(nil)

    /// Starts the watchdog for `configuration` (API lock held by the caller).
    static func start(_ configuration: AllocationTracker.Configuration) {
        guard configuration.needsWatchdog else { return }
        let running = Running(configuration)
        let limits = configuration.limits
        let interval = UInt64(limits.minimumInterval * 1e9)
        func arm(_ index: Int, _ limit: UInt64) {
            cat_trigger_init(running.triggers + index, limit, UInt64(Double(limit) * limits.hysteresis), interval)
        }
        arm(0, UInt64(limits.trackedBytes ?? 0))
        arm(1, UInt64(limits.rssBytes ?? 0))
        arm(2, 0)
        if limits.containerFraction != nil {
            running.hasCgroup = cat_cgroup_detect(limits.procSelfCgroup, limits.cgroupRoot, &running.cgroup) == 0
        }
        if let signal = limits.signal {
            let result = cat_signal_install(signal)
            if result != 0 {
                let line = "swift-allocation-tracking: cannot install the report signal \(signal): "
                    + "\(String(cString: strerror(-result))); on-demand reports by signal are off\n"
                line.utf8CString.withUnsafeBufferPointer { cat_write_stderr($0.baseAddress!, $0.count - 1) }
            }
        }
        detachLocked()  // (none should be running; never leave two)
        let context = Unmanaged.passRetained(running).toOpaque()
        let created = pthread_create(&running.thread, nil, { context in
            let running = Unmanaged<Running>.fromOpaque(context!).takeRetainedValue()
            _Watchdog.run(running)
            return nil
        }, context)
        if created != 0 {
            Unmanaged<Running>.fromOpaque(context).release()
            cat_signal_uninstall()  // nobody would read the signal's flag
            return
        }
        lock.withLock { $0 = running }
    }

    /// Stops the watchdog and waits for it (call WITHOUT the API lock: a report in progress takes it).
    static func stop() {
        guard let running = lock.withLock({ current -> Running? in
            defer { current = nil }
            return current
        }) else { return }
        running.stopRequested.store(true, ordering: .releasing)
        // In a forked child the thread does not exist (fork copies only the calling thread): nothing to join.
        // On the watchdog's own thread (stop() from onReport, exit() from a report): detach, never self-join.
        if running.processID == getpid() {
            if pthread_equal(running.thread, pthread_self()) != 0 {
                pthread_detach(running.thread)
            } else {
                pthread_join(running.thread, nil)
            }
        }
        cat_signal_uninstall()
    }

    /// Stops the watchdog without waiting for it (API lock held, so it cannot be joined: a report in progress
    /// takes that lock). The thread exits at its next poll.
    static func detachLocked() {
        guard let running = lock.withLock({ current -> Running? in
            defer { current = nil }
            return current
        }) else { return }
        running.stopRequested.store(true, ordering: .releasing)
        if running.processID == getpid() { pthread_detach(running.thread) }
        cat_signal_uninstall()
    }

    static func run(_ running: Running) {
        _ = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        let limits = running.configuration.limits
        let pollNs = UInt64(limits.pollInterval * 1e9)
        let pauseNs = UInt64(limits.pauseAfterAllocationFailure * 1e9)  // off the heap this long after a failure
        let state = _UnsafeTrackerState.process
        if let signal = limits.signal { cat_signal_unblock_here(signal) }
        var lastNames: UInt64 = 0
        while !running.stopRequested.load(ordering: .acquiring) {
            let now = cat_monotonic_ns()
            // An allocation failed recently (or its report is being written): everything below but the reads
            // allocates, and in Swift an allocation that fails traps. Leave what memory there is to the
            // process's own error path; triggers stay armed and fire once the pause is over.
            if cat_emergency_memory_short(now, pauseNs) {
                cat_sleep_ns(pollNs)
                continue
            }
            // An allocation-failure report was written and the pause is over: its JSON and the callback.
            if _ReportWriter.allocationFailureAwaitsFollowUp { _ = _ReportWriter.followUpAllocationFailure() }
            if limits.signal != nil, cat_signal_take() != 0 {
                report(.signal, "signal \(limits.signal!) received")
            }
            let tracked = state.current.atomicLoad()
            if cat_trigger_check(running.triggers, tracked, now) {
                report(.trackedLimit, "tracked live memory \(_formatSize(Int(tracked))) crossed the limit "
                       + "\(_formatSize(limits.trackedBytes ?? 0))")
            }
            if limits.rssBytes != nil {
                let rss = cat_process_rss_bytes()
                if cat_trigger_check(running.triggers + 1, rss, now) {
                    report(.rssLimit, "RSS \(_formatSize(Int(rss))) crossed the limit \(_formatSize(limits.rssBytes ?? 0))")
                }
            }
            if let fraction = limits.containerFraction, running.hasCgroup {
                var usage: UInt64 = 0, limit: UInt64 = 0
                if cat_cgroup_read(&running.cgroup, &usage, &limit) == 0 {
                    if limit != running.containerLimit {  // set, changed or removed: re-arm at the new level
                        running.containerLimit = limit
                        let level = limit == 0 ? 0 : UInt64(Double(limit) * fraction)
                        cat_trigger_init(running.triggers + 2, level, UInt64(Double(level) * limits.hysteresis),
                                         UInt64(limits.minimumInterval * 1e9))
                    }
                    if limit != 0, cat_trigger_check(running.triggers + 2, usage, now) {
                        report(.containerLimit, "cgroup v\(running.cgroup.version) memory usage \(_formatSize(Int(usage))) "
                               + "crossed \(_percent(Int((fraction * 1000).rounded()), of: 1000)) of its limit \(_formatSize(Int(limit)))")
                    }
                }
            }
            // Names for the allocation-failure report, resolved while memory is plentiful — once a second, not
            // on every poll: resolving a burst of new sites costs CPU the application is using.
            if limits.onAllocationFailure, now &- lastNames >= 1_000_000_000 {
                _EmergencyNames.refresh()
                lastNames = now
            }
            cat_sleep_ns(pollNs)
        }
    }

    static func report(_ trigger: AllocationReport.Trigger, _ reason: String) {
        do { _ = try _ReportWriter.write(trigger: trigger, reason: reason) } catch {
            let line = "swift-allocation-tracking: could not write the \(trigger.rawValue) report: \(error)\n"
            line.utf8CString.withUnsafeBufferPointer { cat_write_stderr($0.baseAddress!, $0.count - 1) }
        }
    }

    /// The cgroup's usage and limit now (for report headers), or nil when there is no memory cgroup.
    static func cgroupReading(_ configuration: AllocationTracker.Configuration)
        -> (version: Int, usage: Int, limit: Int)? {
        var cgroup = cat_cgroup()
        guard cat_cgroup_detect(configuration.limits.procSelfCgroup, configuration.limits.cgroupRoot, &cgroup) == 0
        else { return nil }
        var usage: UInt64 = 0, limit: UInt64 = 0
        guard cat_cgroup_read(&cgroup, &usage, &limit) == 0 else { return nil }
        return (Int(cgroup.version), Int(usage), Int(limit))
    }
}

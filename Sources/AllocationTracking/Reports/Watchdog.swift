import CAllocationTracking
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The background thread that watches the soft limits and the report signal, and keeps the memory history.
///
/// Every `pollInterval` it reads tracked bytes (the state words), RSS (`/proc/self/statm`) and the cgroup's
/// usage, working set and limit, each with a stack buffer and `read(2)`: a poll does not allocate. Every
/// `trend.interval` it also records a sample into the history's ring (`_TrendHistory`, allocated at start) and,
/// with `predictedExhaustion`, fits the recent samples without allocating to decide the predictive trigger. When a trigger
/// (`cat_limit_trigger`: once per crossing, hysteresis, minimum interval) fires, or the signal arrived, it
/// writes a report — that path allocates, with the thread's tracking suspended, while memory is still there:
/// the soft limits exist to report *before* the kernel's OOM killer sends its uncatchable SIGKILL. Between polls
/// it waits on the report signal's wake-up pipe (`cat_signal_wait_ns`), so that a signal is answered at once.
///
/// The names the allocation-failure report prints are resolved on a second thread (`runNames`), not on this
/// one: a refresh may take seconds of symbolication on a large binary, and a report asked for meanwhile (a
/// signal, a limit crossed) must not wait for it — an operator's SIGUSR2 once took 51 s to be answered, with
/// content 25–30 s old, behind the warming of the symbol cache.
enum _Watchdog {
    /// The running watchdog's state (nil while none runs). Guarded by `lock`.
    final class Running: @unchecked Sendable {
        let configuration: AllocationTracker.Configuration
        let stopRequested = Atomic<Bool>(false)
        var thread = pthread_t()
        /// The names thread (`runNames`), when `onAllocationFailure` is on.
        var namesThread = pthread_t()
        var hasNamesThread = false
        /// The process the thread runs in: a forked child inherits this state but not the thread.
        let processID = getpid()
        /// tracked, rss, container, predicted container exhaustion, predicted tracked exhaustion
        let triggers = UnsafeMutablePointer<cat_limit_trigger>.allocate(capacity: 5)
        var cgroup = cat_cgroup()
        var hasCgroup = false
        var containerLimit: UInt64 = 0
        /// The memory history (nil: `trend` off).
        let history: _TrendHistory?

        init(_ configuration: AllocationTracker.Configuration) {
            self.configuration = configuration
            history = configuration.trend.isEnabled ? _TrendHistory(configuration.trend) : nil
            triggers.initialize(repeating: cat_limit_trigger(), count: 5)
        }

        deinit { triggers.deallocate() }
    }

    static let lock = Mutex<Running?>(nil)

    /// The running watchdog's history, or nil.
    static var history: _TrendHistory? { lock.withLock { $0?.history } }

    /// Scale of the predictive triggers' value: `horizon / projected time` in millionths, so that the value
    /// reaches the trigger's limit (1) when the projection falls within the horizon, and re-arms below
    /// `1 - hysteresis`.
    static let predictionScale = 1_000_000.0

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
        // The predictive triggers: fire at `horizon / time to limit >= 1` (see predictionScale).
        if limits.predictedExhaustion != nil {
            cat_trigger_init(running.triggers + 3, UInt64(predictionScale), UInt64(predictionScale * limits.hysteresis), interval)
            if limits.trackedBytes != nil {
                cat_trigger_init(running.triggers + 4, UInt64(predictionScale), UInt64(predictionScale * limits.hysteresis),
                                 interval)
            }
        }
        if limits.containerFraction != nil || configuration.trend.isEnabled {
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
        let created = cat_thread_create(&running.thread, { context in
            // Suspended before anything else: an allocation here would be traced as the program's.
            _ = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
            // Named, so that top -H, perf and /proc/PID/task show the tracker's own CPU apart from the program's.
            _nameTrackerThread("alloc-watchdog")
            let running = Unmanaged<Running>.fromOpaque(context!).takeRetainedValue()
            _Watchdog.run(running)
            return nil
        }, context)
        if created != 0 {
            Unmanaged<Running>.fromOpaque(context).release()
            cat_signal_uninstall()  // nobody would read the signal's flag
            return
        }
        if configuration.limits.onAllocationFailure {
            let context = Unmanaged.passRetained(running).toOpaque()
            running.hasNamesThread = cat_thread_create(&running.namesThread, { context in
                _ = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
                _nameTrackerThread("alloc-names")
                let running = Unmanaged<Running>.fromOpaque(context!).takeRetainedValue()
                _Watchdog.runNames(running)
                return nil
            }, context) == 0
            if !running.hasNamesThread { Unmanaged<Running>.fromOpaque(context).release() }
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
            for (thread, exists) in [(running.thread, true), (running.namesThread, running.hasNamesThread)] where exists {
                if pthread_equal(thread, pthread_self()) != 0 {
                    pthread_detach(thread)
                } else {
                    pthread_join(thread, nil)
                }
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
        if running.processID == getpid() {
            pthread_detach(running.thread)
            if running.hasNamesThread { pthread_detach(running.namesThread) }
        }
        cat_signal_uninstall()
    }

    /// How long the watchdog may wait for the gate's readers to drain before it reads without folding the
    /// threads' deltas: a reader holds the gate for a table operation (about a microsecond), unless preempted.
    static let foldYields: UInt32 = 64

    static func run(_ running: Running) {
        _ = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        let limits = running.configuration.limits
        let pollNs = UInt64(limits.pollInterval * 1e9)
        let pauseNs = UInt64(limits.pauseAfterAllocationFailure * 1e9)  // off the heap this long after a failure
        let state = _UnsafeTrackerState.process
        if let signal = limits.signal { cat_signal_unblock_here(signal) }
        // The first sample one interval after start, not at it: the tables start empty, and a sample of nothing
        // would make everything the process allocates in its first interval look like growth.
        var lastSample = cat_monotonic_ns()
        while !running.stopRequested.load(ordering: .acquiring) {
            let now = cat_monotonic_ns()
            // An allocation failed recently (or its report is being written): everything below but the reads
            // allocates, and in Swift an allocation that fails traps. Leave what memory there is to the
            // process's own error path; triggers stay armed and fire once the pause is over.
            if cat_emergency_memory_short(now, pauseNs) {
                cat_signal_wait_ns(pollNs)
                continue
            }
            // An allocation-failure report was written and the pause is over: its JSON and the callback.
            if _ReportWriter.allocationFailureAwaitsFollowUp { _ = _ReportWriter.followUpAllocationFailure() }
            // Every signal since the last look is answered by this one report: those beyond the first arrived while
            // the previous report was being written (or during a pause), and the report says it merged them.
            if let signal = limits.signal, case let signals = cat_signal_take(), signals > 0 {
                report(.signal, "signal \(signal) received", mergedSignals: Int(signals) - 1)
            }
            // The threads' pending counter deltas first (_UnsafeThreadDeltas), unless the gate is busy: the
            // watchdog must not wait before a report. Then `current` is exact; otherwise within 64 KiB per thread.
            _ = cat_deltas_try_fold_all(_Watchdog.foldYields)
            let tracked = state.unfoldedCurrent
            if cat_trigger_check(running.triggers, tracked, now) {
                report(.trackedLimit, "tracked live memory \(_formatSize(Int(tracked))) crossed the limit "
                       + "\(_formatSize(limits.trackedBytes ?? 0))")
            }
            let sampleDue = running.history.map { now &- lastSample >= $0.intervalNs } ?? false
            var rss = _TrendHistory.unknown
            if limits.rssBytes != nil || sampleDue {
                rss = cat_process_rss_bytes()
                if cat_trigger_check(running.triggers + 1, rss, now) {
                    report(.rssLimit, "RSS \(_formatSize(Int(rss))) crossed the limit \(_formatSize(limits.rssBytes ?? 0))")
                }
            }
            var usage = _TrendHistory.unknown, workingSet = _TrendHistory.unknown, limit = _TrendHistory.unknown
            if running.hasCgroup, limits.containerFraction != nil || sampleDue {
                var u: UInt64 = 0, l: UInt64 = 0, w: UInt64 = 0
                if cat_cgroup_read_working_set(&running.cgroup, &u, &l, &w) == 0 {
                    (usage, limit, workingSet) = (u, l, w)
                    if let fraction = limits.containerFraction {
                        if l != running.containerLimit {  // set, changed or removed: re-arm at the new level
                            running.containerLimit = l
                            let level = l == 0 ? 0 : UInt64(Double(l) * fraction)
                            cat_trigger_init(running.triggers + 2, level, UInt64(Double(level) * limits.hysteresis),
                                             UInt64(limits.minimumInterval * 1e9))
                        }
                        // On usage, as always: usage is at least the working set, so this fires no later.
                        if l != 0, cat_trigger_check(running.triggers + 2, u, now) {
                            report(.containerLimit, "cgroup v\(running.cgroup.version) memory usage \(_formatSize(Int(u))) "
                                   + "crossed \(_percent(Int((fraction * 1000).rounded()), of: 1000)) of its limit \(_formatSize(Int(l)))"
                                   + (w == _TrendHistory.unknown ? "" : " (working set \(_formatSize(Int(w))))"))
                        }
                    }
                }
            }
            if sampleDue, let history = running.history {
                lastSample = now
                history.readSites()
                history.append(time: now, tracked: tracked, rss: rss, usage: usage, workingSet: workingSet, limit: limit)
                if let horizon = limits.predictedExhaustion { checkPrediction(running, history, horizon, now) }
            }
            cat_heap_trim()  // the tracker threads' freed large blocks go back to the system (tracker_heap.c)
            cat_signal_wait_ns(pollNs)
        }
    }

    /// The names thread: names for the allocation-failure report, resolved while memory is plentiful — once a
    /// second after the previous refresh ended, not on every poll: resolving a burst of new sites costs CPU the
    /// application is using. Not during the pause after an allocation failure (resolving allocates).
    static func runNames(_ running: Running) {
        _ = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        let pauseNs = UInt64(running.configuration.limits.pauseAfterAllocationFailure * 1e9)
        let waitNs = min(UInt64(running.configuration.limits.pollInterval * 1e9), 100_000_000)
        // The first refresh one second after start, not at it: a thread that starts late (a loaded machine) would
        // otherwise resolve names at an arbitrary moment of the program's first second, when it may be short of
        // memory (a failure's report is being written: the pause begins once it is), and start-up stays cheap.
        var lastNames = cat_monotonic_ns()
        while !running.stopRequested.load(ordering: .acquiring) {
            let now = cat_monotonic_ns()
            if now &- lastNames >= 1_000_000_000, !cat_emergency_memory_short(now, pauseNs) {
                _EmergencyNames.refresh()
                lastNames = cat_monotonic_ns()
            }
            cat_sleep_ns(waitNs)
        }
    }

    static func report(_ trigger: AllocationReport.Trigger, _ reason: String, mergedSignals: Int = 0) {
        do { _ = try _ReportWriter.write(trigger: trigger, reason: reason, mergedSignals: mergedSignals) } catch {
            let line = "swift-allocation-tracking: could not write the \(trigger.rawValue) report: \(error)\n"
            line.utf8CString.withUnsafeBufferPointer { cat_write_stderr($0.baseAddress!, $0.count - 1) }
        }
    }

    /// The cgroup's usage, working set (nil: unknown) and limit now (for report headers), or nil when there is
    /// no memory cgroup.
    static func cgroupReading(_ configuration: AllocationTracker.Configuration)
        -> (version: Int, usage: Int, limit: Int, workingSet: Int?)? {
        var cgroup = cat_cgroup()
        guard cat_cgroup_detect(configuration.limits.procSelfCgroup, configuration.limits.cgroupRoot, &cgroup) == 0
        else { return nil }
        var usage: UInt64 = 0, limit: UInt64 = 0, workingSet: UInt64 = 0
        guard cat_cgroup_read_working_set(&cgroup, &usage, &limit, &workingSet) == 0 else { return nil }
        return (Int(cgroup.version), Int(usage), Int(limit),
                workingSet == _TrendHistory.unknown ? nil : Int(workingSet))
    }

    /// The trend a report shows: over the predictive horizon when one is set (what the predictive trigger fitted),
    /// else over the last 15 minutes (or the whole history when shorter). Nil without a history.
    /// `names`: the report's (a suspect's frames not among them print as `image+0xoffset`).
    static func reportTrend(_ configuration: AllocationTracker.Configuration, names: _FrameNames) -> MemoryTrend? {
        guard let history else { return nil }
        return AllocationTracker._trend(history, configuration, window: configuration.limits.predictedExhaustion ?? .seconds(900),
                                        maxSuspects: 5, names: names)
    }

    /// The predictive triggers, after a sample: the working set (usage when unknown) against the container's
    /// limit, and tracked bytes against `trackedBytes`, each fitted over the last `horizon` of the history. A
    /// fit that is not steady (`_TrendMath.isSteady`: too few points, a poor fit, one jump) counts as no growth.
    /// Allocates nothing unless it fires.
    static func checkPrediction(_ running: Running, _ history: _TrendHistory, _ horizon: Duration, _ now: UInt64) {
        let horizonSeconds = _seconds(horizon)
        let windowNs = UInt64(min(horizonSeconds * 1e9, 1.8e19))
        func growth(_ rate: MemoryTrend.GrowthRate) -> String {
            "\(_formatRate(rate.bytesPerSecond)) (fit \(_fixed(rate.fit * 100, decimals: 0, sign: false))%)"
        }
        func value(_ fit: (rate: MemoryTrend.GrowthRate, steady: Bool)?, _ limit: UInt64) -> UInt64 {
            guard let fit, fit.steady, limit != 0, limit != _TrendHistory.unknown,
                  let time = fit.rate.timeToReach(Int(clamping: limit)) else { return 0 }
            let seconds = _seconds(time)
            return seconds <= 0 ? UInt64(1e12) : UInt64(min(1e12, horizonSeconds / seconds * predictionScale))
        }
        if running.hasCgroup {
            let limit = history.latestLimit
            let series = history.latestWorkingSetKnown ? 4 : 3
            let fit = history.fitRecent(series, windowNs: windowNs)
            if cat_trigger_check(running.triggers + 3, value(fit, limit), now), let fit {
                let what = series == 4 ? "working set" : "memory usage"
                report(.predictedExhaustion, "cgroup v\(running.cgroup.version) \(what) \(_formatSize(fit.rate.latest)), growing "
                       + "\(growth(fit.rate)), reaches the container limit \(_formatSize(Int(limit))) in "
                       + "\(_formatDuration(fit.rate.timeToReach(Int(clamping: limit)) ?? .zero)) at this rate "
                       + "(within the \(_formatDuration(horizon)) horizon)")
            }
        }
        if let trackedLimit = running.configuration.limits.trackedBytes {
            let fit = history.fitRecent(1, windowNs: windowNs)
            if cat_trigger_check(running.triggers + 4, value(fit, UInt64(trackedLimit)), now), let fit {
                report(.predictedExhaustion, "tracked live memory \(_formatSize(fit.rate.latest)), growing \(growth(fit.rate)), "
                       + "reaches the limit \(_formatSize(trackedLimit)) in "
                       + "\(_formatDuration(fit.rate.timeToReach(trackedLimit) ?? .zero)) at this rate "
                       + "(within the \(_formatDuration(horizon)) horizon)")
            }
        }
    }
}

/// Names the calling tracker thread from a literal, without converting a `String` to a C string: that conversion
/// allocates, and a tracker thread's allocation before it suspended itself was traced as the program's (the
/// accounting scenario's exact counters caught a 46-byte block of "alloc-watchdog").
func _nameTrackerThread(_ name: StaticString) {
    // A StaticString literal is stored NUL-terminated.
    name.utf8Start.withMemoryRebound(to: CChar.self, capacity: name.utf8CodeUnitCount + 1) { cat_thread_set_name($0) }
}

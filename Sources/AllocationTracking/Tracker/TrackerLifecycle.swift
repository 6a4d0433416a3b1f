import CAllocationTracking
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Starts, stops and resets the tracker and its background parts, in one place and in one order. The public
/// `AllocationTracker.start/stop/clearTraces/resetPeak` only call in here; `measure` starts and stops through
/// `startLocked`/`stopLocked` too.
///
/// The parts, in the order `startLocked` brings them up (`stopLocked` takes them down in reverse, as far as they
/// have anything to undo):
/// 1. stack capture: libunwind loaded (when selected) and the capture settings installed;
/// 2. the tables: mapped under the gate's writer side (`cat_tables_create`);
/// 3. the session (`_TrackerSession`): the configuration, the process that started;
/// 4. fork handlers (once per process);
/// 5. the allocation-failure report: the names arena, the loaded images, its directory and limits
///    (`_configureEmergencyReport`; the names are reset whenever trace ids are about to be reused);
/// 6. the report writer (`_ReportWriter`): the allocation-failure reports to follow up start from now;
/// 7. arming (`cat_set_active(1)`): from here on every malloc-family call is recorded;
/// 8. the watchdog thread (`_Watchdog`), which reads the armed counters;
/// 9. the at-exit report (registered once per process; it checks the configuration when it runs).
///
/// ## Locking protocol
///
/// - **Thread state.** Every entry point sets the calling thread to `CAT_THREAD_SUSPENDED` first and restores
///   the previous state on the way out: the tracker's own allocations (configuration copies, snapshots, report
///   text) are not traced, while its frees of blocks allocated before are still recorded.
/// - **The API lock** (`cat_api_lock`, a process-wide mutex) serialises start, stop, clearTraces, resetPeak,
///   snapshots, measurements and `fork()` (the atfork handlers hold it), and guards `_TrackerSession`. It is never
///   taken inside malloc, so its holder may allocate. While it is held the tables stay mapped (only stop and
///   clearTraces unmap them, under it), which is what lets a snapshot read frames after the gate is released.
///   Nothing that waits for a thread which takes the API lock may hold it: the watchdog's reports take
///   snapshots, so `stop()` joins the watchdog *before* taking the lock, and under the lock (`stopLocked`, the
///   path a measurement's implicit stop takes) the watchdog is only detached and exits at its next poll.
/// - **The gate's writer side** (`_withGateWriter`, below) pauses allocation recording in every other thread; it
///   is taken with the API lock held (the order `fork()` uses too: API lock, then gate). Its holder is
///   `CAT_THREAD_INTERNAL`, so that its own allocations pass straight through instead of waiting, as readers, for
///   itself. Other threads may be parked at the gate while holding locks of their own (a runtime lock, say), so
///   the holder does plain loads and stores only: no allocation, no Swift metadata, no lock.
/// - **The other locks** are taken before the API lock, never while holding it (`_ReportWriter.writing` → API
///   lock, `_EmergencyNames.refreshing` → API lock), except two leaf locks that hold nothing else and are taken
///   briefly under it: `_Watchdog.lock` (the running watchdog) and `_ReportWriter.previous` (the previous report).
enum _TrackerLifecycle {
    typealias Configuration = AllocationTracker.Configuration

    /// The running configuration, or nil while stopped.
    static var configuration: Configuration? {
        withAPILock { AllocationTracker.isTracing ? _TrackerSession.configuration : nil }
    }

    /// `AllocationTracker.start`: a no-op while tracing, except that tracking `measure` started implicitly becomes
    /// the caller's (no measurement stops it any more).
    static func start(_ configuration: Configuration) throws {
        try configuration.validate()
        try configuration.checkReportDirectory()
        guard AllocationTracker.isAvailable else {
            throw AllocationTrackingError(
                .unavailable,
                "allocation tracking is unavailable in this build: AddressSanitizer/ThreadSanitizer own malloc")
        }
        try withAPILock {
            guard !AllocationTracker.isTracing else {
                if _TrackerSession.implicitStarts > 0 {
                    _TrackerSession.implicitStarts = 0
                    _TrackerSession.implicitGeneration &+= 1
                }
                return
            }
            try startLocked(configuration)
        }
    }

    /// Brings the parts up in the order stated above. API lock held, caller suspended, tracking off. A failure
    /// throws before anything is armed.
    static func startLocked(_ configuration: Configuration) throws {
        // 1. Stack capture.
        if configuration.unwinder == .libunwind {
            var message = [CChar](repeating: 0, count: 512)
            if cat_load_libunwind(&message, message.count) != 0 {
                let bytes = message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
                throw AllocationTrackingError(.unwinderUnavailable, String(decoding: bytes, as: UTF8.self))
            }
        }
        var recorder = _AllocationRecorder.table
        cat_install_recorder(&recorder, UInt32(configuration.maxFrames),
                             configuration.unwinder == .libunwind ? Int32(CAT_UNWINDER_LIBUNWIND)
                                                                  : Int32(CAT_UNWINDER_FRAME_POINTERS))
        // 2. The tables.
        let created = _withGateWriter { cat_tables_create(UInt64(configuration.maxTraces)) }
        guard created == 0 else {
            throw AllocationTrackingError(.unavailable, "could not map memory for the tracker's tables")
        }
        // 3. The session (the allocation-failure report reads its maxTraces).
        _TrackerSession.configuration = configuration
        _TrackerSession.startedInProcess = getpid()
        // 4. Fork handlers.
        cat_install_fork_handlers()
        // 5. The allocation-failure report.
        AllocationTracker._configureEmergencyReport(directory: configuration.report.directory,
                                                    standardError: configuration.report.standardError,
                                                    topSites: configuration.report.topSites,
                                                    minimumInterval: configuration.limits.minimumInterval,
                                                    procSelfCgroup: configuration.limits.procSelfCgroup,
                                                    cgroupRoot: configuration.limits.cgroupRoot,
                                                    enabled: configuration.limits.onAllocationFailure)
        // 6. The report writer: before arming, so that a report written from now on is this session's.
        _ReportWriter.beginSession()
        // 7. Arming, with the sampling mode set first (the tables exist; each thread's generator starts from this
        //    seed and its own number).
        cat_set_sampling(UInt64(configuration.sampling.meanBytes), UInt64.random(in: 1...UInt64.max))
        cat_set_active(1)
        // 8. The watchdog.
        _Watchdog.start(configuration)
        // 9. The at-exit report.
        if configuration.limits.reportAtExit { registerExitReport() }
    }

    /// `AllocationTracker.stop`. A no-op while stopped.
    static func stop() {
        let previous = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        defer { _ = cat_thread_set_state(previous) }
        // Joined before the API lock: a report in progress on the watchdog's thread takes it.
        _Watchdog.stop()
        withAPILock {
            if AllocationTracker.isTracing { stopLocked() }
        }
    }

    /// Takes the parts down, the reverse of `startLocked`: the watchdog first (nothing may start a report on tables
    /// about to go), then the report writer's session, disarming, the tables, the names (their trace ids will be
    /// reused), and the session. Measurement scopes see their tables gone (`tablesEpoch`); the implicit start
    /// `measure` made, if any, is forgotten (the next `measure` starts afresh). API lock held, tracking on.
    static func stopLocked() {
        _Watchdog.detachLocked()  // stop() joined it already; an implicit stop (measure) lets it exit by itself
        _ReportWriter.reset()
        cat_set_active(0)
        _withGateWriter {
            cat_tables_release()
            cat_set_sampling(0, 0)  // the tables and their weights are gone; the next start sets it again
        }
        _EmergencyNames.reset()
        _TrackerSession.configuration = nil
        _TrackerSession.tablesEpoch &+= 1
        _TrackerSession.implicitStarts = 0
        _TrackerSession.implicitGeneration &+= 1
    }

    /// `AllocationTracker.clearTraces`: new, empty tables, tracking on throughout. What refers to trace ids or to
    /// the old tables is reset first: the names, the previous report, measurement scopes (`tablesEpoch`).
    static func clearTraces() {
        withAPILock {
            guard AllocationTracker.isTracing else { return }
            let maxTraces = UInt64(_TrackerSession.configuration?.maxTraces ?? Configuration().maxTraces)
            _EmergencyNames.reset()
            _ReportWriter.reset()
            _TrackerSession.tablesEpoch &+= 1
            let recreated = _withGateWriter { () -> Bool in
                cat_tables_release()
                guard cat_tables_create(maxTraces) == 0 else {
                    cat_set_active(0)  // before the gate opens: no allocation is recorded into missing tables
                    return false
                }
                return true
            }
            // Out of memory for even the smallest tables: stop the whole way (the watchdog too) rather than run
            // with none.
            if !recreated { stopLocked() }
        }
    }

    /// `AllocationTracker.resetPeak`. Under the API lock: not while clearTraces or stop empty the tables.
    static func resetPeak() {
        withAPILock {
            let state = _UnsafeTrackerState.process
            guard state.ready.atomicLoadAcquire() == 1 else { return }
            _withGateWriter {
                cat_deltas_fold_all()  // `current` exact first (_UnsafeThreadDeltas)
                state.peak.atomicStore(state.current.atomicLoad())
                state.peakEpoch.atomicAdd(1)
            }
        }
    }

    /// Runs `body` with the calling thread suspended and the API lock held (released first on the way out, then
    /// the thread state restored).
    static func withAPILock<R>(_ body: () throws -> R) rethrows -> R {
        let previous = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        defer { _ = cat_thread_set_state(previous) }
        cat_api_lock()
        defer { cat_api_unlock() }
        return try body()
    }

    // MARK: - The at-exit report

    /// Registers (once per process) the at-exit report.
    static func registerExitReport() {
        struct Once { nonisolated(unsafe) static var done = false }  // API lock held
        guard !Once.done else { return }
        Once.done = true
        atexit { _TrackerLifecycle.writeExitReport() }
    }

    /// Written when the process exits normally with tracking still on and `reportAtExit` set: what is still live.
    static func writeExitReport() {
        // Not in a forked child that inherited the setting: the report belongs to the process that asked.
        guard _TrackerSession.startedInProcess == getpid(),
              let configuration, configuration.limits.reportAtExit else { return }
        _Watchdog.stop()
        _ = try? _ReportWriter.write(trigger: .exit, reason: "the process is exiting: what is still live (leaks)")
    }
}

// MARK: - The at-exit snapshot (`snapshot_at_exit=PATH`, for `alloc-track run -o`)

extension _TrackerLifecycle {
    /// Where the at-exit snapshot goes; set once, at process start, before any other thread exists.
    nonisolated(unsafe) static var exitSnapshotPath: String?

    static func registerExitSnapshot(_ path: String) {
        exitSnapshotPath = path
        atexit { _TrackerLifecycle.writeExitSnapshot() }
    }

    /// The snapshot of the traced blocks when the process exits normally, symbolicated, to a new file (0600,
    /// `O_CREAT|O_EXCL|O_NOFOLLOW`, like every file the library writes: an existing file or a planted symlink is
    /// refused, never replaced). Not in a forked child: the file belongs to the process that started tracking.
    /// A failure is one line on stderr; the process's exit status is its own.
    static func writeExitSnapshot() {
        guard let path = exitSnapshotPath, _TrackerSession.startedInProcess == getpid(), AllocationTracker.isTracing
        else { return }
        let previous = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        defer { _ = cat_thread_set_state(previous) }
        func say(_ why: String) {
            _ReportFile.writeStandardError("swift-allocation-tracking: snapshot_at_exit: cannot write \(_escaped(path, limit: 200)): \(why)\n")
        }
        let data: Data
        do { data = try AllocationTracker.takeSnapshot().jsonData() } catch {
            say("\(error)")
            return
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return say(_ReportFile.describe(errno)) }
        let outcome = data.withUnsafeBytes { _ReportFile.finish(fd, path: path, bytes: $0, keepPartial: false) }
        if !outcome.succeeded { say(outcome.problem("the snapshot")) }
    }
}

/// Session state (guarded by the API lock, never read inside malloc).
enum _TrackerSession {
    nonisolated(unsafe) static var configuration: AllocationTracker.Configuration?
    /// Bumped whenever the tables are wiped (stop, clearTraces): a measurement scope spanning it is interrupted.
    nonisolated(unsafe) static var tablesEpoch: UInt64 = 0
    /// Active measurements holding the tracker `measure` started implicitly (it stops when the last ends).
    nonisolated(unsafe) static var implicitStarts = 0
    /// The process that last started tracking (a forked child inherits the session but is another process).
    nonisolated(unsafe) static var startedInProcess: pid_t = 0
    /// Bumped by every stop: a measurement's hold on an implicit start is void after one.
    nonisolated(unsafe) static var implicitGeneration: UInt64 = 0
    /// Where the search for a free scope record starts (round robin, so ended records are reused last).
    nonisolated(unsafe) static var scopeCursor = 0
}

/// Runs `body` with the gate's writer side held (allocation recording paused in other threads) and the calling
/// thread in internal state, so its own allocations pass straight through instead of waiting for itself. See the
/// locking protocol above: API lock held, plain loads and stores only inside.
func _withGateWriter<R>(_ body: () throws -> R) rethrows -> R {
    let previous = cat_thread_set_state(Int32(CAT_THREAD_INTERNAL))
    cat_gate_lock_writer()
    defer {
        cat_gate_unlock_writer()
        _ = cat_thread_set_state(previous)
    }
    return try body()
}

// MARK: - ALLOCATION_TRACKING

/// Called once at process start by a constructor in the C target when `ALLOCATION_TRACKING` is set. A
/// malformed value prints one line to stderr and leaves tracking off; the process runs on. (`package`, not
/// public: only the C target calls it, by its C name; `package` keeps the symbol exported like a public one.)
@_cdecl("cat_swift_start_from_environment_impl")
package func _startFromEnvironment() {
    guard let raw = getenv("ALLOCATION_TRACKING") else { return }
    let value = String(cString: raw)
    func say(_ line: String) {
        (line + "\n").utf8CString.withUnsafeBufferPointer { cat_write_stderr($0.baseAddress!, $0.count - 1) }
    }
    do {
        guard let (configuration, announce, snapshotAtExit) = try AllocationTracker.Configuration._parseEnvironment(value)
        else { return }
        try _TrackerLifecycle.start(configuration)
        if let snapshotAtExit { _TrackerLifecycle.registerExitSnapshot(snapshotAtExit) }
        // Servers log their configuration at start; a tracker turned on from outside the code says so too, or
        // nobody reading the logs can tell it is on (and what will write reports where).
        if announce { say(_announcement(configuration)) }
    } catch let error as AllocationTrackingError {
        say("swift-allocation-tracking: ALLOCATION_TRACKING=\(_escaped(value, limit: 200)): \(error.message); tracking is off")
    } catch {}
}

/// The line printed when `ALLOCATION_TRACKING` turned tracking on: what is on, what writes reports, where.
func _announcement(_ configuration: AllocationTracker.Configuration) -> String {
    let limits = configuration.limits
    var triggers: [String] = []
    if let bytes = limits.trackedBytes { triggers.append("tracked memory \(_formatSize(bytes))") }
    if let bytes = limits.rssBytes { triggers.append("RSS \(_formatSize(bytes))") }
    if let fraction = limits.containerFraction {
        triggers.append("container at \(_fixed(fraction * 100, decimals: fraction * 100 == (fraction * 100).rounded() ? 0 : 1, sign: false))% of its limit")
    }
    if limits.onAllocationFailure { triggers.append("allocation failure") }
    if let signal = limits.signal {
        let name = AllocationTracker.Configuration.signalName(signal)
        triggers.append("signal \(name) (kill -\(name.dropFirst(3)) \(getpid()))")
    }
    if let horizon = limits.predictedExhaustion {
        triggers.append("a limit predicted within \(_formatDuration(horizon))")
    }
    if limits.reportAtExit { triggers.append("exit") }
    var destinations: [String] = []
    if configuration.report.standardError { destinations.append("stderr") }
    if let directory = configuration.report.directory { destinations.append(_escaped(directory, limit: 200)) }
    let unwinder = configuration.unwinder == .libunwind ? "libunwind" : "framepointers"
    var line = "swift-allocation-tracking: tracking on (ALLOCATION_TRACKING), pid \(getpid()): unwinder=\(unwinder), "
        + "frames=\(configuration.maxFrames)"
    if configuration.sampling != .exact {
        line += ", sampled every \(_formatSize(configuration.sampling.meanBytes)) on average (values are estimates)"
    }
    let trend = configuration.trend
    if trend.isEnabled {
        line += "; memory history every \(_formatDuration(trend.interval)) for \(_formatDuration(trend.length)) "
            + "(\(_formatSize(trend.memoryBytes)))"
    }
    if triggers.isEmpty {
        line += "; no reports"
    } else {
        line += "; reports on \(triggers.joined(separator: ", ")) to \(destinations.isEmpty ? "nowhere" : destinations.joined(separator: " and "))"
    }
    return line + " (announce=off: no line)"
}

import CAllocationTracking

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The process's native-heap tracker: every malloc-family call in the process (the Swift runtime, Foundation,
/// C and C++ libraries, libc itself) is seen while tracking is on.
///
/// ```swift
/// import AllocationTracking
///
/// try AllocationTracker.start(.init(maxFrames: 32, unwinder: .libunwind))
/// runWorkload()
/// let snapshot = try AllocationTracker.takeSnapshot()
/// for trace in snapshot.traces.sorted(by: { $0.size > $1.size }).prefix(10) { print(trace) }
/// print(AllocationTracker.tracedMemory)     // current, peak, live blocks, totals, dropped
/// AllocationTracker.stop()                  // stops and forgets everything
/// ```
///
/// Semantics follow Python's tracemalloc: `start` while tracing is a no-op; sizes are requested sizes; the peak
/// rises only when a block is added; `realloc` moves the whole block to the realloc call site; a 0-byte
/// allocation is traced with size 0; blocks allocated before `start` (or before `clearTraces`) and freed later
/// are ignored, so `current` never goes negative. The tracker's own allocations (snapshots, reports) are not
/// traced.
///
/// All members are thread-safe. Tracking costs one predictable branch per malloc-family call while stopped.
public enum AllocationTracker {
    /// Whether this build can track: false in AddressSanitizer/ThreadSanitizer builds, whose runtimes own
    /// malloc (the interposer is compiled out).
    public static var isAvailable: Bool { cat_interposer_available() == 1 }

    /// Whether allocations are being traced.
    public static var isTracing: Bool { cat_is_active() == 1 }

    /// The configuration tracking was started with, or nil while stopped.
    public static var configuration: Configuration? {
        cat_api_lock()
        defer { cat_api_unlock() }
        return isTracing ? _TrackerSession.configuration : nil
    }

    /// `maxFrames` of the running tracker (0 while stopped), like tracemalloc's `get_traceback_limit`.
    public static var tracebackLimit: Int { configuration?.maxFrames ?? 0 }

    /// Starts tracing. A no-op while already tracing (the running configuration is kept).
    ///
    /// - Throws: `.invalidConfiguration` for out-of-range values or a report directory that cannot be written
    ///   (checked now, not at the first report), `.unavailable` in sanitizer builds,
    ///   `.unwinderUnavailable` when libunwind is selected but not installed.
    public static func start(_ configuration: Configuration = Configuration()) throws {
        try configuration.validate()
        try configuration.checkReportDirectory()
        guard isAvailable else {
            throw AllocationTrackingError(
                .unavailable,
                "allocation tracking is unavailable in this build: AddressSanitizer/ThreadSanitizer own malloc")
        }
        let previous = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        defer { _ = cat_thread_set_state(previous) }
        cat_api_lock()
        defer { cat_api_unlock() }
        if isTracing {
            // Tracking that `measure` started implicitly becomes the caller's: no measurement stops it now.
            if _TrackerSession.implicitStarts > 0 {
                _TrackerSession.implicitStarts = 0
                _TrackerSession.implicitGeneration &+= 1
            }
            return
        }
        try _startLocked(configuration)
    }

    /// `start` with the API lock held, the caller suspended and tracking off.
    static func _startLocked(_ configuration: Configuration) throws {
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
        let created = _withGateWriter { cat_tables_create(UInt64(configuration.maxTraces)) }
        guard created == 0 else {
            throw AllocationTrackingError(.unavailable, "could not map memory for the tracker's tables")
        }
        _TrackerSession.configuration = configuration
        _TrackerSession.startedInProcess = getpid()
        cat_install_fork_handlers()
        _configureEmergencyReport(directory: configuration.report.directory,
                                  standardError: configuration.report.standardError,
                                  topSites: configuration.report.topSites,
                                  minimumInterval: configuration.limits.minimumInterval,
                                  procSelfCgroup: configuration.limits.procSelfCgroup,
                                  cgroupRoot: configuration.limits.cgroupRoot,
                                  enabled: configuration.limits.onAllocationFailure)
        // Before arming: a report written from now on is this session's, and gets its follow-up.
        _ReportWriter.followedUp.store(cat_emergency_followup_sequence(), ordering: .releasing)
        cat_set_active(1)
        _Watchdog.start(configuration)
        if configuration.limits.reportAtExit { _installExitReport() }
    }

    /// Stops tracing and forgets every trace (current = peak = 0), like tracemalloc's `stop`. The tables'
    /// memory is returned to the system. A no-op while stopped.
    public static func stop() {
        let previous = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        defer { _ = cat_thread_set_state(previous) }
        _Watchdog.stop()  // before the API lock: a report in progress needs it
        _ReportWriter.reset()
        cat_api_lock()
        defer { cat_api_unlock() }
        guard isTracing else { return }
        _stopLocked()
    }

    /// `stop` with the API lock held and tracking on. Measurement scopes see their tables gone (`tablesEpoch`);
    /// the implicit start `measure` made, if any, is forgotten (the next `measure` starts afresh).
    static func _stopLocked() {
        _Watchdog.detachLocked()  // stop() joined it already; an implicit stop (measure) lets it exit by itself
        _ReportWriter.reset()
        cat_set_active(0)
        _withGateWriter { cat_tables_release() }
        _EmergencyNames.reset()  // trace ids will be reused
        _TrackerSession.configuration = nil
        _TrackerSession.tablesEpoch &+= 1
        _TrackerSession.implicitStarts = 0
        _TrackerSession.implicitGeneration &+= 1
    }

    /// Forgets every trace and resets current and peak to 0, and keeps tracing. Blocks allocated before the
    /// call and freed after it are ignored.
    public static func clearTraces() {
        let previous = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        defer { _ = cat_thread_set_state(previous) }
        cat_api_lock()
        defer { cat_api_unlock() }
        guard isTracing else { return }
        let maxTraces = UInt64(_TrackerSession.configuration?.maxTraces ?? Configuration().maxTraces)
        _EmergencyNames.reset()  // trace ids will be reused
        _ReportWriter.reset()
        _TrackerSession.tablesEpoch &+= 1
        _withGateWriter {
            cat_tables_release()
            if cat_tables_create(maxTraces) != 0 {
                // Out of memory for even the smallest tables: stop rather than run with none.
                cat_set_active(0)
                _TrackerSession.configuration = nil
            }
        }
    }

    /// Sets the peak to the current traced size (and the peak snapshot to what is live now).
    public static func resetPeak() {
        cat_api_lock()  // not while clearTraces/stop empty the tables
        defer { cat_api_unlock() }
        let state = _UnsafeTrackerState.process
        state.peak.atomicStore(state.current.atomicLoad())
        state.peakEpoch.atomicAdd(1)
    }

    /// The traced memory counters; all zero while stopped.
    public static var tracedMemory: TracedMemory { _UnsafeTrackerState.process.tracedMemory }

    /// Bytes of memory the tracker's own tables use right now (tracemalloc's `get_tracemalloc_memory`).
    public static var trackerMemory: Int {
        Int(truncatingIfNeeded: _UnsafeTrackerState.process.word(Int(CAT_W_MAPPED_BYTES)).atomicLoad())
    }

    /// Takes a snapshot of the traced blocks, one `Trace` per call stack, with every frame symbolicated
    /// (function, file:line, image; cached per address, so later snapshots pay only for new addresses), and the
    /// loaded images its frames point into (`Snapshot.images`).
    ///
    /// - `at: .now` (the default): the blocks live now, like tracemalloc's `take_snapshot`, and also the call
    ///   stacks whose blocks have all been freed since start (or the last `clearTraces`): those have `size` and
    ///   `count` 0 and keep their totals (`Trace.allocatedSize`, `allocatedCount`). Statistics, diffs and reports
    ///   skip them; they are there for what was allocated, not what is held.
    /// - `at: .peak`: the blocks that were live when `tracedMemory.peak` was last set — who held the memory at
    ///   the peak. Its `totalSize` equals the peak (exactly, for a single thread; see `_UnsafeTraceTable`). Only
    ///   the stacks that held blocks at the peak are in it; their totals are those at the time of the snapshot
    ///   (the tracker keeps no totals as of the peak).
    ///
    /// The counters are copied consistently: allocation recording is paused in other threads for the few
    /// microseconds the copy takes. Symbolication happens afterwards, with recording running again.
    ///
    /// - Parameter symbolicate: false keeps bare addresses (`Frame(address:)`), for the cheapest snapshot.
    /// - Throws: `.notTracing` when tracking is stopped.
    public static func takeSnapshot(at moment: Snapshot.Moment = .now, symbolicate: Bool = true) throws -> Snapshot {
        try _takeSnapshot(moment == .peak ? .atPeak : .allocated, symbolicate: symbolicate)
    }

    /// A snapshot of the selected traces: `.allocated` is `takeSnapshot()`, `.live` the same without the stacks
    /// that hold nothing now (for a report of live memory), `.atPeak` is `takeSnapshot(at: .peak)`.
    static func _takeSnapshot(_ selection: _TraceSelection, symbolicate: Bool = true) throws -> Snapshot {
        let previous = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        defer { _ = cat_thread_set_state(previous) }
        let (raw, memory, maxFrames): ([_RawTrace], TracedMemory, Int)
        do {
            cat_api_lock()
            defer { cat_api_unlock() }
            guard isTracing, let configuration = _TrackerSession.configuration else {
                throw AllocationTrackingError(.notTracing, "takeSnapshot() needs tracking on: call AllocationTracker.start() first")
            }
            (raw, memory) = _UnsafeTraceTable.copyTraces(selection)
            maxFrames = configuration.maxFrames
        }
        // After the copy, so that every image a frame points into is loaded (short of a dlclose meanwhile).
        let images = _LoadedImages.containing(raw)
        let traces = symbolicate ? _Symbolicator.shared.traces(for: raw) : raw.map { $0.unsymbolicatedTrace() }
        return Snapshot(traces: traces, tracebackLimit: maxFrames, droppedAllocations: memory.droppedAllocations,
                        moment: selection == .atPeak ? .peak : .now, tracedMemory: memory, images: images)
    }

    /// Addresses in the symbol cache (for tests and benchmarks).
    @_spi(Testing) public static var _symbolCacheCount: Int { _Symbolicator.shared.cachedAddressCount }
    /// Empties the symbol cache (for benchmarks of the cold path).
    @_spi(Testing) public static func _removeCachedSymbols() { _Symbolicator.shared.removeAll() }
    /// How many of `addresses` are not in the symbol cache (for tests of the watchdog's warm-up).
    @_spi(Testing) public static func _uncachedAddressCount(_ addresses: Set<UInt>) -> Int {
        _Symbolicator.shared.uncached(addresses).count
    }

    /// The call stack that allocated the live tracked block at `pointer`, or nil when the block is not traced
    /// (tracemalloc's `get_object_traceback`).
    public static func traceback(of pointer: UnsafeRawPointer) -> Traceback? {
        let previous = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        defer { _ = cat_thread_set_state(previous) }
        let found: (addresses: [UInt], totalFrames: Int)?
        do {
            cat_api_lock()
            defer { cat_api_unlock() }
            guard isTracing else { return nil }
            found = _UnsafeTraceTable.frames(ofBlock: pointer)
        }
        guard let found else { return nil }
        return _Symbolicator.shared.traceback(for: found.addresses, totalFrames: found.totalFrames)
    }
}

/// Registers (once) the at-exit report, written if tracking is still on with `reportAtExit` when the
/// process exits normally.
func _installExitReport() {
    struct Once { nonisolated(unsafe) static var done = false }
    guard !Once.done else { return }
    Once.done = true
    atexit {
        // Not in a forked child that inherited the setting: the report belongs to the process that asked.
        guard _TrackerSession.startedInProcess == getpid(),
              let configuration = AllocationTracker.configuration, configuration.limits.reportAtExit else { return }
        _Watchdog.stop()
        _ = try? _ReportWriter.write(trigger: .exit, reason: "the process is exiting: what is still live (leaks)")
    }
}

/// Session state owned by the API (guarded by the API mutex, never read inside malloc).
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
/// thread in internal state, so its own allocations pass straight through instead of waiting for itself.
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
/// malformed value prints one line to stderr and leaves tracking off; the process runs on.
@_cdecl("cat_swift_start_from_environment_impl")
public func _startFromEnvironment() {
    guard let raw = getenv("ALLOCATION_TRACKING") else { return }
    let value = String(cString: raw)
    do {
        guard let configuration = try AllocationTracker.Configuration.parse(environmentValue: value) else { return }
        try AllocationTracker.start(configuration)
    } catch let error as AllocationTrackingError {
        let line = "swift-allocation-tracking: ALLOCATION_TRACKING=\(value): \(error.message); tracking is off\n"
        line.utf8CString.withUnsafeBufferPointer { cat_write_stderr($0.baseAddress!, $0.count - 1) }
    } catch {}
}

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
    public static var configuration: Configuration? { _TrackerLifecycle.configuration }

    /// `maxFrames` of the running tracker (0 while stopped), like tracemalloc's `get_traceback_limit`.
    public static var tracebackLimit: Int { configuration?.maxFrames ?? 0 }

    /// Starts tracing. A no-op while already tracing (the running configuration is kept).
    ///
    /// - Throws: `.invalidConfiguration` for out-of-range values, `.unavailable` in sanitizer builds,
    ///   `.unwinderUnavailable` when libunwind is selected but not installed.
    public static func start(_ configuration: Configuration = Configuration()) throws {
        try _TrackerLifecycle.start(configuration)
    }

    /// Stops tracing and forgets every trace (current = peak = 0), like tracemalloc's `stop`. The tables'
    /// memory is returned to the system. A no-op while stopped.
    public static func stop() { _TrackerLifecycle.stop() }

    /// Forgets every trace and resets current and peak to 0, and keeps tracing. Blocks allocated before the
    /// call and freed after it are ignored.
    public static func clearTraces() { _TrackerLifecycle.clearTraces() }

    /// Sets the peak to the current traced size (and the peak snapshot to what is live now).
    public static func resetPeak() { _TrackerLifecycle.resetPeak() }

    /// The traced memory counters; all zero while stopped.
    public static var tracedMemory: TracedMemory {
        let state = _UnsafeTrackerState.process
        return TracedMemory(
            current: Int(truncatingIfNeeded: state.current.atomicLoad()),
            peak: Int(truncatingIfNeeded: state.peak.atomicLoad()),
            liveBlocks: Int(truncatingIfNeeded: state.shardSum(Int(CAT_S_LIVE_BLOCKS))),
            totalAllocations: Int(truncatingIfNeeded: state.shardSum(Int(CAT_S_TOTAL_ALLOCATIONS))),
            totalAllocatedBytes: Int(truncatingIfNeeded: state.shardSum(Int(CAT_S_TOTAL_BYTES))),
            droppedAllocations: Int(truncatingIfNeeded: state.shardSum(Int(CAT_S_DROPPED))))
    }

    /// Bytes of memory the tracker's own tables use right now (tracemalloc's `get_tracemalloc_memory`).
    public static var trackerMemory: Int {
        Int(truncatingIfNeeded: _UnsafeTrackerState.process.word(Int(CAT_W_MAPPED_BYTES)).atomicLoad())
    }

    /// Takes a snapshot of the live traced blocks, one `Trace` per call stack, with every frame symbolicated
    /// (function, file:line, image; cached per address, so later snapshots pay only for new addresses).
    ///
    /// - `at: .now` (the default): the blocks live now, like tracemalloc's `take_snapshot`.
    /// - `at: .peak`: the blocks that were live when `tracedMemory.peak` was last set — who held the memory at
    ///   the peak. Its `totalSize` equals the peak (exactly, for a single thread; see `_UnsafeTraceTable`).
    ///
    /// The counters are copied consistently: allocation recording is paused in other threads for the few
    /// microseconds the copy takes. Symbolication happens afterwards, with recording running again.
    ///
    /// - Parameter symbolicate: false keeps bare addresses (`Frame(address:)`), for the cheapest snapshot.
    /// - Throws: `.notTracing` when tracking is stopped.
    public static func takeSnapshot(at moment: Snapshot.Moment = .now, symbolicate: Bool = true) throws -> Snapshot {
        let previous = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        defer { _ = cat_thread_set_state(previous) }
        let (raw, configuration, memory) = try _copyTraces(at: moment)
        let traces = symbolicate ? _symbolicated(raw) : raw.map { $0.trace() }
        return Snapshot(traces: traces, tracebackLimit: configuration.maxFrames,
                        droppedAllocations: memory.droppedAllocations, moment: moment, tracedMemory: memory)
    }

    /// Copies the live (or at-peak) trace entries under the gate. The calling thread is suspended.
    /// `scope` (a measurement scope's tag, 0 for all) keeps only the traces allocated in that scope or its
    /// descendants.
    static func _copyTraces(at moment: Snapshot.Moment, scope: UInt64 = 0) throws -> ([_RawTrace], Configuration, TracedMemory) {
        cat_api_lock()
        defer { cat_api_unlock() }
        return try _copyTracesLocked(at: moment, scope: scope)
    }

    /// `_copyTraces` with the API lock held.
    static func _copyTracesLocked(at moment: Snapshot.Moment = .now, scope: UInt64 = 0) throws
        -> ([_RawTrace], Configuration, TracedMemory) {
        guard isTracing, let configuration = _TrackerSession.configuration else {
            throw AllocationTrackingError(.notTracing, "takeSnapshot() needs tracking on: call AllocationTracker.start() first")
        }
        let state = _UnsafeTrackerState.process
        // While the gate's writer side is held, other threads may be parked in it while holding locks of their
        // own (a runtime lock, say), so the copy does nothing but plain stores into a buffer allocated before.
        var capacity = Int(truncatingIfNeeded: state.traceCount.atomicLoad()) + 256
        var buffer = UnsafeMutablePointer<_RawTrace>.allocate(capacity: capacity)
        defer { buffer.deallocate() }
        var copied = 0
        var memory = TracedMemory()
        while true {
            let complete = _withGateWriter { () -> Bool in
                copied = _RawTrace.copyLive(state, into: buffer, capacity: capacity, atPeak: moment == .peak,
                                            scope: scope)
                memory = tracedMemory
                return copied <= capacity
            }
            if complete { break }
            buffer.deallocate()  // new sites appeared since the buffer was sized: retry with room for them
            capacity = copied + 256
            buffer = UnsafeMutablePointer<_RawTrace>.allocate(capacity: capacity)
        }
        // Frames are immutable once published and stay mapped while the API lock is held: copy them out here.
        let raw = Array(UnsafeBufferPointer(start: buffer, count: copied)).map { $0.withFramesCopied() }
        return (raw, configuration, memory)
    }

    /// Addresses in the symbol cache (for tests and benchmarks).
    @_spi(Testing) public static var _symbolCacheCount: Int { _Symbolicator.shared.cachedAddressCount }
    /// Empties the symbol cache (for benchmarks of the cold path).
    @_spi(Testing) public static func _removeCachedSymbols() { _Symbolicator.shared.removeAll() }
    /// How many of `addresses` are not in the symbol cache (for tests of the watchdog's warm-up).
    @_spi(Testing) public static func _uncachedAddressCount(_ addresses: Set<UInt>) -> Int {
        _Symbolicator.shared.uncached(addresses).count
    }

    /// Traces with every captured address replaced by its symbolicated frames (inlined frames expanded).
    static func _symbolicated(_ raw: [_RawTrace]) -> [Trace] {
        var addresses = Set<UInt>()
        for trace in raw { addresses.formUnion(trace.copiedFrames) }
        let resolved = _Symbolicator.shared.frames(for: addresses)
        return raw.map { trace in
            var frames: [Frame] = []
            frames.reserveCapacity(trace.copiedFrames.count + 4)
            for address in trace.copiedFrames {
                if let expanded = resolved[address] { frames += expanded } else { frames.append(Frame(address: address)) }
            }
            return Trace(traceback: Traceback(frames: frames, totalFrames: Int(truncatingIfNeeded: trace.shape >> 32)),
                         size: Int(truncatingIfNeeded: trace.liveBytes), count: Int(truncatingIfNeeded: trace.liveBlocks))
        }
    }

    /// The call stack that allocated the live tracked block at `pointer`, or nil when the block is not traced
    /// (tracemalloc's `get_object_traceback`).
    public static func traceback(of pointer: UnsafeRawPointer) -> Traceback? {
        let previous = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        defer { _ = cat_thread_set_state(previous) }
        cat_api_lock()
        defer { cat_api_unlock() }
        guard isTracing else { return nil }
        let state = _UnsafeTrackerState.process
        let shard = cat_thread_shard()
        cat_gate_enter(shard)
        let value = _UnsafePointerTable.lookup(state, key: UInt64(UInt(bitPattern: pointer)))
        let entry = value == 0 ? nil : _UnsafeTraceTable.entry(state, _UnsafePointerTable.traceID(of: value))
        cat_gate_exit(shard)
        guard let entry else { return nil }
        let raw = _RawTrace(frames: UInt(_UnsafeTraceTable.framesWord(entry).pointee), shape: _UnsafeTraceTable.shape(entry).pointee, liveBlocks: 0, liveBytes: 0).withFramesCopied()
        return _symbolicated([raw])[0].traceback
    }
}

/// A trace entry copied out under the gate; turned into a `Trace` after the gate is released.
struct _RawTrace {
    var frames: UInt
    var shape: UInt64  // frame count | total frames << 32
    var liveBlocks: UInt64
    var liveBytes: UInt64
    var copiedFrames: [UInt] = []

    /// Copies the live traces into `buffer` (at most `capacity`); returns how many there are (more than
    /// `capacity` when the buffer was too small). Writer side held: plain loads and stores only.
    static func copyLive(_ state: _UnsafeTrackerState, into buffer: UnsafeMutablePointer<_RawTrace>,
                         capacity: Int, atPeak: Bool, scope: UInt64 = 0) -> Int {
        let count = state.traceCount.atomicLoad()
        var live = 0
        var id: UInt64 = 0
        while id < count {
            if let entry = _UnsafeTraceTable.entry(state, id), _UnsafeTraceTable.published(entry).atomicLoad() == 1,
               scope == 0 || _UnsafeScopes.descends(state, _UnsafeTraceTable.scopeTag(entry).atomicLoad(), from: scope) {
                let (bytes, blocks) = atPeak ? _UnsafeTraceTable.valuesAtPeak(state, entry)
                    : (_UnsafeTraceTable.liveBytes(entry).atomicLoad(), _UnsafeTraceTable.liveBlocks(entry).atomicLoad())
                if blocks != 0 {
                    if live < capacity {
                        // Plain stores only: `copiedFrames` is an empty array (no allocation, no retain).
                        (buffer + live).initialize(to: _RawTrace(
                            frames: UInt(_UnsafeTraceTable.framesWord(entry).pointee), shape: _UnsafeTraceTable.shape(entry).pointee, liveBlocks: blocks, liveBytes: bytes))
                    }
                    live += 1
                }
            }
            id &+= 1
        }
        return live
    }

    /// Copies the frames out of the tracker's arena (API lock held: the arena stays mapped).
    func withFramesCopied() -> _RawTrace {
        var copy = self
        let count = Int(truncatingIfNeeded: shape & 0xFFFF_FFFF)
        if count > 0, let words = UnsafePointer<UInt64>(bitPattern: frames) {
            copy.copiedFrames = (0..<count).map { UInt(words[$0]) }
        }
        return copy
    }

    func trace() -> Trace {
        let total = Int(truncatingIfNeeded: shape >> 32)
        return Trace(traceback: Traceback(frames: copiedFrames.map { Frame(address: $0) }, totalFrames: total),
                     size: Int(truncatingIfNeeded: liveBytes), count: Int(truncatingIfNeeded: liveBlocks))
    }
}

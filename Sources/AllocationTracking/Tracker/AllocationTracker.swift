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
    /// - Throws: `.invalidConfiguration` for out-of-range values or a report directory that cannot be written
    ///   (checked now, not at the first report), `.unavailable` in sanitizer builds,
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
        _TrackerLifecycle.withAPILock { _UnsafeTrackerState.foldedTracedMemory }
    }

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
        let copy = try _copyTraces(selection)
        return copy.snapshot(names: _FrameNames(symbolicate ? _Symbolicator.shared.frames(for: copy.addresses) : [:]))
    }

    /// The selected traces' counters and return addresses, copied under the API lock (the step of a snapshot that
    /// fixes its content; naming the frames comes after). Calling thread suspended.
    static func _copyTraces(_ selection: _TraceSelection) throws -> _TraceCopy {
        cat_api_lock()
        defer { cat_api_unlock() }
        guard isTracing, let configuration = _TrackerSession.configuration else {
            throw AllocationTrackingError(.notTracing, "takeSnapshot() needs tracking on: call AllocationTracker.start() first")
        }
        let (raw, memory) = _UnsafeTraceTable.copyTraces(selection)
        return _TraceCopy(raw: raw, memory: memory, selection: selection, maxFrames: configuration.maxFrames,
                          sampling: configuration.sampling, copiedAtNs: cat_monotonic_ns(),
                          copiedAtUnixNs: _unixNanoseconds())
    }

    /// Seeds the calling thread's sampling generator and restarts its countdown (`cat_thread_seed_sampling`), so a
    /// single-threaded workload samples the same blocks on every run (for the accuracy tests).
    @_spi(Testing) public static func _seedSampling(_ seed: UInt64) { cat_thread_seed_sampling(seed) }
    /// The sampling weight in bytes and in 2^-16 blocks the table logic gives a block of `size` bytes at mean
    /// interval `meanBytes` (for the tests of its arithmetic against libm).
    @_spi(Testing) public static func _sampleWeight(size: Int, meanBytes: Int) -> (bytes: Int, blocks: Int) {
        let w = _SampleWeight.of(size: UInt64(size), mean: UInt64(meanBytes), scope: 0)
        return (Int(w.bytes), Int(w.blocks))
    }

    /// The top sites' live (bytes, blocks) as the allocation-failure report reads them: without folding the
    /// threads' counter deltas (for the tests of what such a reader may see). Empty while stopped.
    @_spi(Testing) public static func _unfoldedTopSites(_ capacity: Int) -> [(bytes: Int, blocks: Int)] {
        _TrackerLifecycle.withAPILock {
            guard isTracing, capacity > 0 else { return [] }
            let scratch = UnsafeMutablePointer<UInt64>.allocate(capacity: 3 * capacity)
            defer { scratch.deallocate() }
            let found = _UnsafeTraceTable.topSites(.process, ids: scratch, bytes: scratch + capacity,
                                                   blocks: scratch + 2 * capacity, capacity: capacity)
            return (0..<found).map { (Int(truncatingIfNeeded: scratch[capacity + $0]),
                                      Int(truncatingIfNeeded: scratch[2 * capacity + $0])) }
        }
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
        return Traceback(frames: _FrameNames.resolving(found.addresses).frames(of: found.addresses),
                         totalFrames: found.totalFrames)
    }
}

/// The traces of a snapshot as copied from the tables, before their frames are named.
struct _TraceCopy {
    var raw: [_RawTrace]
    var memory: TracedMemory
    var selection: _TraceSelection
    var maxFrames: Int
    var sampling: AllocationTracker.Configuration.Sampling
    /// When the copy was taken: `cat_monotonic_ns()` and wall-clock nanoseconds since the Unix epoch.
    var copiedAtNs: UInt64
    var copiedAtUnixNs: Int64

    /// Every distinct return address of the traces.
    var addresses: Set<UInt> {
        var addresses = Set<UInt>()
        for trace in raw { addresses.formUnion(trace.addresses) }
        return addresses
    }

    /// The snapshot, its frames from `names`.
    func snapshot(names: _FrameNames) -> Snapshot {
        // After the copy, so that every image a frame points into is loaded (short of a dlclose meanwhile).
        let images = _LoadedImages.containing(raw)
        return Snapshot(traces: raw.map { $0.trace(frames: names.frames(of: $0.addresses)) }, tracebackLimit: maxFrames,
                        droppedAllocations: memory.droppedAllocations, moment: selection == .atPeak ? .peak : .now,
                        tracedMemory: memory, images: images, sampling: sampling)
    }
}

/// Return addresses to frames, from the symbolicator's names, with every source path in the one style of
/// `_sourcePath` (computed once per distinct path): what every snapshot, report, measurement and traceback builds
/// its frames with.
struct _FrameNames {
    private var names: [UInt: [Frame]] = [:]
    private let unnamed: (UInt) -> Frame

    /// `names`: inlined frames first, per address; `unnamed`: the frame of an address `names` lacks.
    init(_ names: [UInt: [Frame]], unnamed: @escaping (UInt) -> Frame = { Frame(address: $0) }) {
        self.unnamed = unnamed
        self.names.reserveCapacity(names.count)
        var paths: [String: String] = [:]
        for (address, resolved) in names {
            self.names[address] = resolved.map { frame in
                guard let file = frame.file else { return frame }
                let path = paths[file] ?? {
                    let path = _sourcePath(file)
                    paths[file] = path
                    return path
                }()
                guard path != file else { return frame }
                var copy = frame
                copy.file = path
                return copy
            }
        }
    }

    /// The symbolicator's names for `addresses` (resolved now, cached per address).
    static func resolving(_ addresses: [UInt]) -> _FrameNames {
        _FrameNames(_Symbolicator.shared.frames(for: Set(addresses)))
    }

    func frames(of addresses: [UInt]) -> [Frame] { addresses.flatMap { names[$0] ?? [unnamed($0)] } }
}

/// Wall-clock nanoseconds since the Unix epoch (`CLOCK_REALTIME`).
func _unixNanoseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
}

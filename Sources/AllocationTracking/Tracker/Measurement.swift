import CAllocationTracking

/// What the code inside one `AllocationTracker.measure` did to the heap.
///
/// Counts are of malloc-family calls (a `realloc` is one free and one allocation), sizes are requested sizes.
/// A block allocated inside the scope and freed later — on any thread — counts as a free of the scope while
/// the scope is active.
public struct AllocationMeasurement: Sendable, CustomStringConvertible {
    /// Blocks allocated inside the scope (nested scopes included).
    public var allocations: Int
    /// Bytes requested by those allocations.
    public var allocatedBytes: Int
    /// Frees (from any thread) of blocks allocated inside the scope, before it ended.
    public var frees: Int
    public var freedBytes: Int
    /// The highest value of (bytes allocated in the scope and still live) while the scope ran.
    public var peakBytes: Int
    /// The blocks allocated inside the scope and still live at its end, one trace per allocating call stack
    /// (symbolicated when the scope captured stacks; frameless traces for a counting-only scope). Use
    /// `leaked.statistics(groupedBy: .line)` for the leaking sites.
    public var leaked: Snapshot
    /// True when `AllocationTracker.stop()` or `clearTraces()` ran during the scope: the tables were wiped, so
    /// frees after it were not seen and `leaked` is empty. Counters are what was seen up to then.
    public var interrupted: Bool
    /// The scope the measurement was taken with.
    public var scope: AllocationTracker.MeasurementScope
    /// Allocations the tracker could not record (a full table), process-wide, while the scope ran. When it is
    /// not 0 the counts above may be low: the expectations of AllocationTrackingTesting fail then.
    public var droppedAllocations: Int = 0

    /// Blocks allocated inside the scope and still live at its end.
    public var leakedBlocks: Int { leaked.totalCount }
    /// Bytes of those blocks.
    public var leakedBytes: Int { leaked.totalSize }

    public var description: String {
        "allocations=\(allocations) (\(_formatSize(allocatedBytes))), frees=\(frees) (\(_formatSize(freedBytes))), "
            + "peak=\(_formatSize(peakBytes)), leaked=\(leakedBlocks) (\(_formatSize(leakedBytes)))"
            + (interrupted ? ", interrupted" : "")
            + (droppedAllocations > 0 ? ", dropped=\(droppedAllocations)" : "")
    }
}

extension AllocationTracker {
    /// Whose allocations a measurement sees.
    public enum MeasurementScope: String, Sendable, Hashable {
        /// The calling thread's allocations while the closure runs (plus frees of those blocks from any thread).
        /// Other threads — parallel tests, the test runner, Dispatch workers — are not seen, so parallel tests
        /// can each measure exactly. Code that hops threads (async code, work dispatched to a queue) is only
        /// seen for the part that runs on the calling thread.
        case thread
        /// Every thread's allocations while the closure runs, except threads that are inside a `.thread`
        /// measurement of their own begun before this one. Sees async code wherever it resumes, and everything
        /// else the process does meanwhile: only meaningful when nothing else runs (a `.serialized` test suite
        /// with no other suites running in parallel, a benchmark).
        case process
    }

    /// The scope of the `async` `measure`: only `.process` can follow code across suspension points.
    public enum AsyncMeasurementScope: Sendable, Hashable {
        case process
    }

    /// Runs `body` and measures the allocations it made.
    ///
    /// ```swift
    /// let m = try AllocationTracker.measure { try codeUnderTest() }
    /// #expect(m.allocations <= 3)
    /// #expect(m.leaked.traces.isEmpty, "\(m.leaked.traces)")
    /// ```
    ///
    /// - Parameters:
    ///   - scope: `.thread` (the default) sees only the calling thread; `.process` sees every thread.
    ///   - captureStacks: true (the default) records each allocation's stack, so `leaked` names the leaking
    ///     sites. False counts only: no stack capture (cheap enough to wrap a benchmark loop); `leaked` still
    ///     has the counts, in one frameless trace.
    ///
    /// Tracking must be on for the hook to see anything: when it is off, `measure` starts it (libunwind when
    /// available, else frame pointers) for the duration and stops it afterwards — reference-counted, so
    /// concurrent measurements do not stop each other's tracker, and a tracker you started yourself is never
    /// stopped. Measurements nest: an inner measurement's allocations count in the outer one too.
    ///
    /// The tracker's own allocations (starting, copying the leaks, symbolicating) are not counted. Blocks a
    /// runtime caches on first use (metadata, a lazily created global) look like leaks: warm the code up once
    /// before measuring.
    ///
    /// - Throws: what `body` throws; `.unavailable` in sanitizer builds, or when 256 scopes are active at once.
    @discardableResult
    public static func measure<R>(_ scope: MeasurementScope = .thread, captureStacks: Bool = true,
                                  _ body: () throws -> R) throws -> AllocationMeasurement {
        let token = try _beginScope(scope, captureStacks: captureStacks)
        // Installed last (after the begin's own work, with the thread no longer suspended).
        if scope == .thread { cat_thread_set_scope(token.tag) }
        do {
            _ = try body()
        } catch {
            _ = _endScope(token)
            throw error
        }
        return _endScope(token)
    }

    /// Runs async `body` and measures the allocations of every thread meanwhile (a `.process` scope: async code
    /// resumes on any thread of the cooperative pool, which a thread scope cannot follow). Use it in
    /// `.serialized` tests with nothing else running.
    ///
    /// ```swift
    /// let m = try await AllocationTracker.measure(.process) { try await codeUnderTest() }
    /// ```
    @discardableResult
    public static func measure<R>(_ scope: AsyncMeasurementScope, captureStacks: Bool = true,
                                  _ body: () async throws -> R) async throws -> AllocationMeasurement {
        let token = try _beginScope(.process, captureStacks: captureStacks)
        do {
            _ = try await body()
        } catch {
            _ = _endScope(token)
            throw error
        }
        return _endScope(token)
    }

    struct _ScopeToken {
        var tag: UInt64
        var scope: MeasurementScope
        var previous: UInt64  // the thread's (or the process's) scope tag before this one
        var captureStacks: Bool
        var tablesEpoch: UInt64
        var implicitGeneration: UInt64?  // set when this measurement holds an implicit start
        var droppedAtStart = 0
    }

    static func _beginScope(_ scope: MeasurementScope, captureStacks: Bool) throws -> _ScopeToken {
        guard isAvailable else {
            throw AllocationTrackingError(
                .unavailable,
                "allocation tracking is unavailable in this build: AddressSanitizer/ThreadSanitizer own malloc")
        }
        let previousState = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        defer { _ = cat_thread_set_state(previousState) }
        cat_api_lock()
        defer { cat_api_unlock() }
        var implicitGeneration: UInt64? = nil
        if !isTracing {
            do {
                try _TrackerLifecycle.startLocked(Configuration())
            } catch let error as AllocationTrackingError where error.code == .unwinderUnavailable {
                try _TrackerLifecycle.startLocked(Configuration(unwinder: .framePointers))
            }
            _TrackerSession.implicitStarts = 1
            implicitGeneration = _TrackerSession.implicitGeneration
        } else if _TrackerSession.implicitStarts > 0 {
            _TrackerSession.implicitStarts += 1
            implicitGeneration = _TrackerSession.implicitGeneration
        }
        let processScope = _UnsafeScopes.processScope
        let previous = scope == .thread ? cat_thread_scope() : processScope.atomicLoad()
        let parent = previous != 0 ? previous : processScope.atomicLoad()
        guard let (tag, index) = _UnsafeScopes.begin(parent: parent, captureStacks: captureStacks,
                                                     cursor: _TrackerSession.scopeCursor) else {
            if implicitGeneration != nil { _releaseImplicitStartLocked(implicitGeneration) }
            throw AllocationTrackingError(.unavailable, "more than \(CAT_SCOPES) allocation measurements are active at once")
        }
        _TrackerSession.scopeCursor = (index + 1) % Int(CAT_SCOPES)
        if scope == .process {
            processScope.atomicStoreRelease(tag)
            cat_sampling_refresh()  // sampled mode: no allocation is skipped while a process-wide scope is active
        }
        return _ScopeToken(tag: tag, scope: scope, previous: previous, captureStacks: captureStacks,
                           tablesEpoch: _TrackerSession.tablesEpoch, implicitGeneration: implicitGeneration,
                           droppedAtStart: _UnsafeTrackerState.process.tracedMemory.droppedAllocations)
    }

    /// Ends a scope: uninstalls it first, so the end's own work is never counted.
    static func _endScope(_ token: _ScopeToken) -> AllocationMeasurement {
        if token.scope == .thread {
            cat_thread_set_scope(token.previous)
        } else {
            // Process scopes may end out of order (async code): put back the nearest enclosing scope that is
            // still running, never one that has ended.
            var expected = token.tag
            _ = _UnsafeScopes.processScope.atomicCompareExchange(
                expected: &expected, desired: _UnsafeScopes.liveScope(from: token.previous))
            cat_sampling_refresh()
        }
        let previousState = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        defer { _ = cat_thread_set_state(previousState) }
        var raw: [_RawTrace] = []
        var maxFrames = 0
        var interrupted = false
        var counters = _ScopeCounters()
        do {
            cat_api_lock()
            defer { cat_api_unlock() }
            interrupted = !isTracing || _TrackerSession.tablesEpoch != token.tablesEpoch
            if !interrupted, let configuration = _TrackerSession.configuration {
                // What is still live: a site of the scope whose blocks were all freed leaked nothing.
                raw = _UnsafeTraceTable.copyTraces(.live, scope: token.tag).traces
                maxFrames = configuration.maxFrames
            }
            // Read before ending: once ended (and the lock released) the record may be recycled.
            counters = _UnsafeScopes.counters(token.tag)
            _UnsafeScopes.end(token.tag)
            _releaseImplicitStartLocked(token.implicitGeneration)
        }
        var addresses = Set<UInt>()
        if token.captureStacks { for trace in raw { addresses.formUnion(trace.addresses) } }
        let names = _FrameNames(_Symbolicator.shared.frames(for: addresses))
        let traces = raw.map { $0.trace(frames: names.frames(of: $0.addresses)) }
        // Wrapping: the counter restarts from 0 after a stop (the measurement is then interrupted anyway).
        let dropped = interrupted ? 0 : _UnsafeTrackerState.process.tracedMemory.droppedAllocations &- token.droppedAtStart
        return AllocationMeasurement(
            allocations: counters.allocations, allocatedBytes: counters.allocatedBytes, frees: counters.frees,
            freedBytes: counters.freedBytes, peakBytes: counters.peakBytes,
            leaked: Snapshot(traces: traces, tracebackLimit: maxFrames, droppedAllocations: dropped),
            interrupted: interrupted, scope: token.scope, droppedAllocations: dropped)
    }

    /// Drops a measurement's hold on the implicitly started tracker; the last one stops it. API lock held.
    static func _releaseImplicitStartLocked(_ generation: UInt64?) {
        guard let generation, generation == _TrackerSession.implicitGeneration, _TrackerSession.implicitStarts > 0
        else { return }
        _TrackerSession.implicitStarts -= 1
        if _TrackerSession.implicitStarts == 0 && isTracing { _TrackerLifecycle.stopLocked() }
    }
}

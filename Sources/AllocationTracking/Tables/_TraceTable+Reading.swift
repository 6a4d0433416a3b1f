import CAllocationTracking

// The tables' read side: with `_AllocationRecorder.swift` (the writers, inside malloc), the only code that knows
// the layout of the trace table, the frame arena and the measurement scope records. Snapshots, `traceback(of:)`,
// the allocation-failure report's names, the symbol-cache warm-up and measurements all read the tables here, so
// a new per-site word (a sampling weight, say) is read in one place.
//
// Nothing here runs inside malloc. Callers hold the API lock (`cat_api_lock`): `stop` and `clearTraces` cannot
// unmap the tables meanwhile, and an entry's frames are immutable once it is published. Counters that other
// threads change are either read as one relaxed word (a value that was true at some moment) or copied under the
// gate's writer side, where they hold still.

/// Which traces a copy keeps, and which counters it reads as their live values.
enum _TraceSelection {
    /// Every site that allocated since start or the last `clearTraces`, whether or not it holds a live block now:
    /// its live counters now and its totals. What a `.now` snapshot holds.
    case allocated
    /// The sites that hold live blocks now (what a measurement's leaks and a report of live memory need).
    case live
    /// The sites that held live blocks when the peak was last set, with their counters at that moment; their
    /// totals are those at the time of the copy (the table keeps no totals at the peak).
    case atPeak
}

/// A trace read out of the tables: its raw return addresses (most recent first) and counters. Turned into a
/// `Trace` (with or without symbols) by the symbolication layer.
struct _RawTrace {
    var addresses: [UInt]
    /// The captured stack's depth before truncation.
    var totalFrames: Int
    var liveBytes: Int
    var liveBlocks: Int
    /// Everything allocated from this stack since start or the last `clearTraces` (`CAT_E_TOTAL_*`).
    var allocatedBytes: Int
    var allocatedBlocks: Int
}

/// One entry's words as copied under the gate's writer side: a trivial value, so filling a buffer of them is
/// plain loads and stores (no retain, no allocation, no metadata).
struct _TraceEntryCopy {
    var frames: UInt64  // the frames' address in the arena
    var shape: UInt64   // total frames << 32 | stored frame count
    var liveBlocks: UInt64
    var liveBytes: UInt64
    var totalBlocks: UInt64
    var totalBytes: UInt64
}

extension _UnsafeTraceTable {
    // MARK: Copies of the per-site counters

    /// Copies the selected traces (those allocated in measurement scope `scope` or its descendants when `scope`
    /// is not 0) and the tracker's counters at the same moment. API lock held, tracking on, calling thread
    /// suspended.
    ///
    /// The counters are copied with the gate's writer side held (allocation recording paused in other threads),
    /// so the copy is consistent; then, with recording running again, the frames are copied out of the arena.
    static func copyTraces(_ selection: _TraceSelection, scope: UInt64 = 0) -> (traces: [_RawTrace], memory: TracedMemory) {
        let state = _UnsafeTrackerState.process
        // While the gate's writer side is held, other threads may be parked in it while holding locks of their
        // own (a runtime lock, say), so the copy does nothing but plain loads and stores into a buffer allocated
        // before.
        var capacity = Int(truncatingIfNeeded: state.traceCount.atomicLoad()) + 256
        var buffer = UnsafeMutablePointer<_TraceEntryCopy>.allocate(capacity: capacity)
        defer { buffer.deallocate() }
        var copied = 0
        var memory = TracedMemory()
        while true {
            let complete = _withGateWriter { () -> Bool in
                cat_deltas_fold_all()  // every thread's pending counter deltas (_UnsafeThreadDeltas): exact counters
                copied = copyEntries(state, selection, scope: scope, into: buffer, capacity: capacity)
                memory = state.tracedMemory
                return copied <= capacity
            }
            if complete { break }
            buffer.deallocate()  // new sites appeared since the buffer was sized: retry with room for them
            capacity = copied + 256
            buffer = UnsafeMutablePointer<_TraceEntryCopy>.allocate(capacity: capacity)
        }
        // Block counters are in 2^-16 blocks in sampled mode (`_SampleWeight`); T holds still while tracking is on.
        let mean = state.sampleMean.atomicLoad()
        let traces = UnsafeBufferPointer(start: buffer, count: copied).map { entry in
            _RawTrace(addresses: frames(at: entry.frames, shape: entry.shape),
                      totalFrames: Int(truncatingIfNeeded: entry.shape >> 32),
                      liveBytes: Int(truncatingIfNeeded: entry.liveBytes),
                      liveBlocks: Int(truncatingIfNeeded: _SampleWeight.wholeBlocks(entry.liveBlocks, mean: mean)),
                      allocatedBytes: Int(truncatingIfNeeded: entry.totalBytes),
                      allocatedBlocks: Int(truncatingIfNeeded: _SampleWeight.wholeBlocks(entry.totalBlocks, mean: mean)))
        }
        return (traces, memory)
    }

    /// Copies the selected entries into `buffer` (at most `capacity`); returns how many there are (more than
    /// `capacity` when the buffer was too small). Writer side held: plain loads and stores only.
    private static func copyEntries(_ state: _UnsafeTrackerState, _ selection: _TraceSelection, scope: UInt64,
                                    into buffer: UnsafeMutablePointer<_TraceEntryCopy>, capacity: Int) -> Int {
        let count = state.traceCount.atomicLoad()
        var selected = 0
        var id: UInt64 = 0
        while id < count {
            if let entry = entry(state, id), published(entry).atomicLoad() == 1,
               scope == 0 || _UnsafeScopes.descends(state, scopeTag(entry).atomicLoad(), from: scope) {
                let (bytes, blocks) = selection == .atPeak ? valuesAtPeak(state, entry)
                    : (liveBytes(entry).atomicLoad(), liveBlocks(entry).atomicLoad())
                let totalBlocks = totalBlocks(entry).atomicLoad()
                // A site whose every allocation was dropped (no pointer-table slot) has no total either: skipped.
                let kept = blocks != 0 || (selection == .allocated && totalBlocks != 0)
                if kept {
                    if selected < capacity {
                        (buffer + selected).initialize(to: _TraceEntryCopy(
                            frames: framesWord(entry).pointee, shape: shape(entry).pointee, liveBlocks: blocks,
                            liveBytes: bytes, totalBlocks: totalBlocks, totalBytes: totalBytes(entry).atomicLoad()))
                    }
                    selected += 1
                }
            }
            id &+= 1
        }
        return selected
    }

    // MARK: Frames

    /// The stored frames of a published entry (API lock held: the arena stays mapped; frames never change).
    private static func frames(at address: UInt64, shape: UInt64) -> [UInt] {
        let count = Int(truncatingIfNeeded: shape & 0xFFFF_FFFF)
        guard count > 0, let words = UnsafePointer<UInt64>(bitPattern: UInt(truncatingIfNeeded: address)) else { return [] }
        return (0..<count).map { UInt(words[$0]) }
    }

    /// The return addresses and total depth of trace `id`, or nil when there is no published trace with that id.
    /// API lock held.
    static func frames(ofTrace id: UInt64) -> (addresses: [UInt], totalFrames: Int)? {
        guard let entry = entry(.process, id), published(entry).atomicLoadAcquire() == 1 else { return nil }
        let shape = shape(entry).pointee
        return (frames(at: framesWord(entry).pointee, shape: shape), Int(truncatingIfNeeded: shape >> 32))
    }

    /// The return addresses and total depth of the trace that allocated the live tracked block at `pointer`, or
    /// nil when the block is not tracked. API lock held, tracking on.
    static func frames(ofBlock pointer: UnsafeRawPointer) -> (addresses: [UInt], totalFrames: Int)? {
        let state = _UnsafeTrackerState.process
        // The pointer table may be rebuilt by another thread: look it up as an allocation would, inside the gate.
        let shard = cat_thread_shard()
        cat_gate_enter(shard)
        let value = _UnsafePointerTable.lookup(state, key: UInt64(UInt(bitPattern: pointer)))
        cat_gate_exit(shard)
        guard value != 0 else { return nil }
        return frames(ofTrace: _UnsafePointerTable.traceID(of: value))
    }

    /// Calls `body` with the return addresses of each published trace from id `first` on (at most `limit` ids),
    /// until `body` returns false; returns the id to continue from. API lock held.
    static func forEachTrace(from first: UInt64, limit: Int, _ body: ([UInt]) -> Bool) -> UInt64 {
        let end = min(traceCount, first &+ UInt64(max(0, limit)))
        var id = first
        while id < end {
            // An id not published (yet, or never: a lost race leaves a hole) is skipped.
            let frames = frames(ofTrace: id)
            id &+= 1
            if let frames, !body(frames.addresses) { break }
        }
        return id
    }

    /// The number of trace ids handed out so far (published or not).
    static var traceCount: UInt64 { _UnsafeTrackerState.process.traceCount.atomicLoad() }

    /// Calls `body` with the id of each of the (at most `capacity`) sites with the most live bytes, largest
    /// first: the selection the allocation-failure report makes (`topSites`). `scratch` holds `3 * capacity`
    /// words, so that finding the sites allocates nothing. API lock held.
    static func forEachTopSite(capacity: Int, scratch: UnsafeMutablePointer<UInt64>, _ body: (UInt64) -> Void) {
        let found = topSites(.process, ids: scratch, bytes: scratch + capacity, blocks: scratch + 2 * capacity,
                             capacity: capacity)
        for index in 0..<found { body(scratch[index]) }
    }
}

extension _UnsafeTrackerState {
    /// The process-wide counters, exact: every thread's pending deltas folded in first (`_UnsafeThreadDeltas`).
    /// API lock held.
    static var foldedTracedMemory: TracedMemory {
        let state = _UnsafeTrackerState.process
        guard state.ready.atomicLoadAcquire() == 1 else { return state.tracedMemory }
        return _withGateWriter {
            cat_deltas_fold_all()
            return state.tracedMemory
        }
    }

    /// Tracked live bytes as the shared word holds them, for a reader that cannot wait for the gate (the watchdog,
    /// after `cat_deltas_try_fold_all`): exact after a fold, otherwise behind or ahead of `current` by less than
    /// 64 KiB per thread holding deltas, and
    /// never below zero (the shared word alone may be, while frees are pending elsewhere).
    var unfoldedCurrent: UInt64 {
        let value = current.atomicLoad()
        return Int64(bitPattern: value) < 0 ? 0 : value
    }

    /// The process-wide counters as the shared words hold them (all zero while stopped); exact after
    /// `cat_deltas_fold_all` (`foldedTracedMemory`).
    /// In sampled mode, estimates (`isEstimate`), block counts converted from their 2^-16 units.
    var tracedMemory: TracedMemory {
        let mean = sampleMean.atomicLoad()
        var memory = TracedMemory(
            current: Int(truncatingIfNeeded: current.atomicLoad()),
            peak: Int(truncatingIfNeeded: peak.atomicLoad()),
            liveBlocks: Int(truncatingIfNeeded: _SampleWeight.wholeBlocks(shardSum(Int(CAT_S_LIVE_BLOCKS)), mean: mean)),
            totalAllocations: Int(truncatingIfNeeded: _SampleWeight.wholeBlocks(shardSum(Int(CAT_S_TOTAL_ALLOCATIONS)),
                                                                                 mean: mean)),
            totalAllocatedBytes: Int(truncatingIfNeeded: shardSum(Int(CAT_S_TOTAL_BYTES))),
            droppedAllocations: Int(truncatingIfNeeded: shardSum(Int(CAT_S_DROPPED))))
        memory.isEstimate = mean != 0
        return memory
    }

    /// The sampling mode the counters were recorded with (`.exact` while stopped).
    var sampling: AllocationTracker.Configuration.Sampling {
        let mean = sampleMean.atomicLoad()
        return mean == 0 ? .exact : .poisson(meanBytes: Int(truncatingIfNeeded: mean))
    }
}

// MARK: - Measurement scope records

/// A measurement scope's counters, read from its record (`CAT_SCOPE_*`).
struct _ScopeCounters {
    var allocations = 0
    var allocatedBytes = 0
    var frees = 0
    var freedBytes = 0
    var currentBytes = 0
    var peakBytes = 0
}

extension _UnsafeScopes {
    /// Claims a free record (never used, or ended) for a new scope, searching from `cursor` round robin, and
    /// activates it with `parent` and the capture flag; returns its tag and the record index, or nil when every
    /// record is active. API lock held (the only writer of heads other than the retire below).
    static func begin(parent: UInt64, captureStacks: Bool, cursor: Int) -> (tag: UInt64, index: Int)? {
        let state = _UnsafeTrackerState.process
        let scopes = Int(CAT_SCOPES)
        for step in 0..<scopes {
            let index = (cursor + step) % scopes
            let record = state.word(Int(CAT_W_SCOPES) + index * Int(CAT_SCOPE_WORDS))
            let head = record.atomicLoad()
            guard head == 0 || head & retired != 0 else { continue }
            let generation = ((head & ~retired) >> 16) &+ 1
            let tag = (generation << 16 | UInt64(index + 1)) & ~retired
            for word in 1..<Int(CAT_SCOPE_WORDS) { (record + word).atomicStore(0) }
            (record + Int(CAT_SCOPE_PARENT)).atomicStore(parent)
            (record + Int(CAT_SCOPE_FLAGS)).atomicStore(captureStacks ? UInt64(CAT_SCOPE_CAPTURE_STACKS) : 0)
            // Published last: a free walking the chain counts into the record only once its head holds the tag.
            (record + Int(CAT_SCOPE_HEAD)).atomicStoreRelease(tag)
            return (tag, index)
        }
        return nil
    }

    /// The counters of the active scope `tag`. Read them before `end`: once ended (and the API lock released)
    /// the record may be recycled.
    static func counters(_ tag: UInt64) -> _ScopeCounters {
        guard let r = record(.process, tag) else { return _ScopeCounters() }
        func read<Word: BinaryInteger>(_ word: Word) -> Int { Int(truncatingIfNeeded: (r + Int(word)).atomicLoad()) }
        return _ScopeCounters(allocations: read(CAT_SCOPE_ALLOCATIONS), allocatedBytes: read(CAT_SCOPE_ALLOCATED_BYTES),
                              frees: read(CAT_SCOPE_FREES), freedBytes: read(CAT_SCOPE_FREED_BYTES),
                              currentBytes: read(CAT_SCOPE_CURRENT_BYTES), peakBytes: read(CAT_SCOPE_PEAK_BYTES))
    }

    /// Ends scope `tag`: its record stops counting but keeps its parent link (frees of blocks it allocated still
    /// reach the enclosing scopes). API lock held.
    static func end(_ tag: UInt64) {
        guard let r = record(.process, tag) else { return }
        (r + Int(CAT_SCOPE_HEAD)).atomicStoreRelease(tag | retired)
    }

    /// `tag` if that scope is still running, else its nearest running ancestor (an ended record keeps its parent
    /// link), else 0.
    static func liveScope(from tag: UInt64) -> UInt64 {
        var current = tag
        for _ in 0..<maxDepth where current != 0 {
            guard let r = record(.process, current) else { return 0 }
            let head = (r + Int(CAT_SCOPE_HEAD)).atomicLoad()
            if head == current { return current }  // running
            guard head == current | retired else { return 0 }  // recycled: the chain is gone
            current = (r + Int(CAT_SCOPE_PARENT)).atomicLoad()
        }
        return 0
    }

    /// The innermost active process-wide scope (0: none), which the hook attributes allocations to when the
    /// allocating thread is in no scope of its own.
    static var processScope: UnsafeMutablePointer<UInt64> { _UnsafeTrackerState.process.word(Int(CAT_W_SCOPE_PROCESS)) }
}

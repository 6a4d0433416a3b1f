import CAllocationTracking
import Synchronization

// Everything that runs inside malloc, in one file on purpose: the `@_noLocks` checker needs the bodies of the
// functions it checks, and a debug build (one compiler job per file, no whole-module optimisation, which a
// package depended on by URL cannot turn on) only has the bodies of its own file. Splitting this file by type
// would make the compiler unable to prove the allocation path lock- and allocation-free.
//
// Contents: `_AllocationRecorder` (the entry points the C interposer calls), `_UnsafeTrackerState` (the shared
// state words), `_UnsafePointerTable` (live pointer -> trace, size), `_UnsafeTraceTable` (interned stacks and
// per-site counters), and atomics on plain words.

// MARK: - _AllocationRecorder

// The table logic the C interposer calls (`cat_recorder`). RUNS INSIDE MALLOC: every function here is
// `@_noLocks`, so the compiler proves that nothing reachable from it takes a lock, allocates, or touches
// metadata or a lazily initialised global — in debug builds too, where unspecialised code would otherwise take
// the runtime's metadata lock from inside malloc and deadlock. The C side has set the thread's reentrancy
// guard, saved errno and entered the gate; it passes the state words in, so nothing here reads a global.
enum _AllocationRecorder {
    @_noLocks
    static func recordAllocation(_ words: UnsafeMutablePointer<UInt64>, _ deltas: UnsafeMutablePointer<UInt64>?,
                                 _ shard: UInt32,
                                 _ pointer: UnsafeMutableRawPointer, _ size: Int, _ frames: UnsafePointer<UInt>,
                                 _ frameCount: UInt32, _ totalFrames: UInt32, _ lastAttempt: UInt32,
                                 _ scopeTag: UInt64) -> UInt32 {
        let state = _UnsafeTrackerState(words: words)
        let shard = Int(shard)
        guard state.ready.atomicLoadAcquire() == 1 else { return UInt32(CAT_RECORD_DONE) }
        let bytes = UInt64(UInt(bitPattern: size))
        guard bytes <= _UnsafePointerTable.maximumSize,
              let traceID = _UnsafeTraceTable.intern(state, frames: frames, count: Int(frameCount), total: totalFrames,
                                                     scope: scopeTag),
              let entry = _UnsafeTraceTable.entry(state, traceID)
        else {
            state.shard(shard, Int(CAT_S_DROPPED)).atomicAdd(1)
            return UInt32(CAT_RECORD_DONE)
        }
        let key = UInt64(UInt(bitPattern: pointer))
        let probes = _UnsafePointerTable.insert(state, key: key, value: _UnsafePointerTable.pack(traceID: traceID, size: bytes),
                                                shard: shard)
        if probes < 0 {
            state.request(Int(CAT_NEED_POINTER_REBUILD))
            if lastAttempt == 0 { return UInt32(CAT_RECORD_RETRY) }
            state.shard(shard, Int(CAT_S_DROPPED)).atomicAdd(1)
            return UInt32(CAT_RECORD_DONE)
        }
        let mean = state.sampleMean.atomicLoad()
        if mean != 0 { _SampleWeight.countIn(state, key: key) }
        let weight = _SampleWeight.of(size: bytes, mean: mean, scope: scopeTag)
        // This shard's allocation count (before this one), for an occasional load check: in sampled mode the
        // counter is in 2^-16 blocks and sampled blocks are rare, so those check every time.
        let allocations = addLive(state, entry: entry, traceID: traceID, deltas: mean == 0 ? deltas : nil, shard: shard,
                                  bytes: weight.bytes, blocks: weight.blocks, isNewAllocation: true)
        if scopeTag != 0 { _UnsafeScopes.allocated(state, scopeTag, bytes: bytes) }
        if probes > _UnsafePointerTable.longProbe || (allocations >> weight.shift) & 255 == 0
            || weight.blocks > (1 << weight.shift),
           _UnsafePointerTable.needsRebuild(state) {
            state.request(Int(CAT_NEED_POINTER_REBUILD))
        }
        return UInt32(CAT_RECORD_DONE)
    }

    /// Adds a live block to its site and the totals, with its weight (`_SampleWeight`: the block itself in exact
    /// mode); returns the shard's allocation count before it (0 when `isNewAllocation` is false). With `deltas`
    /// (exact mode, a registered thread), the site's counters and `current` change in the thread's deltas
    /// (`_UnsafeThreadDeltas`); without, in the shared words.
    @_noLocks
    @inline(__always)
    @discardableResult
    static func addLive(_ state: _UnsafeTrackerState, entry: UnsafeMutablePointer<UInt64>, traceID: UInt64,
                        deltas: UnsafeMutablePointer<UInt64>?, shard: Int, bytes: UInt64, blocks: UInt64,
                        isNewAllocation: Bool) -> UInt64 {
        if let deltas {
            state.shard(shard, Int(CAT_S_LIVE_BLOCKS)).atomicAdd(blocks)
            var allocations: UInt64 = 0
            if isNewAllocation {
                allocations = state.shard(shard, Int(CAT_S_TOTAL_ALLOCATIONS)).atomicAdd(blocks)
                state.shard(shard, Int(CAT_S_TOTAL_BYTES)).atomicAdd(bytes)
            }
            _UnsafeThreadDeltas.added(state, deltas, traceID: traceID, bytes: bytes, blocks: blocks,
                                      isNewAllocation: isNewAllocation)
            return allocations
        }
        _UnsafeTraceTable.rebasePeak(state, entry)
        _UnsafeTraceTable.liveBlocks(entry).atomicAdd(blocks)
        _UnsafeTraceTable.liveBytes(entry).atomicAdd(bytes)
        state.shard(shard, Int(CAT_S_LIVE_BLOCKS)).atomicAdd(blocks)
        var allocations: UInt64 = 0
        if isNewAllocation {
            _UnsafeTraceTable.totalBlocks(entry).atomicAdd(blocks)
            _UnsafeTraceTable.totalBytes(entry).atomicAdd(bytes)
            allocations = state.shard(shard, Int(CAT_S_TOTAL_ALLOCATIONS)).atomicAdd(blocks)
            state.shard(shard, Int(CAT_S_TOTAL_BYTES)).atomicAdd(bytes)
        }
        let current = state.current.atomicAdd(bytes) &+ bytes
        let peakWord = state.peak
        var peak = peakWord.atomicLoad()
        // tracemalloc: the peak only rises when a block is added. Signed: with other threads' deltas pending,
        // the shared word may be below zero for a while (_UnsafeThreadDeltas).
        while Int64(bitPattern: current) > Int64(bitPattern: peak) {
            if peakWord.atomicCompareExchange(expected: &peak, desired: current) {
                // This block set the peak: the peak is "now". Other sites rebase lazily to the new epoch when
                // next touched; this one records its values at the peak directly.
                let epoch = state.peakEpoch.atomicAdd(1) &+ 1
                _UnsafeTraceTable.peakBytes(entry).atomicStore(_UnsafeTraceTable.liveBytes(entry).atomicLoad())
                _UnsafeTraceTable.peakBlocks(entry).atomicStore(_UnsafeTraceTable.liveBlocks(entry).atomicLoad())
                _UnsafeTraceTable.peakEpoch(entry).atomicStoreRelease(epoch)
                break
            }
        }
        return allocations
    }

    @_noLocks
    static func recordFree(_ words: UnsafeMutablePointer<UInt64>, _ deltas: UnsafeMutablePointer<UInt64>?,
                           _ shard: UInt32, _ pointer: UnsafeMutableRawPointer) -> UInt64 {
        let state = _UnsafeTrackerState(words: words)
        guard state.ready.atomicLoadAcquire() == 1 else { return 0 }
        let value = _UnsafePointerTable.remove(state, key: UInt64(UInt(bitPattern: pointer)))
        guard value != 0, let entry = _UnsafeTraceTable.entry(state, _UnsafePointerTable.traceID(of: value)) else {
            return 0
        }
        let bytes = _UnsafePointerTable.size(of: value)
        let scopeTag = _UnsafeTraceTable.scopeTag(entry).atomicLoad()
        let mean = state.sampleMean.atomicLoad()
        if mean != 0 { _SampleWeight.countOut(state, key: UInt64(UInt(bitPattern: pointer))) }
        // The same function of the same (size, T, scope) as at the allocation: subtracts exactly what it added.
        let weight = _SampleWeight.of(size: bytes, mean: mean, scope: scopeTag)
        state.shard(Int(shard), Int(CAT_S_LIVE_BLOCKS)).atomicSubtract(weight.blocks)
        if mean == 0, let deltas {
            _UnsafeThreadDeltas.freed(state, deltas, traceID: _UnsafePointerTable.traceID(of: value), bytes: weight.bytes,
                                      blocks: weight.blocks)
        } else {
            _UnsafeTraceTable.rebasePeak(state, entry)
            _UnsafeTraceTable.liveBlocks(entry).atomicSubtract(weight.blocks)
            _UnsafeTraceTable.liveBytes(entry).atomicSubtract(weight.bytes)
            state.current.atomicSubtract(weight.bytes)
        }
        // A block allocated inside a measurement scope: account the free to it, whichever thread frees.
        if scopeTag != 0 { _UnsafeScopes.freed(state, scopeTag, bytes: bytes, count: 1) }
        return value
    }

    /// Puts back an entry removed by a realloc whose real realloc failed (the old block is still live).
    @_noLocks
    static func restore(_ words: UnsafeMutablePointer<UInt64>, _ deltas: UnsafeMutablePointer<UInt64>?, _ shard: UInt32,
                        _ pointer: UnsafeMutableRawPointer, _ value: UInt64) {
        let state = _UnsafeTrackerState(words: words)
        let traceID = _UnsafePointerTable.traceID(of: value)
        guard state.ready.atomicLoadAcquire() == 1, value != 0, traceID < state.traceCount.atomicLoad(),
              let entry = _UnsafeTraceTable.entry(state, traceID),
              _UnsafePointerTable.insert(state, key: UInt64(UInt(bitPattern: pointer)), value: value, shard: Int(shard)) >= 0
        else { return }
        let bytes = _UnsafePointerTable.size(of: value)
        let scopeTag = _UnsafeTraceTable.scopeTag(entry).atomicLoad()
        let mean = state.sampleMean.atomicLoad()
        if mean != 0 { _SampleWeight.countIn(state, key: UInt64(UInt(bitPattern: pointer))) }
        let weight = _SampleWeight.of(size: bytes, mean: mean, scope: scopeTag)
        addLive(state, entry: entry, traceID: traceID, deltas: mean == 0 ? deltas : nil, shard: Int(shard),
                bytes: weight.bytes, blocks: weight.blocks, isNewAllocation: false)
        if scopeTag != 0 { _UnsafeScopes.freed(state, scopeTag, bytes: 0 &- bytes, count: 0 &- 1) }  // undo the free
    }

    /// The function table handed to `cat_install_recorder`.
    static var table: cat_recorder {
        cat_recorder(
            recordAllocation: { _AllocationRecorder.recordAllocation($0, $1, $2, $3, $4, $5, $6, $7, $8, $9) },
            recordFree: { _AllocationRecorder.recordFree($0, $1, $2, $3) },
            restore: { _AllocationRecorder.restore($0, $1, $2, $3, $4) },
            foldDeltas: { _UnsafeThreadDeltas.fold(_UnsafeTrackerState(words: $0), $1) },
            pointerCapacityNeeded: { _UnsafePointerTable.capacityNeeded(_UnsafeTrackerState(words: $0)) },
            rebuildPointerTable: { _UnsafePointerTable.rebuild(_UnsafeTrackerState(words: $0), into: $1, capacity: $2) },
            indexCapacityNeeded: { _UnsafeTraceTable.indexCapacityNeeded(_UnsafeTrackerState(words: $0)) },
            rebuildIndex: { _UnsafeTraceTable.rebuildIndex(_UnsafeTrackerState(words: $0), into: $1, capacity: $2) },
            topSites: {
                UInt64(_UnsafeTraceTable.topSites(_UnsafeTrackerState(words: $0), ids: $1, bytes: $2, blocks: $3,
                                                  capacity: Int(truncatingIfNeeded: $4)))
            })
    }
}

// MARK: - _SampleWeight

/// What a recorded block stands for. Exact mode (T = 0): itself, 1 block of s bytes. Sampled mode: a block of s
/// bytes was sampled with probability p = 1 − exp(−s/T) (thread_state.c), so it stands for 1/p blocks and s/p
/// bytes, which makes every sum of weights an unbiased estimate of the true sum. Inside a measurement scope
/// (`scope` ≠ 0) every allocation is recorded, so the weight is the block itself.
///
/// The weight is *derived* at both ends, not stored: the free recomputes it from the same (s, T, scope) — s from
/// the pointer table, T fixed from start to stop (the tables go with it), the scope from the trace — with the
/// same instructions, so it subtracts exactly what the allocation added and `current` returns to 0 when
/// everything is freed. Storing it would take a word per pointer-table slot (16 → 24 bytes a slot, and the
/// packed value has no room). Only IEEE-754 arithmetic (no libm call, which the `@_noLocks` checker cannot see
/// through): deterministic for equal inputs.
///
/// Units: bytes are whole bytes (s/p rounded to nearest: at most half a byte per sampled block, whose weight is
/// at least T); blocks are in 2^-16 block (`CAT_SAMPLE_BLOCK_SHIFT`) in sampled mode, whole blocks in exact
/// mode. The read side converts (`wholeBlocks`).
///
/// RUNS INSIDE MALLOC: arithmetic and atomics only.
enum _SampleWeight {
    @inline(__always) static var blockShift: UInt64 { UInt64(CAT_SAMPLE_BLOCK_SHIFT) }

    @_noLocks
    @inline(__always)
    static func of(size: UInt64, mean: UInt64, scope: UInt64) -> (bytes: UInt64, blocks: UInt64, shift: UInt64) {
        if mean == 0 { return (size, 1, 0) }
        let one: UInt64 = 1 << blockShift
        if scope != 0 || size == 0 { return (size, one, blockShift) }
        let p = probability(Double(size) / Double(mean))
        return (UInt64(Double(size) / p + 0.5), UInt64(Double(one) / p + 0.5), blockShift)
    }

    /// p = 1 − exp(−x) for x = s/T > 0, by series, with no cancellation for small x.
    @_noLocks
    static func probability(_ x: Double) -> Double {
        if x >= 40 { return 1 }  // exp(−40) < 2^-57: 1 − it rounds to 1
        if x < 0.5 {
            // 1 − exp(−x) = x(1 − x/2(1 − x/3(1 − …))): 18 terms, truncation below 0.5^18/18! ≈ 6e-22.
            var inner = 1.0
            var k = 18.0
            while k >= 2 { inner = 1 - x / k * inner; k -= 1 }
            return x * inner
        }
        // exp(−x) = exp(−x/2^m)^(2^m) with x/2^m < 0.5 by its series; m ≤ 7 squarings.
        var y = x
        var m = 0
        while y >= 0.5 { y *= 0.5; m &+= 1 }
        var e = 1.0
        var k = 18.0
        while k >= 1 { e = 1 - y / k * e; k -= 1 }
        while m > 0 { e *= e; m &-= 1 }
        return 1 - e
    }

    /// A block counter (or sum of counters) in whole blocks, rounded to nearest.
    @_noLocks
    @inline(__always)
    static func wholeBlocks(_ counter: UInt64, mean: UInt64) -> UInt64 {
        mean == 0 ? counter : (counter &+ (1 << (blockShift &- 1))) >> blockShift
    }

    /// The free path's filter bucket of `key` (interposer.c: cat_maybe_tracked; same multiplier and bits).
    @inline(__always)
    static func filterBucket(_ state: _UnsafeTrackerState, _ key: UInt64) -> UnsafeMutablePointer<UInt64>? {
        guard let base = UnsafeMutablePointer<UInt64>(bitPattern: UInt(state.word(Int(CAT_W_SAMPLE_FILTER)).atomicLoad()))
        else { return nil }
        return base + Int(truncatingIfNeeded: (key &* 0xD6E8_FEB8_6659_FD93) >> (64 &- UInt64(CAT_SAMPLE_FILTER_BITS)))
    }

    /// Counts a new pointer-table entry in the filter (sampled mode), before malloc returns the block.
    @_noLocks
    @inline(__always)
    static func countIn(_ state: _UnsafeTrackerState, key: UInt64) {
        filterBucket(state, key)?.atomicAdd(1)
    }

    /// Counts a removed pointer-table entry out of the filter.
    @_noLocks
    @inline(__always)
    static func countOut(_ state: _UnsafeTrackerState, key: UInt64) {
        filterBucket(state, key)?.atomicSubtract(1)
    }
}

// MARK: - _UnsafeThreadDeltas

/// Per-thread counter deltas: how exact mode costs per thread what it costs on one thread. With every event
/// adding to the site's counters and to `current` with a `lock`-prefixed instruction, two threads allocating from
/// the same call sites bounce those cache lines between cores on every malloc and free (`perf`: the `lock add`s
/// were most of the two-thread cost). So a thread with a registry slot (interposer.c: cat_hook_deltas) adds to its
/// slot's words (`CAT_D_*`, static memory: g_cat_delta_slots) with plain loads and stores, and flushes them to the
/// shared words:
///
/// - a site slot (direct-mapped by trace id, `CAT_D_SITES` of them) when it has seen `CAT_D_BOUND_EVENTS`
///   events, when its live or total bytes delta reaches `CAT_D_BOUND_BYTES` (either sign), or when another site
///   needs the slot;
/// - the `current` delta when it reaches `CAT_D_BOUND_BYTES` (either sign), or when this thread sets the peak;
/// - all of them when the thread exits (the key destructor, interposer.c), and every thread's when the counters
///   are read (`cat_deltas_fold_all`, writer side held: `tracedMemory`, snapshots, measurements, fork).
///
/// What stays exact: everything that is read — `current`, the per-site counters, the totals — because a read
/// folds every thread's deltas first; per-shard totals and dropped counts (never deferred); measurement scopes
/// (their own records, unchanged); and the peak when one thread allocates (below). What bends, and by how much:
///
/// - **The peak.** Every addition compares this thread's view of `current` (the shared word plus its own pending
///   bytes) with the peak; when it is higher, the thread flushes all its deltas, so the new peak and the sites'
///   values at it include its whole share, and sets the peak (a new epoch: the sites' values at it are taken
///   lazily, `rebasePeak`). Other threads' pending `current` deltas are the error: each is under
///   `CAT_D_BOUND_BYTES` in size, so the peak differs from the true maximum of `current` by less than
///   (number of other threads holding deltas) x 64 KiB, in either direction, and is exact when only one thread
///   allocates. A read raises it to `current` if it is below (the fold reveals a maximum the deltas hid).
/// - **The peak snapshot.** A site's values at the peak miss what other threads had pending for it then: less
///   than 64 events (blocks) and 64 KiB per thread.
/// - **Readers that must not wait**: the watchdog (its soft limit on tracked bytes and its trend samples) folds
///   only when the gate's readers drain within a few yields (`cat_deltas_try_fold_all`), and the
///   allocation-failure report (inside malloc) folds only its own thread's deltas. Otherwise they read the shared
///   words, which lag by the pending deltas: less than 64 KiB of `current` per thread, and per site less than 64
///   blocks and 64 KiB per thread.
///
/// Sampled mode keeps the shared counters (sampled events are rare, so nothing contends). Nothing here
/// allocates or locks: TLS words the caller passes in, and the same atomics on the shared words as before.
/// RUNS INSIDE MALLOC (and in a thread's exit, and with the gate's writer side held: `fold`).
enum _UnsafeThreadDeltas {
    @inline(__always) static var boundBytes: Int64 { Int64(CAT_D_BOUND_BYTES) }
    @inline(__always) static var boundEvents: UInt64 { UInt64(CAT_D_BOUND_EVENTS) }

    @inline(__always)
    static func slot(_ deltas: UnsafeMutablePointer<UInt64>, _ index: Int) -> UnsafeMutablePointer<UInt64> {
        deltas + (Int(CAT_D_SLOTS) &+ index &* Int(CAT_DS_WORDS))
    }

    /// The slot for `traceID` (flushing the site that held it), and its index.
    @_noLocks
    @inline(__always)
    static func site(_ state: _UnsafeTrackerState, _ deltas: UnsafeMutablePointer<UInt64>,
                     _ traceID: UInt64) -> (UnsafeMutablePointer<UInt64>, Int) {
        let index = Int(truncatingIfNeeded: traceID) & (Int(CAT_D_SITES) &- 1)
        let s = slot(deltas, index)
        if s[Int(CAT_DS_TRACE)] != traceID &+ 1 {
            if s[Int(CAT_DS_TRACE)] != 0 { flushSite(state, deltas, index) }
            s[Int(CAT_DS_TRACE)] = traceID &+ 1
            deltas[Int(CAT_D_DIRTY)] |= 1 << UInt64(index)
        }
        return (s, index)
    }

    /// After an event: whether the slot reached a bound and must be flushed.
    @inline(__always)
    static func due(_ s: UnsafeMutablePointer<UInt64>) -> Bool {
        let live = Int64(bitPattern: s[Int(CAT_DS_LIVE_BYTES)])
        return s[Int(CAT_DS_EVENTS)] >= boundEvents || live >= boundBytes || live <= -boundBytes
            || s[Int(CAT_DS_TOTAL_BYTES)] >= UInt64(boundBytes)
    }

    /// A block of `bytes` (weight `blocks`) added at `traceID`: a new allocation, or a failed realloc's old block
    /// put back (`isNewAllocation` false: no totals).
    @_noLocks
    @inline(__always)
    static func added(_ state: _UnsafeTrackerState, _ deltas: UnsafeMutablePointer<UInt64>, traceID: UInt64,
                      bytes: UInt64, blocks: UInt64, isNewAllocation: Bool) {
        let (s, index) = site(state, deltas, traceID)
        s[Int(CAT_DS_LIVE_BLOCKS)] &+= blocks
        s[Int(CAT_DS_LIVE_BYTES)] &+= bytes
        if isNewAllocation {
            s[Int(CAT_DS_TOTAL_BLOCKS)] &+= blocks
            s[Int(CAT_DS_TOTAL_BYTES)] &+= bytes
        }
        s[Int(CAT_DS_EVENTS)] &+= 1
        if due(s) { flushSite(state, deltas, index) }
        let pending = deltas[Int(CAT_D_CURRENT)] &+ bytes
        deltas[Int(CAT_D_CURRENT)] = pending
        // The peak, as this thread sees `current`: two relaxed loads of words that change only at flushes and new
        // peaks, so they stay in this core's cache.
        if Int64(bitPattern: state.current.atomicLoad() &+ pending) > Int64(bitPattern: state.peak.atomicLoad()) {
            setPeak(state, deltas)
        } else if Int64(bitPattern: pending) >= boundBytes {
            flushCurrent(state, deltas)
        }
    }

    /// A block of `bytes` (weight `blocks`) freed from `traceID`.
    @_noLocks
    @inline(__always)
    static func freed(_ state: _UnsafeTrackerState, _ deltas: UnsafeMutablePointer<UInt64>, traceID: UInt64,
                      bytes: UInt64, blocks: UInt64) {
        let (s, index) = site(state, deltas, traceID)
        s[Int(CAT_DS_LIVE_BLOCKS)] &-= blocks
        s[Int(CAT_DS_LIVE_BYTES)] &-= bytes
        s[Int(CAT_DS_EVENTS)] &+= 1
        if due(s) { flushSite(state, deltas, index) }
        let pending = deltas[Int(CAT_D_CURRENT)] &- bytes
        deltas[Int(CAT_D_CURRENT)] = pending
        if Int64(bitPattern: pending) <= -boundBytes { flushCurrent(state, deltas) }
    }

    /// Adds slot `index` to its site's shared counters (values at the peak first: `rebasePeak`) and frees it.
    @_noLocks
    static func flushSite(_ state: _UnsafeTrackerState, _ deltas: UnsafeMutablePointer<UInt64>, _ index: Int) {
        let s = slot(deltas, index)
        let tag = s[Int(CAT_DS_TRACE)]
        if tag != 0, let entry = _UnsafeTraceTable.entry(state, tag &- 1) {
            _UnsafeTraceTable.rebasePeak(state, entry)
            @inline(__always) func add(_ word: UnsafeMutablePointer<UInt64>, _ value: UInt64) {
                if value != 0 { word.atomicAdd(value) }
            }
            add(_UnsafeTraceTable.liveBlocks(entry), s[Int(CAT_DS_LIVE_BLOCKS)])
            add(_UnsafeTraceTable.liveBytes(entry), s[Int(CAT_DS_LIVE_BYTES)])
            add(_UnsafeTraceTable.totalBlocks(entry), s[Int(CAT_DS_TOTAL_BLOCKS)])
            add(_UnsafeTraceTable.totalBytes(entry), s[Int(CAT_DS_TOTAL_BYTES)])
        }
        var word = 0
        while word < Int(CAT_DS_WORDS) {
            s[word] = 0
            word &+= 1
        }
        deltas[Int(CAT_D_DIRTY)] &= ~(1 << UInt64(index))
    }

    /// Adds the pending `current` delta to the shared word; returns the shared word after it.
    @_noLocks
    @inline(__always)
    @discardableResult
    static func flushCurrent(_ state: _UnsafeTrackerState, _ deltas: UnsafeMutablePointer<UInt64>) -> UInt64 {
        let pending = deltas[Int(CAT_D_CURRENT)]
        deltas[Int(CAT_D_CURRENT)] = 0
        if pending == 0 { return state.current.atomicLoad() }
        return state.current.atomicAdd(pending) &+ pending
    }

    /// This thread's view of `current` is above the peak: puts its whole share into the shared counters, then
    /// raises the peak to the shared `current` (a new epoch).
    @_noLocks
    static func setPeak(_ state: _UnsafeTrackerState, _ deltas: UnsafeMutablePointer<UInt64>) {
        foldSites(state, deltas)
        let current = flushCurrent(state, deltas)
        var peak = state.peak.atomicLoad()
        while Int64(bitPattern: current) > Int64(bitPattern: peak) {
            if state.peak.atomicCompareExchange(expected: &peak, desired: current) {
                state.peakEpoch.atomicAdd(1)
                break
            }
        }
    }

    @_noLocks
    @inline(__always)
    static func foldSites(_ state: _UnsafeTrackerState, _ deltas: UnsafeMutablePointer<UInt64>) {
        var dirty = deltas[Int(CAT_D_DIRTY)]
        while dirty != 0 {
            flushSite(state, deltas, dirty.trailingZeroBitCount)
            dirty &= dirty &- 1
        }
    }

    /// Everything the thread has pending, into the shared counters (the peak is the caller's: cat_deltas_fold_all).
    @_noLocks
    static func fold(_ state: _UnsafeTrackerState, _ deltas: UnsafeMutablePointer<UInt64>) {
        foldSites(state, deltas)
        flushCurrent(state, deltas)
    }
}

// MARK: - _UnsafeTrackerState

/// A view of the tracker's shared state words (layout: `CAT_W_*` / `CAT_S_*` in CAllocationTracking.h). The C
/// interposer passes the base pointer into every call, so code inside malloc never touches a Swift global.
///
/// RUNS INSIDE MALLOC: pointer arithmetic and atomics only.
struct _UnsafeTrackerState {
    let words: UnsafeMutablePointer<UInt64>

    @inline(__always) init(words: UnsafeMutablePointer<UInt64>) { self.words = words }

    /// The process's state (for the public API; the hooks get `words` from C).
    static var process: _UnsafeTrackerState { _UnsafeTrackerState(words: cat_state_words()) }

    @inline(__always) func word(_ index: Int) -> UnsafeMutablePointer<UInt64> { words + index }
    @inline(__always) func shard(_ shard: Int, _ counter: Int) -> UnsafeMutablePointer<UInt64> {
        words + (shard &* Int(CAT_SHARD_WORDS) &+ counter)
    }

    @inline(__always) var current: UnsafeMutablePointer<UInt64> { word(Int(CAT_W_CURRENT)) }
    @inline(__always) var peak: UnsafeMutablePointer<UInt64> { word(Int(CAT_W_PEAK)) }
    @inline(__always) var peakEpoch: UnsafeMutablePointer<UInt64> { word(Int(CAT_W_PEAK_EPOCH)) }
    @inline(__always) var ready: UnsafeMutablePointer<UInt64> { word(Int(CAT_W_READY)) }
    @inline(__always) var requests: UnsafeMutablePointer<UInt64> { word(Int(CAT_W_REQUESTS)) }
    @inline(__always) var traceCount: UnsafeMutablePointer<UInt64> { word(Int(CAT_W_TRACE_COUNT)) }
    /// The mean sampling interval T in bytes; 0 in exact mode.
    @inline(__always) var sampleMean: UnsafeMutablePointer<UInt64> { word(Int(CAT_W_SAMPLE_MEAN)) }

    /// Asks the C side for memory or a rebuild (serviced after the gate is left).
    @_noLocks
    @inline(__always)
    func request(_ bits: Int) {
        let requests = self.requests
        if requests.atomicLoad() & UInt64(bits) != UInt64(bits) { requests.atomicOr(UInt64(bits)) }
    }

    /// The sum of one per-shard counter (`CAT_S_*`). Counters use wrapping arithmetic (a block may be freed on
    /// another shard than it was allocated on); only the sum is meaningful.
    @_noLocks
    func shardSum(_ counter: Int) -> UInt64 {
        var total: UInt64 = 0
        for s in 0..<Int(CAT_SHARDS) { total &+= shard(s, counter).atomicLoad() }
        return total
    }

    @_noLocks
    func resetShardCounter(_ counter: Int) {
        for s in 0..<Int(CAT_SHARDS) { shard(s, counter).atomicStore(0) }
    }
}

// Atomic operations on plain words laid out by C (the Synchronization module's `Atomic`, whose operations
// are inlinable builtins the `@_noLocks` checker can see through).
extension UnsafeMutablePointer where Pointee == UInt64 {
    @inline(__always)
    var _atomic: UnsafeMutablePointer<Atomic<UInt64>> {
        UnsafeMutableRawPointer(self).assumingMemoryBound(to: Atomic<UInt64>.self)
    }
    @inline(__always) func atomicLoad() -> UInt64 { _atomic.pointee.load(ordering: .relaxed) }
    @inline(__always) func atomicLoadAcquire() -> UInt64 { _atomic.pointee.load(ordering: .acquiring) }
    @inline(__always) func atomicStore(_ value: UInt64) { _atomic.pointee.store(value, ordering: .relaxed) }
    @inline(__always) func atomicStoreRelease(_ value: UInt64) { _atomic.pointee.store(value, ordering: .releasing) }
    @inline(__always) @discardableResult
    func atomicAdd(_ value: UInt64) -> UInt64 { _atomic.pointee.wrappingAdd(value, ordering: .relaxed).oldValue }
    @inline(__always) @discardableResult
    func atomicSubtract(_ value: UInt64) -> UInt64 {
        _atomic.pointee.wrappingSubtract(value, ordering: .relaxed).oldValue
    }
    @inline(__always) func atomicOr(_ value: UInt64) { _ = _atomic.pointee.bitwiseOr(value, ordering: .acquiringAndReleasing) }
    /// Compare-and-swap; on failure `expected` receives the current value.
    @inline(__always)
    func atomicCompareExchange(expected: inout UInt64, desired: UInt64) -> Bool {
        let (exchanged, original) = _atomic.pointee.compareExchange(
            expected: expected, desired: desired, ordering: .acquiringAndReleasing)
        expected = original
        return exchanged
    }
}

extension UnsafeMutablePointer where Pointee == UInt32 {
    @inline(__always)
    var _atomic: UnsafeMutablePointer<Atomic<UInt32>> {
        UnsafeMutableRawPointer(self).assumingMemoryBound(to: Atomic<UInt32>.self)
    }
    @inline(__always) func atomicLoadAcquire() -> UInt32 { _atomic.pointee.load(ordering: .acquiring) }
    @inline(__always)
    func atomicCompareExchange(expected: inout UInt32, desired: UInt32) -> Bool {
        let (exchanged, original) = _atomic.pointee.compareExchange(
            expected: expected, desired: desired, ordering: .acquiringAndReleasing)
        expected = original
        return exchanged
    }
}

// MARK: - _UnsafePointerTable

/// Live pointer → (trace id, requested size): a lock-free open-addressed table of 16-byte slots.
///
/// Slot: `key` (the block's address; 0 empty, 1 tombstone) and `value` (`(traceID + 1) << 40 | size`, never 0).
/// Inserts claim the first empty-or-tombstone slot on the probe path with a CAS; a block's address cannot be in
/// the table twice (its previous life was removed before the real free), so reusing tombstones is safe. Removes
/// probe until the key or an empty slot. The table is rebuilt (grown, shrunk, or purged of tombstones) under
/// the writer side of the gate (`cat_gate_lock_writer`) when more than 3/4 of its slots have been used, to twice the live count
/// — so it holds between 21 and 32 bytes per live block, and a small program pays for a small table.
///
/// RUNS INSIDE MALLOC: nothing here allocates or locks (`@_noLocks`). Memory comes from the C side
/// (`cat_service_requests`), which calls `capacityNeeded` and `rebuild` with the gate's writer side held.
enum _UnsafePointerTable {
    @inline(__always) static var empty: UInt64 { 0 }
    @inline(__always) static var tombstone: UInt64 { 1 }
    @inline(__always) static var sizeBits: UInt64 { 40 }
    /// Largest requested size a slot can hold (1 TiB - 1); larger blocks are counted as dropped.
    @inline(__always) static var maximumSize: UInt64 { (1 << 40) - 1 }
    /// Largest trace id a slot can hold.
    @inline(__always) static var maximumTraceID: UInt64 { (1 << 24) - 2 }
    @inline(__always) static var minimumCapacity: UInt64 { 4096 }
    /// An insert that probes further than this asks for a rebuild.
    @inline(__always) static var longProbe: Int { 32 }

    @inline(__always)
    static func pack(traceID: UInt64, size: UInt64) -> UInt64 { ((traceID &+ 1) << sizeBits) | size }
    @inline(__always)
    static func traceID(of value: UInt64) -> UInt64 { (value >> sizeBits) &- 1 }
    @inline(__always)
    static func size(of value: UInt64) -> UInt64 { value & maximumSize }

    @inline(__always)
    static func home(_ key: UInt64, capacity: UInt64) -> UInt64 {
        // Fibonacci hashing then Lemire's range reduction: any capacity, no division. (cat_record_allocation
        // prefetches the slot with the same formula: keep them alike.)
        (key &* 0x9E37_79B9_7F4A_7C15).multipliedFullWidth(by: capacity).high
    }

    @inline(__always)
    static func slots(_ state: _UnsafeTrackerState) -> (UnsafeMutablePointer<UInt64>, UInt64)? {
        let capacity = state.word(Int(CAT_W_POINTER_CAPACITY)).atomicLoad()
        guard capacity != 0,
              let base = UnsafeMutablePointer<UInt64>(bitPattern: UInt(state.word(Int(CAT_W_POINTER_BASE)).atomicLoad()))
        else { return nil }
        return (base, capacity)
    }

    /// Inserts `key → value`. Returns the number of probes, or -1 when no free slot was found within the
    /// table (the caller rebuilds and retries, then counts the block as dropped). Caller holds the gate's
    /// reader side.
    @_noLocks
    static func insert(_ state: _UnsafeTrackerState, key: UInt64, value: UInt64, shard: Int) -> Int {
        guard case let (base, capacity)? = slots(state) else { return -1 }
        var index = home(key, capacity: capacity)
        var probes = 0
        let limit = Int(truncatingIfNeeded: capacity)
        while probes < limit {
            let slot = base + Int(truncatingIfNeeded: index) &* 2
            var seen = slot.atomicLoad()
            if seen == empty || seen == tombstone {
                let wasEmpty = seen == empty
                if slot.atomicCompareExchange(expected: &seen, desired: key) {
                    (slot + 1).atomicStore(value)
                    if wasEmpty { state.shard(shard, Int(CAT_S_POINTER_SLOTS_USED)).atomicAdd(1) }
                    return probes
                }
                continue  // lost the slot to another thread: look at it again
            }
            index &+= 1
            if index == capacity { index = 0 }
            probes &+= 1
        }
        return -1
    }

    /// Removes `key` and returns its value, or 0 when the block is not tracked (allocated before start or
    /// before clearTraces, or dropped). Caller holds the gate's reader side.
    @_noLocks
    static func remove(_ state: _UnsafeTrackerState, key: UInt64) -> UInt64 {
        guard case let (base, capacity)? = slots(state) else { return 0 }
        var index = home(key, capacity: capacity)
        var probes: UInt64 = 0
        while probes < capacity {
            let slot = base + Int(truncatingIfNeeded: index) &* 2
            let seen = slot.atomicLoadAcquire()
            if seen == key {
                let value = (slot + 1).atomicLoad()
                slot.atomicStoreRelease(tombstone)
                return value
            }
            if seen == empty { return 0 }
            index &+= 1
            if index == capacity { index = 0 }
            probes &+= 1
        }
        return 0
    }

    /// The value stored for `key`, or 0. Caller holds the gate's reader side.
    @_noLocks
    static func lookup(_ state: _UnsafeTrackerState, key: UInt64) -> UInt64 {
        guard case let (base, capacity)? = slots(state) else { return 0 }
        var index = home(key, capacity: capacity)
        var probes: UInt64 = 0
        while probes < capacity {
            let slot = base + Int(truncatingIfNeeded: index) &* 2
            let seen = slot.atomicLoadAcquire()
            if seen == key { return (slot + 1).atomicLoad() }
            if seen == empty { return 0 }
            index &+= 1
            if index == capacity { index = 0 }
            probes &+= 1
        }
        return 0
    }

    /// Whether more than 3/4 of the slots have been used (live or tombstone).
    @_noLocks
    static func needsRebuild(_ state: _UnsafeTrackerState) -> Bool {
        let capacity = state.word(Int(CAT_W_POINTER_CAPACITY)).atomicLoad()
        return state.shardSum(Int(CAT_S_POINTER_SLOTS_USED)) &* 4 > capacity &* 3
    }

    /// Slots for a rebuild: twice the live count, at least `minimumCapacity`. Writer side held.
    @_noLocks
    static func capacityNeeded(_ state: _UnsafeTrackerState) -> UInt64 {
        var live: UInt64 = 0
        if case let (base, capacity)? = slots(state) {
            for index in 0..<Int(truncatingIfNeeded: capacity) {
                let key = base[index &* 2]
                if key != empty && key != tombstone { live &+= 1 }
            }
        }
        return max(minimumCapacity, live &* 2)
    }

    /// Rehashes the live entries into `raw` (zeroed, `capacity` slots) and installs it; the C caller unmaps the
    /// old table. Writer side held.
    @_noLocks
    static func rebuild(_ state: _UnsafeTrackerState, into raw: UnsafeMutableRawPointer, capacity: UInt64) {
        let base = raw.assumingMemoryBound(to: UInt64.self)
        var live: UInt64 = 0
        if case let (oldBase, oldCapacity)? = slots(state) {
            for index in 0..<Int(truncatingIfNeeded: oldCapacity) {
                let key = oldBase[index &* 2]
                guard key != empty && key != tombstone else { continue }
                var slot = home(key, capacity: capacity)
                while base[Int(truncatingIfNeeded: slot) &* 2] != empty {
                    slot &+= 1
                    if slot == capacity { slot = 0 }
                }
                base[Int(truncatingIfNeeded: slot) &* 2] = key
                base[Int(truncatingIfNeeded: slot) &* 2 &+ 1] = oldBase[index &* 2 &+ 1]
                live &+= 1
            }
        }
        state.word(Int(CAT_W_POINTER_BASE)).atomicStore(UInt64(UInt(bitPattern: base)))
        state.word(Int(CAT_W_POINTER_CAPACITY)).atomicStore(capacity)
        state.resetShardCounter(Int(CAT_S_POINTER_SLOTS_USED))
        state.shard(0, Int(CAT_S_POINTER_SLOTS_USED)).atomicStore(live)
    }
}

// MARK: - _UnsafeTraceTable

/// Interned call stacks ("traces") and their per-site counters.
///
/// - Entries are 128 bytes (two cache lines), in chunks of 4096 (`CAT_W_TRACE_CHUNKS`), so they never move: a
///   trace's id is its position, and a pointer-table value names it until clear/stop. Entry words (`CAT_E_*`):
///   first cache line, everything an allocation or a free touches — 0 frames (arena pointer), 1 frame count |
///   total frames << 32, 2 measurement scope tag (0: none; part of the trace's identity, so a scope's blocks
///   never share a trace with other code), 3 live blocks, 4 live bytes, 5 total blocks, 6 total bytes, 7 peak
///   epoch; second line — 8 hash, 9 published (1 once the entry is in the index), 10 live bytes at the peak,
///   11 live blocks at the peak, 12-15 reserved (zero).
/// - Who held the memory at the peak, in O(1) per event: whenever the global peak rises, `CAT_W_PEAK_EPOCH` is
///   bumped. Before a site's live counters change, the site checks its epoch; if the peak has moved since, its
///   live values *before* this change are its values at that peak (it was not touched since), so they are copied
///   into words 10-11 and the epoch updated (`rebasePeak`). At snapshot time a site whose epoch is current holds
///   its peak values in 10-11; any other site has not changed since the peak, so its live values are the peak
///   values. Exact for a single thread; with several threads, an operation in flight while another thread sets
///   the peak may land on either side of it.
/// - Frames (raw return addresses, symbolicated later, outside malloc) live in an append-only arena of 256 KiB
///   chunks, bump-allocated with a CAS on a cursor.
/// - The index is an open-addressed array of 32-bit entry ids (+1; 0 empty), inserted into with a CAS and
///   rebuilt under the gate's writer side when it is half full.
///
/// The counters are weighted sums (`_SampleWeight`): exact byte and block counts in exact mode, unbiased
/// estimates in sampled mode (blocks then in 2^-16 units), with the layout unchanged.
///
/// RUNS INSIDE MALLOC: nothing here allocates or locks (`@_noLocks`). Chunks are mapped ahead by the C side
/// (`cat_service_requests`) when asked through `CAT_W_REQUESTS`; a missing chunk drops the allocation (counted).
enum _UnsafeTraceTable {
    @inline(__always) static var entryWords: Int { Int(CAT_TRACE_ENTRY_WORDS) }
    @inline(__always) static var minimumIndexCapacity: UInt64 { 1024 }

    @inline(__always)
    static func entry(_ state: _UnsafeTrackerState, _ id: UInt64) -> UnsafeMutablePointer<UInt64>? {
        let chunk = Int(truncatingIfNeeded: id >> 12)
        guard chunk < Int(CAT_TRACE_CHUNK_LIMIT),
              let base = UnsafeMutablePointer<UInt64>(
                  bitPattern: UInt(state.word(Int(CAT_W_TRACE_CHUNKS) &+ chunk).atomicLoadAcquire()))
        else { return nil }
        return base + Int(truncatingIfNeeded: id & 4095) &* entryWords
    }

    // The entry's words (layout and why: CAT_E_* in CAllocationTracking.h).
    @inline(__always) static func framesWord(_ entry: UnsafeMutablePointer<UInt64>) -> UnsafeMutablePointer<UInt64> { entry + Int(CAT_E_FRAMES) }
    @inline(__always) static func shape(_ entry: UnsafeMutablePointer<UInt64>) -> UnsafeMutablePointer<UInt64> { entry + Int(CAT_E_SHAPE) }
    @inline(__always) static func scopeTag(_ entry: UnsafeMutablePointer<UInt64>) -> UnsafeMutablePointer<UInt64> { entry + Int(CAT_E_SCOPE) }
    @inline(__always) static func liveBlocks(_ entry: UnsafeMutablePointer<UInt64>) -> UnsafeMutablePointer<UInt64> { entry + Int(CAT_E_LIVE_BLOCKS) }
    @inline(__always) static func liveBytes(_ entry: UnsafeMutablePointer<UInt64>) -> UnsafeMutablePointer<UInt64> { entry + Int(CAT_E_LIVE_BYTES) }
    @inline(__always) static func totalBlocks(_ entry: UnsafeMutablePointer<UInt64>) -> UnsafeMutablePointer<UInt64> { entry + Int(CAT_E_TOTAL_BLOCKS) }
    @inline(__always) static func totalBytes(_ entry: UnsafeMutablePointer<UInt64>) -> UnsafeMutablePointer<UInt64> { entry + Int(CAT_E_TOTAL_BYTES) }
    @inline(__always) static func peakEpoch(_ entry: UnsafeMutablePointer<UInt64>) -> UnsafeMutablePointer<UInt64> { entry + Int(CAT_E_PEAK_EPOCH) }
    @inline(__always) static func hashWord(_ entry: UnsafeMutablePointer<UInt64>) -> UnsafeMutablePointer<UInt64> { entry + Int(CAT_E_HASH) }
    @inline(__always) static func published(_ entry: UnsafeMutablePointer<UInt64>) -> UnsafeMutablePointer<UInt64> { entry + Int(CAT_E_PUBLISHED) }
    @inline(__always) static func peakBytes(_ entry: UnsafeMutablePointer<UInt64>) -> UnsafeMutablePointer<UInt64> { entry + Int(CAT_E_PEAK_BYTES) }
    @inline(__always) static func peakBlocks(_ entry: UnsafeMutablePointer<UInt64>) -> UnsafeMutablePointer<UInt64> { entry + Int(CAT_E_PEAK_BLOCKS) }

    /// Saves the site's live counters as its values at the peak if the peak moved since the site last changed.
    /// Call before changing the live counters.
    @_noLocks
    @inline(__always)
    static func rebasePeak(_ state: _UnsafeTrackerState, _ entry: UnsafeMutablePointer<UInt64>) {
        let epoch = state.peakEpoch.atomicLoad()
        let seen = peakEpoch(entry).atomicLoad()
        if seen != epoch {
            peakBytes(entry).atomicStore(liveBytes(entry).atomicLoad())
            peakBlocks(entry).atomicStore(liveBlocks(entry).atomicLoad())
            var expected = seen
            _ = peakEpoch(entry).atomicCompareExchange(expected: &expected, desired: epoch)
        }
    }

    /// A live counter as a reader that may not have folded every thread's deltas sees it: the shared word alone
    /// can be below zero (wrapped) while another thread's additions are pending and this thread's frees are not
    /// (`_UnsafeThreadDeltas`), and such a site has nothing to show.
    @_noLocks
    @inline(__always)
    static func nonNegative(_ value: UInt64) -> UInt64 { Int64(bitPattern: value) < 0 ? 0 : value }

    /// The site's (bytes, blocks) at the last peak. Writer side held. Never below zero: values taken at a peak
    /// that other threads' pending deltas hid may be (the peak's bound in `_UnsafeThreadDeltas`).
    @_noLocks
    static func valuesAtPeak(_ state: _UnsafeTrackerState, _ entry: UnsafeMutablePointer<UInt64>) -> (UInt64, UInt64) {
        if peakEpoch(entry).atomicLoad() == state.peakEpoch.atomicLoad() {
            return (nonNegative(peakBytes(entry).atomicLoad()), nonNegative(peakBlocks(entry).atomicLoad()))
        }
        return (nonNegative(liveBytes(entry).atomicLoad()), nonNegative(liveBlocks(entry).atomicLoad()))
    }

    /// The stack's hash (for the index; equality is decided by the frames). Four independent lanes, so the
    /// multiply chains overlap instead of running one after another: on a 20-frame stack that cuts the hash from
    /// the largest cost of `intern` to a small one.
    @_noLocks
    @inline(__always)
    static func hash(_ frames: UnsafePointer<UInt>, count: Int, total: UInt32, scope: UInt64) -> UInt64 {
        let prime: UInt64 = 0x0000_0100_0000_01B3
        @inline(__always) func mix(_ h: UInt64, _ v: UInt) -> UInt64 {
            let m = (h ^ UInt64(v)) &* prime
            return m ^ (m >> 29)
        }
        var a: UInt64 = 0xCBF2_9CE4_8422_2325 ^ (UInt64(total) << 32 | UInt64(count))
        var b: UInt64 = 0x8422_2325_CBF2_9CE4 ^ scope
        var c: UInt64 = 0x9E37_79B9_7F4A_7C15
        var d: UInt64 = 0xC2B2_AE3D_27D4_EB4F
        var i = 0
        while i &+ 4 <= count {
            a = mix(a, frames[i])
            b = mix(b, frames[i &+ 1])
            c = mix(c, frames[i &+ 2])
            d = mix(d, frames[i &+ 3])
            i &+= 4
        }
        while i < count {
            a = mix(a, frames[i])
            i &+= 1
        }
        var h = mix(mix(mix(a, UInt(b)), UInt(c)), UInt(d))
        h = (h ^ (h >> 32)) &* 0x9E37_79B9_7F4A_7C15
        return h | 1  // never 0
    }

    /// Reserves `words` words in the frame arena, or nil when the next chunk is not mapped yet.
    @_noLocks
    static func arenaAllocate(_ state: _UnsafeTrackerState, words: UInt64) -> UnsafeMutablePointer<UInt64>? {
        let cursorWord = state.word(Int(CAT_W_ARENA_CURSOR))
        let chunkWords = UInt64(CAT_ARENA_CHUNK_WORDS)
        while true {
            var cursor = cursorWord.atomicLoadAcquire()
            let chunk = Int(truncatingIfNeeded: cursor >> 32)
            let offset = cursor & 0xFFFF_FFFF
            guard chunk < Int(CAT_ARENA_CHUNK_LIMIT) else { return nil }
            if offset &+ words <= chunkWords {
                guard let base = UnsafeMutablePointer<UInt64>(
                    bitPattern: UInt(state.word(Int(CAT_W_ARENA_CHUNKS) &+ chunk).atomicLoadAcquire()))
                else {
                    state.request(Int(CAT_NEED_ARENA_CHUNK))
                    return nil
                }
                if cursorWord.atomicCompareExchange(expected: &cursor, desired: cursor &+ words) {
                    if offset < chunkWords / 2, offset &+ words >= chunkWords / 2 {
                        state.request(Int(CAT_NEED_ARENA_CHUNK))  // map the next chunk ahead
                    }
                    return base + Int(truncatingIfNeeded: offset)
                }
            } else {
                // Move on to the next chunk (the tail of this one stays unused).
                guard chunk &+ 1 < Int(CAT_ARENA_CHUNK_LIMIT) else { return nil }
                _ = cursorWord.atomicCompareExchange(expected: &cursor, desired: UInt64(chunk &+ 1) << 32)
            }
        }
    }

    @_noLocks
    @inline(__always)
    static func matches(_ entry: UnsafeMutablePointer<UInt64>, frames: UnsafePointer<UInt>,
                        count: Int, total: UInt32, scope: UInt64) -> Bool {
        // First-line words only (no hash check: the hash lives on the second line, and with the index at most
        // half full a probe rarely meets another stack; the frames decide).
        guard shape(entry).pointee == (UInt64(total) << 32 | UInt64(count)), scopeTag(entry).pointee == scope,
              let stored = UnsafeMutablePointer<UInt64>(bitPattern: UInt(framesWord(entry).pointee))
        else { return false }
        for i in 0..<count where stored[i] != UInt64(frames[i]) { return false }
        return true
    }

    /// Finds or adds the trace for `frames`; returns its id, or nil when it cannot be stored (the caller counts
    /// the allocation as dropped). Caller holds the gate's reader side.
    @_noLocks
    static func intern(_ state: _UnsafeTrackerState, frames: UnsafePointer<UInt>, count: Int, total: UInt32,
                       scope: UInt64) -> UInt64? {
        let h = hash(frames, count: count, total: total, scope: scope)
        let capacity = state.word(Int(CAT_W_INDEX_CAPACITY)).atomicLoad()
        guard capacity != 0,
              let index = UnsafeMutablePointer<UInt32>(bitPattern: UInt(state.word(Int(CAT_W_INDEX_BASE)).atomicLoad()))
        else { return nil }
        let mask = capacity &- 1
        var slot = h & mask
        var reserved: UInt64? = nil  // an entry we filled but lost the race to publish (stays invisible)
        var probes: UInt64 = 0
        while probes < capacity {
            let cell = index + Int(truncatingIfNeeded: slot)
            var seen = cell.atomicLoadAcquire()
            if seen == 0 {
                let id: UInt64
                if let reserved { id = reserved } else {
                    guard let fresh = newEntry(state, hash: h, frames: frames, count: count, total: total, scope: scope) else {
                        return nil
                    }
                    id = fresh
                    reserved = fresh
                }
                if cell.atomicCompareExchange(expected: &seen, desired: UInt32(truncatingIfNeeded: id &+ 1)) {
                    if let entry = entry(state, id) { published(entry).atomicStoreRelease(1) }
                    if state.traceCount.atomicLoad() &* 2 > capacity { state.request(Int(CAT_NEED_INDEX_REBUILD)) }
                    return id
                }
                // Lost the cell: `seen` now holds the winner; compare with it below.
            }
            if let candidate = entry(state, UInt64(seen) &- 1),
               matches(candidate, frames: frames, count: count, total: total, scope: scope) {
                return UInt64(seen) &- 1
            }
            slot = (slot &+ 1) & mask
            probes &+= 1
        }
        state.request(Int(CAT_NEED_INDEX_REBUILD))
        return nil
    }

    @_noLocks
    static func newEntry(_ state: _UnsafeTrackerState, hash: UInt64, frames: UnsafePointer<UInt>, count: Int,
                         total: UInt32, scope: UInt64) -> UInt64? {
        let id = state.traceCount.atomicAdd(1)
        guard id < state.word(Int(CAT_W_MAX_TRACES)).atomicLoad(), id <= _UnsafePointerTable.maximumTraceID else {
            state.traceCount.atomicSubtract(1)
            return nil
        }
        if id & 4095 == 2048 { state.request(Int(CAT_NEED_TRACE_CHUNK)) }  // map the next chunk ahead
        guard let entry = entry(state, id) else {
            state.request(Int(CAT_NEED_TRACE_CHUNK))
            return nil  // this id stays an unpublished hole
        }
        guard let stored = arenaAllocate(state, words: UInt64(count)) else { return nil }
        for i in 0..<count { stored[i] = UInt64(frames[i]) }
        // Published with the index cell's release CAS.
        hashWord(entry).pointee = hash
        framesWord(entry).pointee = UInt64(UInt(bitPattern: stored))
        shape(entry).pointee = UInt64(total) << 32 | UInt64(count)
        scopeTag(entry).pointee = scope
        return id
    }

    /// The (at most `capacity`) published traces with the most live bytes, largest first: their ids, live bytes
    /// and live blocks, into the caller's arrays; returns how many. A partial insertion selection over every
    /// entry (O(traces x capacity) at worst), for the allocation-failure report (`cat_emergency_report`), which
    /// calls it inside a failing malloc with the gate's reader side held and static arrays: no allocation.
    @_noLocks
    static func topSites(_ state: _UnsafeTrackerState, ids: UnsafeMutablePointer<UInt64>,
                         bytes: UnsafeMutablePointer<UInt64>, blocks: UnsafeMutablePointer<UInt64>,
                         capacity: Int) -> Int {
        guard capacity > 0, state.ready.atomicLoadAcquire() == 1 else { return 0 }
        let count = state.traceCount.atomicLoad()
        var selected = 0
        var id: UInt64 = 0
        while id < count {
            // Live counters first (first cache line): most sites have nothing live, and skip the second line.
            if let e = entry(state, id), liveBlocks(e).atomicLoad() != 0, published(e).atomicLoadAcquire() == 1 {
                // Unfolded readers (the allocation-failure report, a busy watchdog) may see a wrapped counter.
                let live = nonNegative(liveBytes(e).atomicLoad())
                let liveCount = nonNegative(liveBlocks(e).atomicLoad())
                if liveCount != 0, live != 0, selected < capacity || live > bytes[selected &- 1] {
                    var position = selected < capacity ? selected : selected &- 1
                    while position > 0, bytes[position &- 1] < live {
                        ids[position] = ids[position &- 1]
                        bytes[position] = bytes[position &- 1]
                        blocks[position] = blocks[position &- 1]
                        position &-= 1
                    }
                    ids[position] = id
                    bytes[position] = live
                    blocks[position] = _SampleWeight.wholeBlocks(liveCount, mean: state.sampleMean.atomicLoad())
                    if selected < capacity { selected &+= 1 }
                }
            }
            id &+= 1
        }
        return selected
    }

    /// Index cells for four times the trace count (a power of two), or 0 when the index is big enough.
    /// Writer side held.
    @_noLocks
    static func indexCapacityNeeded(_ state: _UnsafeTrackerState) -> UInt64 {
        let count = state.traceCount.atomicLoad()
        var capacity = minimumIndexCapacity
        while capacity < count &* 4 { capacity &*= 2 }
        return capacity == state.word(Int(CAT_W_INDEX_CAPACITY)).atomicLoad() ? 0 : capacity
    }

    /// Re-inserts every published trace into `raw` (zeroed, `capacity` cells) and installs it; the C caller
    /// unmaps the old index. Writer side held.
    @_noLocks
    static func rebuildIndex(_ state: _UnsafeTrackerState, into raw: UnsafeMutableRawPointer, capacity: UInt64) {
        let index = raw.assumingMemoryBound(to: UInt32.self)
        let mask = capacity &- 1
        let count = state.traceCount.atomicLoad()
        var id: UInt64 = 0
        while id < count {
            if let e = entry(state, id), published(e).atomicLoad() == 1 {
                var slot = hashWord(e).pointee & mask
                while index[Int(truncatingIfNeeded: slot)] != 0 { slot = (slot &+ 1) & mask }
                index[Int(truncatingIfNeeded: slot)] = UInt32(truncatingIfNeeded: id &+ 1)
            }
            id &+= 1
        }
        state.word(Int(CAT_W_INDEX_BASE)).atomicStore(UInt64(UInt(bitPattern: index)))
        state.word(Int(CAT_W_INDEX_CAPACITY)).atomicStore(capacity)
    }
}

// MARK: - _UnsafeScopes

/// Measurement scopes (`AllocationTracker.measure`): `CAT_SCOPES` records of `CAT_SCOPE_WORDS` words at
/// `CAT_W_SCOPES` in the state words. They are static memory that `stop`/`clearTraces` never zero, so a free on
/// any thread, at any time, may read a record safely; records are recycled by generation, never freed.
///
/// Record words (`CAT_SCOPE_*`): head (the tag `generation << 16 | index + 1` while active; `| retired` once
/// ended; 0 never used), parent tag (0: none), flags (`CAT_SCOPE_CAPTURE_STACKS`, read by the C hook),
/// allocations, allocated bytes, frees, freed bytes, current bytes, peak bytes; the rest unused. Records are
/// claimed, read and ended outside malloc by the tables' read side (`_TraceTable+Reading.swift`).
///
/// An allocation made in scope S is tagged S in its trace (word `CAT_E_SCOPE`); its free walks S and S's ancestors
/// (bounded by `maxDepth`), updating every record whose head still equals the tag in the chain. A retired record
/// keeps its parent link (so an outer scope still sees frees of blocks an inner, ended scope allocated) but is no
/// longer counted; a recycled record has a new generation, so stale tags stop the walk. The one race left: a
/// walker that read a head just before the record was recycled may add one event to the new scope.
///
/// RUNS INSIDE MALLOC: pointer arithmetic and atomics only (`@_noLocks`).
enum _UnsafeScopes {
    @inline(__always) static var retired: UInt64 { 1 << 63 }
    @inline(__always) static var maxDepth: Int { 16 }

    @inline(__always)
    static func record(_ state: _UnsafeTrackerState, _ tag: UInt64) -> UnsafeMutablePointer<UInt64>? {
        let index = Int(truncatingIfNeeded: tag & 0xFFFF) &- 1
        guard index >= 0, index < Int(CAT_SCOPES) else { return nil }
        return state.word(Int(CAT_W_SCOPES) &+ index &* Int(CAT_SCOPE_WORDS))
    }

    @_noLocks
    static func allocated(_ state: _UnsafeTrackerState, _ tag: UInt64, bytes: UInt64) {
        var t = tag
        var depth = 0
        while t != 0, depth < maxDepth, let r = record(state, t) {
            let head = (r + Int(CAT_SCOPE_HEAD)).atomicLoad()
            guard head & ~retired == t else { return }
            if head & retired == 0 {
                (r + Int(CAT_SCOPE_ALLOCATIONS)).atomicAdd(1)
                (r + Int(CAT_SCOPE_ALLOCATED_BYTES)).atomicAdd(bytes)
                let current = (r + Int(CAT_SCOPE_CURRENT_BYTES)).atomicAdd(bytes) &+ bytes
                let peakWord = r + Int(CAT_SCOPE_PEAK_BYTES)
                var peak = peakWord.atomicLoad()
                while current > peak, current < retired {  // never raise the peak to a wrapped value
                    if peakWord.atomicCompareExchange(expected: &peak, desired: current) { break }
                }
            }
            t = (r + Int(CAT_SCOPE_PARENT)).atomicLoad()
            depth &+= 1
        }
    }

    /// A free of `count` blocks totalling `bytes` (wrapping negative values undo a free: realloc's restore).
    @_noLocks
    static func freed(_ state: _UnsafeTrackerState, _ tag: UInt64, bytes: UInt64, count: UInt64) {
        var t = tag
        var depth = 0
        while t != 0, depth < maxDepth, let r = record(state, t) {
            let head = (r + Int(CAT_SCOPE_HEAD)).atomicLoad()
            guard head & ~retired == t else { return }
            if head & retired == 0 {
                (r + Int(CAT_SCOPE_FREES)).atomicAdd(count)
                (r + Int(CAT_SCOPE_FREED_BYTES)).atomicAdd(bytes)
                (r + Int(CAT_SCOPE_CURRENT_BYTES)).atomicSubtract(bytes)
            }
            t = (r + Int(CAT_SCOPE_PARENT)).atomicLoad()
            depth &+= 1
        }
    }

    /// Whether a trace tagged `tag` was allocated in `scope` or one of its descendants.
    @_noLocks
    static func descends(_ state: _UnsafeTrackerState, _ tag: UInt64, from scope: UInt64) -> Bool {
        var t = tag
        var depth = 0
        while t != 0, depth < maxDepth, let r = record(state, t) {
            if t == scope { return true }
            guard (r + Int(CAT_SCOPE_HEAD)).atomicLoad() & ~retired == t else { return false }
            t = (r + Int(CAT_SCOPE_PARENT)).atomicLoad()
            depth &+= 1
        }
        return false
    }
}

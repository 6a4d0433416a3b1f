import CAllocationTracking

extension AllocationTracker {
    /// The memory the tracker itself holds, by part (`AllocationTracker.trackerMemoryBreakdown`; every report
    /// prints it).
    ///
    /// Upper bound for a process with N call sites (traces) and A distinct return addresses among the frames that
    /// were symbolicated, with the defaults: `tables` about 22–77 B per live block plus the table chunks
    /// (`Benchmarks/Sources/TrackerMemory`, ~590 KB at start); `symbolCache` about 250–400 B per resolved
    /// address (one frame each, more with inlined frames; A ≤ N × maxFrames, far fewer in practice since stacks
    /// share frames); `names` at most 8 B per trace id up to the highest one named plus one line (≤ 1 KiB) per
    /// site the allocation-failure report printed (8 MiB reserved, touched as written); `history` fixed by the
    /// configuration (`Configuration.Trend.memoryBytes`, 231 KB by default); `threads` what the tracker's threads
    /// hold resident of their heap (freed small blocks wait in their 64 KiB run for reuse; an empty run and a freed
    /// large block give their pages back) and of their stacks, typically under 1 MiB. No symbol data (symbol tables,
    /// DWARF) is kept between symbolications: image files are mapped for a batch and unmapped after it.
    public struct TrackerMemory: Sendable, Equatable, CustomStringConvertible {
        /// The allocation tables and their pointer and stack storage (`trackerMemory`; 0 while stopped).
        public var tables: Int
        /// Resolved frames kept per address (an estimate of their heap bytes; kept after `stop()`, as the
        /// process's code does not change).
        public var symbolCache: Int
        /// The allocation-failure report's pre-resolved names, touched bytes.
        public var names: Int
        /// The memory history's ring (0 while no watchdog keeps one).
        public var history: Int
        /// The tracker's own threads (the watchdog, the names thread, a report's names thread): the resident pages
        /// of the private heap they allocate from — everything they resolve, format and keep — and of their
        /// stacks, measured (mincore). `/proc/PID/smaps` shows the heap as `[anon:alloc-tracking heap]` where the kernel
        /// names mappings (`CONFIG_ANON_VMA_NAME`), otherwise as an unnamed mapping between two guard pages.
        public var threads: Int
        /// The part of `symbolCache` those threads resolved, which is in `threads` too (`total` counts it once).
        public var symbolCacheInThreads: Int

        public init(tables: Int, symbolCache: Int, names: Int, history: Int, threads: Int = 0,
                    symbolCacheInThreads: Int = 0) {
            self.tables = tables
            self.symbolCache = symbolCache
            self.names = names
            self.history = history
            self.threads = threads
            self.symbolCacheInThreads = symbolCacheInThreads
        }

        /// The sum of the parts, each byte once.
        public var total: Int { tables + symbolCache - symbolCacheInThreads + names + history + threads }

        /// `1.6 MiB (tables 1.0 MiB, symbol cache 120.0 KiB, names 12.0 KiB, history 231.0 KiB, threads 420.0 KiB)`.
        public var description: String {
            "\(_formatSize(total)) (tables \(_formatSize(tables)), symbol cache \(_formatSize(symbolCache)), "
                + "names \(_formatSize(names)), history \(_formatSize(history)), threads \(_formatSize(threads)))"
        }
    }

    /// The tracker's own memory now, by part: tables, symbol cache, pre-resolved names and history.
    /// `trackerMemory` is its `tables` part (tracemalloc's `get_tracemalloc_memory`).
    public static var trackerMemoryBreakdown: TrackerMemory {
        let history = _Watchdog.history.map { $0.capacity * $0.wordsPerSample * 8 + ($0.wordsPerSample + 3 * $0.sites) * 8 }
        var heapResident: UInt64 = 0, heapLive: UInt64 = 0, heapBlocks: UInt64 = 0, stacks: UInt64 = 0
        cat_tracker_threads_memory(&heapResident, &heapLive, &heapBlocks, &stacks)
        return TrackerMemory(tables: trackerMemory, symbolCache: _Symbolicator.shared.cachedBytes,
                             names: Int(truncatingIfNeeded: cat_names_bytes()), history: history ?? 0,
                             threads: Int(truncatingIfNeeded: heapResident &+ stacks),
                             symbolCacheInThreads: _Symbolicator.shared.cachedBytesInTrackerThreads)
    }
}

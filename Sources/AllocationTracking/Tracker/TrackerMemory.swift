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
    /// configuration (`Configuration.Trend.memoryBytes`, 231 KB by default). No symbol data (symbol tables,
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

        public init(tables: Int, symbolCache: Int, names: Int, history: Int) {
            self.tables = tables
            self.symbolCache = symbolCache
            self.names = names
            self.history = history
        }

        /// The sum of the parts.
        public var total: Int { tables + symbolCache + names + history }

        /// `1.2 MiB (tables 1.0 MiB, symbol cache 120.0 KiB, names 12.0 KiB, history 231.0 KiB)`.
        public var description: String {
            "\(_formatSize(total)) (tables \(_formatSize(tables)), symbol cache \(_formatSize(symbolCache)), "
                + "names \(_formatSize(names)), history \(_formatSize(history)))"
        }
    }

    /// The tracker's own memory now, by part: tables, symbol cache, pre-resolved names and history.
    /// `trackerMemory` is its `tables` part (tracemalloc's `get_tracemalloc_memory`).
    public static var trackerMemoryBreakdown: TrackerMemory {
        let history = _Watchdog.history.map { $0.capacity * $0.wordsPerSample * 8 + ($0.wordsPerSample + 3 * $0.sites) * 8 }
        return TrackerMemory(tables: trackerMemory, symbolCache: _Symbolicator.shared.cachedBytes,
                             names: Int(truncatingIfNeeded: cat_names_bytes()), history: history ?? 0)
    }
}

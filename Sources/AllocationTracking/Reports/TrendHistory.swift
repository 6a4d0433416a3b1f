import CAllocationTracking
import Synchronization

/// The watchdog's memory history: a ring of samples allocated when the watchdog starts, so that recording a
/// sample allocates nothing (see `Configuration.Trend` for what a sample holds and the ring's size).
///
/// It lives with the watchdog (Reports/) because the watchdog writes it and its predictive trigger reads it; what
/// is computed from it is a pure value in Analysis/ (`MemoryTrend`, `_TrendMath`).
///
/// Sample layout, `wordsPerSample` words: monotonic time (ns), tracked bytes, RSS, cgroup usage, working set,
/// limit (`unknown` when not measured; limit 0: none), the tables' epoch, the number of sites, then
/// `sites` pairs (trace id, live bytes), largest first.
final class _TrendHistory: @unchecked Sendable {
    static let unknown = UInt64.max
    static let headerWords = 8

    let capacity: Int
    let sites: Int
    let intervalNs: UInt64
    let wordsPerSample: Int
    /// Guards `storage`, `count` and `next`: the watchdog writes a sample, readers copy the ring. A leaf lock
    /// (nothing is taken while it is held); it does not allocate.
    private let lock = Mutex(())
    private let storage: UnsafeMutablePointer<UInt64>
    private var count = 0
    private var next = 0
    /// The sample being built, and the top-sites scratch (`3 * sites` words): the watchdog's only, never shared.
    let building: UnsafeMutablePointer<UInt64>
    let scratch: UnsafeMutablePointer<UInt64>

    init(_ trend: AllocationTracker.Configuration.Trend) {
        capacity = trend.capacity
        sites = trend.sites
        intervalNs = UInt64(max(1, _seconds(trend.interval) * 1e9))
        wordsPerSample = Self.headerWords + 2 * trend.sites
        storage = .allocate(capacity: capacity * wordsPerSample)
        building = .allocate(capacity: wordsPerSample)
        scratch = .allocate(capacity: 3 * trend.sites)
    }

    deinit {
        storage.deallocate()
        building.deallocate()
        scratch.deallocate()
    }

    // MARK: Writing (the watchdog; no allocation)

    /// Reads the top sites into `building` (API lock taken briefly: the tables cannot be unmapped meanwhile), with
    /// the threads' deltas folded in unless the gate is busy (then within 64 blocks and 64 KiB per thread).
    func readSites() {
        cat_api_lock()
        var found = 0
        var epoch: UInt64 = 0
        if AllocationTracker.isTracing {
            epoch = _TrackerSession.tablesEpoch
            _ = cat_deltas_try_fold_all(_Watchdog.foldYields)  // the sites' exact live bytes, if the gate is free
            found = _UnsafeTraceTable.topSites(.process, ids: scratch, bytes: scratch + sites,
                                               blocks: scratch + 2 * sites, capacity: sites)
        }
        cat_api_unlock()
        building[6] = epoch
        building[7] = UInt64(found)
        for index in 0..<found {
            building[Self.headerWords + 2 * index] = scratch[index]
            building[Self.headerWords + 2 * index + 1] = scratch[sites + index]
        }
    }

    /// Stores `building` with the given readings as the newest sample (the oldest is overwritten when full).
    func append(time: UInt64, tracked: UInt64, rss: UInt64, usage: UInt64, workingSet: UInt64, limit: UInt64) {
        building[0] = time
        building[1] = tracked
        building[2] = rss
        building[3] = usage
        building[4] = workingSet
        building[5] = limit
        lock.withLock { _ in
            (storage + next * wordsPerSample).update(from: building, count: wordsPerSample)
            next = (next + 1) % capacity
            count = min(count + 1, capacity)
        }
    }

    /// Word `word` of the `index`-th sample (0: oldest). Lock held.
    private func word(_ index: Int, _ word: Int) -> UInt64 {
        let slot = (next - count + index + capacity) % capacity
        return storage[slot * wordsPerSample + word]
    }

    /// The container limit at the newest sample (0: none or no sample).
    var latestLimit: UInt64 {
        lock.withLock { _ in count == 0 || word(count - 1, 5) == Self.unknown ? 0 : word(count - 1, 5) }
    }

    /// Whether the newest sample has the working set.
    var latestWorkingSetKnown: Bool { lock.withLock { _ in count > 0 && word(count - 1, 4) != Self.unknown } }

    /// The fit of one series over the samples of the last `windowNs`, and whether it is steady (see
    /// `_TrendMath.isSteady`); nil when fewer than two samples measured it. No allocation.
    func fitRecent(_ seriesWord: Int, windowNs: UInt64) -> (rate: MemoryTrend.GrowthRate, steady: Bool)? {
        lock.withLock { _ -> (rate: MemoryTrend.GrowthRate, steady: Bool)? in
            guard count >= 2 else { return nil }
            let newest = word(count - 1, 0)
            var first = count - 1
            while first > 0, newest &- word(first - 1, 0) <= windowNs, word(first - 1, seriesWord) != Self.unknown {
                first -= 1
            }
            let points = count - first
            guard word(count - 1, seriesWord) != Self.unknown else { return nil }
            // Closure literals, not a closure value: a non-escaping literal needs no heap context.
            guard let rate = _TrendMath.fit(count: points, { i in
                (Double(Int64(bitPattern: word(first + i, 0) &- newest)) * 1e-9, Double(word(first + i, seriesWord)))
            }) else { return nil }
            return (rate, _TrendMath.isSteady(count: points, rate) { i in
                (Double(Int64(bitPattern: word(first + i, 0) &- newest)) * 1e-9, Double(word(first + i, seriesWord)))
            })
        }
    }

    // MARK: Reading (allocates: callers outside the poll)

    /// The samples, oldest first, times in seconds relative to the newest.
    func samples() -> [_TrendSample] {
        lock.withLock { _ in
            guard count > 0 else { return [] }
            let newest = word(count - 1, 0)
            return (0..<count).map { index in
                func value(_ w: Int) -> Int? {
                    let v = word(index, w)
                    return v == Self.unknown ? nil : Int(truncatingIfNeeded: v)
                }
                var sites: [UInt64: Int] = [:]
                for site in 0..<Int(word(index, 7)) {
                    sites[word(index, Self.headerWords + 2 * site)] =
                        Int(truncatingIfNeeded: word(index, Self.headerWords + 2 * site + 1))
                }
                let limit = value(5)
                return _TrendSample(time: Double(Int64(bitPattern: word(index, 0) &- newest)) * 1e-9,
                                    tracked: value(1) ?? 0, rss: value(2), containerUsage: value(3),
                                    workingSet: value(4), containerLimit: limit == 0 ? nil : limit, sites: sites,
                                    epoch: word(index, 6))
            }
        }
    }
}

extension AllocationTracker {
    /// How memory moved over the last `window` of the watchdog's history (`Configuration.trend`): the growth
    /// rate of tracked bytes, RSS, the cgroup's usage and working set, when each configured limit is reached at
    /// that rate, and the call stacks that grow steadily (`suspects`, symbolicated, fastest first).
    ///
    /// ```swift
    /// let trend = try AllocationTracker.trend(over: .seconds(15 * 60))
    /// if let eta = trend.timeToContainerLimit { print("OOM in about \(eta) at this rate") }
    /// for suspect in trend.suspects.prefix(3) { print(suspect) }
    /// ```
    ///
    /// - Throws: `.notTracing` when tracking is stopped, `.invalidConfiguration` when the history is off
    ///   (`trend.isEnabled` false) or `window` is not positive.
    public static func trend(over window: Duration) throws -> MemoryTrend {
        guard window > .zero else {
            throw AllocationTrackingError(.invalidConfiguration, "trend(over:) needs a positive window, got \(window)")
        }
        let previous = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        defer { _ = cat_thread_set_state(previous) }
        guard let configuration = AllocationTracker.configuration else {
            throw AllocationTrackingError(.notTracing, "trend(over:) needs tracking on: call AllocationTracker.start() first")
        }
        guard configuration.trend.isEnabled, let history = _Watchdog.history else {
            throw AllocationTrackingError(.invalidConfiguration, "trend(over:) needs the trend history: it is off (trend.isEnabled)")
        }
        return _trend(history, configuration, window: window)
    }

    /// The analysis of `history` with its suspects named. Outside the API lock.
    /// `names`: the frames of the suspects' addresses (nil: resolved now by the symbolicator; a report passes the
    /// names it resolved within its budget).
    static func _trend(_ history: _TrendHistory, _ configuration: Configuration, window: Duration,
                       maxSuspects: Int = 10, names: _FrameNames? = nil) -> MemoryTrend {
        let samples = history.samples()
        var trend = _TrendMath.analyse(samples, window: _seconds(window), trackedLimit: configuration.limits.trackedBytes,
                                       rssLimit: configuration.limits.rssBytes,
                                       containerFraction: configuration.limits.containerFraction, maxSuspects: maxSuspects)
        // Name the suspects: their frames, read while their tables are the ones the samples saw.
        var frames: [(addresses: [UInt], totalFrames: Int)?] = []
        do {
            cat_api_lock()
            defer { cat_api_unlock() }
            let current = AllocationTracker.isTracing && samples.last?.epoch == _TrackerSession.tablesEpoch
            frames = trend.suspects.map { current ? _UnsafeTraceTable.frames(ofTrace: $0.siteID) : nil }
        }
        trend.suspects = zip(trend.suspects, frames).compactMap { suspect, frames in
            guard let frames else { return nil }
            var named = suspect
            let names = names ?? .resolving(frames.addresses)
            named.traceback = Traceback(frames: names.frames(of: frames.addresses), totalFrames: frames.totalFrames)
            return named
        }
        return trend
    }
}

/// How memory moved over a recent window of the watchdog's history: the growth rate of each series, when each
/// limit is reached at that rate, and the call sites that grow steadily (`AllocationTracker.trend(over:)`).
///
/// ```swift
/// let trend = try AllocationTracker.trend(over: .seconds(15 * 60))
/// if let eta = trend.timeToContainerLimit { print("container limit in \(eta)") }
/// for suspect in trend.suspects { print(suspect) }
/// ```
///
/// Rates are least-squares slopes over the samples in the window, in bytes per second, each with its fit (r²):
/// a rate whose fit is poor describes noise, not growth. A projection is nil when its series is not growing
/// steadily (`GrowthRate.isSteady`: the rules `GrowthSuspect` states), or the limit is unknown: noise near a
/// level projects nothing, so an alert on it does not flap.
public struct MemoryTrend: Sendable, Hashable, CustomStringConvertible {
    /// The span the samples in the window cover (the window asked for, or less while the history is shorter).
    public var duration: Duration
    /// Samples in the window.
    public var samples: Int
    /// Tracked live bytes (`tracedMemory.current`).
    public var tracked: GrowthRate?
    /// The process's resident set size.
    public var rss: GrowthRate?
    /// The memory cgroup's usage (nil without one).
    public var containerUsage: GrowthRate?
    /// The memory cgroup's working set: usage minus inactive file cache (nil without one, or when its
    /// `memory.stat` cannot be read). What the kubelet evicts on and the better predictor of the OOM killer:
    /// clean file cache is reclaimed before anything is killed.
    public var workingSet: GrowthRate?
    /// The container's memory limit in bytes at the last sample (nil: none).
    public var containerLimit: Int?
    /// When the working set (the usage when the working set is unknown) reaches the container's limit at the
    /// current rate: where the kernel's OOM killer acts.
    public var timeToContainerLimit: Duration?
    /// When the cgroup's usage reaches `Limits.containerFraction` of the limit (the container report's trigger).
    public var timeToContainerSoftLimit: Duration?
    /// When tracked bytes reach `Limits.trackedBytes`.
    public var timeToTrackedLimit: Duration?
    /// When RSS reaches `Limits.rssBytes`.
    public var timeToRSSLimit: Duration?
    /// Call stacks whose live bytes grew steadily over the whole window, fastest first (see `GrowthSuspect`).
    public var suspects: [GrowthSuspect]

    public var description: String { _ReportFormatter.trendLines(self, topSites: suspects.count).joined(separator: "\n") }

    /// The least-squares line through a series, and how well it fits.
    public struct GrowthRate: Sendable, Hashable, CustomStringConvertible {
        /// The slope, in bytes per second (negative: shrinking).
        public var bytesPerSecond: Double
        /// The coefficient of determination r² (0…1): 1 for points on a line; near 0 for noise around a level.
        /// A flat series (every value equal) fits its line exactly: 1.
        public var fit: Double
        /// The value at the last sample, in bytes.
        public var latest: Int
        /// The line's value at the last sample (less noisy than `latest`; projections start from it).
        public var fitted: Double
        /// Points the line was fitted to.
        public var samples: Int
        /// Whether the series grows steadily (the rules `GrowthSuspect` states: at least 5 points, a fit of at
        /// least 0.8, a rise in each third of the window). The trend's projections need it.
        public var isSteady: Bool

        public init(bytesPerSecond: Double, fit: Double, latest: Int, fitted: Double, samples: Int,
                    isSteady: Bool = false) {
            self.bytesPerSecond = bytesPerSecond
            self.fit = fit
            self.latest = latest
            self.fitted = fitted
            self.samples = samples
            self.isSteady = isSteady
        }

        /// When the line reaches `level` bytes: nil when it is not growing; zero when it is there already.
        public func timeToReach(_ level: Int) -> Duration? {
            guard bytesPerSecond > 0, samples >= 2 else { return nil }
            let now = max(fitted, Double(latest))
            guard Double(level) > now else { return .zero }
            return _duration(seconds: (Double(level) - fitted) / bytesPerSecond)
        }

        /// `+1.2 MiB/s (fit 0.99), 512 MiB now`
        public var description: String {
            "\(_formatRate(bytesPerSecond)) (fit \(_fixed(fit * 100, decimals: 0, sign: false))%), \(_formatSize(latest)) now"
        }
    }

    public init(duration: Duration, samples: Int, tracked: GrowthRate? = nil, rss: GrowthRate? = nil,
                containerUsage: GrowthRate? = nil, workingSet: GrowthRate? = nil, containerLimit: Int? = nil,
                timeToContainerLimit: Duration? = nil, timeToContainerSoftLimit: Duration? = nil,
                timeToTrackedLimit: Duration? = nil, timeToRSSLimit: Duration? = nil, suspects: [GrowthSuspect] = []) {
        self.duration = duration
        self.samples = samples
        self.tracked = tracked
        self.rss = rss
        self.containerUsage = containerUsage
        self.workingSet = workingSet
        self.containerLimit = containerLimit
        self.timeToContainerLimit = timeToContainerLimit
        self.timeToContainerSoftLimit = timeToContainerSoftLimit
        self.timeToTrackedLimit = timeToTrackedLimit
        self.timeToRSSLimit = timeToRSSLimit
        self.suspects = suspects
    }
}

/// A call stack whose live bytes grew steadily over the whole window: a leak, or a cache without a bound.
///
/// Steady means all of: a positive least-squares slope with a fit (r²) of at least 0.8, and a rise in each
/// third of the window of at least a quarter of what the slope predicts for it. So a site that grew and then
/// held (a cache warming up: its last third is flat) is not a suspect, nor one that jumped once (two flat
/// thirds), however large.
public struct GrowthSuspect: Sendable, Hashable, CustomStringConvertible {
    /// The call stack (symbolicated).
    public var traceback: Traceback
    /// Its growth rate over the window.
    public var bytesPerSecond: Double
    /// The fit (r²) of its line.
    public var fit: Double
    /// Its live bytes at the last sample.
    public var liveBytes: Int
    /// How long it has grown: since the last sample at which it held its fewest live bytes in the history kept.
    public var growingFor: Duration
    /// The trace's id in the tables (for the tracker's own bookkeeping).
    var siteID: UInt64 = 0

    public init(traceback: Traceback, bytesPerSecond: Double, fit: Double, liveBytes: Int, growingFor: Duration) {
        self.traceback = traceback
        self.bytesPerSecond = bytesPerSecond
        self.fit = fit
        self.liveBytes = liveBytes
        self.growingFor = growingFor
    }

    /// `Sources/App/Cache.swift:42: +20.0 KiB/s (fit 99%), live=1.2 MiB, growing for 1m 0s`
    public var description: String {
        "\(traceback): \(_formatRate(bytesPerSecond)) (fit \(_fixed(fit * 100, decimals: 0, sign: false))%), "
            + "live=\(_formatSize(liveBytes)), growing for \(_formatDuration(growingFor))"
    }
}

// MARK: - The analysis (pure: samples in, values out)

/// One sample of the watchdog's history. Times are seconds on any monotonic clock; nil: not measured.
@_spi(Testing) public struct _TrendSample: Sendable, Hashable {
    public var time: Double
    public var tracked: Int
    public var rss: Int?
    public var containerUsage: Int?
    public var workingSet: Int?
    /// The container's limit (nil: none).
    public var containerLimit: Int?
    /// The sites with the most live bytes at that moment (at most the history's `sites`), by trace id.
    public var sites: [UInt64: Int]
    /// Which tables the ids belong to: ids of samples with another epoch (before a `clearTraces`) are not the
    /// same sites.
    public var epoch: UInt64

    public init(time: Double, tracked: Int, rss: Int? = nil, containerUsage: Int? = nil, workingSet: Int? = nil,
                containerLimit: Int? = nil, sites: [UInt64: Int] = [:], epoch: UInt64 = 0) {
        self.time = time
        self.tracked = tracked
        self.rss = rss
        self.containerUsage = containerUsage
        self.workingSet = workingSet
        self.containerLimit = containerLimit
        self.sites = sites
        self.epoch = epoch
    }
}

/// The least-squares fit and the steadiness test, on plain numbers.
@_spi(Testing) public enum _TrendMath {
    /// The fit below which a line is not believed (r²).
    public static let minimumFit = 0.8
    /// The share of the slope's predicted rise each third of the window must show.
    public static let minimumThirdRise = 0.25
    /// Points a suspect (and the predictive trigger) needs at least.
    public static let minimumPoints = 5

    /// The least-squares line through `points` (at least two, with distinct times): nil otherwise.
    public static func fit(_ points: [(time: Double, value: Double)]) -> MemoryTrend.GrowthRate? {
        fit(count: points.count) { points[$0] }
    }

    /// `fit` over `count` points given by `point(i)`, oldest first: no array, so the watchdog fits its ring
    /// without allocating (the closure is not escaping).
    public static func fit(count: Int, _ point: (Int) -> (time: Double, value: Double)) -> MemoryTrend.GrowthRate? {
        guard count >= 2 else { return nil }
        let n = Double(count)
        var meanT = 0.0, meanY = 0.0
        for i in 0..<count {
            let p = point(i)
            meanT += p.time
            meanY += p.value
        }
        meanT /= n
        meanY /= n
        var sxx = 0.0, sxy = 0.0, syy = 0.0
        for i in 0..<count {
            let p = point(i)
            let dt = p.time - meanT, dy = p.value - meanY
            sxx += dt * dt
            sxy += dt * dy
            syy += dy * dy
        }
        guard sxx > 0 else { return nil }
        let slope = sxy / sxx
        let fit = syy == 0 ? 1 : min(1, sxy * sxy / (sxx * syy))
        let last = point(count - 1)
        return MemoryTrend.GrowthRate(bytesPerSecond: slope, fit: fit, latest: Int(last.value),
                                      fitted: meanY + slope * (last.time - meanT), samples: count)
    }

    /// Whether `points` grow steadily: a positive slope, a fit of at least `minimumFit`, at least
    /// `minimumPoints` points, and in each third (by index) a rise of at least `minimumThirdRise` of what the slope
    /// predicts for that third.
    public static func isSteady(_ points: [(time: Double, value: Double)], _ rate: MemoryTrend.GrowthRate) -> Bool {
        isSteady(count: points.count, rate) { points[$0] }
    }

    /// `isSteady` over `count` points given by `point(i)` (no allocation).
    public static func isSteady(count: Int, _ rate: MemoryTrend.GrowthRate,
                                _ point: (Int) -> (time: Double, value: Double)) -> Bool {
        guard count >= minimumPoints, rate.bytesPerSecond > 0, rate.fit >= minimumFit else { return false }
        let last = count - 1
        for third in 0..<3 {
            let pa = point(third * last / 3), pb = point((third + 1) * last / 3)
            let predicted = rate.bytesPerSecond * (pb.time - pa.time)
            if predicted <= 0 || pb.value - pa.value < minimumThirdRise * predicted { return false }
        }
        return true
    }

    /// The analysis of `samples` (oldest first) over the last `window` seconds: rates, projections against the
    /// limits, suspects (tracebacks left empty: the caller names them by `siteID`). `maxSuspects` bounds the list.
    public static func analyse(_ samples: [_TrendSample], window: Double, trackedLimit: Int?, rssLimit: Int?,
                               containerFraction: Double?, maxSuspects: Int = 10) -> MemoryTrend {
        guard let latest = samples.last else { return MemoryTrend(duration: .zero, samples: 0) }
        let inWindow = samples.filter { $0.time >= latest.time - window - 1e-9 }
        let first = inWindow.first!
        func series(_ value: (_TrendSample) -> Int?) -> MemoryTrend.GrowthRate? {
            let points = inWindow.compactMap { sample in value(sample).map { (sample.time, Double($0)) } }
            // A series measured only at some samples (a cgroup that appeared) is fitted on those.
            guard var rate = fit(points) else { return nil }
            rate.isSteady = isSteady(points, rate)
            return rate
        }
        var trend = MemoryTrend(duration: _duration(seconds: latest.time - first.time), samples: inWindow.count)
        trend.tracked = series { $0.tracked }
        trend.rss = series { $0.rss }
        trend.containerUsage = series { $0.containerUsage }
        trend.workingSet = series { $0.workingSet }
        trend.containerLimit = latest.containerLimit
        func projection(_ rate: MemoryTrend.GrowthRate?, _ level: Int) -> Duration? {
            guard let rate, rate.isSteady else { return nil }
            return rate.timeToReach(level)
        }
        if let limit = latest.containerLimit {
            trend.timeToContainerLimit = projection(trend.workingSet ?? trend.containerUsage, limit)
            if let fraction = containerFraction {
                trend.timeToContainerSoftLimit = projection(trend.containerUsage, Int(Double(limit) * fraction))
            }
        }
        if let limit = trackedLimit { trend.timeToTrackedLimit = projection(trend.tracked, limit) }
        if let limit = rssLimit { trend.timeToRSSLimit = projection(trend.rss, limit) }

        // Suspects: sites among the top at the last sample, followed back through the samples of the same
        // tables. A site absent from a sample was below the top then (its bytes unknown, and smaller): its line
        // starts when it entered the top.
        var suspects: [GrowthSuspect] = []
        for (id, live) in latest.sites {
            let points = inWindow.compactMap { sample in
                sample.epoch == latest.epoch ? sample.sites[id].map { (sample.time, Double($0)) } : nil
            }
            guard let rate = fit(points), isSteady(points, rate) else { continue }
            // Since when: the last sample, in the whole history of these tables, at its fewest live bytes.
            var lowest = Int.max, since = latest.time
            for sample in samples where sample.epoch == latest.epoch {
                if let bytes = sample.sites[id], bytes <= lowest {
                    lowest = bytes
                    since = sample.time
                }
            }
            var suspect = GrowthSuspect(traceback: Traceback(frames: []), bytesPerSecond: rate.bytesPerSecond,
                                        fit: rate.fit, liveBytes: live, growingFor: _duration(seconds: latest.time - since))
            suspect.siteID = id
            suspects.append(suspect)
        }
        suspects.sort { ($0.bytesPerSecond, $1.siteID) > ($1.bytesPerSecond, $0.siteID) }
        trend.suspects = Array(suspects.prefix(maxSuspects))
        return trend
    }
}

extension GrowthSuspect {
    @_spi(Testing) public var _siteID: UInt64 { siteID }
}

/// `seconds` as a Duration (attoseconds precision is plenty; negative and non-finite values clamp to zero).
func _duration(seconds: Double) -> Duration {
    guard seconds.isFinite, seconds > 0 else { return .zero }
    let whole = seconds.rounded(.down)
    guard whole < 9e15 else { return .seconds(Int64(9e15)) }
    return .seconds(Int64(whole)) + .nanoseconds(Int64(((seconds - whole) * 1e9).rounded()))
}

/// A duration's seconds as a Double.
func _seconds(_ duration: Duration) -> Double {
    let (seconds, attoseconds) = duration.components
    return Double(seconds) + Double(attoseconds) * 1e-18
}

/// `850 ms`, `12.5 s`, `7m 3s`, `2h 5m`: a duration as a person reads it.
func _formatDuration(_ duration: Duration) -> String {
    let seconds = _seconds(duration)
    if seconds < 1 { return "\(Int((seconds * 1000).rounded())) ms" }
    if seconds < 60 { return _fixed(seconds, decimals: 1, sign: false) + " s" }
    let whole = Int(seconds.rounded())
    if whole < 3600 { return "\(whole / 60)m \(whole % 60)s" }
    if whole < 86400 { return "\(whole / 3600)h \(whole % 3600 / 60)m" }
    return "\(whole / 86400)d \(whole % 86400 / 3600)h"
}

/// `+1.2 MiB/s`, `-512 B/s`
func _formatRate(_ bytesPerSecond: Double) -> String { _formatSize(bytesPerSecond, sign: true) + "/s" }

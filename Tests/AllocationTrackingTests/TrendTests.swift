@_spi(Testing) import AllocationTracking
import CAllocationTracking
import Foundation
import Testing

/// The trend's pure parts: the least-squares fit, the steadiness test, the analysis of synthetic histories
/// (exact where the arithmetic is), the working-set reading on fake cgroup trees, and the configuration keys.
/// None of these tests starts the tracker.
@Suite struct TrendTests {
    typealias Point = (time: Double, value: Double)

    static func line(_ count: Int, start: Double = 0, step: Double = 1, base: Double, slope: Double) -> [Point] {
        (0..<count).map { i in (start + Double(i) * step, base + slope * Double(i) * step) }
    }

    // MARK: - Fit

    @Test func fitOfAStraightLineIsExact() throws {
        let rate = try #require(_TrendMath.fit(Self.line(10, base: 1000, slope: 250)))
        #expect(rate.bytesPerSecond == 250)
        #expect(rate.fit == 1)
        #expect(rate.latest == 1000 + 250 * 9)
        #expect(rate.fitted == 3250)
        #expect(rate.samples == 10)
        // (10 000 - 3250) / 250 = 27 s, exactly.
        #expect(rate.timeToReach(10_000) == .seconds(27))
        #expect(rate.timeToReach(3000) == .zero, "already above: now")
    }

    @Test func aFlatSeriesFitsItsLineAndIsNotGrowing() throws {
        let rate = try #require(_TrendMath.fit(Self.line(6, base: 5000, slope: 0)))
        #expect(rate.bytesPerSecond == 0)
        #expect(rate.fit == 1)
        #expect(rate.timeToReach(10_000) == nil)
        #expect(!_TrendMath.isSteady(Self.line(6, base: 5000, slope: 0), rate))
    }

    @Test func aShrinkingSeriesNeverReachesItsLimit() throws {
        let rate = try #require(_TrendMath.fit(Self.line(8, base: 9000, slope: -100)))
        #expect(rate.bytesPerSecond == -100)
        #expect(rate.timeToReach(10_000) == nil)
    }

    @Test func fewerThanTwoPointsOrOneInstantHaveNoLine() {
        #expect(_TrendMath.fit([]) == nil)
        #expect(_TrendMath.fit([(0, 1)]) == nil)
        #expect(_TrendMath.fit([(1, 1), (1, 5)]) == nil)
    }

    /// Noise around a level has a fit near 0 (the least-squares r² of alternating values against time).
    @Test func noiseFitsPoorly() throws {
        let points: [Point] = (0..<20).map { (Double($0), $0 % 2 == 0 ? 1000 : 2000) }
        let rate = try #require(_TrendMath.fit(points))
        #expect(rate.fit < 0.1, "\(rate)")
        #expect(!_TrendMath.isSteady(points, rate))
    }

    // MARK: - Steadiness

    @Test func steadyGrowthIsSteady() throws {
        let points = Self.line(12, base: 0, slope: 100)
        #expect(_TrendMath.isSteady(points, try #require(_TrendMath.fit(points))))
    }

    @Test func fourPointsAreTooFewToCall() throws {
        let points = Self.line(4, base: 0, slope: 100)
        #expect(!_TrendMath.isSteady(points, try #require(_TrendMath.fit(points))))
        let five = Self.line(5, base: 0, slope: 100)
        #expect(_TrendMath.isSteady(five, try #require(_TrendMath.fit(five))))
    }

    /// A cache that warms up and holds: rises for the first half, flat after. Its line fits well (r² about
    /// 0.8), but its last third does not rise.
    @Test func aPlateauIsNotSteady() throws {
        let points: [Point] = (0..<30).map { (Double($0), Double(min($0, 15) * 1000)) }
        let rate = try #require(_TrendMath.fit(points))
        #expect(rate.bytesPerSecond > 0)
        #expect(!_TrendMath.isSteady(points, rate))
        // Not only for its fit: the flat last third refuses it.
        let perfect = MemoryTrend.GrowthRate(bytesPerSecond: rate.bytesPerSecond, fit: 1, latest: 15_000,
                                             fitted: rate.fitted, samples: 30)
        #expect(!_TrendMath.isSteady(points, perfect))
    }

    /// One jump in the middle: r² 0.75 for a perfect step, and two flat thirds.
    @Test func oneJumpIsNotSteady() throws {
        let points: [Point] = (0..<30).map { (Double($0), $0 < 15 ? 1000 : 50_000) }
        let rate = try #require(_TrendMath.fit(points))
        #expect(!_TrendMath.isSteady(points, rate))
        // Even with the fit threshold out of the way, the thirds refuse it.
        let perfect = MemoryTrend.GrowthRate(bytesPerSecond: rate.bytesPerSecond, fit: 1, latest: 50_000,
                                             fitted: rate.fitted, samples: 30)
        #expect(!_TrendMath.isSteady(points, perfect))
    }

    // MARK: - Analysis

    /// Twenty samples a second apart: a leak (site 1, +100 B/s exactly), a cache that fills in the first half
    /// then holds (site 2), a site that jumps once (site 3), churn around a level (site 4), and a site that
    /// enters the top only at t = 10 and leaks from there (site 5, +300 B/s).
    static func history() -> [_TrendSample] {
        (0..<20).map { i in
            let t = Double(i)
            var sites: [UInt64: Int] = [
                1: 10_000 + 100 * i,
                2: 50_000 + 5000 * min(i, 10),
                3: i < 12 ? 4000 : 90_000,
                4: 20_000 + (i % 3) * 7000,
            ]
            if i >= 10 { sites[5] = 30_000 + 300 * (i - 10) }
            return _TrendSample(time: t, tracked: 1_000_000 + 1000 * i, rss: 5_000_000 + 2000 * i,
                                containerUsage: 8_000_000 + 4000 * i, workingSet: 6_000_000 + 2500 * i,
                                containerLimit: 10_000_000, sites: sites)
        }
    }

    @Test func suspectsAreTheSteadilyGrowingSitesFastestFirst() {
        let trend = _TrendMath.analyse(Self.history(), window: 60, trackedLimit: nil, rssLimit: nil, containerFraction: nil)
        #expect(trend.suspects.map(\._siteID) == [5, 1], "\(trend.suspects)")
        #expect(trend.suspects.map(\.bytesPerSecond) == [300, 100])
        #expect(trend.suspects.map(\.liveBytes) == [30_000 + 300 * 9, 10_000 + 100 * 19])
        #expect(trend.suspects.map(\.growingFor) == [.seconds(9), .seconds(19)])
        #expect(trend.suspects.allSatisfy { $0.fit == 1 })
    }

    @Test func seriesRatesAndTimesToTheLimitsAreExact() {
        let trend = _TrendMath.analyse(Self.history(), window: 60, trackedLimit: 2_000_000, rssLimit: 5_000_000,
                                       containerFraction: 0.9)
        #expect(trend.samples == 20)
        #expect(trend.duration == .seconds(19))
        #expect(trend.tracked?.bytesPerSecond == 1000)
        #expect(trend.rss?.bytesPerSecond == 2000)
        #expect(trend.containerUsage?.bytesPerSecond == 4000)
        #expect(trend.workingSet?.bytesPerSecond == 2500)
        #expect(trend.containerLimit == 10_000_000)
        // The working set (6 047 500 now) reaches 10 MB in 3 952 500 / 2500 = 1581 s.
        #expect(trend.timeToContainerLimit == .seconds(1581))
        // Usage (8 076 000) reaches 90 % (9 MB) in 924 000 / 4000 = 231 s.
        #expect(trend.timeToContainerSoftLimit == .seconds(231))
        // Tracked (1 019 000) reaches 2 000 000 in 981 s.
        #expect(trend.timeToTrackedLimit == .seconds(981))
        #expect(trend.timeToRSSLimit == .zero, "RSS is over its limit already")
    }

    /// Noise around a level with a slight upward slope (r² well under 0.8) projects nothing: "not growing".
    @Test func noiseProjectsNothing() throws {
        let samples = (0..<20).map { i in _TrendSample(time: Double(i), tracked: 1_000_000 + 10 * i + (i % 2) * 50_000) }
        let trend = _TrendMath.analyse(samples, window: 60, trackedLimit: 1_100_000, rssLimit: nil, containerFraction: nil)
        let rate = try #require(trend.tracked)
        #expect(rate.bytesPerSecond > 0 && rate.fit < 0.8 && !rate.isSteady, "\(rate)")
        #expect(trend.timeToTrackedLimit == nil)
    }

    @Test func withoutAWorkingSetTheContainerProjectionUsesUsage() {
        let samples = Self.history().map { sample -> _TrendSample in
            var sample = sample
            sample.workingSet = nil
            return sample
        }
        let trend = _TrendMath.analyse(samples, window: 60, trackedLimit: nil, rssLimit: nil, containerFraction: nil)
        #expect(trend.workingSet == nil)
        // (10 000 000 - 8 076 000) / 4000 = 481 s.
        #expect(trend.timeToContainerLimit == .seconds(481))
    }

    @Test func theWindowKeepsOnlyRecentSamples() {
        // Flat for 10 s, then +100 B/s: over the last 5 s the rate is 100 exactly; over everything it is less.
        let samples = (0..<20).map { i in _TrendSample(time: Double(i), tracked: 1000 + 100 * max(0, i - 10)) }
        let recent = _TrendMath.analyse(samples, window: 5, trackedLimit: nil, rssLimit: nil, containerFraction: nil)
        #expect(recent.samples == 6)
        #expect(recent.tracked?.bytesPerSecond == 100)
        let all = _TrendMath.analyse(samples, window: 600, trackedLimit: nil, rssLimit: nil, containerFraction: nil)
        #expect(all.samples == 20)
        #expect((all.tracked?.bytesPerSecond ?? 0) < 100)
    }

    @Test func sitesOfOtherTablesAreOtherSites() {
        // Before clearTraces (epoch 0) id 1 was another site; only the samples of the current tables count, and
        // four are too few to call.
        let samples = (0..<10).map { i in
            _TrendSample(time: Double(i), tracked: 0, sites: [1: 1000 * (i + 1)], epoch: i < 6 ? 0 : 1)
        }
        let trend = _TrendMath.analyse(samples, window: 60, trackedLimit: nil, rssLimit: nil, containerFraction: nil)
        #expect(trend.suspects.isEmpty)
    }

    @Test func anEmptyHistoryHasNoTrend() {
        let trend = _TrendMath.analyse([], window: 60, trackedLimit: 1, rssLimit: 1, containerFraction: 0.9)
        #expect(trend.samples == 0 && trend.tracked == nil && trend.suspects.isEmpty)
    }

    // MARK: - Text

    @Test func theTrendSectionSaysRatesTimesAndSuspects() {
        var trend = _TrendMath.analyse(Self.history(), window: 60, trackedLimit: 2_000_000, rssLimit: nil,
                                       containerFraction: 0.9)
        trend.suspects[0].traceback = Traceback(frames: [Frame(function: "leak()", file: "/src/Leak.swift", line: 7)])
        let text = trend.description
        #expect(text.contains("[ Trend over the last 19.0 s (20 samples) ]"), "\(text)")
        #expect(text.contains("tracked: +1000 B/s (fit 100%), 995 KiB now; the tracked limit in 16m 21s"), "\(text)")
        #expect(text.contains("cgroup usage: +4000 B/s (fit 100%), 7887 KiB now; the container trigger's level in 3m 51s"), "\(text)")
        #expect(text.contains("working set: +2500 B/s (fit 100%), 5906 KiB now; the container limit (9766 KiB) in 26m 21s"), "\(text)")
        #expect(text.contains("#1: /src/Leak.swift:7: +300 B/s (fit 100%), live=31.9 KiB, growing for 9.0 s"), "\(text)")
        let none = _TrendMath.analyse([], window: 60, trackedLimit: nil, rssLimit: nil, containerFraction: nil)
        #expect(none.description.contains("(0 samples so far: no rate yet)"))
    }

    // MARK: - Working set (process_memory.c)

    static func workingSet(version: Int, stat: String?) throws -> (Int32, UInt64, UInt64, UInt64) {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("cat-ws-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let directory = version == 2 ? root + "/sys/pod" : root + "/sys/memory/pod"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try (version == 2 ? "0::/pod\n" : "4:memory:/pod\n").write(toFile: root + "/proc", atomically: false, encoding: .utf8)
        try "9000000\n".write(toFile: directory + (version == 2 ? "/memory.current" : "/memory.usage_in_bytes"),
                              atomically: false, encoding: .utf8)
        try "10000000\n".write(toFile: directory + (version == 2 ? "/memory.max" : "/memory.limit_in_bytes"),
                               atomically: false, encoding: .utf8)
        if let stat { try stat.write(toFile: directory + "/memory.stat", atomically: false, encoding: .utf8) }
        var cgroup = cat_cgroup()
        guard cat_cgroup_detect(root + "/proc", root + "/sys", &cgroup) == 0 else { return (-2, 0, 0, 0) }
        var usage: UInt64 = 0, limit: UInt64 = 0, workingSet: UInt64 = 0
        let result = cat_cgroup_read_working_set(&cgroup, &usage, &limit, &workingSet)
        return (result, usage, limit, workingSet)
    }

    @Test func workingSetIsUsageLessInactiveFileCache() throws {
        // v2: "inactive_file" (not "active_file", not a prefix match); a long line before it is skipped whole.
        let v2 = "anon 100\nfile 5000000\n" + "x" + String(repeating: "y", count: 3000) + " 1\n"
            + "active_file 4000000\ninactive_file 3000000\nfile_mapped 7\n"
        #expect(try Self.workingSet(version: 2, stat: v2) == (0, 9_000_000, 10_000_000, 6_000_000))
        // v1: the hierarchy's total, not the group's own.
        let v1 = "cache 100\ninactive_file 1\nactive_file 2\ntotal_cache 5000000\ntotal_inactive_file 2500000\n"
        #expect(try Self.workingSet(version: 1, stat: v1) == (0, 9_000_000, 10_000_000, 6_500_000))
        // More cache than usage (a racy reading): 0, not a wrapped number.
        #expect(try Self.workingSet(version: 2, stat: "inactive_file 9500000\n") == (0, 9_000_000, 10_000_000, 0))
        // No memory.stat, or no such line: unknown.
        #expect(try Self.workingSet(version: 2, stat: nil) == (0, 9_000_000, 10_000_000, UInt64.max))
        #expect(try Self.workingSet(version: 1, stat: "inactive_file 5\n") == (0, 9_000_000, 10_000_000, UInt64.max))
    }

    /// memory.stat is read in 1 KiB chunks: a line split across two reads is still found.
    @Test func workingSetLineAcrossAChunkBoundary() throws {
        let filler = (0..<60).map { "filler_counter_\($0) 123456\n" }.joined()  // ~1.5 KiB before the line
        #expect(try Self.workingSet(version: 2, stat: filler + "inactive_file 1000000\n") == (0, 9_000_000, 10_000_000, 8_000_000))
    }

    // MARK: - Configuration

    @Test func environmentKeys() throws {
        let c = try #require(try AllocationTracker.Configuration.parse(
            environmentValue: "trend=50ms,trend_length=10s,trend_sites=5,predict=2s"))
        #expect(c.trend.isEnabled)
        #expect(c.trend.interval == .milliseconds(50))
        #expect(c.trend.length == .seconds(10))
        #expect(c.trend.sites == 5)
        #expect(c.limits.predictedExhaustion == .seconds(2))
        #expect(c.description.hasSuffix(",trend=0.05s,trend_length=10.0s,trend_sites=5,predict=2.0s"), "\(c.description)")
        #expect(try AllocationTracker.Configuration.parse(environmentValue: c.description) == c)
        let off = try #require(try AllocationTracker.Configuration.parse(environmentValue: "trend=off"))
        #expect(!off.trend.isEnabled)
        #expect(try AllocationTracker.Configuration.parse(environmentValue: off.description) == off)
        let defaults = AllocationTracker.Configuration()
        #expect(defaults.trend.isEnabled && defaults.trend.interval == .seconds(10) && defaults.limits.predictedExhaustion == nil)
        #expect(defaults.trend.memoryBytes == 361 * (64 + 16 * 10))
    }

    @Test func badTrendSettingsAreRefused() {
        func message(_ value: String) -> String? {
            do {
                _ = try AllocationTracker.Configuration.parse(environmentValue: value)
                return nil
            } catch let error as AllocationTrackingError {
                return error.message
            } catch {
                return "\(error)"
            }
        }
        #expect(message("trend=10")?.contains("trend must be a duration with its unit") == true)
        #expect(message("predict=10")?.contains("predict must be a duration with its unit") == true)
        #expect(message("trend=off,predict=1m")?.contains("needs the trend history") == true)
        #expect(message("trend=0.5ms")?.contains("trend.interval must be 1ms…1h") == true)
        #expect(message("trend=10s,trend_length=1s")?.contains("must be at least trend.interval") == true)
        #expect(message("trend=1ms,trend_length=1h")?.contains("at most 100000 samples") == true)
        #expect(message("trend_sites=0")?.contains("trend.sites must be 1…100") == true)
        #expect(message("predict=0s")?.contains("predictedExhaustion must be positive") == true)
        #expect(message("trendy=1")?.contains("trend, trend_length, trend_sites, predict") == true)
    }
}

extension AllocationTracker.Configuration {
    /// The memory history the watchdog keeps, which `AllocationTracker.trend(over:)`, the reports' trend section
    /// and the predictive trigger (`Limits.predictedExhaustion`) read.
    ///
    /// ```swift
    /// var configuration = AllocationTracker.Configuration()
    /// configuration.trend.interval = .seconds(10)   // a sample every 10 s …
    /// configuration.trend.length = .seconds(3600)   // … for the last hour
    /// ```
    ///
    /// Every `interval` the watchdog records tracked live bytes, RSS, the cgroup's usage, working set and limit,
    /// and the live bytes of the `sites` call stacks holding the most, into a ring allocated at start: sampling
    /// allocates nothing. Its memory is `(length / interval + 1) * (64 + 16 * sites)` bytes: 79 KiB with the
    /// defaults (361 samples of 10 sites). Also `ALLOCATION_TRACKING=trend=10s,trend_length=1h,trend_sites=10`
    /// (`trend=off`: no history).
    public struct Trend: Hashable, Sendable {
        /// Whether the history is kept (default true).
        public var isEnabled: Bool
        /// Time between two samples (default 10 s; 1 ms…1 h). The watchdog samples at its next poll once the
        /// interval has passed, so the effective interval is a multiple of `Limits.pollInterval`.
        public var interval: Duration
        /// How far back the history reaches (default 1 h); `length / interval` is at most 100 000 samples.
        public var length: Duration
        /// Call stacks followed per sample, those with the most live bytes at that moment (default 10; 1…100). A
        /// site that leaves the top is not followed meanwhile; one that enters is followed from then on.
        public var sites: Int

        public init(isEnabled: Bool = true, interval: Duration = .seconds(10), length: Duration = .seconds(3600),
                    sites: Int = 10) {
            self.isEnabled = isEnabled
            self.interval = interval
            self.length = length
            self.sites = sites
        }

        /// Samples the ring holds.
        var capacity: Int { Int((_seconds(length) / _seconds(interval)).rounded(.up)) + 1 }

        /// Bytes the history's ring takes: `(length / interval + 1) * (64 + 16 * sites)`.
        public var memoryBytes: Int { capacity * (64 + 16 * sites) }
    }

    func validateTrend() throws {
        func bad(_ message: String) -> AllocationTrackingError { AllocationTrackingError(.invalidConfiguration, message) }
        if let horizon = limits.predictedExhaustion {
            guard horizon > .zero, horizon <= .seconds(86_400 * 365) else {
                throw bad("predictedExhaustion must be positive and at most a year, got \(horizon)")
            }
            guard trend.isEnabled else { throw bad("predictedExhaustion needs the trend history (trend is off)") }
        }
        guard trend.isEnabled else { return }
        guard trend.interval >= .milliseconds(1), trend.interval <= .seconds(3600) else {
            throw bad("trend.interval must be 1ms…1h, got \(trend.interval)")
        }
        guard trend.length >= trend.interval else {
            throw bad("trend.length (\(trend.length)) must be at least trend.interval (\(trend.interval))")
        }
        guard _seconds(trend.length) / _seconds(trend.interval) <= 100_000 else {
            throw bad("trend.length / trend.interval must be at most 100000 samples, got "
                      + "\(Int(_seconds(trend.length) / _seconds(trend.interval))): shorten trend.length "
                      + "(trend_length) or lengthen trend.interval")
        }
        guard (1...100).contains(trend.sites) else { throw bad("trend.sites must be 1…100, got \(trend.sites)") }
    }

    /// The `ALLOCATION_TRACKING` keys of the trend: `trend` (an interval such as `10s`, or `on`/`off`),
    /// `trend_length` (`1h`), `trend_sites`, `predict` (`10m`, `off`). Returns false when `key` is not one of them.
    mutating func parseTrendKey(_ key: String, _ text: String) throws -> Bool {
        func bad(_ message: String) -> AllocationTrackingError { AllocationTrackingError(.invalidConfiguration, message) }
        func duration() throws -> Duration {
            guard let value = Self.parseSeconds(text) else {
                throw bad("\(key) must be a duration with its unit, such as 100ms, 10s, 10m or 1h, got \(_quoted(text))")
            }
            return _duration(seconds: value)
        }
        let off = ["off", "none", "0", "false", "no"].contains(text.lowercased())
        switch key {
        case "trend":
            if off { trend.isEnabled = false; break }
            trend.isEnabled = true
            if ["on", "1", "true", "yes"].contains(text.lowercased()) { break }
            trend.interval = try duration()
        case "trend_length": trend.length = try duration()
        case "trend_sites":
            guard let n = Int(text) else { throw bad("trend_sites must be a number, got \(_quoted(text))") }
            trend.sites = n
        case "predict", "predicted_exhaustion":
            limits.predictedExhaustion = off ? nil : try duration()
        default: return false
        }
        return true
    }

    static let trendKeys = "trend, trend_length, trend_sites, predict"

    /// The trend keys of `description` (where they differ from the defaults).
    var trendDescription: String {
        var text = ""
        let t = Trend()
        if !trend.isEnabled { return ",trend=off" + (limits.predictedExhaustion.map { ",predict=\(Self.durationText($0))" } ?? "") }
        if trend.interval != t.interval { text += ",trend=\(Self.durationText(trend.interval))" }
        if trend.length != t.length { text += ",trend_length=\(Self.durationText(trend.length))" }
        if trend.sites != t.sites { text += ",trend_sites=\(trend.sites)" }
        if let horizon = limits.predictedExhaustion { text += ",predict=\(Self.durationText(horizon))" }
        return text
    }

    /// `10s`, `0.05s`: a duration as `parseSeconds` reads it back.
    static func durationText(_ duration: Duration) -> String { "\(_seconds(duration))s" }
}

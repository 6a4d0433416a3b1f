extension AllocationTracker {
    /// How the tracker captures and stores allocations.
    ///
    /// ```swift
    /// try AllocationTracker.start(.init(maxFrames: 32, unwinder: .libunwind))
    /// ```
    ///
    /// The same settings can be given to an unmodified program through the environment, read once at process
    /// start: `ALLOCATION_TRACKING=1` (defaults) or `ALLOCATION_TRACKING=frames=24,unwinder=framepointers`.
    public struct Configuration: Hashable, Sendable, CustomStringConvertible {
        /// How call stacks are captured.
        public enum Unwinder: String, Hashable, Sendable, CaseIterable {
            /// libunwind's `unw_backtrace` (DWARF CFI): sees through code built without frame pointers — glibc,
            /// libstdc++, Foundation's C parts. Needs libunwind (Debian: `libunwind8`), loaded at `start`.
            case libunwind
            /// A walk of the frame-pointer chain, bounded by the thread's stack. Several times cheaper. Swift and
            /// C code built by SwiftPM keep frame pointers; glibc and libstdc++ do not, so a stack whose allocation
            /// passes through them (`strdup`, `operator new`) stops or skips there.
            case framePointers
        }

        /// Which allocations are recorded.
        public enum Sampling: Hashable, Sendable, CustomStringConvertible {
            /// Every allocation: exact counts, the cost of a stack capture and a table insert per allocation. For
            /// tests and investigations.
            case exact
            /// Byte-interval (Poisson) sampling, as Go, jemalloc and tcmalloc do it: each thread draws the bytes
            /// until its next sample from an exponential distribution with mean `meanBytes`; the allocation that
            /// crosses it is recorded with its stack, weighted by the inverse of its sampling probability
            /// p = 1 − exp(−size/meanBytes), so every count and byte total is an unbiased estimate. Any other
            /// allocation costs a subtraction and a branch. `meanBytes` 1…2^40; Go's default is 512 KiB. For
            /// always-on use in production. Inside `AllocationTracker.measure`, allocations are still recorded
            /// exactly.
            case poisson(meanBytes: Int)

            /// The mean interval in bytes; 0 for `.exact`.
            public var meanBytes: Int {
                switch self {
                case .exact: 0
                case .poisson(let meanBytes): meanBytes
                }
            }

            /// pprof's `period`: the sampling interval, 1 for exact tracking (every allocation).
            public var period: Int { self == .exact ? 1 : meanBytes }

            /// `exact`, or `poisson(512 KiB)`.
            public var description: String {
                self == .exact ? "exact" : "poisson(\(_formatSize(meanBytes)))"
            }

            /// The line every text output carries once in sampled mode; nil when exact.
            var estimateNote: String? {
                self == .exact ? nil : "estimated from samples every \(_formatSize(meanBytes)) on average"
            }
        }

        /// Frames kept per call stack, most recent first: 1…256. The true depth is kept as
        /// `Traceback.totalFrames`.
        public var maxFrames: Int
        public var unwinder: Unwinder
        /// Distinct call stacks the trace table may hold (1…16 777 214). Allocations from further new stacks are
        /// counted in `TracedMemory.droppedAllocations`. Memory is mapped as stacks appear, not up front.
        public var maxTraces: Int
        /// Where reports go (see `Report`).
        public var report: Report
        /// When reports are written on their own (see `Limits`).
        public var limits: Limits
        /// The memory history behind `AllocationTracker.trend(over:)` (see `Trend`).
        public var trend: Trend
        /// Exact (the default) or sampled (see `Sampling`). Soft limits on tracked bytes compare the estimate.
        public var sampling: Sampling

        public init(maxFrames: Int = 32, unwinder: Unwinder = .libunwind, maxTraces: Int = 1 << 20,
                    report: Report = Report(), limits: Limits = Limits(), trend: Trend = Trend(),
                    sampling: Sampling = .exact) {
            self.maxFrames = maxFrames
            self.unwinder = unwinder
            self.maxTraces = maxTraces
            self.report = report
            self.limits = limits
            self.trend = trend
            self.sampling = sampling
        }

        /// Throws `.invalidConfiguration` when a value is out of range.
        public func validate() throws {
            guard (1...256).contains(maxFrames) else {
                throw AllocationTrackingError(.invalidConfiguration, "maxFrames must be 1…256, got \(maxFrames)")
            }
            guard (1...16_777_214).contains(maxTraces) else {
                throw AllocationTrackingError(.invalidConfiguration, "maxTraces must be 1…16777214, got \(maxTraces)")
            }
            if case .poisson(let meanBytes) = sampling, !(1...(1 << 40)).contains(meanBytes) {
                throw AllocationTrackingError(.invalidConfiguration,
                                              "sampling meanBytes must be 1…1099511627776 (1 TiB), got \(meanBytes)")
            }
            try validateReports()
            try validateTrend()
        }

        /// The `ALLOCATION_TRACKING` form (report and limit keys only where they differ from the defaults).
        public var description: String {
            var text = "frames=\(maxFrames),unwinder=\(unwinder == .libunwind ? "libunwind" : "framepointers"),max_traces=\(maxTraces)"
            let r = Report(), l = Limits()
            if case .poisson(let meanBytes) = sampling { text += ",sample=\(meanBytes)" }
            if let directory = report.directory { text += ",report_dir=\(directory)" }
            if report.topSites != r.topSites { text += ",top=\(report.topSites)" }
            if report.standardError != r.standardError { text += ",stderr=off" }
            if let bytes = limits.trackedBytes { text += ",soft_limit=\(bytes)" }
            if let bytes = limits.rssBytes { text += ",rss_limit=\(bytes)" }
            if limits.containerFraction != l.containerFraction { text += ",container=\(limits.containerFraction.map { "\($0)" } ?? "off")" }
            if !limits.onAllocationFailure { text += ",on_failure=off" }
            if let signal = limits.signal { text += ",signal=\(signal)" }
            if limits.reportAtExit { text += ",at_exit=on" }
            if limits.hysteresis != l.hysteresis { text += ",hysteresis=\(limits.hysteresis)" }
            if limits.minimumInterval != l.minimumInterval { text += ",min_interval=\(limits.minimumInterval)s" }
            if limits.pauseAfterAllocationFailure != l.pauseAfterAllocationFailure {
                text += ",failure_pause=\(limits.pauseAfterAllocationFailure)s"
            }
            if limits.pollInterval != l.pollInterval { text += ",interval=\(limits.pollInterval)s" }
            if limits.cgroupRoot != l.cgroupRoot { text += ",cgroup_root=\(limits.cgroupRoot)" }
            return text + trendDescription
        }

        /// Parses the `ALLOCATION_TRACKING` syntax: `1`/`true`/`on` for the defaults, `0`/`false`/`off` for
        /// "do not start" (returns nil), or comma-separated `key=value` pairs: `frames` (1…256), `unwinder`
        /// (`libunwind` or `framepointers`), `max_traces`; for reports `report_dir` (a directory), `top` (sites
        /// per report), `stderr` (on/off); for limits `soft_limit` (tracked bytes: `512MiB`, `2GiB`, `off`),
        /// `rss_limit`, `container` (`0.9`, `90%`, `off`), `on_failure` (on/off), `signal` (`SIGUSR2`, `12`,
        /// `off`), `at_exit` (on/off), `hysteresis` (`0.05`, `5%`), `min_interval` (`10s`), `failure_pause` (the
        /// watchdog's pause after an allocation failure, `10s`), `interval` (the watchdog's poll, `100ms`),
        /// `cgroup_root`; for the history `trend` (its interval, `10s`, or `off`), `trend_length` (`1h`), `trend_sites`,
        /// `predict` (`Limits.predictedExhaustion`: `10m`, `off`); `sample` (`512KiB`: Poisson sampling with that
        /// mean interval, `off`: exact, the default); `announce` (on/off: the line printed at start when the
        /// environment turned tracking on); `snapshot_at_exit` (a file path: the snapshot written there when the
        /// process exits normally, as a new 0600 file). Throws `.invalidConfiguration` naming the bad part.
        public static func parse(environmentValue value: String) throws -> Configuration? {
            try _parseEnvironment(value)?.configuration
        }

        /// `parse(environmentValue:)`, whether to print the line saying tracking is on (`announce`, on unless
        /// `announce=off`), and where to write a snapshot when the process exits (`snapshot_at_exit=PATH`, for
        /// `alloc-track run -o`). Both only concern the environment, so they are not part of `Configuration`.
        static func _parseEnvironment(_ value: String) throws
            -> (configuration: Configuration, announce: Bool, snapshotAtExit: String?)?
        {
            let trimmed = value.trimmingWhitespace()
            switch trimmed.lowercased() {
            case "1", "true", "on", "yes": return (Configuration(), true, nil)
            case "0", "false", "off", "no", "": return nil
            default: break
            }
            var announce = true
            var snapshotAtExit: String?
            var configuration = Configuration()
            // An empty setting (`,`, `a=1,,b=2`, a trailing comma) is refused rather than skipped: `,` alone would
            // otherwise turn tracking on with the defaults, silently.
            for item in trimmed.split(separator: ",", omittingEmptySubsequences: false) {
                guard !String(item).trimmingWhitespace().isEmpty else {
                    throw AllocationTrackingError(.invalidConfiguration, "empty setting between commas")
                }
                let parts = item.split(separator: "=", maxSplits: 1).map { String($0).trimmingWhitespace() }
                guard parts.count == 2, !parts[0].isEmpty else {
                    throw AllocationTrackingError(.invalidConfiguration, "expected key=value, got \(_quoted(String(item)))")
                }
                let (key, text) = (parts[0].lowercased(), parts[1])
                switch key {
                case "frames", "max_frames":
                    guard let n = Int(text) else {
                        throw AllocationTrackingError(.invalidConfiguration, "frames must be a number, got \(_quoted(text))")
                    }
                    configuration.maxFrames = n
                case "unwinder":
                    switch text.lowercased() {
                    case "libunwind": configuration.unwinder = .libunwind
                    case "framepointers", "frame_pointers", "fp": configuration.unwinder = .framePointers
                    default:
                        throw AllocationTrackingError(
                            .invalidConfiguration, "unwinder must be libunwind or framepointers, got \(_quoted(text))")
                    }
                case "max_traces":
                    guard let n = Int(text) else {
                        throw AllocationTrackingError(.invalidConfiguration, "max_traces must be a number, got \(_quoted(text))")
                    }
                    configuration.maxTraces = n
                case "sample", "sampling":
                    if ["off", "exact", "0", "no", "false"].contains(text.lowercased()) {
                        configuration.sampling = .exact
                    } else if let bytes = Configuration.parseBytes(text), bytes > 0 {
                        configuration.sampling = .poisson(meanBytes: bytes)
                    } else {
                        throw AllocationTrackingError(
                            .invalidConfiguration, "sample must be a size such as 512KiB, or off, got \(_quoted(text))")
                    }
                case "announce":
                    switch text.lowercased() {
                    case "1", "on", "true", "yes": announce = true
                    case "0", "off", "false", "no": announce = false
                    default:
                        throw AllocationTrackingError(.invalidConfiguration, "announce must be on or off, got \(_quoted(text))")
                    }
                case "snapshot_at_exit":
                    // A path may hold `=` but not `,` (the separator): alloc-track refuses such paths itself.
                    guard !text.isEmpty else {
                        throw AllocationTrackingError(.invalidConfiguration, "snapshot_at_exit needs a file path")
                    }
                    snapshotAtExit = text
                default:
                    if try configuration.parseReportKey(key, text) { break }
                    if try configuration.parseTrendKey(key, text) { break }
                    throw AllocationTrackingError(
                        .invalidConfiguration,
                        "unknown key \(_quoted(key)) (known: frames, unwinder, max_traces, sample, announce, snapshot_at_exit, \(Configuration.reportKeys), \(Configuration.trendKeys))")
                }
            }
            try configuration.validate()
            return (configuration, announce, snapshotAtExit)
        }
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var view = Substring(self)
        while let first = view.first, first.isWhitespace { view.removeFirst() }
        while let last = view.last, last.isWhitespace { view.removeLast() }
        return String(view)
    }
}

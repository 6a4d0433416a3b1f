/// The lines the Swift reports have in common, each kind produced here and nowhere else: the snapshot reports
/// (`Snapshot.report`, `Snapshot.report(comparedTo:)`) and the top-allocators report (`_ReportWriter.compose`)
/// are built from them. Sizes and percentages come from SizeFormat.swift; a site's own text is its
/// `Statistic`/`StatisticDiff` description (tracemalloc's `str(stat)`), to which a report may append.
///
/// ```
/// [ Top 10 ]                                                         heading
/// #1: /src/Sources/App/Cache.swift:42: size=2550 KiB, count=2000, …  ranked
///     (2 allocator and runtime frames above)                         tracebackLines
///     /src/Sources/App/Cache.swift:42 in Cache.insert(_:for:)
/// 12 other: size=3.1 KiB, count=25                                   rest
/// Total: size=2.6 MiB, count=2104                                    total
/// Traced memory: current=2.6 MiB, peak=2.7 MiB; dropped allocations: 0   counters
/// ```
enum _ReportFormatter {
    /// `[ Top 10 ]`
    static func heading(_ title: String) -> String { "[ \(title) ]" }

    /// `#1: <line>` for each item, ranked from 1, each followed by its traceback (see `tracebackLines`) when
    /// `traceback` gives one for the item's index.
    /// `annotate`: text appended to a frame's line (a report's build id for a frame not named in time).
    static func ranked<Items: Collection>(_ items: Items, depth: Int, attribution: Attribution,
                                          line: (Items.Element) -> String,
                                          traceback: (Int, Items.Element) -> Traceback?,
                                          annotate: (Frame) -> String? = { _ in nil }) -> [String] {
        var lines: [String] = []
        for (index, item) in items.enumerated() {
            lines.append("#\(index + 1): \(line(item))")
            if let traceback = traceback(index, item) {
                lines += tracebackLines(traceback, depth: depth, attribution: attribution, annotate: annotate)
            }
        }
        return lines
    }

    /// A traceback's lines from its attribution frame on, at most `depth` frames; the allocator and runtime
    /// frames above the attribution frame are counted, not shown.
    static func tracebackLines(_ traceback: Traceback, depth: Int, attribution: Attribution,
                               annotate: (Frame) -> String? = { _ in nil }) -> [String] {
        var cache = _SystemFrameCache(attribution)
        var start = 0
        if let frame = cache.attributionFrame(of: traceback), let index = traceback.frames.firstIndex(of: frame) {
            start = index
        }
        let shown = Traceback(frames: Array(traceback.frames[start...]), totalFrames: traceback.totalFrames)
        var lines = zip(shown.format(limit: depth), shown.frames).map { text, frame in
            "  " + text + (annotate(frame).map { " " + $0 } ?? "")
        }
        if start > 0 { lines.insert("    (\(start) allocator and runtime frames above)", at: 0) }
        return lines
    }

    /// `12 other: size=3.1 KiB, count=25`: the entries past the top (`what`: "other", "other sites").
    static func rest(_ entries: Int, _ what: String, size: Int, count: Int) -> String {
        "\(entries) \(what): \(sizeAndCount(size: size, count: count))"
    }

    /// `12 other: size=3.1 KiB (+1024 B)`: the differences past the top.
    static func rest(_ entries: Int, size: Int, sizeDiff: Int) -> String {
        "\(entries) other: size=\(_formatSize(size)) (\(_formatSize(sizeDiff, sign: true)))"
    }

    /// `Total: size=2.6 MiB, count=2104`
    static func total(size: Int, count: Int) -> String { "Total: \(sizeAndCount(size: size, count: count))" }

    /// `Total: size=2.6 MiB (+1.0 MiB), count=2104 (+1000)`
    static func total(size: Int, sizeDiff: Int, count: Int, countDiff: Int) -> String {
        "Total: size=\(_formatSize(size)) (\(_formatSize(sizeDiff, sign: true))), count=\(count) (\(countDiff >= 0 ? "+" : "")\(countDiff))"
    }

    /// `Traced memory: current=2.6 MiB, peak=2.7 MiB; dropped allocations: 0` (`snapshot at the peak; ` before the
    /// dropped count for a peak snapshot; no traced memory part when the snapshot has no counters): always shown,
    /// so a report missing allocations says so.
    static func counters(_ snapshot: Snapshot) -> String {
        var line = ""
        if let memory = snapshot.tracedMemory {
            line = "Traced memory: current=\(_formatSize(memory.current)), peak=\(_formatSize(memory.peak)); "
        }
        if snapshot.moment == .peak { line += "snapshot at the peak; " }
        line += "dropped allocations: \(snapshot.droppedAllocations)"
        if let note = estimateNote(snapshot.sampling) { line += "; " + note }
        return line
    }

    /// `estimated from samples every 512 KiB on average`: the once-per-text note of a sampled snapshot (nil when
    /// exact), so that nobody reads an estimate as a count.
    static func estimateNote(_ sampling: AllocationTracker.Configuration.Sampling) -> String? {
        sampling.estimateNote
    }

    /// `size=3.1 KiB, count=25`
    static func sizeAndCount(size: Int, count: Int) -> String { "size=\(_formatSize(size)), count=\(count)" }

    /// The lines as one text, each ended by a newline, with paths under `directory` shown relative to it.
    static func text(_ lines: [String], relativeTo directory: String? = nil) -> String {
        let text = lines.joined(separator: "\n") + "\n"
        guard let directory, directory.count > 1 else { return text }
        let prefix = directory.hasSuffix("/") ? directory : directory + "/"
        return text.replacing(prefix, with: "")
    }

    // MARK: Memory and trend

    /// `tracker memory: 1.5 MiB (tables 1.0 MiB, symbol cache 120.0 KiB, names 12.0 KiB, history 231.0 KiB)`: what
    /// the tracker itself holds, so that a report says how much of the process's memory is the tracker's.
    static func trackerMemory(_ memory: AllocationTracker.TrackerMemory) -> String { "tracker memory: \(memory)" }

    /// `cgroup: v2, usage=9277 KiB, limit=9766 KiB (95.0%), working set=8.0 MiB (83.9%); …`: the cgroup line of a
    /// report, with the working set next to the usage and which one each trigger reads.
    static func cgroup(_ cgroup: (version: Int, usage: Int, limit: Int, workingSet: Int?),
                       _ configuration: AllocationTracker.Configuration) -> String {
        var line = "cgroup: v\(cgroup.version), usage=\(_formatSize(cgroup.usage))"
        if cgroup.limit > 0 {
            line += ", limit=\(_formatSize(cgroup.limit)) (\(_percent(cgroup.usage, of: cgroup.limit)))"
        } else {
            line += ", no limit"
        }
        if let workingSet = cgroup.workingSet {
            line += ", working set=\(_formatSize(workingSet))"
            if cgroup.limit > 0 { line += " (\(_percent(workingSet, of: cgroup.limit)))" }
        } else {
            line += ", working set unknown (no memory.stat)"
        }
        var readers: [String] = []
        if configuration.limits.containerFraction != nil { readers.append("the container trigger reads usage") }
        if configuration.limits.predictedExhaustion != nil {
            readers.append("the predictive trigger reads \(cgroup.workingSet == nil ? "usage" : "the working set")")
        }
        return readers.isEmpty ? line : line + "; " + readers.joined(separator: ", ")
    }

    /// The trend section of a report (and `MemoryTrend.description`):
    ///
    /// ```
    /// [ Trend over the last 5m 0s (31 samples) ]
    /// tracked: +20.0 KiB/s (fit 99%), 1.2 MiB now; the tracked limit (8.0 MiB) in 5m 48s
    /// rss: +21.0 KiB/s (fit 97%), 14.2 MiB now
    /// cgroup usage: …; 90.0% of the limit in 3m 2s
    /// working set: …; the container limit (128 MiB) in 4m 10s
    /// [ Steadily growing sites ]
    /// #1: Sources/App/Cache.swift:42: +20.0 KiB/s (fit 99%), live=1.2 MiB, growing for 5m 0s
    ///     Sources/App/Cache.swift:42 in Cache.insert(_:for:)
    /// ```
    static func trendLines(_ trend: MemoryTrend?, topSites: Int) -> [String] {
        guard let trend else { return [heading("Trend"), "(no history: the trend is off)"] }
        guard trend.samples >= 2 else {
            return [heading("Trend"), "(\(trend.samples) sample\(trend.samples == 1 ? "" : "s") so far: no rate yet)"]
        }
        var lines = [heading("Trend over the last \(_formatDuration(trend.duration)) (\(trend.samples) samples)")]
        func eta(_ time: Duration?, _ what: String, _ rate: MemoryTrend.GrowthRate?) -> String {
            guard rate != nil else { return "" }
            guard let time else { return "; \(what): not growing" }
            return "; \(what) in \(_formatDuration(time))"
        }
        if let rate = trend.tracked {
            lines.append("tracked: \(rate)" + (trend.timeToTrackedLimit != nil || rate.bytesPerSecond <= 0
                ? eta(trend.timeToTrackedLimit, "the tracked limit", rate) : ""))
        }
        if let rate = trend.rss {
            lines.append("rss: \(rate)" + (trend.timeToRSSLimit != nil ? eta(trend.timeToRSSLimit, "the RSS limit", rate) : ""))
        }
        let limit = trend.containerLimit.map { " (\(_formatSize($0)))" } ?? ""
        if let rate = trend.containerUsage {
            var line = "cgroup usage: \(rate)"
            if trend.containerLimit == nil {
                line += "; no limit"
            } else {
                if let time = trend.timeToContainerSoftLimit { line += "; the container trigger's level in \(_formatDuration(time))" }
                if trend.workingSet == nil { line += eta(trend.timeToContainerLimit, "the container limit\(limit)", rate) }
            }
            lines.append(line)
        }
        if let rate = trend.workingSet {
            lines.append("working set: \(rate)" + (trend.containerLimit == nil ? ""
                : eta(trend.timeToContainerLimit, "the container limit\(limit)", rate)))
        }
        lines.append(heading("Steadily growing sites"))
        if trend.suspects.isEmpty { lines.append("(no site grew steadily)") }
        lines += ranked(trend.suspects.prefix(topSites), depth: 4, attribution: .default, line: \.description) { _, suspect in
            suspect.traceback.frames.isEmpty ? nil : suspect.traceback
        }
        return lines
    }
}

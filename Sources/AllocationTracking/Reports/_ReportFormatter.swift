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
    static func ranked<Items: Collection>(_ items: Items, depth: Int, attribution: Attribution,
                                          line: (Items.Element) -> String,
                                          traceback: (Int, Items.Element) -> Traceback?) -> [String] {
        var lines: [String] = []
        for (index, item) in items.enumerated() {
            lines.append("#\(index + 1): \(line(item))")
            if let traceback = traceback(index, item) {
                lines += tracebackLines(traceback, depth: depth, attribution: attribution)
            }
        }
        return lines
    }

    /// A traceback's lines from its attribution frame on, at most `depth` frames; the allocator and runtime
    /// frames above the attribution frame are counted, not shown.
    static func tracebackLines(_ traceback: Traceback, depth: Int, attribution: Attribution) -> [String] {
        var cache = _SystemFrameCache(attribution)
        var start = 0
        if let frame = cache.attributionFrame(of: traceback), let index = traceback.frames.firstIndex(of: frame) {
            start = index
        }
        let shown = Traceback(frames: Array(traceback.frames[start...]), totalFrames: traceback.totalFrames)
        var lines = shown.format(limit: depth).map { "  " + $0 }
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
}

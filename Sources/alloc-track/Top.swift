import AllocationTracking
import ArgumentParser
import Foundation

/// The options `top` and `diff` share: grouping, how many, which traces.
struct Selection: ParsableArguments {
    @Option(name: .customLong("by"), help: "Group by line, function, file or traceback.")
    var key: GroupingKey = .line

    @Option(help: "Show the first N entries (the rest are summed on one line).")
    var limit: Int = 10

    @Option(name: .customLong("include"), help: ArgumentHelp(
        "Keep only sites whose file or function matches this glob (repeatable; * matches /).", valueName: "glob"))
    var includes: [String] = []

    @Option(name: .customLong("exclude"), help: ArgumentHelp(
        "Drop sites whose file or function matches this glob (repeatable).", valueName: "glob"))
    var excludes: [String] = []

    @Option(help: "text (tracemalloc-style) or json.")
    var format: OutputFormat = .text

    func validate() throws {
        guard limit >= 0 else { throw ValidationError("--limit must be 0 or more, got \(limit)") }
    }

    /// A glob applies to the attribution frame's file or its function, as tracemalloc's filters apply to files:
    /// each pattern is one filter on the file and one on the function.
    func filtered(_ snapshot: Snapshot) -> Snapshot {
        var filters: [Filter] = []
        for glob in includes {
            filters.append(Filter(inclusive: true, filePattern: glob))
            filters.append(Filter(inclusive: true, functionPattern: glob))
        }
        let kept = snapshot.filtered(by: filters)
        // Exclusions: a trace goes when its file OR its function matches (each exclusive filter drops its own).
        return kept.filtered(by: excludes.flatMap {
            [Filter(inclusive: false, filePattern: $0), Filter(inclusive: false, functionPattern: $0)]
        })
    }
}

struct Top: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The top allocation sites of a saved snapshot or report JSON, tracemalloc-style.",
        discussion: """
            Example:
              alloc-track top heap.json --by function --limit 5 --exclude '*/Tests/*'
            """
    )

    @Argument(help: "A snapshot file (Snapshot.write(to:), alloc-track run -o, a report's .json).")
    var file: String

    @OptionGroup var selection: Selection

    @Flag(help: "Count every frame of each stack, not only the attribution frame (not with --by traceback).")
    var cumulative = false

    @Flag(help: "Require the snapshot taken at the peak (takeSnapshot(at: .peak), an allocation-failure report).")
    var peak = false

    func run() throws {
        try failing {
            let loaded = try loadSnapshot(file)
            if peak && loaded.moment != .peak {
                throw CommandFailure("\(file) holds the snapshot of a moment (\(loaded.moment.rawValue)), not the peak's")
            }
            let snapshot = selection.filtered(loaded)
            let statistics = try snapshot.statistics(groupedBy: selection.key, cumulative: cumulative)
            if selection.format == .json {
                output(try jsonText(TopJSON(snapshot, statistics, limit: selection.limit)))
            } else if cumulative {
                // The library's report has no cumulative form: the same lines, without the tracebacks.
                var lines = ["[ Top \(selection.limit) cumulative ]"]
                for (n, statistic) in statistics.prefix(selection.limit).enumerated() { lines.append("#\(n + 1): \(statistic)") }
                if statistics.count > selection.limit { lines.append("\(statistics.count - selection.limit) other") }
                output(lines.joined(separator: "\n") + "\n")
            } else {
                output(try snapshot.report(top: selection.limit, groupedBy: selection.key))
            }
        }
    }
}

struct TopJSON: Encodable {
    struct Entry: Encodable {
        var site: String
        var frame: FrameJSON
        var size: Int
        var count: Int
    }
    var moment: String
    var sampling: String
    var totalSize: Int
    var totalCount: Int
    var droppedAllocations: Int
    var entries: [Entry]
    var others: Int

    init(_ snapshot: Snapshot, _ statistics: [Statistic], limit: Int) {
        moment = snapshot.moment.rawValue
        sampling = snapshot.sampling.description
        totalSize = snapshot.totalSize
        totalCount = snapshot.totalCount
        droppedAllocations = snapshot.droppedAllocations
        entries = statistics.prefix(limit).map {
            Entry(site: $0.traceback.description, frame: FrameJSON($0.traceback.frames.first), size: $0.size, count: $0.count)
        }
        others = max(0, statistics.count - limit)
    }
}

struct Diff: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "How live memory changed between two saved snapshots, tracemalloc-style (largest change first).",
        discussion: """
            Example:
              alloc-track diff before.json after.json --by function --limit 5
            """
    )

    @Argument(help: "The older snapshot.") var old: String
    @Argument(help: "The newer snapshot.") var new: String
    @OptionGroup var selection: Selection

    func run() throws {
        try failing {
            let older = selection.filtered(try loadSnapshot(old))
            let newer = selection.filtered(try loadSnapshot(new))
            if selection.format == .json {
                let diffs = try newer.compared(to: older, groupedBy: selection.key)
                output(try jsonText(DiffJSON(older, newer, diffs, limit: selection.limit)))
            } else {
                output(try newer.report(comparedTo: older, top: selection.limit, groupedBy: selection.key))
            }
        }
    }
}

struct DiffJSON: Encodable {
    struct Entry: Encodable {
        var site: String
        var frame: FrameJSON
        var size: Int
        var sizeDiff: Int
        var count: Int
        var countDiff: Int
    }
    var totalSize: Int
    var totalSizeDiff: Int
    var totalCount: Int
    var totalCountDiff: Int
    var entries: [Entry]
    var others: Int

    init(_ older: Snapshot, _ newer: Snapshot, _ diffs: [StatisticDiff], limit: Int) {
        totalSize = newer.totalSize
        totalSizeDiff = newer.totalSize - older.totalSize
        totalCount = newer.totalCount
        totalCountDiff = newer.totalCount - older.totalCount
        entries = diffs.prefix(limit).map {
            Entry(site: $0.traceback.description, frame: FrameJSON($0.traceback.frames.first), size: $0.size,
                  sizeDiff: $0.sizeDiff, count: $0.count, countDiff: $0.countDiff)
        }
        others = max(0, diffs.count - limit)
    }
}

struct Pprof: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a saved snapshot to a gzip-compressed pprof heap profile (go tool pprof, Pyroscope).",
        discussion: """
            Example:
              alloc-track pprof heap.json -o heap.pb.gz && go tool pprof -top heap.pb.gz
            """
    )

    @Argument(help: "A snapshot file.") var file: String
    @Option(name: .shortAndLong, help: "The profile to write (a new file; default: FILE with .pb.gz).")
    var output: String?
    @Flag(help: "Show allocated bytes first (Go's allocs profile) instead of live bytes.")
    var alloc = false

    func run() throws {
        try failing {
            let snapshot = try loadSnapshot(file)
            let path = output ?? (file.hasSuffix(".json") ? String(file.dropLast(5)) : file) + ".pb.gz"
            let profile = try snapshot.pprof(.init(defaultSampleType: alloc ? .allocSpace : nil))
            try writeNewFile(path, profile)
            FileHandle.standardError.write(Data("alloc-track: wrote \(path)\n".utf8))
        }
    }
}

struct Folded: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A saved snapshot as folded stacks (flamegraph.pl, inferno, speedscope), root first, on stdout.",
        discussion: """
            Example:
              alloc-track folded heap.json | flamegraph.pl --countname bytes > heap.svg
            """
    )

    @Argument(help: "A snapshot file.") var file: String
    @Option(help: "The value of each stack: inuse_space (default), inuse_objects, alloc_space or alloc_objects.")
    var value: String = Snapshot.SampleType.inuseSpace.rawValue

    func validate() throws {
        guard Snapshot.SampleType(rawValue: value) != nil else {
            throw ValidationError("--value must be one of \(Snapshot.SampleType.allCases.map(\.rawValue).joined(separator: ", ")), got '\(value)'")
        }
    }

    func run() throws {
        try failing {
            output(try loadSnapshot(file).foldedStacks(Snapshot.SampleType(rawValue: value)!))
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Snapshot {
    /// A text report of the top `limit` keys, tracemalloc style, followed by the traceback of the largest
    /// stack behind each of the first `tracebacks` entries, a line for the rest, the total, and the tracker's
    /// counters (traced current and peak, dropped allocations — always shown, so a report missing
    /// allocations says so):
    ///
    /// ```
    /// [ Top 10 ]
    /// #1: /src/Sources/App/Cache.swift:42: size=2550 KiB, count=2000, average=1306 B
    ///     /src/Sources/App/Cache.swift:42 in Cache.insert(_:for:)
    ///     /src/Sources/App/Server.swift:17 in Server.handle(_:)
    /// #2: …
    /// 12 other: size=3.1 KiB, count=25
    /// Total: size=2.6 MiB, count=2104
    /// Traced memory: current=2.6 MiB, peak=2.7 MiB; dropped allocations: 0
    /// ```
    ///
    /// Tracebacks start at the attribution frame (the allocator and runtime frames above it are counted, not
    /// shown). Paths under `relativeTo` (by default the current directory) are shown relative to it.
    ///
    /// - Throws: `.invalidArgument` for a negative `limit`.
    public func report(top limit: Int = 10, groupedBy key: GroupingKey = .line, tracebacks: Int = 3,
                       tracebackDepth: Int = 8, attribution: Attribution = .default,
                       relativeTo directory: String? = _currentDirectory()) throws -> String {
        try _checkLimit(limit)
        let stats = try statistics(groupedBy: key, attribution: attribution)
        let samples = _largestTraces(by: key, attribution: attribution)
        var lines = [_ReportFormatter.heading(moment == .peak ? "Top \(limit) at the peak" : "Top \(limit)")]
        lines += _ReportFormatter.ranked(stats.prefix(limit), depth: tracebackDepth, attribution: attribution,
                                         line: \.description) { n, stat in
            n < tracebacks ? samples[_keyOf(stat.traceback, key)]?.traceback : nil
        }
        let rest = stats.dropFirst(limit)
        if !rest.isEmpty {
            lines.append(_ReportFormatter.rest(rest.count, "other", size: rest.reduce(0) { $0 + $1.size },
                                               count: rest.reduce(0) { $0 + $1.count }))
        }
        lines.append(_ReportFormatter.total(size: totalSize, count: totalCount))
        lines.append(_ReportFormatter.counters(self))
        return _ReportFormatter.text(lines, relativeTo: directory)
    }

    /// A text report of the top `limit` changes since `older` (tracemalloc's `compare_to` order), with the
    /// traceback of the largest stack behind each of the first `tracebacks` entries, and both snapshots'
    /// totals:
    ///
    /// ```
    /// [ Top 10 differences ]
    /// #1: /src/Sources/App/Cache.swift:42: size=2550 KiB (+2550 KiB), count=2000 (+2000), average=1306 B
    /// ```
    ///
    /// - Throws: `.invalidArgument` for a negative `limit`.
    public func report(comparedTo older: Snapshot, top limit: Int = 10, groupedBy key: GroupingKey = .line,
                       tracebacks: Int = 3, tracebackDepth: Int = 8, attribution: Attribution = .default,
                       relativeTo directory: String? = _currentDirectory()) throws -> String {
        try _checkLimit(limit)
        let diffs = try compared(to: older, groupedBy: key, attribution: attribution)
        let samples = _largestTraces(by: key, attribution: attribution)
        var lines = [_ReportFormatter.heading("Top \(limit) differences")]
        lines += _ReportFormatter.ranked(diffs.prefix(limit), depth: tracebackDepth, attribution: attribution,
                                         line: \.description) { n, diff in
            n < tracebacks ? samples[_keyOf(diff.traceback, key)]?.traceback : nil
        }
        let rest = diffs.dropFirst(limit)
        if !rest.isEmpty {
            lines.append(_ReportFormatter.rest(rest.count, size: rest.reduce(0) { $0 + $1.size },
                                               sizeDiff: rest.reduce(0) { $0 + $1.sizeDiff }))
        }
        lines.append(_ReportFormatter.total(size: totalSize, sizeDiff: totalSize - older.totalSize,
                                            count: totalCount, countDiff: totalCount - older.totalCount))
        lines.append(_ReportFormatter.counters(self))
        return _ReportFormatter.text(lines, relativeTo: directory)
    }

    func _checkLimit(_ limit: Int) throws {
        if limit < 0 { throw AllocationTrackingError(.invalidArgument, "a report's top limit cannot be negative (\(limit))") }
    }

    /// The largest trace behind each key (for the tracebacks a report shows).
    func _largestTraces(by key: GroupingKey, attribution: Attribution) -> [_GroupKey: Trace] {
        var cache = _SystemFrameCache(attribution)
        var largest: [_GroupKey: Trace] = [:]
        for trace in traces where trace.isLive {
            let k: _GroupKey
            if key == .traceback {
                k = .stack(trace.traceback.frames)
            } else {
                k = _GroupKey.make(key, cache.attributionFrame(of: trace.traceback) ?? Frame()).0
            }
            if let current = largest[k], current.size >= trace.size { continue }
            largest[k] = trace
        }
        return largest
    }

    func _keyOf(_ traceback: Traceback, _ key: GroupingKey) -> _GroupKey {
        key == .traceback ? .stack(traceback.frames) : _GroupKey.make(key, traceback.frames.first ?? Frame()).0
    }
}

/// The current directory (for reports' relative paths), or nil. `@usableFromInline`, not public: it is the
/// default argument of the public `report` functions, and no API of its own.
@usableFromInline func _currentDirectory() -> String? {
    var buffer = [CChar](repeating: 0, count: 4096)
    guard getcwd(&buffer, buffer.count) != nil else { return nil }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

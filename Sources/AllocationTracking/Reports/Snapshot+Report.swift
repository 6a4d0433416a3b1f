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
        var lines = [moment == .peak ? "[ Top \(limit) at the peak ]" : "[ Top \(limit) ]"]
        for (n, stat) in stats.prefix(limit).enumerated() {
            lines.append("#\(n + 1): \(stat)")
            if n < tracebacks, let sample = samples[_keyOf(stat.traceback, key)] {
                lines += _tracebackLines(sample.traceback, depth: tracebackDepth, attribution: attribution)
            }
        }
        let rest = stats.dropFirst(limit)
        if !rest.isEmpty {
            lines.append("\(rest.count) other: size=\(_formatSize(rest.reduce(0) { $0 + $1.size })), "
                         + "count=\(rest.reduce(0) { $0 + $1.count })")
        }
        lines.append("Total: size=\(_formatSize(totalSize)), count=\(totalCount)")
        lines.append(_countersLine())
        return _relative(lines.joined(separator: "\n") + "\n", to: directory)
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
        var lines = ["[ Top \(limit) differences ]"]
        for (n, diff) in diffs.prefix(limit).enumerated() {
            lines.append("#\(n + 1): \(diff)")
            if n < tracebacks, let sample = samples[_keyOf(diff.traceback, key)] {
                lines += _tracebackLines(sample.traceback, depth: tracebackDepth, attribution: attribution)
            }
        }
        let rest = diffs.dropFirst(limit)
        if !rest.isEmpty {
            lines.append("\(rest.count) other: size=\(_formatSize(rest.reduce(0) { $0 + $1.size })) "
                         + "(\(_formatSize(rest.reduce(0) { $0 + $1.sizeDiff }, sign: true)))")
        }
        let sizeChange = totalSize - older.totalSize
        let countChange = totalCount - older.totalCount
        lines.append("Total: size=\(_formatSize(totalSize)) (\(_formatSize(sizeChange, sign: true))), "
                     + "count=\(totalCount) (\(countChange >= 0 ? "+" : "")\(countChange))")
        lines.append(_countersLine())
        return _relative(lines.joined(separator: "\n") + "\n", to: directory)
    }

    /// A traceback's lines from its attribution frame on.
    func _tracebackLines(_ traceback: Traceback, depth: Int, attribution: Attribution) -> [String] {
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

    func _relative(_ text: String, to directory: String?) -> String {
        guard let directory, directory.count > 1 else { return text }
        let prefix = directory.hasSuffix("/") ? directory : directory + "/"
        return text.replacing(prefix, with: "")
    }

    func _checkLimit(_ limit: Int) throws {
        if limit < 0 { throw AllocationTrackingError(.invalidArgument, "a report's top limit cannot be negative (\(limit))") }
    }

    func _countersLine() -> String {
        var line = ""
        if let memory = tracedMemory {
            line = "Traced memory: current=\(_formatSize(memory.current)), peak=\(_formatSize(memory.peak)); "
        }
        if moment == .peak { line += "snapshot at the peak; " }
        return line + "dropped allocations: \(droppedAllocations)"
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

/// The current directory (for reports' relative paths), or nil.
public func _currentDirectory() -> String? {
    var buffer = [CChar](repeating: 0, count: 4096)
    guard getcwd(&buffer, buffer.count) != nil else { return nil }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

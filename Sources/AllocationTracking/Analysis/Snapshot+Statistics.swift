extension Snapshot {
    /// Live memory grouped by `key`, sorted by size, then count, then key, largest first (tracemalloc's
    /// `Snapshot.statistics`). Traces with no live block (stacks whose blocks were all freed) are skipped.
    ///
    /// - `cumulative: true` counts every frame of each trace, not only its attribution frame: a function
    ///   that calls the allocating code shows the memory too, and a function on the stack twice (recursion)
    ///   counts twice, as in tracemalloc. System frames (`malloc`, the Swift runtime, libc — which every stack
    ///   passes through, so they would open every list) and the process's entry frames (`_start`, a `main`
    ///   with no source line) are left out unless `includingSystemFrames` is true. Not available for
    ///   `.traceback`.
    /// - `attribution` decides which frames are system code (see `Attribution`).
    ///
    /// - Throws: `.invalidArgument` for `.traceback` with `cumulative`.
    public func statistics(groupedBy key: GroupingKey, cumulative: Bool = false, includingSystemFrames: Bool = false,
                           attribution: Attribution = .default) throws -> [Statistic] {
        let groups = try _group(by: key, cumulative: cumulative, includingSystemFrames: includingSystemFrames,
                                attribution: attribution)
        return groups.values.map { Statistic(traceback: $0.traceback, size: $0.size, count: $0.count) }
            .sorted { a, b in
                if a.size != b.size { return a.size > b.size }
                if a.count != b.count { return a.count > b.count }
                return _tracebackOrder(b.traceback, a.traceback)
            }
    }

    /// How live memory changed since `older`, per key, sorted by the absolute size change, then size, then the
    /// absolute count change, then count, then key, largest first (tracemalloc's `Snapshot.compare_to`). A key
    /// only in this snapshot shows its whole value as the change; a key only in `older` shows size 0 and count
    /// 0 with negative changes; an unchanged key is kept with zero changes.
    public func compared(to older: Snapshot, groupedBy key: GroupingKey, cumulative: Bool = false,
                         includingSystemFrames: Bool = false,
                         attribution: Attribution = .default) throws -> [StatisticDiff] {
        let new = try _group(by: key, cumulative: cumulative, includingSystemFrames: includingSystemFrames,
                             attribution: attribution)
        let old = try older._group(by: key, cumulative: cumulative, includingSystemFrames: includingSystemFrames,
                                   attribution: attribution)
        var diffs: [StatisticDiff] = []
        diffs.reserveCapacity(new.count + old.count)
        for (k, n) in new {
            let o = old[k]
            diffs.append(StatisticDiff(traceback: n.traceback, size: n.size, sizeDiff: n.size - (o?.size ?? 0),
                                       count: n.count, countDiff: n.count - (o?.count ?? 0)))
        }
        for (k, o) in old where new[k] == nil {
            diffs.append(StatisticDiff(traceback: o.traceback, size: 0, sizeDiff: -o.size, count: 0, countDiff: -o.count))
        }
        return diffs.sorted { a, b in
            if abs(a.sizeDiff) != abs(b.sizeDiff) { return abs(a.sizeDiff) > abs(b.sizeDiff) }
            if a.size != b.size { return a.size > b.size }
            if abs(a.countDiff) != abs(b.countDiff) { return abs(a.countDiff) > abs(b.countDiff) }
            if a.count != b.count { return a.count > b.count }
            return _tracebackOrder(b.traceback, a.traceback)
        }
    }

    struct _Group {
        var traceback: Traceback
        var size: Int
        var count: Int
    }

    func _group(by key: GroupingKey, cumulative: Bool, includingSystemFrames: Bool = false,
                attribution: Attribution) throws -> [_GroupKey: _Group] {
        if cumulative && key == .traceback {
            throw AllocationTrackingError(.invalidArgument, "cumulative statistics are not available for .traceback")
        }
        var groups: [_GroupKey: _Group] = [:]
        var systemCache = _SystemFrameCache(attribution)
        func add(_ frame: Frame, _ trace: Trace) {
            let (groupKey, keyFrame) = _GroupKey.make(key, frame)
            if groups[groupKey] == nil {
                groups[groupKey] = _Group(traceback: Traceback(frames: [keyFrame], totalFrames: 1), size: 0, count: 0)
            }
            groups[groupKey]!.size += trace.size
            groups[groupKey]!.count += trace.count
        }
        // Live memory only: a stack whose blocks were all freed (kept in the snapshot for its totals) is no key.
        for trace in traces where trace.isLive {
            if key == .traceback {
                // By the frames, as tracemalloc: stacks truncated to the same frames are one key, however deep.
                let groupKey = _GroupKey.stack(trace.traceback.frames)
                groups[groupKey, default: _Group(traceback: trace.traceback, size: 0, count: 0)].size += trace.size
                groups[groupKey]!.count += trace.count
                groups[groupKey]!.traceback.totalFrames = max(groups[groupKey]!.traceback.totalFrames,
                                                              trace.traceback.totalFrames)
            } else if cumulative {
                for frame in trace.traceback.frames
                where includingSystemFrames || !(systemCache.isSystem(frame) || _isProcessEntry(frame)) {
                    add(frame, trace)
                }
            } else if let frame = systemCache.attributionFrame(of: trace.traceback) {
                add(frame, trace)
            } else {
                add(Frame(), trace)
            }
        }
        return groups
    }
}

/// A grouping key: what makes two frames "the same line/function/file".
enum _GroupKey: Hashable {
    case location(file: String, line: Int)
    case function(name: String, image: String?)
    case file(String)
    case address(UInt, image: String?)
    case stack([Frame])

    /// The key of `frame` and the frame a statistic shows for it.
    static func make(_ key: GroupingKey, _ frame: Frame) -> (_GroupKey, Frame) {
        switch key {
        case .line:
            if let file = frame.file {
                return (.location(file: file, line: frame.line),
                        Frame(function: frame.function, file: file, line: frame.line, image: frame.image))
            }
        case .function:
            if let name = frame.mangledName ?? frame.function {
                return (.function(name: name, image: frame.image),
                        Frame(function: frame.function ?? name, file: frame.file, image: frame.image,
                              mangledName: frame.mangledName))
            }
        case .file:
            if let file = frame.file { return (.file(file), Frame(file: file)) }
        case .traceback:
            break
        }
        // No file (a library without debug information): group by function, else by the address itself.
        if key != .function, let name = frame.mangledName ?? frame.function {
            return (.function(name: name, image: frame.image),
                    Frame(function: frame.function ?? name, image: frame.image, mangledName: frame.mangledName))
        }
        return (.address(frame.address, image: frame.image), frame)
    }
}

/// Memoises `Attribution.isSystem` per frame for one operation (the globs are the expensive part).
struct _SystemFrameCache {
    let attribution: Attribution
    var known: [Frame: Bool] = [:]

    init(_ attribution: Attribution) { self.attribution = attribution }

    mutating func isSystem(_ frame: Frame) -> Bool {
        if let cached = known[frame] { return cached }
        let result = attribution.isSystem(frame)
        known[frame] = result
        return result
    }

    mutating func attributionFrame(of traceback: Traceback) -> Frame? {
        for frame in traceback.frames where !isSystem(frame) { return frame }
        return traceback.frames.first
    }
}

/// Ascending order of tracebacks for ties. tracemalloc compares its `Traceback`s as tuples of (filename, lineno)
/// frames, oldest frame first (its frames' order since Python 3.7), so stacks compare from their oldest frame
/// and a stack before a longer one it starts. Then the native fields, so that distinct keys that print alike
/// still have one order.
func _tracebackOrder(_ a: Traceback, _ b: Traceback) -> Bool {
    for (x, y) in zip(a.frames.reversed(), b.frames.reversed()) {
        let fx = x.file ?? "", fy = y.file ?? ""
        if fx != fy { return fx < fy }
        if x.line != y.line { return x.line < y.line }
        let nx = x.function ?? "", ny = y.function ?? ""
        if nx != ny { return nx < ny }
        let mx = x.mangledName ?? "", my = y.mangledName ?? ""
        if mx != my { return mx < my }
        let ix = x.image ?? "", iy = y.image ?? ""
        if ix != iy { return ix < iy }
        if x.address != y.address { return x.address < y.address }
        if x.isInlined != y.isInlined { return !x.isInlined }
    }
    if a.frames.count != b.frames.count { return a.frames.count < b.frames.count }
    return a.totalFrames < b.totalFrames
}

/// The frames every stack of the process starts from: the loader's `_start` and a `main` with no source line of
/// its own (the one the compiler makes for Swift's top-level code or `@main`). A C `main` with a line is the
/// user's code and is kept.
func _isProcessEntry(_ frame: Frame) -> Bool {
    guard let function = frame.function else { return false }
    return function == "_start" || (function == "main" && frame.line == 0)
}

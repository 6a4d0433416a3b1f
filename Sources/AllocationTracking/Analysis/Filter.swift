/// Keeps or drops traces by where they were allocated (tracemalloc's `Filter`, extended to functions and
/// images).
///
/// A filter matches a frame when every pattern it sets matches: `filePattern` the frame's file,
/// `functionPattern` its readable or mangled function name, `imagePattern` its image, and `line` (when set)
/// its line. Patterns are `fnmatch(3)` globs in which `*` also matches `/` (`"*/Sources/MyApp/*"`) and `\` is an
/// ordinary character, as in tracemalloc (Python's `fnmatch`).
///
/// With `allFrames: false` (the default) a filter looks at the trace's attribution frame (see `Attribution`);
/// with `allFrames: true`, at every frame: an inclusive filter then keeps a trace when any frame matches, an
/// exclusive one drops it when any frame matches.
///
/// `Snapshot.filtered(by:)` keeps a trace when at least one inclusive filter matches it (if there are
/// inclusive filters) and no exclusive filter matches it.
public struct Filter: Hashable, Sendable, Codable {
    public var inclusive: Bool
    public var filePattern: String?
    public var functionPattern: String?
    public var imagePattern: String?
    public var line: Int?
    public var allFrames: Bool

    public init(inclusive: Bool, filePattern: String? = nil, functionPattern: String? = nil,
                imagePattern: String? = nil, line: Int? = nil, allFrames: Bool = false) {
        self.inclusive = inclusive
        self.filePattern = filePattern
        self.functionPattern = functionPattern
        self.imagePattern = imagePattern
        self.line = line
        self.allFrames = allFrames
    }

    /// Whether `frame` matches every pattern set (the filter's polarity aside).
    public func matches(_ frame: Frame) -> Bool {
        if let filePattern {
            guard let file = frame.file, _glob(filePattern, file) else { return false }
        }
        if let functionPattern {
            let names = [frame.function, frame.mangledName].compactMap { $0 }
            guard names.contains(where: { _glob(functionPattern, $0) }) else { return false }
        }
        if let imagePattern {
            guard let image = frame.image, _glob(imagePattern, image) else { return false }
        }
        if let line, frame.line != line { return false }
        return true
    }

    /// Whether the filter lets `traceback` through: for an inclusive filter, whether it matches; for an
    /// exclusive one, whether it does not.
    func admits(_ traceback: Traceback, _ cache: inout _SystemFrameCache) -> Bool {
        let matched: Bool
        if allFrames {
            matched = traceback.frames.contains(where: matches)
        } else if let frame = cache.attributionFrame(of: traceback) {
            matched = matches(frame)
        } else {
            matched = false
        }
        return matched == inclusive
    }
}

extension Snapshot {
    /// A snapshot with only the traces `filters` let through (tracemalloc's `filter_traces`): kept when any
    /// inclusive filter admits it (if there is one) and every exclusive filter admits it. No filters: a copy.
    public func filtered(by filters: [Filter], attribution: Attribution = .default) -> Snapshot {
        guard !filters.isEmpty else { return self }
        let inclusive = filters.filter(\.inclusive)
        let exclusive = filters.filter { !$0.inclusive }
        var cache = _SystemFrameCache(attribution)
        var copy = self
        copy.traces = traces.filter { trace in
            if !inclusive.isEmpty, !inclusive.contains(where: { $0.admits(trace.traceback, &cache) }) { return false }
            return exclusive.allSatisfy { $0.admits(trace.traceback, &cache) }
        }
        return copy
    }
}

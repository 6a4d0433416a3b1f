/// What statistics group traces by (tracemalloc's `key_type`).
public enum GroupingKey: String, Hashable, Sendable, Codable, CaseIterable {
    /// The attribution frame's file and line (tracemalloc's `'lineno'`).
    case line
    /// The attribution frame's function (and image): a native addition, since a function is what a Swift
    /// developer recognises in a stack.
    case function
    /// The attribution frame's file; the statistic's traceback holds a one-frame traceback with just the file
    /// (line 0), as tracemalloc's `'filename'`.
    case file
    /// The whole call stack. Traces whose stacks have the same frames are one key, as in tracemalloc (stacks
    /// truncated to `maxFrames` can differ below); the key's `totalFrames` is the deepest of theirs.
    case traceback
}

/// Live memory grouped under one key (tracemalloc's `Statistic`).
public struct Statistic: Hashable, Sendable, CustomStringConvertible {
    /// The key: one frame for `.line`, `.function` and `.file`; the whole stack for `.traceback`.
    public var traceback: Traceback
    /// Live bytes.
    public var size: Int
    /// Live blocks.
    public var count: Int

    public init(traceback: Traceback, size: Int, count: Int) {
        self.traceback = traceback
        self.size = size
        self.count = count
    }

    /// `Sources/App/Cache.swift:42: size=10.0 KiB, count=10, average=1024 B`
    public var description: String {
        var text = "\(_keyText(traceback)): size=\(_formatSize(size)), count=\(count)"
        if count != 0 { text += ", average=\(_formatSize(Double(size) / Double(count)))" }
        return text
    }
}

/// How one key changed between two snapshots (tracemalloc's `StatisticDiff`).
public struct StatisticDiff: Hashable, Sendable, CustomStringConvertible {
    public var traceback: Traceback
    /// Live bytes in the newer snapshot.
    public var size: Int
    /// `size` minus the older snapshot's.
    public var sizeDiff: Int
    /// Live blocks in the newer snapshot.
    public var count: Int
    /// `count` minus the older snapshot's.
    public var countDiff: Int

    public init(traceback: Traceback, size: Int, sizeDiff: Int, count: Int, countDiff: Int) {
        self.traceback = traceback
        self.size = size
        self.sizeDiff = sizeDiff
        self.count = count
        self.countDiff = countDiff
    }

    /// `Sources/App/Cache.swift:42: size=5002 B (+5000 B), count=2 (+1), average=2501 B`
    public var description: String {
        var text = "\(_keyText(traceback)): size=\(_formatSize(size)) (\(_formatSize(sizeDiff, sign: true))), "
            + "count=\(count) (\(countDiff >= 0 ? "+" : "")\(countDiff))"
        if count != 0 { text += ", average=\(_formatSize(Double(size) / Double(count)))" }
        return text
    }
}

/// A grouping key's text: its frame for one-frame keys, the attribution frame for whole stacks.
func _keyText(_ traceback: Traceback) -> String {
    traceback.frames.count == 1 ? traceback.frames[0].description : traceback.description
}

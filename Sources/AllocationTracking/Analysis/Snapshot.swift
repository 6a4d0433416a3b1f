#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A call stack, most recent frame first, truncated to the tracker's `maxFrames` (inlined frames, which share
/// their physical frame's address, are expanded and do not count towards the limit).
public struct Traceback: Hashable, Sendable, Codable, CustomStringConvertible {
    public var frames: [Frame]
    /// The depth of the captured stack before truncation, in physical frames (libunwind saturates at 1024).
    public var totalFrames: Int

    public init(frames: [Frame], totalFrames: Int? = nil) {
        self.frames = frames
        self.totalFrames = totalFrames ?? frames.count
    }

    /// The attribution frame (see `Attribution`): the most recent frame that is not system code.
    public func attributionFrame(_ attribution: Attribution = .default) -> Frame? {
        attribution.attributionFrame(of: self)
    }

    /// The traceback's line in tracemalloc's style: its attribution frame.
    public var description: String { attributionFrame().map(\.description) ?? "<no frames>" }

    /// One line per frame, most recent first (`mostRecentFirst: false` for Python's oldest-first order),
    /// at most `limit` frames (nil: all).
    public func format(limit: Int? = nil, mostRecentFirst: Bool = true) -> [String] {
        var shown = frames
        if let limit { shown = Array(shown.prefix(max(0, limit))) }
        if !mostRecentFirst { shown.reverse() }
        return shown.map { frame in
            var line = "  " + frame.description
            if let function = frame.function, frame.file != nil, frame.line > 0 { line += " in " + function }
            if frame.isInlined { line += " [inlined]" }
            return line
        }
    }
}

/// The live blocks allocated from one call stack.
public struct Trace: Hashable, Sendable, Codable, CustomStringConvertible {
    public var traceback: Traceback
    /// Live bytes (requested sizes).
    public var size: Int
    /// Live blocks.
    public var count: Int

    public init(traceback: Traceback, size: Int, count: Int) {
        self.traceback = traceback
        self.size = size
        self.count = count
    }

    public var description: String { "\(traceback): \(_formatSize(size)), count=\(count)" }
}

/// The live traced blocks at one moment, one `Trace` per distinct call stack (tracemalloc's `Snapshot`).
///
/// Take one with `AllocationTracker.takeSnapshot()`, read it with `statistics(groupedBy:)`, compare two with
/// `compared(to:groupedBy:)`, narrow it with `filtered(by:)`, print it with `report(...)`, save it with
/// `write(to:)` and load it anywhere with `Snapshot(contentsOf:)`.
public struct Snapshot: Sendable {
    /// Which moment a snapshot shows.
    public enum Moment: String, Hashable, Sendable, Codable {
        /// The blocks live when the snapshot was taken.
        case now
        /// The blocks live when `tracedMemory.peak` was last set (who held the memory at the peak).
        case peak
    }

    public var traces: [Trace]
    /// `maxFrames` of the tracker that took the snapshot.
    public var tracebackLimit: Int
    /// Allocations the tracker could not record before this snapshot (a full table): the snapshot is missing
    /// them. Reports show it when non-zero.
    public var droppedAllocations: Int
    public var moment: Moment
    /// The tracker's counters when the snapshot was taken (current, peak, totals).
    public var tracedMemory: TracedMemory?
    /// When the snapshot was taken (seconds since 1970).
    public var timestamp: Double
    /// The process it was taken in.
    public var processID: Int
    public var executable: String?

    public init(traces: [Trace], tracebackLimit: Int, droppedAllocations: Int = 0, moment: Moment = .now,
                tracedMemory: TracedMemory? = nil, timestamp: Double? = nil, processID: Int? = nil,
                executable: String? = nil) {
        self.traces = traces
        self.tracebackLimit = tracebackLimit
        self.droppedAllocations = droppedAllocations
        self.moment = moment
        self.tracedMemory = tracedMemory
        self.timestamp = timestamp ?? Date().timeIntervalSince1970
        self.processID = processID ?? Int(ProcessInfo.processInfo.processIdentifier)
        self.executable = executable ?? (processID == nil ? ProcessInfo.processInfo.processName : nil)
    }

    /// Live bytes over all traces.
    public var totalSize: Int { traces.reduce(0) { $0 + $1.size } }
    /// Live blocks over all traces.
    public var totalCount: Int { traces.reduce(0) { $0 + $1.count } }
}

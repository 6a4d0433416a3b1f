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
            if let function = frame.function, frame.file != nil, frame.line > 0 { line += " in " + _displayName(function) }
            if frame.isInlined { line += " [inlined]" }
            return line
        }
    }
}

/// The blocks allocated from one call stack: those live now (`size`, `count`) and everything it allocated
/// (`allocatedSize`, `allocatedCount`).
///
/// A `.now` snapshot also holds the stacks whose blocks have all been freed (`count == 0`, totals above 0):
/// statistics, diffs, reports and `Snapshot.totalSize` are of live memory and skip them, as tracemalloc's would.
public struct Trace: Hashable, Sendable, Codable, CustomStringConvertible {
    public var traceback: Traceback
    /// Live bytes (requested sizes).
    public var size: Int
    /// Live blocks.
    public var count: Int
    /// Bytes allocated from this stack since tracking started or the last `clearTraces`, freed or not
    /// (requested sizes; a `realloc` counts its new size at its own call site). In a snapshot at the peak, the
    /// totals as of when the snapshot was taken: the tracker keeps no totals as of the peak. In a snapshot loaded
    /// from a version 1 file, which did not save totals, equal to `size`.
    public var allocatedSize: Int
    /// Blocks allocated from this stack since tracking started or the last `clearTraces`, freed or not; like
    /// `allocatedSize`, `count` for a version 1 file.
    public var allocatedCount: Int

    /// A trace; the totals default to the live values (nothing allocated there was freed).
    public init(traceback: Traceback, size: Int, count: Int, allocatedSize: Int? = nil, allocatedCount: Int? = nil) {
        self.traceback = traceback
        self.size = size
        self.count = count
        self.allocatedSize = allocatedSize ?? size
        self.allocatedCount = allocatedCount ?? count
    }

    enum CodingKeys: String, CodingKey {
        case traceback, size, count, allocatedSize, allocatedCount
    }

    /// Decodes a trace; one encoded before traces had totals gets the live values as its totals.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(traceback: try container.decode(Traceback.self, forKey: .traceback),
                  size: try container.decode(Int.self, forKey: .size),
                  count: try container.decode(Int.self, forKey: .count),
                  allocatedSize: try container.decodeIfPresent(Int.self, forKey: .allocatedSize),
                  allocatedCount: try container.decodeIfPresent(Int.self, forKey: .allocatedCount))
    }

    /// Whether the stack holds live blocks (what statistics, diffs and reports of live memory count).
    var isLive: Bool { count > 0 }

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

    /// One trace per call stack. In a `.now` snapshot taken by the tracker, also the stacks whose blocks have
    /// all been freed (`count == 0`; see `Trace`).
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
    /// The loaded images the frames point into, the main executable first (see `Image`); empty when unknown (a
    /// snapshot built by hand, loaded from a version 1 file, or a measurement's `leaked`).
    public var images: [Image]
    /// How the tracker recorded the allocations: `.exact`, or `.poisson(meanBytes:)`, in which case every size
    /// and count in the snapshot is an estimate (see `AllocationTracker.Configuration.Sampling`) and text
    /// output says so. Saved with the snapshot; files without it (older versions) load as exact.
    public var sampling: AllocationTracker.Configuration.Sampling

    public init(traces: [Trace], tracebackLimit: Int, droppedAllocations: Int = 0, moment: Moment = .now,
                tracedMemory: TracedMemory? = nil, timestamp: Double? = nil, processID: Int? = nil,
                executable: String? = nil, images: [Image] = [], sampling: AllocationTracker.Configuration.Sampling = .exact) {
        self.images = images
        self.sampling = sampling
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

    /// The snapshot without the traces that hold no live block (what a report of live memory keeps).
    var live: Snapshot {
        var copy = self
        copy.traces.removeAll { !$0.isLive }
        return copy
    }
}

extension Snapshot {
    /// A loaded image (the executable or a shared object) as it was mapped in the snapshot's process: where its
    /// code was, and which build of the file it was, so that an exporter can write pprof mappings and a tool can
    /// find the right file to symbolicate with.
    public struct Image: Hashable, Sendable, Codable {
        /// The file as the loader knew it (the main executable by its `/proc/self/exe` path).
        public var path: String
        /// The address range of the image's executable segment (its code: where frames point), `start..<end`.
        public var start: UInt
        public var end: UInt
        /// That segment's offset in the file (an address `a` in the range is at file offset
        /// `a - start + fileOffset`), as pprof's `Mapping.file_offset`.
        public var fileOffset: UInt
        /// The GNU build id (`NT_GNU_BUILD_ID`) in lowercase hex, as `readelf -n` and `file` print it; nil when
        /// the image has none.
        public var buildID: String?

        public init(path: String, start: UInt, end: UInt, fileOffset: UInt = 0, buildID: String? = nil) {
            self.path = path
            self.start = start
            self.end = end
            self.fileOffset = fileOffset
            self.buildID = buildID
        }

        /// Whether `address` lies in the image's code.
        public func contains(_ address: UInt) -> Bool { start <= address && address < end }
    }
}

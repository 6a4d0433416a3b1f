#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// Saving and loading snapshots: a documented, versioned JSON format holding the symbols, so a snapshot taken in
// production can be read, filtered and diffed anywhere.
//
// Format version 2 (one JSON object; unknown keys are ignored, so later minor additions stay readable):
//
//     {
//       "format": "swift-allocation-tracking-snapshot",
//       "version": 2,
//       "moment": "now" | "peak",
//       "timestamp": 1795000000.25,                 // seconds since 1970
//       "processID": 4242, "executable": "MyService", // executable may be absent
//       "tracebackLimit": 32,
//       "droppedAllocations": 0,
//       "tracedMemory": { "current": …, "peak": …, "liveBlocks": …, "totalAllocations": …,
//                         "totalAllocatedBytes": …, "droppedAllocations": … },   // may be absent
//       "images": [ { "path": "/srv/MyService", "start": 94000000000, "end": 94000800000,
//                     "fileOffset": 4096, "buildID": "48f5c23c…" }, … ],    // buildID may be absent
//       "frames": [ { "address": 94000000000, "function": "Cache.insert(_:for:)",
//                     "mangledName": "$s…", "file": "/src/Sources/App/Cache.swift", "line": 42,
//                     "image": "MyService", "imageOffset": 4096, "isInlined": false }, … ],
//       "traces": [ { "size": 10240, "count": 10, "allocatedSize": 40960, "allocatedCount": 40,
//                     "totalFrames": 14, "frames": [0, 3, 7] }, … ],
//       "sampleMeanBytes": 524288                    // absent: exact
//     }
//
// Frames are stored once and referenced by index from each trace, most recent first. Every frame field but
// `address`, `line` and `isInlined` may be absent. `size`/`count` are a trace's live bytes and blocks,
// `allocatedSize`/`allocatedCount` everything its stack allocated (`Trace`); a trace with `count` 0 (all its blocks
// freed) is kept for its totals. `images` are the loaded images the frames point into, main executable first
// (`Snapshot.Image`: the code segment's address range and file offset, the GNU build id in hex).
//
// `sampleMeanBytes` (added to version 2 compatibly: readers ignore unknown keys) is the mean interval of the
// Poisson sampling the snapshot was recorded with (`Snapshot.sampling`); every size and count is then an
// estimate. Absent — exact tracking, and every file written before sampling existed — it loads as `.exact`.
//
// Version 1, which `init(contentsOf:)` still reads, is the same without `images` and without the traces'
// `allocatedSize`/`allocatedCount`: its traces load with their live values as totals (the least they can have
// been; the real totals were not saved) and its snapshot with no images.

extension Snapshot {
    /// The format version `write(to:)` produces; `init(contentsOf:)` reads it and every earlier version.
    public static let fileFormatVersion = 2
    static let fileFormatName = "swift-allocation-tracking-snapshot"
    /// Files larger than this are refused by `init(contentsOf:)` unless a larger limit is given.
    public static let defaultMaximumFileSize = 1 << 30
    /// Files whose arrays and objects nest deeper than this are refused (versions 1 and 2 nest 4 levels deep).
    static let maximumFileNesting = 64
    /// The most frames a trace of a file may have: the tracker keeps at most 256 captured addresses per stack,
    /// and symbolication expands each into its inlined calls (rarely more than a few). More is not a snapshot this
    /// library wrote, and would let a small file cost the reader work out of proportion to its size.
    public static let maximumFramesPerTraceback = 4096

    /// Writes the snapshot as JSON (format version 2, see above) to `url`, replacing a file already there,
    /// atomically: a reader sees the old file or the new one, and a failure (a full disk) leaves the old one. The
    /// new file is 0600 and fsync'd. Never written through a symlink (one at `url` is refused), and nothing is
    /// left behind when writing fails: the bytes go to an unnamed file (`O_TMPFILE`) renamed into place.
    ///
    /// - Throws: `.cannotWriteFile` (a full disk, a symlink or a directory at `url`, no permission).
    public func write(to url: URL) throws {
        let data = try jsonData()
        try data.withUnsafeBytes { try _ReportFile.replace(atPath: url.path, with: $0) }
    }

    /// The snapshot as JSON (format version 2).
    public func jsonData() throws -> Data {
        var frameIndex: [Frame: Int] = [:]
        var frames: [Frame] = []
        let files = traces.map { trace in
            _TraceFile(size: trace.size, count: trace.count, allocatedSize: trace.allocatedSize,
                       allocatedCount: trace.allocatedCount, totalFrames: trace.traceback.totalFrames,
                       frames: trace.traceback.frames.map { frame in
                           if let i = frameIndex[frame] { return i }
                           frames.append(frame)
                           frameIndex[frame] = frames.count - 1
                           return frames.count - 1
                       })
        }
        let file = _SnapshotFile(
            format: Self.fileFormatName, version: Self.fileFormatVersion, moment: moment, timestamp: timestamp,
            processID: processID, executable: executable, tracebackLimit: tracebackLimit,
            droppedAllocations: droppedAllocations, tracedMemory: tracedMemory.map(_TracedMemoryFile.init),
            images: images, frames: frames, traces: files,
            sampleMeanBytes: sampling == .exact ? nil : sampling.meanBytes)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(file)
    }

    /// Reads a snapshot written by `write(to:)`.
    ///
    /// - Throws: `.invalidSnapshotFile` when the file cannot be read, is not a regular file, is larger than
    ///   `maximumSize` bytes, is not JSON of this format (truncated, corrupt, nested deeper than 64 levels), has
    ///   a format version this library does not read (it reads 1 and 2), or is inconsistent (negative sizes,
    ///   frame indices out of range, sizes or counts whose totals do not fit an `Int`, an image ending before it
    ///   starts or a build id that is not hex, more than `maximumFramesPerTraceback` frames in a trace). Never
    ///   crashes on hostile input; the memory a loaded snapshot holds is a small multiple of the file's size (a
    ///   frame reference costs a word), and loading, statistics, diffs and reports take time linear in it.
    public init(contentsOf url: URL, maximumSize: Int = Snapshot.defaultMaximumFileSize) throws {
        var info = stat()
        guard stat(url.path, &info) == 0 else {
            throw AllocationTrackingError(.invalidSnapshotFile,
                                          "cannot read \(url.path): \(String(cString: strerror(errno)))")
        }
        // A device or a FIFO has no size to check and may never end (`/dev/zero`) or block (a FIFO); Foundation
        // refuses to read them, but with a misleading "permission" error.
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw AllocationTrackingError(.invalidSnapshotFile, "\(url.path) is not a regular file")
        }
        guard Int(info.st_size) <= maximumSize else {
            throw AllocationTrackingError(.invalidSnapshotFile,
                                          "\(url.path) is \(info.st_size) bytes, more than the limit of \(maximumSize)")
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw AllocationTrackingError(.invalidSnapshotFile, "cannot read \(url.path): \(error)")
        }
        try self.init(jsonData: data, maximumSize: maximumSize, source: url.path)
    }

    /// Reads a snapshot from JSON produced by `jsonData()`; see `init(contentsOf:)`.
    public init(jsonData data: Data, maximumSize: Int = Snapshot.defaultMaximumFileSize,
                source: String = "snapshot data") throws {
        func invalid(_ why: String) -> AllocationTrackingError {
            AllocationTrackingError(.invalidSnapshotFile, "\(source) is not a readable snapshot: \(why)")
        }
        guard data.count <= maximumSize else { throw invalid("\(data.count) bytes, more than the limit of \(maximumSize)") }
        // The format nests 4 levels deep: refuse deep nesting with a clear message before the decoder recurses
        // into it (whatever its own limit).
        guard !_nestingExceeds(data, Self.maximumFileNesting) else {
            throw invalid("arrays or objects nested deeper than \(Self.maximumFileNesting) levels")
        }
        // Check the header first, so a file of another version gets a clear message rather than a field error.
        let header: _SnapshotHeader
        do { header = try JSONDecoder().decode(_SnapshotHeader.self, from: data) } catch {
            throw invalid(data.isEmpty ? "the file is empty" : "not JSON of this format (truncated or corrupt?): \(_decodingSummary(error))")
        }
        guard header.format == Self.fileFormatName else { throw invalid("format is '\(header.format)', not '\(Self.fileFormatName)'") }
        guard (1...Self.fileFormatVersion).contains(header.version) else {
            throw invalid("format version \(header.version); this library reads versions 1 to \(Self.fileFormatVersion)")
        }
        let file: _SnapshotFile
        do { file = try JSONDecoder().decode(_SnapshotFile.self, from: data) } catch {
            throw invalid(_decodingSummary(error))
        }
        guard file.tracebackLimit >= 0, file.droppedAllocations >= 0 else { throw invalid("negative counters") }
        // Version 2 requires what version 1 lacks (a version 1 file with them is read as version 1).
        let isVersion1 = header.version == 1
        if !isVersion1 {
            guard file.images != nil else { throw invalid("missing 'images'") }
            if let n = file.traces.firstIndex(where: { $0.allocatedSize == nil || $0.allocatedCount == nil }) {
                throw invalid("missing 'allocatedSize' or 'allocatedCount' at traces.\(n)")
            }
        }
        let images = isVersion1 ? [] : file.images ?? []
        for (n, image) in images.enumerated() {
            guard image.start <= image.end else { throw invalid("image \(n) ends before it starts") }
            if let id = image.buildID {
                guard id.utf8.count % 2 == 0, id.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) })
                else { throw invalid("image \(n) has a build id that is not lowercase hex") }
            }
        }
        var traces: [Trace] = []
        traces.reserveCapacity(file.traces.count)
        // Totals (and cumulative statistics, which count a trace once per frame) must fit an Int: bound them by
        // the sums of size and count times the number of frames.
        var sizeBound = 0, countBound = 0
        // The totals' sums must fit too (an exporter adds them up).
        var allocatedSizeBound = 0, allocatedCountBound = 0
        for (n, trace) in file.traces.enumerated() {
            guard trace.size >= 0, trace.count >= 0, trace.totalFrames >= 0 else {
                throw invalid("trace \(n) has a negative size, count or depth")
            }
            let allocatedSize = isVersion1 ? trace.size : trace.allocatedSize ?? trace.size
            let allocatedCount = isVersion1 ? trace.count : trace.allocatedCount ?? trace.count
            guard allocatedSize >= 0, allocatedCount >= 0 else {
                throw invalid("trace \(n) has a negative allocatedSize or allocatedCount")
            }
            let allocatedSizes = allocatedSizeBound.addingReportingOverflow(allocatedSize)
            let allocatedCounts = allocatedCountBound.addingReportingOverflow(allocatedCount)
            guard !allocatedSizes.overflow, !allocatedCounts.overflow else {
                throw invalid("allocated sizes or counts too large: their totals from trace \(n) on do not fit in an Int")
            }
            (allocatedSizeBound, allocatedCountBound) = (allocatedSizes.partialValue, allocatedCounts.partialValue)
            let weight = max(1, trace.frames.count)
            let size = trace.size.multipliedReportingOverflow(by: weight)
            let count = trace.count.multipliedReportingOverflow(by: weight)
            let sizes = sizeBound.addingReportingOverflow(size.partialValue)
            let counts = countBound.addingReportingOverflow(count.partialValue)
            guard !size.overflow, !count.overflow, !sizes.overflow, !counts.overflow else {
                throw invalid("sizes or counts too large: their totals from trace \(n) on do not fit in an Int")
            }
            (sizeBound, countBound) = (sizes.partialValue, counts.partialValue)
            guard trace.frames.count <= Self.maximumFramesPerTraceback else {
                throw invalid("trace \(n) has \(trace.frames.count) frames, more than \(Self.maximumFramesPerTraceback)")
            }
            // Each frame is a reference to the one in the file's table (Frame shares its fields): memory grows
            // with the references, a word each, not with copies of the frames.
            var frames: [Frame] = []
            frames.reserveCapacity(trace.frames.count)
            for index in trace.frames {
                guard file.frames.indices.contains(index) else {
                    throw invalid("trace \(n) refers to frame \(index); there are \(file.frames.count)")
                }
                frames.append(file.frames[index])
            }
            traces.append(Trace(traceback: Traceback(frames: frames, totalFrames: trace.totalFrames),
                                size: trace.size, count: trace.count, allocatedSize: allocatedSize,
                                allocatedCount: allocatedCount))
        }
        var sampling = AllocationTracker.Configuration.Sampling.exact
        if let mean = file.sampleMeanBytes {
            guard (1...(1 << 40)).contains(mean) else { throw invalid("sampleMeanBytes \(mean) is not 1…2^40") }
            sampling = .poisson(meanBytes: mean)
        }
        var memory = file.tracedMemory.map(\.value)
        memory?.isEstimate = sampling != .exact
        self.init(traces: traces, tracebackLimit: file.tracebackLimit, droppedAllocations: file.droppedAllocations,
                  moment: file.moment, tracedMemory: memory, timestamp: file.timestamp,
                  processID: file.processID, executable: file.executable, images: images, sampling: sampling)
    }
}

/// Whether arrays and objects in the JSON `data` nest deeper than `limit` (brackets inside strings do not count).
/// A linear scan without recursion, for any bytes.
private func _nestingExceeds(_ data: Data, _ limit: Int) -> Bool {
    data.withUnsafeBytes { bytes in
        var depth = 0
        var inString = false, escaped = false
        for byte in bytes {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                if depth > limit { return true }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth = max(0, depth - 1)
            default: break
            }
        }
        return false
    }
}

private func _decodingSummary(_ error: Error) -> String {
    switch error {
    case DecodingError.dataCorrupted(let context): return context.debugDescription + _path(context.codingPath)
    case DecodingError.keyNotFound(let key, let context): return "missing '\(key.stringValue)'" + _path(context.codingPath)
    case DecodingError.typeMismatch(_, let context): return context.debugDescription + _path(context.codingPath)
    case DecodingError.valueNotFound(_, let context): return context.debugDescription + _path(context.codingPath)
    default: return "\(error)"
    }
}

private func _path(_ path: [any CodingKey]) -> String {
    path.isEmpty ? "" : " at " + path.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
}

private struct _SnapshotHeader: Decodable {
    var format: String
    var version: Int
}

private struct _SnapshotFile: Codable {
    var format: String
    var version: Int
    var moment: Snapshot.Moment
    var timestamp: Double
    var processID: Int
    var executable: String?
    var tracebackLimit: Int
    var droppedAllocations: Int
    var tracedMemory: _TracedMemoryFile?
    /// Version 2 on (absent in version 1).
    var images: [Snapshot.Image]?
    var frames: [Frame]
    var traces: [_TraceFile]
    /// Sampled snapshots only (absent: exact).
    var sampleMeanBytes: Int? = nil
}

private struct _TraceFile: Codable {
    var size: Int
    var count: Int
    /// Version 2 on (absent in version 1).
    var allocatedSize: Int?
    var allocatedCount: Int?
    var totalFrames: Int
    var frames: [Int]
}

private struct _TracedMemoryFile: Codable {
    var current: Int
    var peak: Int
    var liveBlocks: Int
    var totalAllocations: Int
    var totalAllocatedBytes: Int
    var droppedAllocations: Int

    init(_ m: TracedMemory) {
        (current, peak, liveBlocks) = (m.current, m.peak, m.liveBlocks)
        (totalAllocations, totalAllocatedBytes, droppedAllocations) = (m.totalAllocations, m.totalAllocatedBytes, m.droppedAllocations)
    }

    var value: TracedMemory {
        TracedMemory(current: current, peak: peak, liveBlocks: liveBlocks, totalAllocations: totalAllocations,
                     totalAllocatedBytes: totalAllocatedBytes, droppedAllocations: droppedAllocations)
    }
}

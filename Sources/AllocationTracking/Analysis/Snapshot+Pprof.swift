#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

// Heap profiles in pprof's format (github.com/google/pprof, proto/profile.proto), laid out exactly as Go's
// runtime/pprof writes its heap profile (src/runtime/pprof/protomem.go), so that `go tool pprof`, flame-graph
// tools and continuous profilers (Pyroscope, Parca, the OpenTelemetry Collector's pprofreceiver) read it with no
// per-type configuration:
//
// - sample types, in this order: alloc_objects/count, alloc_space/bytes, inuse_objects/count, inuse_space/bytes;
//   every sample has the four values (a `Trace`'s allocatedCount, allocatedSize, count, size);
// - period_type space/bytes; period the sampling interval (1: exact tracking, every allocation recorded);
// - each sample labelled `bytes` = the stack's average allocated block size (allocatedSize / allocatedCount, as
//   Go's `AllocBytes / AllocObjects`), left out when 0;
// - default_sample_type unset (tools show inuse_space, as for Go's /debug/pprof/heap) or, when asked, alloc_space
//   (Go's /debug/pprof/allocs);
// - location_id leaf first; one location per captured address, its inlined calls as several lines, innermost
//   first; lines point to functions with `name` readable (demangled) and `system_name` mangled, or empty when it
//   is the same (a C function) — pprof leaves a name alone when the two differ, and otherwise applies C++
//   heuristics that cut Swift generic names short;
// - mappings from the snapshot's images (main executable first, GNU build ids), every one flagged
//   has_functions/has_filenames/has_line_numbers/has_inline_frames so that pprof never tries to symbolize again
//   (from a file it looks for the binaries; over HTTP it posts to /debug/pprof/symbol);
// - string_table[0] == "".
//
// The profile is gzip-compressed, as `go tool pprof` and the scrapers expect.

extension Snapshot {
    /// A value pprof's heap profile has for each stack, under Go's names.
    public enum SampleType: String, CaseIterable, Hashable, Sendable {
        /// Blocks allocated from the stack, freed or not (`Trace.allocatedCount`).
        case allocObjects = "alloc_objects"
        /// Bytes allocated from the stack, freed or not (`Trace.allocatedSize`).
        case allocSpace = "alloc_space"
        /// Live blocks (`Trace.count`).
        case inuseObjects = "inuse_objects"
        /// Live bytes (`Trace.size`); what `go tool pprof` shows by default.
        case inuseSpace = "inuse_space"

        /// The name in the profile (`inuse_space`).
        public var name: String { rawValue }
        /// The unit in the profile: `count` or `bytes`.
        public var unit: String {
            switch self {
            case .allocObjects, .inuseObjects: "count"
            case .allocSpace, .inuseSpace: "bytes"
            }
        }

        func value(of trace: Trace) -> Int {
            switch self {
            case .allocObjects: trace.allocatedCount
            case .allocSpace: trace.allocatedSize
            case .inuseObjects: trace.count
            case .inuseSpace: trace.size
            }
        }
    }

    /// Which frame a sample's stack starts at (its leaf).
    public enum SampleLeaf: Hashable, Sendable {
        /// The attribution frame (see `Attribution`): the allocator and runtime frames above it are dropped, as
        /// Go hides `runtime.*`, so `go tool pprof -top` lists your functions rather than `malloc`.
        case attributionFrame
        /// The captured stack whole, from the allocator down.
        case allocator
    }

    /// How `pprof(_:)` and `pprof(comparedTo:_:)` write a profile.
    public struct PprofOptions: Hashable, Sendable {
        /// The sample type tools show first. nil (the default) leaves it unset, as Go's heap profile does: tools
        /// then show `inuse_space`. `.allocSpace` is Go's allocs profile.
        public var defaultSampleType: SampleType?
        /// Where each sample's stack starts; `.attributionFrame` by default.
        public var leaf: SampleLeaf
        /// What counts as allocator and runtime code for `leaf: .attributionFrame`.
        public var attribution: Attribution

        public init(defaultSampleType: SampleType? = nil, leaf: SampleLeaf = .attributionFrame,
                    attribution: Attribution = .default) {
            self.defaultSampleType = defaultSampleType
            self.leaf = leaf
            self.attribution = attribution
        }
    }

    /// The snapshot as a gzip-compressed pprof heap profile, laid out as Go's (`go tool pprof heap.pb.gz`).
    ///
    /// ```swift
    /// let profile = try AllocationTracker.takeSnapshot().pprof()                          // Go's /debug/pprof/heap
    /// let allocs = try snapshot.pprof(.init(defaultSampleType: .allocSpace))              // Go's /debug/pprof/allocs
    /// let peak = try AllocationTracker.takeSnapshot(at: .peak).pprof()                    // who held the peak
    /// ```
    ///
    /// Every trace is a sample: its live blocks and bytes are `inuse_objects`/`inuse_space`, its totals
    /// `alloc_objects`/`alloc_space` (the stacks whose blocks were all freed, which a `.now` snapshot keeps, have
    /// inuse 0). A snapshot loaded from a version 1 file has totals equal to its live values and no images (the
    /// mappings then come from the frames' image names). Allocates; linear in the snapshot's size.
    ///
    /// - Throws: `.invalidArgument` when zlib cannot compress the profile (out of memory).
    public func pprof(_ options: PprofOptions = .init()) throws -> Data {
        var builder = _PprofBuilder(options: options, images: images, period: samplingPeriod,
                                    executable: executable)
        builder.comment(profileComment)
        if droppedAllocations > 0 { builder.comment(droppedComment) }
        builder.times(nanoseconds: timestamp, duration: 0)
        for trace in traces {
            builder.addSample(trace.traceback, values: [trace.allocatedCount, trace.allocatedSize, trace.count, trace.size]
                .map { Int64($0) }, blockSize: Self.averageBlockSize(trace.allocatedSize, trace.allocatedCount))
        }
        return try _Gzip.compress(builder.finish())
    }

    /// What changed from `older` to this snapshot as a gzip-compressed pprof profile: Go's delta heap profile
    /// (`/debug/pprof/heap?seconds=N`). Each stack's four values are this snapshot's minus `older`'s:
    /// `alloc_objects`/`alloc_space` what the stack allocated in between, `inuse_objects`/`inuse_space` how much
    /// its live memory grew (negative when it shrank) — as Go, which subtracts the first profile from the second.
    /// Stacks whose four values did not change are left out (Go's merge drops zero samples).
    ///
    /// Stacks are matched frame by frame; a frame with an image offset is matched by it rather than by its
    /// address, so snapshots of two runs of one build compare too. Each stack is one sample, labelled `bytes`
    /// with the average size of the blocks allocated in between (Go keeps two samples when the average changed;
    /// the values per function and the sums are the same). The mappings are this snapshot's images, then
    /// `older`'s that are not among them; the period is this snapshot's.
    ///
    /// - Throws: `.invalidArgument` when a difference does not fit in an `Int64`, or zlib cannot compress.
    public func pprof(comparedTo older: Snapshot, _ options: PprofOptions = .init()) throws -> Data {
        var deltaImages = images
        let known = Set(images)
        deltaImages += older.images.filter { !known.contains($0) }
        var builder = _PprofBuilder(options: options, images: deltaImages, period: samplingPeriod,
                                    executable: executable)
        let seconds = timestamp - older.timestamp
        builder.comment(profileComment)
        builder.comment("swift-allocation-tracking: growth since the snapshot at \(_utcTimestamp(Int64(older.timestamp.rounded(.down))))"
                        + " (\(_fixed(seconds, decimals: 1, sign: false)) s earlier): this one minus that one")
        if droppedAllocations > older.droppedAllocations { builder.comment(droppedComment) }
        builder.times(nanoseconds: timestamp, duration: max(0, seconds))

        var olderIndex: [[Frame]: Int] = [:]
        olderIndex.reserveCapacity(older.traces.count)
        for (index, trace) in older.traces.enumerated() {
            let key = Self.deltaKey(trace.traceback)
            if olderIndex[key] == nil { olderIndex[key] = index }  // a repeated stack is matched once, then alone
        }
        var matched = [Bool](repeating: false, count: older.traces.count)
        func add(_ traceback: Traceback, newer: Trace?, older: Trace?) throws {
            let a = newer.map { [$0.allocatedCount, $0.allocatedSize, $0.count, $0.size] } ?? [0, 0, 0, 0]
            let b = older.map { [$0.allocatedCount, $0.allocatedSize, $0.count, $0.size] } ?? [0, 0, 0, 0]
            var values: [Int64] = []
            for (x, y) in zip(a, b) {
                let (difference, overflow) = Int64(x).subtractingReportingOverflow(Int64(y))
                guard !overflow else {
                    throw AllocationTrackingError(.invalidArgument, "cannot write the delta profile: \(x) - \(y) does not fit in an Int64")
                }
                values.append(difference)
            }
            guard values.contains(where: { $0 != 0 }) else { return }
            // Go's label is the average allocated block size: here, of the blocks allocated in between; when
            // nothing was (only frees), of the stack's blocks as either snapshot has them.
            var blockSize: Int64 = 0
            if values[0] > 0, values[1] > 0 { blockSize = values[1] / values[0] }
            if blockSize == 0, let side = [newer, older].lazy.compactMap({ $0 }).first(where: { $0.allocatedCount > 0 }) {
                blockSize = Self.averageBlockSize(side.allocatedSize, side.allocatedCount)
            }
            builder.addSample(traceback, values: values, blockSize: blockSize)
        }
        for trace in traces {
            let key = Self.deltaKey(trace.traceback)
            if let index = olderIndex[key], !matched[index] {
                matched[index] = true
                try add(trace.traceback, newer: trace, older: older.traces[index])
            } else {
                try add(trace.traceback, newer: trace, older: nil)
            }
        }
        for (index, trace) in older.traces.enumerated() where !matched[index] {
            try add(trace.traceback, newer: nil, older: trace)
        }
        return try _Gzip.compress(builder.finish())
    }

    /// Writes `pprof(options)` to `url` (`go tool pprof heap.pb.gz`) as `write(to:)` writes a snapshot: the file
    /// is replaced atomically (a reader sees the old profile or the new one, never part of one, and nothing is left
    /// behind when writing fails), mode 0600, never through a symbolic link.
    ///
    /// - Throws: `.cannotWriteFile` naming the path and the reason (a symlink or a directory at `url`, a missing
    ///   directory, a full disk), or what `pprof(_:)` throws.
    public func write(pprofTo url: URL, _ options: PprofOptions = .init()) throws {
        let profile = try pprof(options)
        try profile.withUnsafeBytes { try _ReportFile.replace(atPath: url.path, with: $0) }
    }

    /// The sampling interval in bytes that the snapshot's values were recorded with, pprof's `period`: 1 for exact
    /// tracking (every allocation recorded), T for `.poisson(meanBytes: T)`, whose values are already estimates
    /// (each sampled block weighted by 1/p: unsampled, as Go writes them).
    var samplingPeriod: Int { sampling.period }

    private var profileComment: String {
        let process = (executable.map { "\($0) " } ?? "") + "(pid \(processID))"
        let when = _utcTimestamp(Int64(timestamp.rounded(.down)))
        switch moment {
        case .now: return "swift-allocation-tracking: heap of \(process) at \(when)"
        case .peak: return "swift-allocation-tracking: heap of \(process) at its peak (snapshot taken at \(when))"
        }
    }

    private var droppedComment: String {
        "swift-allocation-tracking: \(droppedAllocations) allocations could not be recorded (a full table): the profile misses them"
    }

    /// `bytes / blocks` (integer division, as Go), 0 when there are no blocks.
    static func averageBlockSize(_ bytes: Int, _ blocks: Int) -> Int64 {
        blocks > 0 ? Int64(bytes / blocks) : 0
    }

    /// A stack as the delta profile matches it: frames with an image offset compare by that offset (the same code
    /// in another run of the same build, whatever the load address), others by address.
    static func deltaKey(_ traceback: Traceback) -> [Frame] {
        traceback.frames.map { frame in
            guard frame.imageOffset != nil else { return frame }
            var key = frame
            key.address = 0
            return key
        }
    }
}

/// Cuts stacks at their leaf as `Snapshot.SampleLeaf` says; remembers which frames are system code (the same
/// frames recur in many stacks, and each check is a few dozen glob matches).
struct _SampleLeafCutter {
    let leaf: Snapshot.SampleLeaf
    let attribution: Attribution
    private var isSystem: [Frame: Bool] = [:]

    init(_ leaf: Snapshot.SampleLeaf, _ attribution: Attribution) {
        self.leaf = leaf
        self.attribution = attribution
    }

    /// The frames a sample shows, most recent first: from the attribution frame on (all of them when every
    /// frame is system code), or all of them for `.allocator`.
    mutating func frames(of traceback: Traceback) -> ArraySlice<Frame> {
        let frames = traceback.frames[...]
        guard leaf == .attributionFrame else { return frames }
        for index in frames.indices {
            let frame = frames[index]
            let system: Bool
            if let known = isSystem[frame] {
                system = known
            } else {
                system = attribution.isSystem(frame)
                isSystem[frame] = system
            }
            if !system { return frames[index...] }
        }
        return frames
    }
}

/// Builds one profile.proto message. Strings, functions, locations and mappings are interned in dictionaries as
/// they are met, so the work is linear in the number of frames written.
struct _PprofBuilder {
    // Field numbers of profile.proto (github.com/google/pprof/blob/main/proto/profile.proto).
    enum Profile {
        static let sampleType = 1, sample = 2, mapping = 3, location = 4, function = 5, stringTable = 6
        static let timeNanos = 9, durationNanos = 10, periodType = 11, period = 12, comment = 13
        static let defaultSampleType = 14
    }
    enum ValueType { static let type = 1, unit = 2 }
    enum Sample { static let locationID = 1, value = 2, label = 3 }
    enum Label { static let key = 1, str = 2, num = 3 }
    enum Mapping {
        static let id = 1, memoryStart = 2, memoryLimit = 3, fileOffset = 4, filename = 5, buildID = 6
        static let hasFunctions = 7, hasFilenames = 8, hasLineNumbers = 9, hasInlineFrames = 10
    }
    enum Location { static let id = 1, mappingID = 2, address = 3, line = 4 }
    enum Line { static let functionID = 1, line = 2 }
    enum Function { static let id = 1, name = 2, systemName = 3, filename = 4 }

    private var strings: [String: Int64] = ["": 0]
    private var stringTable: [String] = [""]
    private var header = _ProtobufWriter()
    private var samples = _ProtobufWriter()
    /// Mapping messages and their files, in id order (`finish` puts the main executable's first).
    private var mappings: [(file: String, message: _ProtobufWriter)] = []
    private var locations = _ProtobufWriter()
    private var functions = _ProtobufWriter()
    private var comments: [Int64] = []
    private var cutter: _SampleLeafCutter

    /// The snapshot's images, by id (id = index + 1), and their indices sorted by start address.
    private let images: [Snapshot.Image]
    private let imagesByStart: [Int]
    /// Images by file name, for frames whose address lies in none (a loaded v1 snapshot has no images at all).
    private var imagesByName: [String: Int] = [:]
    /// Mappings made up from a frame's image name when no image holds its address: name -> id.
    private var namedMappings: [String: UInt64] = [:]
    private var nextMappingID: UInt64
    private var executable: String?
    private var locationIDs: [ArraySlice<Frame>: UInt64] = [:]
    private var functionIDs: [FunctionKey: UInt64] = [:]
    private var bytesKey: Int64 = 0

    private struct FunctionKey: Hashable {
        var name: String
        var systemName: String
        var filename: String
    }

    init(options: Snapshot.PprofOptions, images: [Snapshot.Image], period: Int, executable: String?) {
        cutter = _SampleLeafCutter(options.leaf, options.attribution)
        self.images = images
        self.executable = executable
        imagesByStart = images.indices.filter { images[$0].end > images[$0].start }.sorted { images[$0].start < images[$1].start }
        nextMappingID = UInt64(images.count) + 1
        for type in Snapshot.SampleType.allCases {
            let (name, unit) = (string(type.name), string(type.unit))
            header.message(Profile.sampleType) { $0.int64(ValueType.type, name); $0.int64(ValueType.unit, unit) }
        }
        let (space, bytes) = (string("space"), string("bytes"))
        header.message(Profile.periodType) { $0.int64(ValueType.type, space); $0.int64(ValueType.unit, bytes) }
        header.int64(Profile.period, Int64(period))
        if let type = options.defaultSampleType { header.int64(Profile.defaultSampleType, string(type.name)) }
        bytesKey = string("bytes")
        for (index, image) in images.enumerated() {
            imagesByName[Self.fileName(image.path), default: index] = index
            writeMapping(id: UInt64(index) + 1, start: image.start, limit: image.end, offset: image.fileOffset,
                         file: image.path, buildID: image.buildID ?? "")
        }
    }

    mutating func comment(_ text: String) { comments.append(string(text)) }

    mutating func times(nanoseconds seconds: Double, duration: Double) {
        header.int64(Profile.timeNanos, Self.nanoseconds(seconds))
        header.int64(Profile.durationNanos, Self.nanoseconds(duration))
    }

    /// One sample: `values` in the sample types' order, the stack cut at its leaf.
    mutating func addSample(_ traceback: Traceback, values: [Int64], blockSize: Int64) {
        let frames = cutter.frames(of: traceback)
        var ids: [UInt64] = []
        if frames.isEmpty {
            ids.append(location(for: [Frame(function: "<no frames>")][...]))
        } else {
            // A location per captured address: its inlined frames (which share the address and come first) and
            // the physical frame they were inlined into. A stack truncated among inlined frames ends with a
            // location of inlined frames only.
            var start = frames.startIndex
            for index in frames.indices where !frames[index].isInlined || index == frames.endIndex - 1 {
                ids.append(location(for: frames[start...index]))
                start = index + 1
            }
        }
        let bytesKey = bytesKey
        samples.message(Profile.sample) { sample in
            sample.packedUInt64(Sample.locationID, ids)
            sample.packedInt64(Sample.value, values)
            if blockSize != 0 {
                sample.message(Sample.label) { $0.int64(Label.key, bytesKey); $0.int64(Label.num, blockSize) }
            }
        }
    }

    /// The serialized profile (not compressed).
    mutating func finish() -> [UInt8] {
        header.packedInt64(Profile.comment, comments)
        var out = header
        out.append(samples)
        // The first mapping is the main binary: the snapshot's first image (the executable) when it has images;
        // otherwise the mapping named like the executable, if a frame named it.
        if images.isEmpty, let executable,
           let main = mappings.firstIndex(where: { Self.fileName($0.file) == executable }) {
            mappings.insert(mappings.remove(at: main), at: 0)
        }
        for mapping in mappings { out.append(mapping.message) }
        out.append(locations)
        out.append(functions)
        for string in stringTable { out.string(Profile.stringTable, string) }
        return out.bytes
    }

    // MARK: - Interning

    private mutating func string(_ text: String) -> Int64 {
        if let index = strings[text] { return index }
        let index = Int64(stringTable.count)
        stringTable.append(text)
        strings[text] = index
        return index
    }

    private mutating func location(for frames: ArraySlice<Frame>) -> UInt64 {
        if let id = locationIDs[frames] { return id }
        let id = UInt64(locationIDs.count) + 1
        locationIDs[frames] = id
        let physical = frames.last!
        let mapping = mappingID(for: physical)
        var lines: [(function: UInt64, line: Int64)] = []
        for frame in frames where frame.isSymbolicated {
            lines.append((function(for: frame), Int64(frame.line)))
        }
        locations.message(Profile.location) { location in
            location.uint64(Location.id, id)
            location.uint64(Location.mappingID, mapping)
            location.uint64(Location.address, UInt64(physical.address))
            for line in lines {
                location.message(Location.line) { $0.uint64(Line.functionID, line.function); $0.int64(Line.line, line.line) }
            }
        }
        return id
    }

    private mutating func function(for frame: Frame) -> UInt64 {
        // A frame without a function is named as the reports name it (`libfoo.so+0x1f2e`, `file.c:12`). The
        // system name is written only when it differs from the name: pprof rewrites a name equal to its system
        // name with C++ heuristics (`<unknown>` became "", `Array<Int>.f()` would lose `<Int>`).
        let name = frame.function ?? frame.description
        let systemName = frame.function == nil || frame.mangledName == name ? "" : frame.mangledName ?? ""
        let key = FunctionKey(name: name, systemName: systemName, filename: frame.file ?? "")
        if let id = functionIDs[key] { return id }
        let id = UInt64(functionIDs.count) + 1
        functionIDs[key] = id
        let (nameIndex, systemNameIndex, filenameIndex) = (string(name), string(systemName), string(key.filename))
        functions.message(Profile.function) { function in
            function.uint64(Function.id, id)
            function.int64(Function.name, nameIndex)
            function.int64(Function.systemName, systemNameIndex)
            function.int64(Function.filename, filenameIndex)
        }
        return id
    }

    /// The mapping of the image holding `frame`'s address; else the image named like the frame's; else one made
    /// up from the frame's image name (a loaded v1 snapshot); 0 (none) for a frame with no image at all.
    private mutating func mappingID(for frame: Frame) -> UInt64 {
        var low = 0, high = imagesByStart.count
        while low < high {  // the first image starting above the address
            let middle = (low + high) / 2
            if images[imagesByStart[middle]].start <= frame.address { low = middle + 1 } else { high = middle }
        }
        if low > 0, frame.address < images[imagesByStart[low - 1]].end { return UInt64(imagesByStart[low - 1]) + 1 }
        guard let name = frame.image, !name.isEmpty else { return 0 }
        if let index = imagesByName[name] { return UInt64(index) + 1 }
        if let id = namedMappings[name] { return id }
        let id = nextMappingID
        nextMappingID += 1
        namedMappings[name] = id
        // Only the name is known: no address range, so no tool can take the mapping for another's.
        writeMapping(id: id, start: 0, limit: 0, offset: 0, file: name, buildID: "")
        return id
    }

    private mutating func writeMapping(id: UInt64, start: UInt, limit: UInt, offset: UInt, file: String, buildID: String) {
        let (fileIndex, buildIDIndex) = (string(file), string(buildID))
        var message = _ProtobufWriter()
        message.message(Profile.mapping) { mapping in
            mapping.uint64(Mapping.id, id)
            mapping.uint64(Mapping.memoryStart, UInt64(start))
            mapping.uint64(Mapping.memoryLimit, UInt64(limit))
            mapping.uint64(Mapping.fileOffset, UInt64(offset))
            mapping.int64(Mapping.filename, fileIndex)
            mapping.int64(Mapping.buildID, buildIDIndex)
            // Symbolized already: pprof must not look for the binaries (or post to /debug/pprof/symbol).
            mapping.bool(Mapping.hasFunctions, true)
            mapping.bool(Mapping.hasFilenames, true)
            mapping.bool(Mapping.hasLineNumbers, true)
            mapping.bool(Mapping.hasInlineFrames, true)
        }
        mappings.append((file, message))
    }

    private static func fileName(_ path: String) -> String {
        path.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? path
    }

    /// Seconds as nanoseconds, the whole seconds and the fraction apart (a Double holds the time of day in
    /// seconds to the microsecond, but not in nanoseconds); 0 when out of range.
    private static func nanoseconds(_ seconds: Double) -> Int64 {
        guard seconds.isFinite, abs(seconds) < 9.2e9 else { return 0 }
        let whole = seconds.rounded(.down)
        return Int64(whole) * 1_000_000_000 + Int64(((seconds - whole) * 1e9).rounded())
    }
}

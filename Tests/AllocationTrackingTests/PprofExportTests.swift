@testable import AllocationTracking
import Foundation
import Testing

/// The protobuf writer against the wire format's published examples (protobuf.dev's encoding guide), and the
/// export of hand-built snapshots read back by an independent decoder (Python, from profile.proto's field numbers)
/// and by `go tool pprof`. None of these tests starts the tracker.
@Suite struct PprofExport {
    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined(separator: " ") }

    static func written(_ body: (inout _ProtobufWriter) -> Void) -> String {
        var writer = _ProtobufWriter()
        body(&writer)
        return hex(writer.bytes)
    }

    // MARK: - The protobuf writer

    @Test func varintsAsTheWireFormatDefinesThem() {
        #expect(Self.written { $0.varint(0) } == "00")
        #expect(Self.written { $0.varint(1) } == "01")
        #expect(Self.written { $0.varint(127) } == "7f")
        #expect(Self.written { $0.varint(128) } == "80 01")
        #expect(Self.written { $0.varint(150) } == "96 01")           // the guide's example
        #expect(Self.written { $0.varint(300) } == "ac 02")
        #expect(Self.written { $0.varint(UInt64.max) } == "ff ff ff ff ff ff ff ff ff 01")
        // int64 is two's complement, not zigzag: -1 takes ten bytes (sint64 would be one).
        #expect(Self.written { $0.int64(1, -1) } == "08 ff ff ff ff ff ff ff ff ff 01")
        #expect(Self.written { $0.int64(1, Int64.min) } == "08 80 80 80 80 80 80 80 80 80 01")
    }

    @Test func fieldsKeysAndDefaults() {
        // The guide's examples: field 1 = 150; field 2 = "testing".
        #expect(Self.written { $0.uint64(1, 150) } == "08 96 01")
        #expect(Self.written { $0.string(2, "testing") } == "12 07 74 65 73 74 69 6e 67")
        // Field numbers above 15 take a two-byte key.
        #expect(Self.written { $0.uint64(16, 1) } == "80 01 01")
        // Defaults are left out (proto3); an empty string is written (a string table's "" counts).
        #expect(Self.written { $0.uint64(1, 0); $0.int64(2, 0); $0.bool(3, false) } == "")
        #expect(Self.written { $0.bool(7, true) } == "38 01")
        #expect(Self.written { $0.string(6, "") } == "32 00")
        // The guide's packed example: field 4 = [3, 270, 86942].
        #expect(Self.written { $0.packedUInt64(4, [3, 270, 86942] as [UInt64]) } == "22 06 03 8e 02 9e a7 05")
        #expect(Self.written { $0.packedInt64(2, [-1, 1] as [Int64]) } == "12 0b ff ff ff ff ff ff ff ff ff 01 01")
        #expect(Self.written { $0.packedUInt64(1, [] as [UInt64]) } == "")
        // A nested message: the guide's field 3 = { field 1 = 150 }.
        #expect(Self.written { $0.message(3) { $0.uint64(1, 150) } } == "1a 03 08 96 01")
        #expect(Self.written { $0.message(3) { _ in } } == "1a 00")
    }

    // MARK: - Hand-built snapshots, read back

    static let main = Snapshot.Image(path: "/srv/My Service", start: 0x5555_0000_1000, end: 0x5555_0080_0000,
                                     fileOffset: 0x1000, buildID: "48f5c23cfcf1980b5c1e83c5eb2369e9d396f2c6")
    static let libc = Snapshot.Image(path: "/usr/lib/x86_64-linux-gnu/libc.so.6", start: 0x7f00_0000_0000,
                                     end: 0x7f00_0010_0000, fileOffset: 0x28000, buildID: nil)
    static let malloc = Frame(function: "malloc", image: "libc.so.6", address: 0x7f00_0000_2000, mangledName: "malloc",
                              imageOffset: 0x2000)
    static let slowAlloc = Frame(function: "swift_slowAlloc", image: "libswiftCore.so", address: 0x7f10_0000_3000,
                                 mangledName: "swift_slowAlloc", imageOffset: 0x3000)
    /// Standard library code inlined into the user's function (system code, in the user's image).
    static let inlinedArray = Frame(function: "Array.init(repeating:count:)", file: "/swift/stdlib/public/core/Array.swift",
                                    line: 900, image: "My Service", address: 0x5555_0000_5100,
                                    mangledName: "$sSa9repeating5countSayxGx_SitcfC", imageOffset: 0x4100, isInlined: true)
    static let inlinedHelper = Frame(function: "Cache.makeBody(_:)", file: "/src/Sources/App/Cache.swift", line: 30,
                                     image: "My Service", address: 0x5555_0000_5100,
                                     mangledName: "$s3App5CacheC8makeBodyySaySiGSiF", imageOffset: 0x4100, isInlined: true)
    static let insert = Frame(function: "Cache.insert(_:for:)", file: "/src/Sources/App/Cache.swift", line: 42,
                              image: "My Service", address: 0x5555_0000_5100,
                              mangledName: "$s3App5CacheC6insert_3forySS_SitF", imageOffset: 0x4100)
    static let generic = Frame(function: "Box<Array<Int>>.store(_:)", file: "/src/Sources/App/Box.swift", line: 7,
                               image: "My Service", address: 0x5555_0000_6200,
                               mangledName: "$s3App3BoxV5storeyyxF", imageOffset: 0x5200)
    static let main_ = Frame(function: "main", file: "/src/Sources/App/main.swift", line: 3, image: "My Service",
                             address: 0x5555_0000_7300, mangledName: "main", imageOffset: 0x6300)
    static let unresolved = Frame(address: 0x7f99_0000_0001)
    static let imageOnly = Frame(image: "libfoo.so.1", address: 0x7f12_0000_1f2e, imageOffset: 0x1f2e)

    /// Stacks of every kind: allocator frames above the attribution frame, inlined frames (system and user),
    /// a generic Swift name, an unresolved address, an image-only frame, a stack of system frames only, an empty
    /// one, and a freed-only stack (live 0, totals above 0).
    static func sample(moment: Snapshot.Moment = .now) -> Snapshot {
        Snapshot(traces: [
            Trace(traceback: Traceback(frames: [malloc, slowAlloc, inlinedArray, inlinedHelper, insert, main_]),
                  size: 10240, count: 10, allocatedSize: 40960, allocatedCount: 40),
            Trace(traceback: Traceback(frames: [malloc, generic, main_]), size: 300, count: 3),
            Trace(traceback: Traceback(frames: [malloc, generic, unresolved]), size: 0, count: 0,
                  allocatedSize: 5000, allocatedCount: 2),
            Trace(traceback: Traceback(frames: [imageOnly, main_]), size: 64, count: 1),
            Trace(traceback: Traceback(frames: [malloc, slowAlloc]), size: 96, count: 2),
            Trace(traceback: Traceback(frames: []), size: 7, count: 1),
        ], tracebackLimit: 32, droppedAllocations: 0, moment: moment, timestamp: 1_795_000_000.25, processID: 4242,
           executable: "My Service", images: [main, libc])
    }

    @Test(.enabled(if: PprofTools.hasPython, "python3 is not installed"))
    func theProfileHasGoHeapLayout() throws {
        let snapshot = Self.sample()
        let profile = try snapshot.pprof()
        #expect(profile.starts(with: [0x1f, 0x8b]), "not gzip")
        let decoded = try #require(try PprofTools.decode(profile))
        #expect(decoded.strings.first == "")
        #expect(decoded.sample_type?.map { "\(decoded.string($0.type))/\(decoded.string($0.unit))" }
                == ["alloc_objects/count", "alloc_space/bytes", "inuse_objects/count", "inuse_space/bytes"])
        #expect(decoded.period_type.map { "\(decoded.string($0.type))/\(decoded.string($0.unit))" } == "space/bytes")
        #expect(decoded.period == 1)
        #expect(decoded.default_sample_type == nil)
        #expect(decoded.time_nanos == 1_795_000_000_250_000_000)
        #expect(decoded.comment?.map { decoded.string($0) }.first?.contains("My Service (pid 4242)") == true)
        // Every string is interned once.
        #expect(Set(decoded.strings).count == decoded.strings.count)

        // One sample per trace, the four values in order, the average block size as `bytes`.
        let samples = decoded.sample ?? []
        #expect(samples.map { $0.value ?? [] } == snapshot.traces.map {
            [$0.allocatedCount, $0.allocatedSize, $0.count, $0.size].map(Int64.init)
        })
        #expect(samples.map { $0.label?.map { "\(decoded.string($0.key))=\($0.num ?? 0)" } ?? [] }
                == [["bytes=1024"], ["bytes=100"], ["bytes=2500"], ["bytes=64"], ["bytes=48"], ["bytes=7"]])

        // Leaf first, from the attribution frame: malloc and swift_slowAlloc dropped; the inlined standard library
        // call goes with them, the inlined user call stays as a line of the same location, innermost first.
        #expect(decoded.stack(samples[0]) == [
            "Cache.makeBody(_:) /src/Sources/App/Cache.swift:30 | Cache.insert(_:for:) /src/Sources/App/Cache.swift:42",
            "main /src/Sources/App/main.swift:3",
        ])
        #expect(decoded.stack(samples[1]) == ["Box<Array<Int>>.store(_:) /src/Sources/App/Box.swift:7",
                                              "main /src/Sources/App/main.swift:3"])
        // An unresolved address is a location without lines (pprof prints its address).
        #expect(decoded.stack(samples[2]) == ["Box<Array<Int>>.store(_:) /src/Sources/App/Box.swift:7", ""])
        #expect(decoded.stack(samples[3]) == ["libfoo.so.1+0x1f2e :0", "main /src/Sources/App/main.swift:3"])
        // System frames only: nothing is dropped.
        #expect(decoded.stack(samples[4]) == ["malloc :0", "swift_slowAlloc :0"])
        #expect(decoded.stack(samples[5]) == ["<no frames> :0"])

        // Functions: readable name, mangled system name (different, so pprof keeps the name whole).
        let functions = (decoded.function ?? []).map { "\(decoded.string($0.name)) [\(decoded.string($0.system_name))]" }
        #expect(functions.contains("Box<Array<Int>>.store(_:) [$s3App3BoxV5storeyyxF]"))
        #expect(functions.contains("Cache.makeBody(_:) [$s3App5CacheC8makeBodyySaySiGSiF]"))
        // A C function's system name is its name: left empty, so that pprof's heuristics never touch the name.
        #expect(functions.contains("malloc []"))
        #expect(functions.contains("libfoo.so.1+0x1f2e []"))

        // Locations: the captured address and its mapping; the inlined lines share the physical frame's address.
        let locations = decoded.locations
        let first = try #require(locations[samples[0].location_id?.first ?? 0])
        #expect(first.address == 0x5555_0000_5100)
        #expect(first.line?.count == 2)
        #expect(first.mapping_id == 1)

        // Mappings: the images (main executable first, build id, file offset), then one made up from an image
        // name no image has; all flagged as symbolized.
        let mappings = decoded.mapping ?? []
        #expect(mappings.map { decoded.string($0.filename) } == ["/srv/My Service", "/usr/lib/x86_64-linux-gnu/libc.so.6",
                                                                   "libfoo.so.1", "libswiftCore.so"])
        #expect(mappings.first.map { decoded.string($0.build_id) } == "48f5c23cfcf1980b5c1e83c5eb2369e9d396f2c6")
        #expect(mappings.first?.memory_start == 0x5555_0000_1000 && mappings.first?.memory_limit == 0x5555_0080_0000)
        #expect(mappings.first?.file_offset == 0x1000)
        #expect(mappings.map(\.id) == [1, 2, 3, 4])
        for mapping in mappings {
            #expect(mapping.has_functions == true && mapping.has_filenames == true && mapping.has_line_numbers == true
                    && mapping.has_inline_frames == true, "\(decoded.string(mapping.filename)) not flagged")
        }
        // A frame in libc by address gets libc's mapping, whatever its image name says.
        let mallocLocation = samples[4].location_id?.first.flatMap { locations[$0] }
        #expect(mallocLocation?.mapping_id == 2)
        // No image at all: no mapping.
        let noFrames = samples[5].location_id?.first.flatMap { locations[$0] }
        #expect(noFrames?.mapping_id == nil)
    }

    @Test(.enabled(if: PprofTools.hasPython, "python3 is not installed"))
    func optionsSetTheDefaultSampleTypeAndKeepTheAllocator() throws {
        let snapshot = Self.sample()
        let allocs = try #require(try PprofTools.decode(snapshot.pprof(.init(defaultSampleType: .allocSpace))))
        #expect(allocs.string(allocs.default_sample_type) == "alloc_space")
        let whole = try #require(try PprofTools.decode(snapshot.pprof(.init(leaf: .allocator))))
        let stack = whole.stack(try #require(whole.sample?.first))
        #expect(stack == [
            "malloc :0", "swift_slowAlloc :0",
            "Array.init(repeating:count:) /swift/stdlib/public/core/Array.swift:900 | Cache.makeBody(_:) /src/Sources/App/Cache.swift:30 | Cache.insert(_:for:) /src/Sources/App/Cache.swift:42",
            "main /src/Sources/App/main.swift:3",
        ])
        // The same address with a different set of lines is another location.
        let cut = try #require(try PprofTools.decode(snapshot.pprof()))
        #expect(cut.stack(try #require(cut.sample?.first)).first?.hasPrefix("Cache.makeBody") == true)
        // Attribution is configurable: with libc and the runtime as user code, nothing is dropped.
        let mine = try #require(try PprofTools.decode(snapshot.pprof(.init(attribution: Attribution()))))
        #expect(mine.stack(try #require(mine.sample?.first)).first == "malloc :0")
    }

    @Test(.enabled(if: PprofTools.hasPython, "python3 is not installed"))
    func theDeltaIsNewerMinusOlderPerStack() throws {
        let older = Self.sample()
        var newer = Self.sample()
        newer.timestamp += 90
        // The first stack allocated 5 more blocks of 2048 B and freed 2: live +3 blocks.
        newer.traces[0].allocatedCount += 5
        newer.traces[0].allocatedSize += 5 * 2048
        newer.traces[0].count += 3
        newer.traces[0].size += 3 * 2048
        // The second freed everything without allocating.
        newer.traces[1].count = 0
        newer.traces[1].size = 0
        // The third is unchanged (left out); the fourth is gone from the newer snapshot (a clearTraces).
        newer.traces.remove(at: 3)
        // A new stack.
        newer.traces.append(Trace(traceback: Traceback(frames: [Self.insert]), size: 10, count: 1))
        // The same code in another run of the build: other addresses, same image offsets. Still matched.
        newer.traces = newer.traces.map { trace in
            var trace = trace
            trace.traceback.frames = trace.traceback.frames.map { frame in
                var frame = frame
                if frame.imageOffset != nil { frame.address += 0x1000_0000 }
                return frame
            }
            return trace
        }
        let decoded = try #require(try PprofTools.decode(newer.pprof(comparedTo: older)))
        let rows = (decoded.sample ?? []).map { sample in
            "\(sample.value ?? []) bytes=\(sample.label?.first?.num ?? 0) \(decoded.stack(sample).first ?? "")"
        }
        #expect(rows == [
            "[5, 10240, 3, 6144] bytes=2048 Cache.makeBody(_:) /src/Sources/App/Cache.swift:30 | Cache.insert(_:for:) /src/Sources/App/Cache.swift:42",
            "[0, 0, -3, -300] bytes=100 Box<Array<Int>>.store(_:) /src/Sources/App/Box.swift:7",
            "[1, 10, 1, 10] bytes=10 Cache.insert(_:for:) /src/Sources/App/Cache.swift:42",
            "[-1, -64, -1, -64] bytes=64 libfoo.so.1+0x1f2e :0",
        ], "\(rows)")
        #expect(decoded.duration_nanos == 90_000_000_000)
        #expect(decoded.time_nanos == 1_795_000_090_250_000_000)
        #expect(decoded.comment?.map { decoded.string($0) }.contains { $0.contains("growth since") } == true)
        // The same snapshot twice: nothing grew.
        let none = try #require(try PprofTools.decode(older.pprof(comparedTo: older)))
        #expect(none.sample == nil)
    }

    @Test func aDeltaThatDoesNotFitIsRefused() throws {
        var older = Self.sample()
        older.traces[0].allocatedSize = Int.min + 1
        let newer = Self.sample()
        #expect { try newer.pprof(comparedTo: older) } throws: { error in
            (error as? AllocationTrackingError)?.code == .invalidArgument
                && "\(error)".contains("does not fit in an Int64")
        }
    }

    @Test(.enabled(if: PprofTools.hasGo, "go is not installed (apt-get install golang-go)"))
    func goToolPprofReadsHandBuiltProfilesWithoutAWord() throws {
        try PprofTools.withTemporaryDirectory { directory in
            let snapshot = Self.sample()
            let heap = directory.appendingPathComponent("heap.pb.gz")
            try snapshot.write(pprofTo: heap)
            let raw = PprofTools.parseRaw(try PprofTools.pprof(["-raw", heap.path]).text)
            #expect(raw.samples.map(\.values) == snapshot.traces.map {
                [$0.allocatedCount, $0.allocatedSize, $0.count, $0.size].map(Int64.init)
            })
            #expect(raw.mappings.first?.contains("/srv/My Service 48f5c23cfcf1980b5c1e83c5eb2369e9d396f2c6 [FN][FL][LN][IN]") == true,
                    "\(raw.mappings)")
            let top = PprofTools.parseTop(try PprofTools.pprof(["-top", "-unit=B", "-nodefraction=0", heap.path]).text)
            #expect(top.total == Int64(snapshot.totalSize))
            #expect(top.flat["Cache.makeBody(_:)"] == 10240)
            #expect(top.inline["Cache.makeBody(_:)"] == "(inline)")
            // The generic Swift name is shown whole (pprof's C++ heuristics would cut `<Array<Int>>`).
            #expect(top.flat["Box<Array<Int>>.store(_:)"] == 300, "\(top.text)")
            let allocs = PprofTools.parseTop(try PprofTools.pprof(["-sample_index=alloc_space", "-top", "-unit=B",
                                                                   "-nodefraction=0", heap.path]).text)
            #expect(allocs.total == Int64(snapshot.traces.reduce(0) { $0 + $1.allocatedSize }))
            #expect(allocs.flat["Box<Array<Int>>.store(_:)"] == 5300)

            // The delta, with negative values.
            var newer = snapshot
            newer.traces[1].size = 0
            newer.traces[1].count = 0
            let delta = directory.appendingPathComponent("delta.pb.gz")
            try newer.write(pprofTo: delta, .init())
            try newer.pprof(comparedTo: snapshot).write(to: delta.appendingPathExtension("2"))
            let deltaTop = PprofTools.parseTop(try PprofTools.pprof(["-top", "-unit=B", delta.path + ".2"]).text)
            #expect(deltaTop.shown == -300 && deltaTop.flat["Box<Array<Int>>.store(_:)"] == -300, "\(deltaTop.text)")
            // And -diff_base between the two full profiles says the same.
            let diff = PprofTools.parseTop(try PprofTools.pprof(["-top", "-unit=B", "-diff_base=" + heap.path, delta.path]).text)
            #expect(diff.flat["Box<Array<Int>>.store(_:)"] == -300, "\(diff.text)")
        }
    }

    /// A name that is its own mangled name (what the symbolicator gives a stripped library's frame, `<unknown>`,
    /// or a symbol it could not demangle) must reach the report as it is: pprof would shorten it with C++
    /// heuristics (`<unknown>` became an empty name) if the profile gave it as the system name too.
    @Test(.enabled(if: PprofTools.hasGo, "go is not installed (apt-get install golang-go)"))
    func namesEqualToTheirMangledNameAreShownWhole() throws {
        let unknown = Frame(function: "<unknown>", image: "libz.so.1", address: 0x7f00_0000_3000, mangledName: "<unknown>")
        let templated = Frame(function: "Pool<Int>::grow(unsigned long)", image: "libpool.so", address: 0x7f00_0000_4000,
                              mangledName: "Pool<Int>::grow(unsigned long)")
        let snapshot = Snapshot(traces: [
            Trace(traceback: Traceback(frames: [unknown, Self.main_]), size: 100, count: 1),
            Trace(traceback: Traceback(frames: [templated, Self.main_]), size: 200, count: 1),
        ], tracebackLimit: 8, images: [Self.main, Self.libc])
        try PprofTools.withTemporaryDirectory { directory in
            let file = directory.appendingPathComponent("names.pb.gz")
            try snapshot.write(pprofTo: file)
            let top = PprofTools.parseTop(try PprofTools.pprof(["-top", "-unit=B", file.path]).text)
            #expect(top.flat["<unknown>"] == 100, "\(top.text)")
            #expect(top.flat["Pool<Int>::grow(unsigned long)"] == 200, "\(top.text)")
        }
    }

    @Test(.enabled(if: PprofTools.hasGo && PprofTools.hasPython, "go or python3 is not installed"))
    func aVersion1FileExportsToo() throws {
        // A file from before totals and images: totals are the live values, mappings come from the frames'
        // image names only.
        let snapshot = try Snapshot(jsonData: Data(SnapshotFiles.version1File.utf8))
        #expect(snapshot.images.isEmpty)
        let profile = try snapshot.pprof()
        let decoded = try #require(try PprofTools.decode(profile))
        // strdup (libc.so.6) is above the attribution frame: its mapping appears with the allocator frames kept.
        let whole = try #require(try PprofTools.decode(snapshot.pprof(.init(leaf: .allocator))))
        let wholeNames = (whole.mapping ?? []).map { whole.string($0.filename) }
        #expect(Set(wholeNames) == ["libc.so.6", "App", "libfoo.so.1"], "\(wholeNames)")
        #expect((decoded.sample ?? []).map { $0.value ?? [] } == snapshot.traces.filter { $0.size != 0 || $0.count != 0 }.map {
            [$0.count, $0.size, $0.count, $0.size].map(Int64.init)
        })
        let names = (decoded.mapping ?? []).map { decoded.string($0.filename) }
        #expect(Set(names) == ["App", "libfoo.so.1"], "\(names)")
        #expect((decoded.mapping ?? []).allSatisfy { $0.has_functions == true && $0.has_line_numbers == true })
        try PprofTools.withTemporaryDirectory { directory in
            let file = directory.appendingPathComponent("v1.pb.gz")
            try profile.write(to: file)
            let top = PprofTools.parseTop(try PprofTools.pprof(["-top", "-unit=B", "-nodefraction=0", file.path]).text)
            #expect(top.total == Int64(snapshot.totalSize))
            _ = try PprofTools.pprof(["-raw", file.path])
            _ = try PprofTools.pprof(["-traces", file.path])
        }
    }

    // MARK: - Files

    @Test func writeMakesAPrivateFileAndNeverFollowsALink() throws {
        try PprofTools.withTemporaryDirectory { directory in
            let snapshot = Self.sample()
            let url = directory.appendingPathComponent("heap.pb.gz")
            try snapshot.write(pprofTo: url)
            var info = stat()
            #expect(stat(url.path, &info) == 0)
            #expect(info.st_mode & 0o777 == 0o600)  // not 0644: the mode is 0600, not 0666 less the umask
            // The same bytes as pprof() (the encoding is deterministic).
            #expect(try Data(contentsOf: url) == (try snapshot.pprof()))

            func refused(_ url: URL, mentioning: String) {
                #expect { try snapshot.write(pprofTo: url) } throws: { error in
                    (error as? AllocationTrackingError)?.code == .cannotWriteFile
                        && "\(error)".contains(url.path) && "\(error)".contains(mentioning)
                }
            }
            // An existing profile is replaced whole (as write(to:) replaces a snapshot), still 0600, and nothing else
            // is left in the directory.
            try Data("old".utf8).write(to: url)
            try snapshot.write(pprofTo: url)
            #expect(try Data(contentsOf: url) == (try snapshot.pprof()))
            #expect(stat(url.path, &info) == 0 && info.st_mode & 0o777 == 0o600)
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["heap.pb.gz"])
            // A symlink, even dangling, is never followed.
            let target = directory.appendingPathComponent("target")
            let link = directory.appendingPathComponent("link")
            try FileManager.default.createSymbolicLink(at: link, withDestinationURL: target)
            refused(link, mentioning: "symbolic link")
            #expect(!FileManager.default.fileExists(atPath: target.path))
            refused(directory.appendingPathComponent("missing/heap.pb.gz"), mentioning: "No such file or directory")
        }
    }

    // MARK: - Folded stacks

    @Test func foldedStacksRootFirstWithTheValueOfTheType() throws {
        let snapshot = Self.sample()
        #expect(try snapshot.foldedStacks() == """
            <no frames> 7
            main;Box<Array<Int>>.store(_:) 300
            main;Cache.insert(_:for:);Cache.makeBody(_:) 10240
            main;libfoo.so.1+0x1f2e 64
            swift_slowAlloc;malloc 96

            """)
        // Freed stacks count for alloc types; the unresolved address is named by it.
        #expect(try snapshot.foldedStacks(.allocSpace).contains("0x7f9900000001;Box<Array<Int>>.store(_:) 5000\n"))
        #expect(try snapshot.foldedStacks(.allocObjects).contains("main;Cache.insert(_:for:);Cache.makeBody(_:) 40\n"))
        #expect(try snapshot.foldedStacks(.inuseObjects).contains("swift_slowAlloc;malloc 2\n"))
        #expect(try snapshot.foldedStacks(leaf: .allocator).contains(
            "main;Cache.insert(_:for:);Cache.makeBody(_:);Array.init(repeating:count:);swift_slowAlloc;malloc 10240\n"))
    }

    @Test func foldedStacksAddUpStacksThatFoldTogetherAndEscapeSeparators() throws {
        let odd = Frame(function: "weird;name\nhere", address: 1)
        let snapshot = Snapshot(traces: [
            Trace(traceback: Traceback(frames: [Self.malloc, Self.insert]), size: 5, count: 1),
            Trace(traceback: Traceback(frames: [Self.slowAlloc, Self.insert]), size: 6, count: 1),
            Trace(traceback: Traceback(frames: [odd]), size: 1, count: 1),
        ], tracebackLimit: 8)
        #expect(try snapshot.foldedStacks() == "Cache.insert(_:for:) 11\nweird,name here 1\n")
        var huge = snapshot
        huge.traces[0].size = Int.max
        #expect { try huge.foldedStacks() } throws: { "\($0)".contains("adds up beyond") }
    }
}

import AllocationTracking
import Foundation
import Testing

/// Saving and loading snapshots (`write(to:)`, `Snapshot(contentsOf:)`): a lossless round trip, the documented
/// header, and hostile files that must throw `.invalidSnapshotFile` with a clear message and never crash.
/// None of these tests starts the tracker.
@Suite struct SnapshotFiles {
    // MARK: - Helpers

    /// A fresh directory for one test's files.
    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("SnapshotFiles-\(getpid())-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static func withTemporaryDirectory<R>(_ body: (URL) throws -> R) throws -> R {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        return try body(directory)
    }

    static let unresolved = Frame(address: 0x7f12_3456_789a)
    static let imageOnly = Frame(image: "libfoo.so.1", address: 0x7f12_0000_1f2e, imageOffset: 0x1f2e)
    static let full = Frame(function: "Cache.insert(_:for:)", file: "/src/Sources/App/Cache.swift", line: 42,
                            image: "App", address: 0x5555_0000_5100, mangledName: "$s3App5CacheC6insert_3forySS_SitF",
                            imageOffset: 0x5100)
    static let inlined = Frame(function: "Array.append(_:)", file: "/src/Sources/App/Cache.swift", line: 44,
                               image: "App", address: 0x5555_0000_5100, mangledName: nil, imageOffset: 0x5100,
                               isInlined: true)
    static let cFunction = Frame(function: "strdup", image: "libc.so.6", address: 0x7f00_0000_2000,
                                 mangledName: "strdup", imageOffset: 0x2000)
    static let odd = Frame(function: "weird \"name\"\n\t\\ é 路径 🙂", file: "/tmp/ü/a b/\"q\".swift", line: 0,
                           image: "", address: .max, imageOffset: .max)
    static let byHand = Frame(file: "a.py", line: 2)

    /// A snapshot with every kind of field: frames with nil fields, inlined frames, shared frames, an empty
    /// traceback, a truncated one.
    /// `withTotals: false`: the traces as they were before traces had totals (the totals default to the live
    /// values), and no images — what the version 1 fixture holds.
    static func sample(moment: Snapshot.Moment = .peak, tracedMemory: TracedMemory? = nil,
                       executable: String? = "My Service", withTotals: Bool = true) -> Snapshot {
        Snapshot(traces: [
            Trace(traceback: Traceback(frames: [cFunction, inlined, full, unresolved], totalFrames: 40), size: 10240,
                  count: 10, allocatedSize: withTotals ? 1 << 50 : nil, allocatedCount: withTotals ? 1_000_000 : nil),
            Trace(traceback: Traceback(frames: [imageOnly, full], totalFrames: 2), size: 1 << 40, count: 3),
            Trace(traceback: Traceback(frames: [odd]), size: 0, count: 1, allocatedSize: withTotals ? 0 : nil,
                  allocatedCount: withTotals ? 7 : nil),
            Trace(traceback: Traceback(frames: [], totalFrames: 0), size: 7, count: 1),
            Trace(traceback: Traceback(frames: [byHand, byHand, full], totalFrames: 1024), size: 66, count: 1),
        ], tracebackLimit: 32, droppedAllocations: 3, moment: moment, tracedMemory: tracedMemory,
           timestamp: 1_795_000_000.25 + 0.1 + 0.2, processID: 4242, executable: executable,
           images: withTotals ? images : [])
    }

    static let images = [
        Snapshot.Image(path: "/srv/My Service", start: 0x5555_0000_1000, end: 0x5555_0080_0000, fileOffset: 0x1000,
                       buildID: "48f5c23cfcf1980b5c1e83c5eb2369e9d396f2c6"),
        Snapshot.Image(path: "/usr/lib/x86_64-linux-gnu/libc.so.6", start: 0x7f00_0000_0000, end: .max,
                       fileOffset: 0),
    ]

    /// A file written by the code before format version 2 (`sample(tracedMemory: memory)`, as it wrote it).
    static let version1File = #"""
        {"droppedAllocations":3,"executable":"My Service","format":"swift-allocation-tracking-snapshot","frames":[{"address":139637976735744,"function":"strdup","image":"libc.so.6","imageOffset":8192,"isInlined":false,"line":0,"mangledName":"strdup"},{"address":93823560601856,"file":"\/src\/Sources\/App\/Cache.swift","function":"Array.append(_:)","image":"App","imageOffset":20736,"isInlined":true,"line":44},{"address":93823560601856,"file":"\/src\/Sources\/App\/Cache.swift","function":"Cache.insert(_:for:)","image":"App","imageOffset":20736,"isInlined":false,"line":42,"mangledName":"$s3App5CacheC6insert_3forySS_SitF"},{"address":139716164221082,"isInlined":false,"line":0},{"address":139715286146862,"image":"libfoo.so.1","imageOffset":7982,"isInlined":false,"line":0},{"address":18446744073709551615,"file":"\/tmp\/ü\/a b\/\"q\".swift","function":"weird \"name\"\n\t\\ é 路径 🙂","image":"","imageOffset":18446744073709551615,"isInlined":false,"line":0},{"address":0,"file":"a.py","isInlined":false,"line":2}],"moment":"peak","processID":4242,"timestamp":1795000000.55,"tracebackLimit":32,"tracedMemory":{"current":1099511638339,"droppedAllocations":3,"liveBlocks":16,"peak":1099511700000,"totalAllocatedBytes":9999999999,"totalAllocations":123456},"traces":[{"count":10,"frames":[0,1,2,3],"size":10240,"totalFrames":40},{"count":3,"frames":[4,2],"size":1099511627776,"totalFrames":2},{"count":1,"frames":[5],"size":0,"totalFrames":1},{"count":1,"frames":[],"size":7,"totalFrames":0},{"count":1,"frames":[6,6,2],"size":66,"totalFrames":1024}],"version":1}
        """#

    static let memory = TracedMemory(current: 1_099_511_638_339, peak: 1_099_511_700_000, liveBlocks: 16,
                                     totalAllocations: 123_456, totalAllocatedBytes: 9_999_999_999,
                                     droppedAllocations: 3)

    static func expectEqual(_ a: Snapshot, _ b: Snapshot, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(a.traces == b.traces, sourceLocation: sourceLocation)
        #expect(a.tracebackLimit == b.tracebackLimit, sourceLocation: sourceLocation)
        #expect(a.droppedAllocations == b.droppedAllocations, sourceLocation: sourceLocation)
        #expect(a.moment == b.moment, sourceLocation: sourceLocation)
        #expect(a.tracedMemory == b.tracedMemory, sourceLocation: sourceLocation)
        #expect(a.timestamp == b.timestamp, sourceLocation: sourceLocation)
        #expect(a.processID == b.processID, sourceLocation: sourceLocation)
        #expect(a.executable == b.executable, sourceLocation: sourceLocation)
        #expect(a.images == b.images, sourceLocation: sourceLocation)
    }

    /// The `AllocationTrackingError` that `body` throws, recorded as an issue when it throws anything else or
    /// nothing.
    static func invalidFileError(_ body: () throws -> Snapshot, sourceLocation: SourceLocation = #_sourceLocation)
        -> AllocationTrackingError? {
        do {
            let snapshot = try body()
            Issue.record("loaded a snapshot of \(snapshot.traces.count) traces from hostile input",
                         sourceLocation: sourceLocation)
        } catch let error as AllocationTrackingError {
            #expect(error.code == .invalidSnapshotFile, sourceLocation: sourceLocation)
            return error
        } catch {
            Issue.record("threw \(type(of: error)), not AllocationTrackingError: \(error)", sourceLocation: sourceLocation)
        }
        return nil
    }

    /// Loads `data` from memory and from a file; both must throw `.invalidSnapshotFile` with a message that
    /// names the source and mentions `mention`.
    static func expectInvalid(_ data: Data, mentioning mention: String? = nil, maximumSize: Int = Snapshot.defaultMaximumFileSize,
                              in directory: URL? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
        if let error = invalidFileError({ try Snapshot(jsonData: data, maximumSize: maximumSize) },
                                        sourceLocation: sourceLocation) {
            #expect(error.message.contains("snapshot data"), "\(error.message)", sourceLocation: sourceLocation)
            if let mention {
                #expect(error.message.contains(mention), "\(error.message)", sourceLocation: sourceLocation)
            }
        }
        guard let directory else { return }
        let url = directory.appendingPathComponent("hostile-\(UUID().uuidString).json")
        do { try data.write(to: url) } catch {
            Issue.record("cannot write \(url.path): \(error)", sourceLocation: sourceLocation)
            return
        }
        defer { try? FileManager.default.removeItem(at: url) }
        if let error = invalidFileError({ try Snapshot(contentsOf: url, maximumSize: maximumSize) },
                                        sourceLocation: sourceLocation) {
            #expect(error.message.contains(url.path), "\(error.message)", sourceLocation: sourceLocation)
            if let mention {
                #expect(error.message.contains(mention), "\(error.message)", sourceLocation: sourceLocation)
            }
            #expect(error.description.hasPrefix("AllocationTrackingError.invalidSnapshotFile: "), sourceLocation: sourceLocation)
        }
    }

    /// Loading `data` either works or throws `AllocationTrackingError`; nothing else, and no crash.
    static func loadsOrThrowsCleanly(_ data: Data, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let snapshot = try Snapshot(jsonData: data)
            // Whatever loaded must be usable.
            _ = snapshot.totalSize
            _ = snapshot.totalCount
            for key in GroupingKey.allCases {
                _ = try snapshot.statistics(groupedBy: key)
                if key != .traceback { _ = try snapshot.statistics(groupedBy: key, cumulative: true) }
            }
            _ = try snapshot.report()
            _ = try snapshot.report(comparedTo: sample())
        } catch let error as AllocationTrackingError {
            #expect(error.code == .invalidSnapshotFile, sourceLocation: sourceLocation)
        } catch {
            Issue.record("threw \(type(of: error)): \(error)", sourceLocation: sourceLocation)
        }
    }

    /// A hand-written version 1 document; `fields` replaces the `<NAME>` placeholders.
    static func document(_ fields: [String: String] = [:]) -> Data {
        var values = [
            "FORMAT": "\"swift-allocation-tracking-snapshot\"", "VERSION": "1", "MOMENT": "\"now\"",
            "TIMESTAMP": "1795000000.25", "PID": "4242", "LIMIT": "32", "DROPPED": "0", "CURRENT": "10",
            "ADDRESS": "94000000000", "LINE": "42", "OFFSET": "4096", "INLINED": "false", "SIZE": "10",
            "COUNT": "1", "TOTAL": "14", "INDEX": "0", "MORE": "", "EXTRA": "", "TRACE": "",
        ]
        values.merge(fields) { $1 }
        var text = """
            {"format":<FORMAT>,"version":<VERSION>,"moment":<MOMENT>,"timestamp":<TIMESTAMP>,"processID":<PID>,\
            "executable":"MyService","tracebackLimit":<LIMIT>,"droppedAllocations":<DROPPED>,<EXTRA>\
            "tracedMemory":{"current":<CURRENT>,"peak":20,"liveBlocks":1,"totalAllocations":2,\
            "totalAllocatedBytes":30,"droppedAllocations":0},\
            "frames":[{"address":<ADDRESS>,"function":"Cache.insert(_:for:)","file":"/src/Cache.swift",\
            "line":<LINE>,"image":"MyService","imageOffset":<OFFSET>,"isInlined":<INLINED>}],\
            "traces":[{<TRACE>"size":<SIZE>,"count":<COUNT>,"totalFrames":<TOTAL>,"frames":[<INDEX>]}<MORE>]}
            """
        for (name, value) in values { text = text.replacingOccurrences(of: "<\(name)>", with: value) }
        return Data(text.utf8)
    }

    /// The hand-written document as version 2: with images and the trace's totals (`ASIZE`, `ACOUNT`, `START`,
    /// `END`, `BUILDID` placeholders).
    static func document2(_ fields: [String: String] = [:]) -> Data {
        var own = ["ASIZE": "30", "ACOUNT": "3", "START": "4096", "END": "8192", "BUILDID": "\"0a1b\""]
        var outer = [
            "VERSION": "2",
            "EXTRA": "\"images\":[{\"path\":\"/srv/MyService\",\"start\":<START>,\"end\":<END>,\"fileOffset\":0,"
                + "\"buildID\":<BUILDID>}],",
            "TRACE": "\"allocatedSize\":<ASIZE>,\"allocatedCount\":<ACOUNT>,",
        ]
        for (name, value) in fields {
            if own[name] != nil { own[name] = value } else { outer[name] = value }
        }
        var text = String(decoding: document(outer), as: UTF8.self)
        for (name, value) in own { text = text.replacingOccurrences(of: "<\(name)>", with: value) }
        return Data(text.utf8)
    }

    // MARK: - Round trip

    @Test(arguments: [(Snapshot.Moment.peak, true), (.now, false), (.peak, false), (.now, true)])
    func roundTrip(moment: Snapshot.Moment, withMemory: Bool) throws {
        let snapshot = Self.sample(moment: moment, tracedMemory: withMemory ? Self.memory : nil,
                                   executable: withMemory ? "My Service" : nil)
        try Self.withTemporaryDirectory { directory in
            let url = directory.appendingPathComponent("snapshot.json")
            try snapshot.write(to: url)
            let loaded = try Snapshot(contentsOf: url)
            Self.expectEqual(loaded, snapshot)
            // Written again (atomically over the old file), it is the same file.
            try loaded.write(to: url)
            #expect(try Data(contentsOf: url) == snapshot.jsonData())
            Self.expectEqual(try Snapshot(contentsOf: url), snapshot)
            // And the analysis of the loaded snapshot is the same.
            for key in GroupingKey.allCases {
                #expect(try loaded.statistics(groupedBy: key) == snapshot.statistics(groupedBy: key))
            }
            #expect(try loaded.report() == snapshot.report())
        }
        Self.expectEqual(try Snapshot(jsonData: snapshot.jsonData()), snapshot)
    }

    @Test func emptySnapshotRoundTrip() throws {
        let snapshot = Snapshot(traces: [], tracebackLimit: 1, timestamp: 0, processID: 1)
        Self.expectEqual(try Snapshot(jsonData: snapshot.jsonData()), snapshot)
        #expect(try snapshot.report() == "[ Top 10 ]\nTotal: size=0 B, count=0\ndropped allocations: 0\n")
    }

    @Test func theFileIsTheDocumentedJSON() throws {
        let snapshot = Self.sample(tracedMemory: Self.memory)
        let data = try snapshot.jsonData()
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("\"format\":\"swift-allocation-tracking-snapshot\""))
        #expect(text.contains("\"version\":2"))
        #expect(Snapshot.fileFormatVersion == 2)

        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(object["moment"] as? String == "peak")
        #expect(object["tracebackLimit"] as? Int == 32)
        #expect(object["droppedAllocations"] as? Int == 3)
        #expect(object["processID"] as? Int == 4242)
        #expect(object["executable"] as? String == "My Service")
        let memory = try #require(object["tracedMemory"] as? [String: Any])
        #expect(Set(memory.keys) == ["current", "peak", "liveBlocks", "totalAllocations", "totalAllocatedBytes",
                                     "droppedAllocations"])
        // Frames are stored once and referenced by index, most recent first.
        let frames = try #require(object["frames"] as? [[String: Any]])
        let uniqueFrames = Set(snapshot.traces.flatMap(\.traceback.frames))
        #expect(frames.count == uniqueFrames.count)
        let traces = try #require(object["traces"] as? [[String: Any]])
        #expect(traces.count == 5)
        #expect(traces[0]["frames"] as? [Int] == [0, 1, 2, 3])
        #expect(traces[1]["frames"] as? [Int] == [4, 2])
        #expect(traces[3]["frames"] as? [Int] == [])
        #expect(traces[4]["frames"] as? [Int] == [6, 6, 2])
        #expect(traces[0]["totalFrames"] as? Int == 40)
        #expect(traces[0]["size"] as? Int == 10240 && traces[0]["count"] as? Int == 10)
        // Version 2: every trace's totals, and the images.
        #expect(traces[0]["allocatedSize"] as? Int == 1 << 50 && traces[0]["allocatedCount"] as? Int == 1_000_000)
        #expect(traces[1]["allocatedSize"] as? Int == 1 << 40 && traces[1]["allocatedCount"] as? Int == 3)
        let images = try #require(object["images"] as? [[String: Any]])
        #expect(images.count == 2)
        #expect(images[0]["path"] as? String == "/srv/My Service")
        #expect(images[0]["start"] as? Int == 0x5555_0000_1000 && images[0]["end"] as? Int == 0x5555_0080_0000)
        #expect(images[0]["fileOffset"] as? Int == 0x1000)
        #expect(images[0]["buildID"] as? String == "48f5c23cfcf1980b5c1e83c5eb2369e9d396f2c6")
        #expect(images[1].keys.sorted() == ["end", "fileOffset", "path", "start"])  // no build id: absent
        // Absent fields are absent, not null.
        #expect(frames[3].keys.sorted() == ["address", "isInlined", "line"])
        #expect(!text.contains("null"))
        // No tracedMemory, no executable: absent.
        let bare = String(decoding: try Self.sample(tracedMemory: nil, executable: nil).jsonData(), as: UTF8.self)
        #expect(!bare.contains("tracedMemory") && !bare.contains("executable") && !bare.contains("null"))
    }

    /// The hand-written document the hostile cases start from is valid, and unknown keys are ignored.
    @Test func theHandWrittenDocumentLoads() throws {
        let snapshot = try Snapshot(jsonData: Self.document())
        #expect(snapshot.traces == [Trace(traceback: Traceback(frames: [
            Frame(function: "Cache.insert(_:for:)", file: "/src/Cache.swift", line: 42, image: "MyService",
                  address: 94_000_000_000, imageOffset: 4096),
        ], totalFrames: 14), size: 10, count: 1)])
        #expect(snapshot.moment == .now && snapshot.timestamp == 1_795_000_000.25 && snapshot.executable == "MyService")
        #expect(snapshot.tracedMemory == TracedMemory(current: 10, peak: 20, liveBlocks: 1, totalAllocations: 2,
                                                      totalAllocatedBytes: 30, droppedAllocations: 0))
        let extra = try Snapshot(jsonData: Self.document([
            "EXTRA": "\"laterAddition\":{\"a\":[[[[[[[[1,2,{\"b\":null}]]]]]]]],\"c\":\"d\"},",
        ]))
        #expect(extra.traces == snapshot.traces)
        // Minimal frames: only address, line and isInlined.
        let minimal = """
            {"format":"swift-allocation-tracking-snapshot","version":1,"moment":"peak","timestamp":0,"processID":1,\
            "tracebackLimit":1,"droppedAllocations":0,"frames":[{"address":0,"line":0,"isInlined":true}],\
            "traces":[{"size":1,"count":1,"totalFrames":1,"frames":[0,0]}]}
            """
        let loaded = try Snapshot(jsonData: Data(minimal.utf8))
        #expect(loaded.traces == [Trace(traceback: Traceback(frames: [Frame(address: 0, isInlined: true),
                                                                      Frame(address: 0, isInlined: true)],
                                                             totalFrames: 1), size: 1, count: 1)])
        #expect(loaded.tracedMemory == nil && loaded.executable == nil && loaded.moment == .peak)
    }

    /// A version 2 document by hand: the totals and images load as written.
    @Test func theHandWrittenVersion2DocumentLoads() throws {
        let snapshot = try Snapshot(jsonData: Self.document2())
        #expect(snapshot.traces.map(\.allocatedSize) == [30] && snapshot.traces.map(\.allocatedCount) == [3])
        #expect(snapshot.traces.map(\.size) == [10] && snapshot.traces.map(\.count) == [1])
        #expect(snapshot.images == [Snapshot.Image(path: "/srv/MyService", start: 4096, end: 8192, buildID: "0a1b")])
        #expect(try Snapshot(jsonData: Self.document2(["BUILDID": "null"])).images[0].buildID == nil)
    }

    /// A file as the code wrote it before version 2 still loads: every field as it was, the totals equal to the
    /// live values (the least they can have been), no images.
    @Test func version1FilesStillLoad() throws {
        let loaded = try Snapshot(jsonData: Data(Self.version1File.utf8))
        let original = Self.sample(tracedMemory: Self.memory, withTotals: false)
        Self.expectEqual(loaded, original)
        for trace in loaded.traces {
            #expect(trace.allocatedSize == trace.size && trace.allocatedCount == trace.count)
        }
        #expect(loaded.images.isEmpty)
        #expect(try loaded.report() == original.report())
        try Self.withTemporaryDirectory { directory in
            let url = directory.appendingPathComponent("v1.json")
            try Data(Self.version1File.utf8).write(to: url)
            Self.expectEqual(try Snapshot(contentsOf: url), original)
            // Saved again, it is a version 2 file with those totals.
            try loaded.write(to: url)
            #expect(String(decoding: try Data(contentsOf: url), as: UTF8.self).contains("\"version\":2"))
            Self.expectEqual(try Snapshot(contentsOf: url), original)
        }
        // The hand-written version 1 document: a version 1 file's totals are its live values even where it has
        // keys of the later version (they were not part of version 1).
        let mixed = try Snapshot(jsonData: Self.document(["TRACE": "\"allocatedSize\":999,\"allocatedCount\":9,"]))
        #expect(mixed.traces[0].allocatedSize == 10 && mixed.traces[0].allocatedCount == 1)
    }

    /// A trace whose blocks were all freed (count 0) keeps its totals through a file.
    @Test func freedSitesRoundTrip() throws {
        var snapshot = Self.sample(moment: .now, tracedMemory: Self.memory)
        snapshot.traces.append(Trace(traceback: Traceback(frames: [Self.full, Self.cFunction]), size: 0, count: 0,
                                     allocatedSize: 4000, allocatedCount: 40))
        let loaded = try Snapshot(jsonData: snapshot.jsonData())
        Self.expectEqual(loaded, snapshot)
        #expect(loaded.traces.last?.allocatedSize == 4000 && loaded.traces.last?.allocatedCount == 40)
        #expect(loaded.traces.last?.count == 0)
    }

    // MARK: - Hostile input

    @Test func emptyFile() throws {
        try Self.withTemporaryDirectory { directory in
            Self.expectInvalid(Data(), mentioning: "empty", in: directory)
        }
    }

    @Test func truncatedFiles() throws {
        let data = try Self.sample(tracedMemory: Self.memory).jsonData()
        // Every prefix from memory; a few from files.
        for length in 0..<data.count {
            Self.expectInvalid(data.prefix(length))
        }
        try Self.withTemporaryDirectory { directory in
            for length in [1, 2, 20, data.count / 3, data.count / 2, data.count - 2, data.count - 1] {
                Self.expectInvalid(data.prefix(length), in: directory)
            }
        }
    }

    @Test func randomBytes() throws {
        var generator = SeededGenerator(seed: 42)
        try Self.withTemporaryDirectory { directory in
            for n in 0..<300 {
                let count = Int.random(in: 1...512, using: &generator)
                var bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
                if n % 3 == 0 { bytes[0] = UInt8(ascii: "{") }  // get past the first byte
                Self.expectInvalid(Data(bytes), in: n < 20 ? directory : nil)
            }
        }
    }

    /// Random corruptions of a valid file: whatever survives must load into something usable; everything
    /// else throws `AllocationTrackingError`.
    @Test func mutatedFiles() throws {
        let data = try Self.sample(tracedMemory: Self.memory).jsonData()
        let interesting = Array("{}[]\",:0123456789-+.eE \\/nultrfa".utf8)
        var generator = SeededGenerator(seed: 1234)
        for _ in 0..<1500 {
            var bytes = [UInt8](data)
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                let i = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<4, using: &generator) {
                case 0: bytes[i] = interesting.randomElement(using: &generator)!
                case 1: bytes[i] = UInt8.random(in: 0...255, using: &generator)
                case 2: bytes.remove(at: i)
                default: bytes.insert(interesting.randomElement(using: &generator)!, at: i)
                }
            }
            Self.loadsOrThrowsCleanly(Data(bytes))
        }
    }

    @Test func validJSONOfAnotherShape() throws {
        try Self.withTemporaryDirectory { directory in
            for text in ["[]", "{}", "\"snapshot\"", "42", "null", "true", "{\"format\":1}", "{\"snapshot\":{}}",
                         "{\"format\":\"swift-allocation-tracking-snapshot\"}", "[{\"format\":\"swift-allocation-tracking-snapshot\",\"version\":1}]",
                         "{\"format\":\"swift-allocation-tracking-snapshot\",\"version\":\"1\"}",
                         "{\"format\":\"swift-allocation-tracking-snapshot\",\"version\":1}",
                         "{\"format\":\"swift-allocation-tracking-snapshot\",\"version\":1,\"traces\":{}}"] {
                Self.expectInvalid(Data(text.utf8), in: directory)
            }
            // A field missing from a real document names it.
            let object = try #require(try JSONSerialization.jsonObject(with: Self.sample().jsonData()) as? [String: Any])
            for key in ["moment", "timestamp", "processID", "tracebackLimit", "droppedAllocations", "frames", "traces",
                        "images"] {
                var copy = object
                copy.removeValue(forKey: key)
                Self.expectInvalid(try JSONSerialization.data(withJSONObject: copy), mentioning: key, in: directory)
            }
            // Version 2 traces carry their totals.
            for key in ["allocatedSize", "allocatedCount"] {
                var copy = object
                var traces = try #require(copy["traces"] as? [[String: Any]])
                traces[2].removeValue(forKey: key)
                copy["traces"] = traces
                Self.expectInvalid(try JSONSerialization.data(withJSONObject: copy), mentioning: "traces.2")
            }
        }
    }

    @Test func otherVersionsAndFormats() throws {
        try Self.withTemporaryDirectory { directory in
            Self.expectInvalid(Self.document(["VERSION": "3"]), mentioning: "version 3", in: directory)
            Self.expectInvalid(Self.document2(["VERSION": "3"]), mentioning: "version 3")
            Self.expectInvalid(Self.document(["VERSION": "0"]), mentioning: "version 0", in: directory)
            Self.expectInvalid(Self.document(["VERSION": "-1"]), mentioning: "version -1")
            Self.expectInvalid(Self.document(["FORMAT": "\"swift-allocation-tracking-report\""]),
                               mentioning: "swift-allocation-tracking-report", in: directory)
            Self.expectInvalid(Self.document(["FORMAT": "\"\""]), mentioning: "format")
            // A later version is refused even when its body is unreadable to this version.
            Self.expectInvalid(Data("{\"format\":\"swift-allocation-tracking-snapshot\",\"version\":3,\"traces\":7}".utf8),
                               mentioning: "version 3")
        }
    }

    @Test func inconsistentValues() throws {
        try Self.withTemporaryDirectory { directory in
            Self.expectInvalid(Self.document(["SIZE": "-1"]), mentioning: "negative", in: directory)
            Self.expectInvalid(Self.document(["COUNT": "-1"]), mentioning: "negative", in: directory)
            Self.expectInvalid(Self.document(["TOTAL": "-1"]), mentioning: "negative")
            Self.expectInvalid(Self.document(["LIMIT": "-1"]), mentioning: "negative")
            Self.expectInvalid(Self.document(["DROPPED": "-1"]), mentioning: "negative")
            Self.expectInvalid(Self.document(["SIZE": "-9223372036854775808"]), mentioning: "negative")
            Self.expectInvalid(Self.document(["INDEX": "1"]), mentioning: "frame 1", in: directory)
            Self.expectInvalid(Self.document(["INDEX": "-1"]), mentioning: "frame -1", in: directory)
            Self.expectInvalid(Self.document(["INDEX": "0,9223372036854775807"]), mentioning: "frame 9223372036854775807")
            Self.expectInvalid(Self.document(["INDEX": "-9223372036854775808"]), mentioning: "frame -9223372036854775808")
            Self.expectInvalid(Self.document(["MOMENT": "\"later\""]))
            Self.expectInvalid(Self.document(["MOMENT": "null"]))
            Self.expectInvalid(Self.document(["INLINED": "1"]))
            Self.expectInvalid(Self.document(["ADDRESS": "-1"]))
            Self.expectInvalid(Self.document(["PID": "\"4242\""]))
            Self.expectInvalid(Self.document(["INDEX": "\"0\""]))
            Self.expectInvalid(Self.document(["INDEX": "0.5"]))
            Self.expectInvalid(Self.document(["COUNT": "1.5"]))
            Self.expectInvalid(Self.document(["SIZE": "null"]))
            // Version 2's fields.
            Self.expectInvalid(Self.document2(["ASIZE": "-1"]), mentioning: "negative", in: directory)
            Self.expectInvalid(Self.document2(["ACOUNT": "-1"]), mentioning: "negative")
            Self.expectInvalid(Self.document2(["ASIZE": "1.5"]))
            Self.expectInvalid(Self.document2(["ACOUNT": "null"]))
            Self.expectInvalid(Self.document2(["START": "8193"]), mentioning: "image 0 ends before it starts", in: directory)
            Self.expectInvalid(Self.document2(["START": "-1"]))
            Self.expectInvalid(Self.document2(["END": "18446744073709551616"]))
            Self.expectInvalid(Self.document2(["BUILDID": "\"0a1\""]), mentioning: "build id")
            Self.expectInvalid(Self.document2(["BUILDID": "\"0A1B\""]), mentioning: "build id")
            Self.expectInvalid(Self.document2(["BUILDID": "\"0g1b\""]), mentioning: "build id")
            Self.expectInvalid(Self.document2(["BUILDID": "7"]))
        }
    }

    /// Sizes and counts whose sums do not fit an `Int` would trap in `totalSize` or in statistics later:
    /// refused when loading.
    @Test func sizesThatOverflowTheirSums() throws {
        let max = "9223372036854775807"
        let another = ",{\"size\":\(max),\"count\":1,\"totalFrames\":1,\"frames\":[0]}"
        Self.expectInvalid(Self.document(["SIZE": max, "MORE": another]), mentioning: "too large")
        Self.expectInvalid(Self.document(["COUNT": max, "MORE": ",{\"size\":1,\"count\":1,\"totalFrames\":1,\"frames\":[0]}"]),
                           mentioning: "too large")
        // Cumulative statistics count a trace once per frame.
        Self.expectInvalid(Self.document(["SIZE": max, "INDEX": "0,0"]), mentioning: "too large")
        // Alone, the largest size is fine.
        let single = try Snapshot(jsonData: Self.document(["SIZE": max]))
        #expect(single.totalSize == Int.max)
        #expect(try single.statistics(groupedBy: .line, cumulative: true).map(\.size) == [Int.max])
        // The totals' sums must fit too.
        let anotherTotal = ",{\"allocatedSize\":\(max),\"allocatedCount\":1,\"size\":1,\"count\":1,\"totalFrames\":1,\"frames\":[0]}"
        Self.expectInvalid(Self.document2(["ASIZE": max, "MORE": anotherTotal]), mentioning: "too large")
        let anotherCount = ",{\"allocatedSize\":1,\"allocatedCount\":\(max),\"size\":1,\"count\":1,\"totalFrames\":1,\"frames\":[0]}"
        Self.expectInvalid(Self.document2(["ACOUNT": "1", "MORE": anotherCount]), mentioning: "too large")
        let largestTotal = try Snapshot(jsonData: Self.document2(["ASIZE": max, "ACOUNT": max]))
        #expect(largestTotal.traces[0].allocatedSize == Int.max && largestTotal.traces[0].allocatedCount == Int.max)
    }

    @Test func hugeNumbers() throws {
        try Self.withTemporaryDirectory { directory in
            for (field, value) in [
                ("SIZE", "1e400"), ("SIZE", "18446744073709551616"), ("SIZE", "9223372036854775808"),
                ("COUNT", "1e400"), ("COUNT", "18446744073709551616"), ("TOTAL", "1e400"),
                ("LIMIT", "18446744073709551616"), ("DROPPED", "1e400"), ("CURRENT", "18446744073709551616"),
                ("VERSION", "18446744073709551616"), ("VERSION", "1e400"), ("VERSION", "1.0000000000000000001e1"),
                ("INDEX", "18446744073709551616"), ("INDEX", "1e400"), ("LINE", "1e400"),
                ("LINE", "18446744073709551616"), ("ADDRESS", "18446744073709551616"), ("OFFSET", "1e400"),
                ("PID", "1e400"), ("TIMESTAMP", "1e400"), ("TIMESTAMP", "-1e400"),
                ("SIZE", "1" + String(repeating: "0", count: 5000)),
            ] {
                Self.expectInvalid(Self.document([field: value]), in: field == "SIZE" ? directory : nil)
            }
        }
        // The largest values that fit load.
        let largest = try Snapshot(jsonData: Self.document(["ADDRESS": "18446744073709551615", "OFFSET": "18446744073709551615",
                                                             "LINE": "9223372036854775807", "TIMESTAMP": "1.7976931348623157e308"]))
        #expect(largest.traces[0].traceback.frames[0].address == .max)
        #expect(largest.traces[0].traceback.frames[0].imageOffset == .max)
        #expect(largest.traces[0].traceback.frames[0].line == .max)
        #expect(largest.timestamp == .greatestFiniteMagnitude)
    }

    @Test func deeplyNestedInput() throws {
        let depth = 100_000
        let open = String(repeating: "[", count: depth), close = String(repeating: "]", count: depth)
        try Self.withTemporaryDirectory { directory in
            Self.expectInvalid(Data(open.utf8), mentioning: "nest", in: directory)
            Self.expectInvalid(Data((open + close).utf8), mentioning: "nest", in: directory)
            Self.expectInvalid(Data(("{\"format\":" + open).utf8), mentioning: "nest")
            Self.expectInvalid(Data(String(repeating: "{\"a\":", count: depth).utf8), mentioning: "nest")
            // Deep inside a document that is otherwise valid (an unknown key).
            Self.expectInvalid(Self.document(["EXTRA": "\"x\":\(open)\(close),"]), mentioning: "nest", in: directory)
            // Nesting in strings does not count.
            let inString = try Snapshot(jsonData: Self.document(["EXTRA": "\"x\":\"\(open){{{\",", "MOMENT": "\"peak\""]))
            #expect(inString.moment == .peak)
        }
    }

    @Test func fileLargerThanTheLimit() throws {
        let data = Self.document()
        try Self.withTemporaryDirectory { directory in
            Self.expectInvalid(data, mentioning: "limit", maximumSize: data.count - 1, in: directory)
            Self.expectInvalid(data, mentioning: "limit", maximumSize: 0, in: directory)
            // At the limit it loads.
            let url = directory.appendingPathComponent("exact.json")
            try data.write(to: url)
            #expect(try Snapshot(contentsOf: url, maximumSize: data.count).traces.count == 1)
            #expect(try Snapshot(jsonData: data, maximumSize: data.count).traces.count == 1)
        }
        #expect(Snapshot.defaultMaximumFileSize == 1 << 30)
    }

    @Test func filesThatCannotBeRead() throws {
        try Self.withTemporaryDirectory { directory in
            let missing = directory.appendingPathComponent("missing.json")
            let error = Self.invalidFileError { try Snapshot(contentsOf: missing) }
            #expect(error?.message.contains(missing.path) == true)
            #expect(error?.message.contains("No such file or directory") == true, "\(error?.message ?? "")")

            // A directory, devices and a FIFO without a writer: not regular files, refused without reading.
            let fifo = directory.appendingPathComponent("fifo")
            #expect(mkfifo(fifo.path, 0o600) == 0)
            for path in [directory.path, "/dev/null", "/dev/zero", fifo.path] {
                let error = Self.invalidFileError { try Snapshot(contentsOf: URL(fileURLWithPath: path)) }
                #expect(error?.message == "\(path) is not a regular file", "\(error?.message ?? "")")
            }

            // Unreadable (when not running as root, which can read anything).
            let locked = directory.appendingPathComponent("locked.json")
            try Self.document().write(to: locked)
            try FileManager.default.setAttributes([.posixPermissions: 0], ofItemAtPath: locked.path)
            if geteuid() != 0 {
                #expect(Self.invalidFileError { try Snapshot(contentsOf: locked) }?.message.contains(locked.path) == true)
            }
        }
    }
}

extension TrackerTests {
    /// Loading a crafted file costs memory and time in proportion to its size: one frame referred to a million
    /// times once cost ~100 bytes per reference (a copy of the frame each) — a 15 MB file took 576 MB and 20 s — and
    /// a diff hashed every frame's strings again. Measured with the tracker itself (the loading thread's peak).
    @Suite struct HostileFileCost {
        /// `traces` traces of `depth` references to the same one frame: two bytes a reference in the file.
        static func oneFrameReferencedOften(traces: Int, depth: Int) -> Data {
            let references = Array(repeating: "0", count: depth).joined(separator: ",")
            let trace = "{\"size\":16,\"count\":1,\"allocatedSize\":16,\"allocatedCount\":1,\"totalFrames\":\(depth),\"frames\":[\(references)]}"
            let text = """
                {"format":"swift-allocation-tracking-snapshot","version":2,"moment":"now","timestamp":1,"processID":1,\
                "tracebackLimit":32,"droppedAllocations":0,"images":[],"frames":[{"address":4096,"function":"f",\
                "file":"/src/a.swift","line":1,"image":"App","isInlined":false}],\
                "traces":[\(Array(repeating: trace, count: traces).joined(separator: ","))]}
                """
            return Data(text.utf8)
        }

        @Test func memoryIsASmallMultipleOfTheFile() throws {
            let data = Self.oneFrameReferencedOften(traces: 250, depth: 400)  // 100 000 references, 220 KB
            let loaded = try AllocationTracker.measure(captureStacks: false) { try Snapshot(jsonData: data) }
            print("HostileFileCost: peak \(loaded.peakBytes) B while loading a \(data.count) B file")
            // About 31 times the file for two-byte references, the densest a file can be (typical files, with
            // longer indices and a real frame table, cost under 10 times): most of it is Foundation's JSON decoding
            // of the index arrays, then the decoded indices and the traces' frames at a word each. Copies of frames
            // (the old representation) cost about 72 times.
            #expect(loaded.peakBytes < 40 * data.count, "peak \(loaded.peakBytes) B for a \(data.count) B file")
            #expect(loaded.peakBytes > data.count, "the measurement saw the loading")
        }

        @Test func aTraceDeeperThanAnyCaptureIsRefused() throws {
            let data = Self.oneFrameReferencedOften(traces: 1, depth: Snapshot.maximumFramesPerTraceback + 1)
            let error = #expect(throws: AllocationTrackingError.self) { try Snapshot(jsonData: data) }
            #expect(error?.code == .invalidSnapshotFile)
            #expect(error?.message.contains("trace 0 has 4097 frames, more than 4096") == true, "\(String(describing: error))")
            #expect(try Snapshot(jsonData: Self.oneFrameReferencedOften(traces: 1, depth: 4096)).traces.count == 1)
        }

        /// A frame is one word wherever it is copied: the frames of a loaded snapshot share the file's table.
        @Test func framesAreShared() {
            #expect(MemoryLayout<Frame>.size == MemoryLayout<UInt>.size)
            var frame = Frame(function: "f", file: "a.swift", line: 1)
            let copy = frame
            frame.line = 2  // a change makes a new frame; the copy keeps its value
            #expect(copy.line == 1 && frame.line == 2 && copy != frame)
            #expect(Frame(function: "f", file: "a.swift", line: 1) == copy)
            #expect(Set([copy, Frame(function: "f", file: "a.swift", line: 1)]).count == 1)
        }
    }
}

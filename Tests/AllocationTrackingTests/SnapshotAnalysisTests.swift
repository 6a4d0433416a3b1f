import AllocationTracking
import Foundation
import Testing

/// The snapshot analysis API (statistics, comparisons, filters, attribution, text) on snapshots built by hand,
/// against CPython's tracemalloc: the cases of Lib/test/test_tracemalloc.py (TestSnapshot, TestFilters) with
/// their exact sizes, counts and orders, plus what is native (functions, images, system frames). Expected values
/// that the Python tests do not spell out were computed with CPython 3.11's tracemalloc on the same traces.
/// None of these tests starts the tracker.
@Suite struct SnapshotAnalysis {
    // MARK: - CPython's data

    /// A frame the way a Python frame looks here: a file and a line, nothing else (never a system frame).
    static func frame(_ file: String, _ line: Int) -> Frame { Frame(file: file, line: line) }

    /// A statistic key for `.line`: one frame with the file and line.
    static func lineKey(_ file: String, _ line: Int) -> Traceback {
        Traceback(frames: [frame(file, line)], totalFrames: 1)
    }

    /// A statistic key for `.file`: one frame with the file and line 0, as tracemalloc's `'filename'`.
    static func fileKey(_ file: String) -> Traceback { Traceback(frames: [Frame(file: file)], totalFrames: 1) }

    static func stack(_ frames: [(String, Int)], total: Int? = nil) -> Traceback {
        Traceback(frames: frames.map { frame($0.0, $0.1) }, totalFrames: total)
    }

    /// test_tracemalloc's `create_snapshots()`: `_tracemalloc._get_traces()` lists one block per entry, most
    /// recent frame first, traceback limit 2. With `aggregated`, the blocks of one stack are one `Trace`, as
    /// the tracker reports them; every result must be the same.
    static func createSnapshots(aggregated: Bool = false) -> (Snapshot, Snapshot) {
        func traces(_ raw: [(size: Int, frames: [(String, Int)], total: Int)]) -> [Trace] {
            var result: [Trace] = []
            for entry in raw {
                let traceback = stack(entry.frames, total: entry.total)
                if aggregated, let i = result.firstIndex(where: { $0.traceback == traceback }) {
                    result[i].size += entry.size
                    result[i].count += 1
                } else {
                    result.append(Trace(traceback: traceback, size: entry.size, count: 1))
                }
            }
            return result
        }
        let snapshot = Snapshot(traces: traces([
            (10, [("a.py", 2), ("b.py", 4)], 3),
            (10, [("a.py", 2), ("b.py", 4)], 3),
            (10, [("a.py", 2), ("b.py", 4)], 3),
            (2, [("a.py", 5), ("b.py", 4)], 3),
            (66, [("b.py", 1)], 1),
            (7, [("<unknown>", 0)], 1),
        ]), tracebackLimit: 2, timestamp: 1_000, processID: 1)
        let snapshot2 = Snapshot(traces: traces([
            (10, [("a.py", 2), ("b.py", 4)], 3),
            (10, [("a.py", 2), ("b.py", 4)], 3),
            (10, [("a.py", 2), ("b.py", 4)], 3),
            (2, [("a.py", 5), ("b.py", 4)], 3),
            (5000, [("a.py", 5), ("b.py", 4)], 3),
            (400, [("c.py", 578)], 1),
        ]), tracebackLimit: 2, timestamp: 2_000, processID: 1)
        return (snapshot, snapshot2)
    }

    static func stat(_ traceback: Traceback, _ size: Int, _ count: Int) -> Statistic {
        Statistic(traceback: traceback, size: size, count: count)
    }

    static func diff(_ traceback: Traceback, _ size: Int, _ sizeDiff: Int, _ count: Int, _ countDiff: Int) -> StatisticDiff {
        StatisticDiff(traceback: traceback, size: size, sizeDiff: sizeDiff, count: count, countDiff: countDiff)
    }

    /// A snapshot of one block per (file, line, size), for ordering tests.
    static func blocks(_ spec: [(String, [Int])]) -> Snapshot {
        Snapshot(traces: spec.flatMap { file, sizes in
            sizes.map { Trace(traceback: Traceback(frames: [frame(file, 1)]), size: $0, count: 1) }
        }, tracebackLimit: 1, timestamp: 0, processID: 1)
    }

    static func expectInvalidArgument(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            try body()
            Issue.record("expected .invalidArgument", sourceLocation: sourceLocation)
        } catch let error as AllocationTrackingError {
            #expect(error.code == .invalidArgument, sourceLocation: sourceLocation)
            #expect(!error.message.isEmpty, sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    // MARK: - TestSnapshot

    @Test func createSnapshot() {
        let (snapshot, snapshot2) = Self.createSnapshots()
        #expect(snapshot.tracebackLimit == 2)
        #expect(snapshot.traces.count == 6)
        #expect(snapshot.totalSize == 105 && snapshot.totalCount == 6)
        #expect(snapshot2.totalSize == 5432 && snapshot2.totalCount == 6)
        let trace = snapshot.traces[0]
        #expect(trace.size == 10 && trace.count == 1)
        #expect(trace.traceback.totalFrames == 3)
        #expect(trace.traceback.frames == [Self.frame("a.py", 2), Self.frame("b.py", 4)])
        #expect(snapshot.droppedAllocations == 0 && snapshot.moment == .now && snapshot.tracedMemory == nil)
        // Without a count the traceback's depth is its number of frames.
        #expect(Traceback(frames: [Self.frame("a.py", 1)]).totalFrames == 1)
    }

    @Test(arguments: [false, true])
    func groupByLine(aggregated: Bool) throws {
        let (snapshot, snapshot2) = Self.createSnapshots(aggregated: aggregated)
        let tb0 = Self.lineKey("<unknown>", 0), tbA2 = Self.lineKey("a.py", 2), tbA5 = Self.lineKey("a.py", 5)
        let tbB1 = Self.lineKey("b.py", 1), tbC578 = Self.lineKey("c.py", 578)

        #expect(try snapshot.statistics(groupedBy: .line) == [
            Self.stat(tbB1, 66, 1), Self.stat(tbA2, 30, 3), Self.stat(tb0, 7, 1), Self.stat(tbA5, 2, 1),
        ])
        #expect(try snapshot2.statistics(groupedBy: .line) == [
            Self.stat(tbA5, 5002, 2), Self.stat(tbC578, 400, 1), Self.stat(tbA2, 30, 3),
        ])
        #expect(try snapshot2.compared(to: snapshot, groupedBy: .line) == [
            Self.diff(tbA5, 5002, 5000, 2, 1),
            Self.diff(tbC578, 400, 400, 1, 1),
            Self.diff(tbB1, 0, -66, 0, -1),
            Self.diff(tb0, 0, -7, 0, -1),
            Self.diff(tbA2, 30, 0, 3, 0),
        ])
    }

    @Test(arguments: [false, true])
    func groupByFile(aggregated: Bool) throws {
        let (snapshot, snapshot2) = Self.createSnapshots(aggregated: aggregated)
        let tb0 = Self.fileKey("<unknown>"), tbA = Self.fileKey("a.py"), tbB = Self.fileKey("b.py")
        let tbC = Self.fileKey("c.py")

        #expect(try snapshot.statistics(groupedBy: .file) == [
            Self.stat(tbB, 66, 1), Self.stat(tbA, 32, 4), Self.stat(tb0, 7, 1),
        ])
        #expect(try snapshot2.statistics(groupedBy: .file) == [Self.stat(tbA, 5032, 5), Self.stat(tbC, 400, 1)])
        #expect(try snapshot2.compared(to: snapshot, groupedBy: .file) == [
            Self.diff(tbA, 5032, 5000, 5, 1),
            Self.diff(tbC, 400, 400, 1, 1),
            Self.diff(tbB, 0, -66, 0, -1),
            Self.diff(tb0, 0, -7, 0, -1),
        ])
        // The key is the file alone: it prints `file:0`.
        #expect(try snapshot.statistics(groupedBy: .file)[1].description == "a.py:0: size=32 B, count=4, average=8 B")
    }

    @Test(arguments: [false, true])
    func groupByTraceback(aggregated: Bool) throws {
        let (snapshot, snapshot2) = Self.createSnapshots(aggregated: aggregated)
        let tb1 = Self.stack([("a.py", 2), ("b.py", 4)], total: 3)
        let tb2 = Self.stack([("a.py", 5), ("b.py", 4)], total: 3)
        let tb3 = Self.stack([("b.py", 1)])
        let tb4 = Self.stack([("<unknown>", 0)])
        let tb5 = Self.stack([("c.py", 578)])

        #expect(try snapshot.statistics(groupedBy: .traceback) == [
            Self.stat(tb3, 66, 1), Self.stat(tb1, 30, 3), Self.stat(tb4, 7, 1), Self.stat(tb2, 2, 1),
        ])
        #expect(try snapshot2.statistics(groupedBy: .traceback) == [
            Self.stat(tb2, 5002, 2), Self.stat(tb5, 400, 1), Self.stat(tb1, 30, 3),
        ])
        #expect(try snapshot2.compared(to: snapshot, groupedBy: .traceback) == [
            Self.diff(tb2, 5002, 5000, 2, 1),
            Self.diff(tb5, 400, 400, 1, 1),
            Self.diff(tb3, 0, -66, 0, -1),
            Self.diff(tb4, 0, -7, 0, -1),
            Self.diff(tb1, 30, 0, 3, 0),
        ])

        Self.expectInvalidArgument { _ = try snapshot.statistics(groupedBy: .traceback, cumulative: true) }
        Self.expectInvalidArgument { _ = try snapshot2.compared(to: snapshot, groupedBy: .traceback, cumulative: true) }
    }

    @Test(arguments: [false, true])
    func groupByCumulative(aggregated: Bool) throws {
        let (snapshot, snapshot2) = Self.createSnapshots(aggregated: aggregated)

        #expect(try snapshot.statistics(groupedBy: .file, cumulative: true) == [
            Self.stat(Self.fileKey("b.py"), 98, 5), Self.stat(Self.fileKey("a.py"), 32, 4),
            Self.stat(Self.fileKey("<unknown>"), 7, 1),
        ])
        #expect(try snapshot.statistics(groupedBy: .line, cumulative: true) == [
            Self.stat(Self.lineKey("b.py", 1), 66, 1), Self.stat(Self.lineKey("b.py", 4), 32, 4),
            Self.stat(Self.lineKey("a.py", 2), 30, 3), Self.stat(Self.lineKey("<unknown>", 0), 7, 1),
            Self.stat(Self.lineKey("a.py", 5), 2, 1),
        ])
        // compare_to with cumulative=True (CPython 3.11 on the same traces).
        #expect(try snapshot2.compared(to: snapshot, groupedBy: .line, cumulative: true) == [
            Self.diff(Self.lineKey("b.py", 4), 5032, 5000, 5, 1),
            Self.diff(Self.lineKey("a.py", 5), 5002, 5000, 2, 1),
            Self.diff(Self.lineKey("c.py", 578), 400, 400, 1, 1),
            Self.diff(Self.lineKey("b.py", 1), 0, -66, 0, -1),
            Self.diff(Self.lineKey("<unknown>", 0), 0, -7, 0, -1),
            Self.diff(Self.lineKey("a.py", 2), 30, 0, 3, 0),
        ])
    }

    /// Recursion: a frame on the stack twice counts twice (as in tracemalloc); a file on the stack twice too.
    @Test func cumulativeCountsRecursionEachTime() throws {
        let recursive = Trace(traceback: Self.stack([("a.py", 3), ("a.py", 7), ("a.py", 3), ("b.py", 1)]),
                              size: 100, count: 2)
        let snapshot = Snapshot(traces: [recursive], tracebackLimit: 8, timestamp: 0, processID: 1)
        #expect(try snapshot.statistics(groupedBy: .line, cumulative: true) == [
            Self.stat(Self.lineKey("a.py", 3), 200, 4), Self.stat(Self.lineKey("b.py", 1), 100, 2),
            Self.stat(Self.lineKey("a.py", 7), 100, 2),
        ])
        #expect(try snapshot.statistics(groupedBy: .file, cumulative: true) == [
            Self.stat(Self.fileKey("a.py"), 300, 6), Self.stat(Self.fileKey("b.py"), 100, 2),
        ])
        // Not cumulative: the most recent frame only.
        #expect(try snapshot.statistics(groupedBy: .line) == [Self.stat(Self.lineKey("a.py", 3), 100, 2)])
    }

    @Test func traceFormat() {
        let (snapshot, _) = Self.createSnapshots()
        let trace = snapshot.traces[0]
        // tracemalloc prints `b.py:4: 10 B` (CPython >= 3.7 prints a traceback as its *oldest* frame); here a
        // traceback prints as its attribution frame, the most recent one for these frames, and a trace has a
        // count.
        #expect(trace.description == "a.py:2: 10 B, count=1")
        #expect(trace.traceback.description == "a.py:2")
        #expect(trace.traceback.frames[0].description == "a.py:2")
        #expect(Traceback(frames: []).description == "<no frames>")
        #expect(Trace(traceback: Self.stack([("a.py", 1)]), size: 10240, count: 3).description == "a.py:1: 10.0 KiB, count=3")
    }

    @Test func statisticFormat() throws {
        let (snapshot, _) = Self.createSnapshots()
        let stats = try snapshot.statistics(groupedBy: .line)
        #expect(stats[0].description == "b.py:1: size=66 B, count=1, average=66 B")
        #expect(stats.map(\.description) == [
            "b.py:1: size=66 B, count=1, average=66 B",
            "a.py:2: size=30 B, count=3, average=10 B",
            "<unknown>:0: size=7 B, count=1, average=7 B",
            "a.py:5: size=2 B, count=1, average=2 B",
        ])
        // No blocks: no average.
        #expect(Self.stat(Self.lineKey("a.py", 1), 0, 0).description == "a.py:1: size=0 B, count=0")
    }

    @Test func statisticDiffFormat() throws {
        let (snapshot, snapshot2) = Self.createSnapshots()
        let diffs = try snapshot2.compared(to: snapshot, groupedBy: .line)
        #expect(diffs[0].description == "a.py:5: size=5002 B (+5000 B), count=2 (+1), average=2501 B")
        #expect(diffs.map(\.description) == [
            "a.py:5: size=5002 B (+5000 B), count=2 (+1), average=2501 B",
            "c.py:578: size=400 B (+400 B), count=1 (+1), average=400 B",
            "b.py:1: size=0 B (-66 B), count=0 (-1)",
            "<unknown>:0: size=0 B (-7 B), count=0 (-1)",
            "a.py:2: size=30 B (+0 B), count=3 (+0), average=10 B",
        ])
    }

    /// A `.traceback` statistic prints its attribution frame, as `Traceback.description` does.
    @Test func tracebackKeyFormat() throws {
        let (snapshot, _) = Self.createSnapshots()
        let stats = try snapshot.statistics(groupedBy: .traceback)
        #expect(stats.map(\.description) == [
            "b.py:1: size=66 B, count=1, average=66 B",
            "a.py:2: size=30 B, count=3, average=10 B",
            "<unknown>:0: size=7 B, count=1, average=7 B",
            "a.py:5: size=2 B, count=1, average=2 B",
        ])
    }

    // MARK: - Sizes

    /// tracemalloc's `_format_size(size, sign)` (CPython 3.11), through the statistics that print sizes.
    static let sizeTable: [(Int, String)] = [
        (0, "0 B"), (1023, "1023 B"), (1536, "1536 B"), (5000, "5000 B"), (10239, "10239 B"),
        (10240, "10.0 KiB"), (10496, "10.2 KiB"), (10547, "10.3 KiB"), (102_399, "100.0 KiB"),
        (102_400, "100 KiB"), (102_912, "100 KiB"), (103_424, "101 KiB"), (10_485_759, "10240 KiB"),
        (12_345_678, "11.8 MiB"), (104_857_600, "100 MiB"), (10_737_418_240, "10.0 GiB"),
        (109_951_162_777_600, "100 TiB"), (Int.max, "8388608 TiB"),
    ]

    @Test(arguments: sizeTable)
    func formatSize(size: Int, text: String) {
        let key = Self.lineKey("a.py", 1)
        #expect(Self.stat(key, size, 0).description == "a.py:1: size=\(text), count=0")
        #expect(Self.diff(key, size, size, 0, 0).description == "a.py:1: size=\(text) (+\(text)), count=0 (+0)")
        if size != 0 {
            #expect(Self.diff(key, 0, -size, 0, -1).description == "a.py:1: size=0 B (-\(text)), count=0 (-1)")
        }
    }

    /// Averages are fractions, printed as printf does (`%.0f`, `%.1f`): rounded to even on the exact value.
    @Test(arguments: [
        (5, 2, "2 B"), (7, 2, "4 B"), (10, 3, "3 B"), (20, 3, "7 B"), (1, 3, "0 B"), (10241, 1, "10.0 KiB"),
        (30720, 2, "15.0 KiB"), (102_401, 1, "100 KiB"), (157_286_400, 7, "21.4 MiB"),
        // 52992 / 5 / 1024 is the double nearest 10.35, just below it: "10.3" (multiplying it by 10 gives
        // exactly 103.5, which must not round up).
        (52992, 5, "10.3 KiB"),
    ])
    func formatAverage(size: Int, count: Int, text: String) {
        #expect(Self.stat(Self.lineKey("a.py", 1), size, count).description.hasSuffix(", average=\(text)"))
    }

    // MARK: - Ordering

    /// statistics(): descending by (size, count, key); compare_to(): by (|size diff|, size, |count diff|,
    /// count, key). Ties on everything but the key put the greater key first.
    @Test func orderingTies() throws {
        let new = Self.blocks([("a.py", [100]), ("c.py", [50, 50]), ("d.py", [60, 40]), ("e.py", [100]),
                               ("f.py", [100]), ("g.py", [0]), ("h.py", [150])])
        let old = Self.blocks([("a.py", [50]), ("b.py", [50]), ("c.py", [50]), ("d.py", [25, 25]), ("e.py", [50]),
                               ("f.py", [100]), ("h.py", [100])])
        #expect(try new.compared(to: old, groupedBy: .line).map(\.description) == [
            "h.py:1: size=150 B (+50 B), count=1 (+0), average=150 B",
            "c.py:1: size=100 B (+50 B), count=2 (+1), average=50 B",
            "d.py:1: size=100 B (+50 B), count=2 (+0), average=50 B",
            "e.py:1: size=100 B (+50 B), count=1 (+0), average=100 B",
            "a.py:1: size=100 B (+50 B), count=1 (+0), average=100 B",
            "b.py:1: size=0 B (-50 B), count=0 (-1)",
            "f.py:1: size=100 B (+0 B), count=1 (+0), average=100 B",
            "g.py:1: size=0 B (+0 B), count=1 (+1), average=0 B",
        ])
        #expect(try new.statistics(groupedBy: .line).map(\.description) == [
            "h.py:1: size=150 B, count=1, average=150 B",
            "d.py:1: size=100 B, count=2, average=50 B",
            "c.py:1: size=100 B, count=2, average=50 B",
            "f.py:1: size=100 B, count=1, average=100 B",
            "e.py:1: size=100 B, count=1, average=100 B",
            "a.py:1: size=100 B, count=1, average=100 B",
            "g.py:1: size=0 B, count=1, average=0 B",
        ])
        // The order does not depend on the order of the traces.
        var shuffled = new
        var generator = SeededGenerator(seed: 7)
        for _ in 0..<20 {
            shuffled.traces.shuffle(using: &generator)
            #expect(try shuffled.compared(to: old, groupedBy: .line) == new.compared(to: old, groupedBy: .line))
            #expect(try shuffled.statistics(groupedBy: .line) == new.statistics(groupedBy: .line))
        }
    }

    /// Lines of one file order by line number (numerically), then files by name.
    @Test func keysOrderByFileThenLineNumber() throws {
        let snapshot = Snapshot(traces: [("a.py", 10), ("a.py", 9), ("b.py", 1), ("a.py", 100)].map {
            Trace(traceback: Self.stack([$0]), size: 8, count: 1)
        }, tracebackLimit: 1, timestamp: 0, processID: 1)
        #expect(try snapshot.statistics(groupedBy: .line).map(\.traceback) == [
            Self.lineKey("b.py", 1), Self.lineKey("a.py", 100), Self.lineKey("a.py", 10), Self.lineKey("a.py", 9),
        ])
    }

    /// Whole stacks tie-break as tracemalloc's `Traceback` objects compare: frame by frame from the *oldest*
    /// (CPython >= 3.7 keeps frames oldest first), a shorter stack before a longer one it starts.
    @Test func tracebackTiesCompareFromTheOldestFrame() throws {
        let snapshot = Snapshot(traces: [
            Trace(traceback: Self.stack([("a.py", 1), ("z.py", 1)]), size: 10, count: 1),
            Trace(traceback: Self.stack([("b.py", 1), ("c.py", 1)]), size: 10, count: 1),
            Trace(traceback: Self.stack([("b.py", 1)]), size: 10, count: 1),
            Trace(traceback: Self.stack([("a.py", 1)]), size: 10, count: 1),
        ], tracebackLimit: 2, timestamp: 0, processID: 1)
        #expect(try snapshot.statistics(groupedBy: .traceback).map(\.traceback) == [
            Self.stack([("a.py", 1), ("z.py", 1)]), Self.stack([("b.py", 1), ("c.py", 1)]),
            Self.stack([("b.py", 1)]), Self.stack([("a.py", 1)]),
        ])
    }

    /// tracemalloc groups whole stacks by their frames: two truncated stacks with the same frames are one key,
    /// however deep they were. The key keeps the deepest depth.
    @Test func tracebacksWithTheSameFramesAreOneKey() throws {
        let frames = [("a.py", 1), ("z.py", 1)]
        let snapshot = Snapshot(traces: [
            Trace(traceback: Self.stack(frames, total: 2), size: 10, count: 1),
            Trace(traceback: Self.stack(frames, total: 5), size: 10, count: 1),
        ], tracebackLimit: 2, timestamp: 0, processID: 1)
        #expect(try snapshot.statistics(groupedBy: .traceback) == [Self.stat(Self.stack(frames, total: 5), 20, 2)])
        let older = Snapshot(traces: [Trace(traceback: Self.stack(frames, total: 3), size: 4, count: 1)],
                             tracebackLimit: 2, timestamp: 0, processID: 1)
        #expect(try snapshot.compared(to: older, groupedBy: .traceback) == [
            Self.diff(Self.stack(frames, total: 5), 20, 16, 2, 1),
        ])
    }

    /// Frames that print the same but differ (another image) are distinct keys in a stable order.
    @Test func distinctKeysThatPrintAlikeHaveAStableOrder() throws {
        let traces = ["libA.so", "libB.so", "libC.so"].map { image in
            Trace(traceback: Traceback(frames: [Frame(function: "helper", file: "helper.c", line: 3, image: image)]),
                  size: 16, count: 1)
        }
        var snapshot = Snapshot(traces: traces, tracebackLimit: 1, timestamp: 0, processID: 1)
        let byFunction = try snapshot.statistics(groupedBy: .function)
        let byTraceback = try snapshot.statistics(groupedBy: .traceback)
        #expect(byFunction.count == 3 && byTraceback.count == 3)
        var generator = SeededGenerator(seed: 3)
        for _ in 0..<10 {
            snapshot.traces.shuffle(using: &generator)
            #expect(try snapshot.statistics(groupedBy: .function) == byFunction)
            #expect(try snapshot.statistics(groupedBy: .traceback) == byTraceback)
        }
    }

    // MARK: - Native keys and attribution

    static let malloc = Frame(function: "malloc", image: "libc.so.6", address: 0x7f00_0000_1000, mangledName: "malloc",
                              imageOffset: 0x1000)
    static let slowAlloc = Frame(function: "swift_slowAlloc", image: "libswiftCore.so", address: 0x7f00_0010_0000,
                                 mangledName: "swift_slowAlloc", imageOffset: 0x2000)
    /// An allocating initialiser: compiler-generated, in a known file at line 0.
    static let allocatingInit = Frame(function: "Box.__allocating_init()", file: "/src/Sources/App/Box.swift", line: 0,
                                      image: "App", address: 0x5000, mangledName: "$s3App3BoxCACycfC")
    static let userFrame = Frame(function: "Cache.insert(_:for:)", file: "/src/Sources/App/Cache.swift", line: 42,
                                 image: "App", address: 0x5100, mangledName: "$s3App5CacheC6insert_3forySS_SitF",
                                 imageOffset: 0x1100)
    static let caller = Frame(function: "Server.handle(_:)", file: "/src/Sources/App/Server.swift", line: 17,
                              image: "App", address: 0x5200, mangledName: "$s3App6ServerC6handleyyF")

    static var nativeTraceback: Traceback {
        Traceback(frames: [malloc, slowAlloc, allocatingInit, userFrame, caller], totalFrames: 9)
    }

    @Test func systemFramesAreSkipped() throws {
        let attribution = AllocationTracking.Attribution.default
        #expect(attribution.isSystem(Self.malloc))
        #expect(attribution.isSystem(Self.slowAlloc))
        #expect(attribution.isSystem(Self.allocatingInit))
        #expect(!attribution.isSystem(Self.userFrame))
        #expect(!attribution.isSystem(Self.caller))
        #expect(Self.nativeTraceback.attributionFrame() == Self.userFrame)
        #expect(attribution.attributionFrame(of: Self.nativeTraceback) == Self.userFrame)
        #expect(Self.nativeTraceback.description == "/src/Sources/App/Cache.swift:42")

        let snapshot = Snapshot(traces: [Trace(traceback: Self.nativeTraceback, size: 2048, count: 2)],
                                tracebackLimit: 16, timestamp: 0, processID: 1)
        let byLine = try snapshot.statistics(groupedBy: .line)
        #expect(byLine.count == 1)
        #expect(byLine[0].traceback.frames.count == 1 && byLine[0].traceback.totalFrames == 1)
        #expect(byLine[0].traceback.frames[0].file == "/src/Sources/App/Cache.swift")
        #expect(byLine[0].traceback.frames[0].line == 42)
        #expect(byLine[0].traceback.frames[0].function == "Cache.insert(_:for:)")
        #expect(byLine[0].description == "/src/Sources/App/Cache.swift:42: size=2048 B, count=2, average=1024 B")
        #expect(try snapshot.statistics(groupedBy: .file) == [
            Self.stat(Self.fileKey("/src/Sources/App/Cache.swift"), 2048, 2),
        ])
        // Frames built by hand, like Python's, are never system frames, not even `<unknown>` at line 0.
        #expect(!attribution.isSystem(Self.frame("<unknown>", 0)))
        #expect(!attribution.isSystem(Self.frame("a.py", 2)))
    }

    @Test func anAllSystemTracebackIsAttributedToItsFirstFrame() throws {
        let traceback = Traceback(frames: [Self.malloc, Self.slowAlloc])
        #expect(traceback.attributionFrame() == Self.malloc)
        #expect(traceback.description == "malloc in libc.so.6")
        let snapshot = Snapshot(traces: [Trace(traceback: traceback, size: 64, count: 1)], tracebackLimit: 2,
                                timestamp: 0, processID: 1)
        // No file: `.line` and `.file` fall back to the function.
        for key in [GroupingKey.line, .file, .function] {
            let stats = try snapshot.statistics(groupedBy: key)
            #expect(stats.count == 1)
            #expect(stats[0].traceback.frames[0].function == "malloc")
            #expect(stats[0].traceback.frames[0].image == "libc.so.6")
            #expect(stats[0].description == "malloc in libc.so.6: size=64 B, count=1, average=64 B", "\(key)")
        }
        #expect(Traceback(frames: []).attributionFrame() == nil)
    }

    @Test func extensionsOfStandardTypesInUserModulesAreUserCode() {
        let attribution = AllocationTracking.Attribution.default
        #expect(!attribution.isSystem(Frame(mangledName: "$sSa4MainE3fooyyF")))
        #expect(attribution.isSystem(Frame(mangledName: "$sSa6appendyyxnF")))
        #expect(attribution.isSystem(Frame(mangledName: "$sSa5SwiftE3fooyyF")))  // declared in Swift itself
        #expect(attribution.isSystem(Frame(mangledName: "$ss5printyyypd_SS9separatorSS10terminatortF")))
        #expect(!attribution.isSystem(Frame(mangledName: "$s4Main3fooyyF")))
        // Also with the readable name and the user's image (specialised into it).
        #expect(!attribution.isSystem(Frame(function: "Array.foo()", image: "Main", mangledName: "$sSa4MainE3fooyyF")))
        #expect(attribution.isSystem(Frame(function: "Array.append(_:)", image: "Main", mangledName: "$sSa6appendyyxnF")))
    }

    @Test func systemCodeByImageFunctionAndFile() {
        let attribution = AllocationTracking.Attribution.default
        #expect(attribution.isSystem(Frame(image: "libstdc++.so.6")))
        #expect(attribution.isSystem(Frame(function: "operator new(unsigned long)", image: "App")))
        #expect(attribution.isSystem(Frame(function: "swift_allocObject")))
        #expect(attribution.isSystem(Frame(file: "/build/swift/stdlib/public/core/Array.swift", line: 12)))
        #expect(attribution.isSystem(Frame(file: "<compiler-generated>", line: 0)))
        #expect(attribution.isSystem(Frame(function: "closure #1", file: "/src/App/main.swift", line: 0)))
        #expect(!attribution.isSystem(Frame(function: "closure #1", file: "/src/App/main.swift", line: 3)))
        #expect(!attribution.isSystem(Frame(image: "libswiftCoreExtras.so")))
        #expect(!attribution.isSystem(Frame(address: 0x1234)))
        // The empty set still knows compiler-generated code.
        let none = AllocationTracking.Attribution()
        #expect(!none.isSystem(Self.malloc))
        #expect(none.isSystem(Self.allocatingInit))
        #expect(none.attributionFrame(of: Self.nativeTraceback) == Self.malloc)
    }

    @Test func aCustomAttribution() throws {
        var attribution = AllocationTracking.Attribution.default
        attribution.systemFiles.append("*/Cache.swift")
        #expect(Self.nativeTraceback.attributionFrame(attribution) == Self.caller)
        let snapshot = Snapshot(traces: [Trace(traceback: Self.nativeTraceback, size: 100, count: 1)],
                                tracebackLimit: 16, timestamp: 0, processID: 1)
        #expect(try snapshot.statistics(groupedBy: .line, attribution: attribution).map(\.traceback.frames[0].line) == [17])
        #expect(try snapshot.statistics(groupedBy: .line).map(\.traceback.frames[0].line) == [42])

        let byImage = AllocationTracking.Attribution(systemImages: ["libc.so*", "App"])
        #expect(Self.nativeTraceback.attributionFrame(byImage) == Self.slowAlloc)
        let byFunction = AllocationTracking.Attribution(systemFunctions: ["malloc", "swift_*", "Cache.*"])
        #expect(Self.nativeTraceback.attributionFrame(byFunction) == Self.caller)
        // Filters look at the same frame.
        let kept = snapshot.filtered(by: [Filter(inclusive: true, filePattern: "*/Server.swift")], attribution: attribution)
        #expect(kept.traces.count == 1)
        #expect(snapshot.filtered(by: [Filter(inclusive: true, filePattern: "*/Server.swift")]).traces.isEmpty)
    }

    @Test func groupByFunction() throws {
        let insertAt50 = Frame(function: "Cache.insert(_:for:)", file: "/src/Sources/App/Cache.swift", line: 50,
                               image: "App", address: 0x5180, mangledName: "$s3App5CacheC6insert_3forySS_SitF")
        let cHelperA = Frame(function: "helper", image: "libA.so", address: 0x9000)
        let cHelperB = Frame(function: "helper", image: "libB.so", address: 0x9900)
        let snapshot = Snapshot(traces: [
            Trace(traceback: Self.nativeTraceback, size: 100, count: 1),
            Trace(traceback: Traceback(frames: [Self.malloc, insertAt50, Self.caller]), size: 50, count: 2),
            Trace(traceback: Traceback(frames: [Self.malloc, cHelperA]), size: 30, count: 1),
            Trace(traceback: Traceback(frames: [cHelperB]), size: 20, count: 1),
        ], tracebackLimit: 16, timestamp: 0, processID: 1)
        let stats = try snapshot.statistics(groupedBy: .function)
        #expect(stats.map(\.description) == [
            "Cache.insert(_:for:) (/src/Sources/App/Cache.swift): size=150 B, count=3, average=50 B",
            "helper in libA.so: size=30 B, count=1, average=30 B",
            "helper in libB.so: size=20 B, count=1, average=20 B",
        ])
        #expect(stats[0].traceback.frames == [
            Frame(function: "Cache.insert(_:for:)", file: "/src/Sources/App/Cache.swift", image: "App",
                  mangledName: "$s3App5CacheC6insert_3forySS_SitF"),
        ])
        // Cumulative: every frame; the caller holds everything it called. System frames (through which every
        // stack passes) only when asked for.
        let cumulative = try snapshot.statistics(groupedBy: .function, cumulative: true)
        #expect(cumulative.map { "\($0.traceback.frames[0].function ?? "?") \($0.size) \($0.count)" } == [
            "Server.handle(_:) 150 3", "Cache.insert(_:for:) 150 3", "helper 30 1", "helper 20 1",
        ])
        let everything = try snapshot.statistics(groupedBy: .function, cumulative: true, includingSystemFrames: true)
        #expect(everything.map { "\($0.traceback.frames[0].function ?? "?") \($0.size) \($0.count)" } == [
            "malloc 180 4", "Server.handle(_:) 150 3", "Cache.insert(_:for:) 150 3", "Box.__allocating_init() 100 1",
            "swift_slowAlloc 100 1", "helper 30 1", "helper 20 1",
        ])
    }

    /// The process's entry frames (`_start`, a `main` with no line) are left out of cumulative statistics like
    /// system frames; a C `main` with a line of its own is the user's code and stays.
    @Test func cumulativeStatisticsLeaveOutTheEntryFrames() throws {
        let user = Frame(function: "work()", file: "/src/App/work.swift", line: 7, image: "App")
        let generatedMain = Frame(function: "main", image: "App")
        let start = Frame(function: "_start", image: "App")
        let libcStart = Frame(function: "__libc_start_call_main", image: "libc.so.6")
        let cMain = Frame(function: "main", file: "/src/tool/main.c", line: 12, image: "tool")
        let snapshot = Snapshot(traces: [
            Trace(traceback: Traceback(frames: [user, generatedMain, libcStart, start]), size: 64, count: 1),
            Trace(traceback: Traceback(frames: [user, cMain, libcStart, start]), size: 32, count: 1),
        ], tracebackLimit: 8, timestamp: 0, processID: 1)
        #expect(try snapshot.statistics(groupedBy: .function, cumulative: true).map { $0.traceback.frames[0].function }
                == ["work()", "main"])
        #expect(try snapshot.statistics(groupedBy: .function, cumulative: true)[1].traceback.frames[0].image == "tool")
        #expect(try snapshot.statistics(groupedBy: .function, cumulative: true, includingSystemFrames: true).count == 5)
    }

    /// Text shows one path style (relative to the current directory when under it) and shortens names a human
    /// cannot read whole; the frame keeps both as they were.
    @Test func textShowsRelativePathsAndShortNames() throws {
        let directory = FileManager.default.currentDirectoryPath
        let local = Frame(function: "f()", file: directory + "/Sources/App/a.swift", line: 3)
        #expect(local.description == "Sources/App/a.swift:3")
        #expect(Statistic(traceback: Traceback(frames: [local]), size: 10, count: 1).description
                == "Sources/App/a.swift:3: size=10 B, count=1, average=10 B")
        #expect(Traceback(frames: [local]).format() == ["  Sources/App/a.swift:3 in f()"])
        #expect(local.file == directory + "/Sources/App/a.swift")
        #expect(Frame(file: "/elsewhere/b.swift", line: 1).description == "/elsewhere/b.swift:1")
        #expect(Frame(file: directory + "-sibling/c.swift", line: 1).description == directory + "-sibling/c.swift:1")
        // A C++ template instance of 1,000+ characters: its template arguments folded, the rest kept.
        let argument = "std::pair<std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> > const, int>"
        let long = "std::_Hashtable<" + Array(repeating: argument, count: 12).joined(separator: ", ")
            + ">::_M_emplace_unique(std::integral_constant<bool, true>, int&&)"
        #expect(long.count > 1000)
        let frame = Frame(function: long, image: "libapp.so")
        #expect(frame.description == "std::_Hashtable<…>::_M_emplace_unique(std::integral_constant<…>, int&&) in libapp.so")
        #expect(frame.function == long)
        // Short names are untouched, templates and all.
        #expect(Frame(function: "std::vector<int>::push_back(int const&)", image: "a").description
                == "std::vector<int>::push_back(int const&) in a")
        // Still too long without its template arguments: parameter lists folded, then cut.
        let many = "f(" + String(repeating: "x", count: 300) + ")"
        #expect(Frame(function: many).description == "f(…)")
        let plain = String(repeating: "y", count: 400)
        #expect(Frame(function: plain).description.count == 160)
    }

    @Test func frameDescriptions() {
        #expect(Self.frame("a.py", 2).description == "a.py:2")
        #expect(Frame(file: "a.py").description == "a.py:0")
        #expect(Self.userFrame.description == "/src/Sources/App/Cache.swift:42")
        #expect(Self.allocatingInit.description == "Box.__allocating_init() (/src/Sources/App/Box.swift)")
        #expect(Self.slowAlloc.description == "swift_slowAlloc in libswiftCore.so")
        #expect(Frame(function: "strdup").description == "strdup")
        #expect(Frame(image: "libc.so.6", address: 0x7f00_0000_1f2e, imageOffset: 0x1f2e).description == "libc.so.6+0x1f2e")
        #expect(Frame(address: 0x1f2e).description == "0x1f2e")
        #expect(!Frame(address: 0x1f2e).isSymbolicated && Self.malloc.isSymbolicated)
    }

    @Test func tracebackFormat() {
        // test_format_traceback, most recent first by default here (Python's default is oldest first).
        let traceback = Self.stack([("a.py", 2), ("b.py", 4)])
        #expect(traceback.format() == ["  a.py:2", "  b.py:4"])
        #expect(traceback.format(limit: 1) == ["  a.py:2"])
        #expect(traceback.format(mostRecentFirst: false) == ["  b.py:4", "  a.py:2"])
        #expect(traceback.format(limit: 1, mostRecentFirst: false) == ["  a.py:2"])
        #expect(traceback.format(limit: 0) == [])
        let inlined = Frame(function: "Array.append(_:)", file: "/src/Sources/App/Cache.swift", line: 44, image: "App",
                            address: 0x5100, isInlined: true)
        #expect(Traceback(frames: [Self.malloc, inlined, Self.userFrame]).format() == [
            "  malloc in libc.so.6",
            "  /src/Sources/App/Cache.swift:44 in Array.append(_:) [inlined]",
            "  /src/Sources/App/Cache.swift:42 in Cache.insert(_:for:)",
        ])
    }

    // MARK: - TestFilters

    /// Python's `Filter._match_frame(filename, lineno)`: whether a one-frame trace there is kept.
    static func keeps(_ filter: Filter, _ file: String, _ line: Int) -> Bool {
        let snapshot = Snapshot(traces: [Trace(traceback: Self.stack([(file, line)]), size: 1, count: 1)],
                                tracebackLimit: 1, timestamp: 0, processID: 1)
        return snapshot.filtered(by: [filter]).traces.count == 1
    }

    /// Python's `Filter._match_traceback(frames)`.
    static func keeps(_ filter: Filter, _ frames: [(String, Int)]) -> Bool {
        let snapshot = Snapshot(traces: [Trace(traceback: Self.stack(frames), size: 1, count: 1)],
                                tracebackLimit: 1, timestamp: 0, processID: 1)
        return snapshot.filtered(by: [filter]).traces.count == 1
    }

    @Test func filterAttributes() {
        var f = Filter(inclusive: true, filePattern: "abc")
        #expect(f.inclusive == true)
        #expect(f.filePattern == "abc")
        #expect(f.line == nil && f.functionPattern == nil && f.imagePattern == nil)
        #expect(f.allFrames == false)

        f = Filter(inclusive: false, filePattern: "test.py", line: 123, allFrames: true)
        #expect(f.inclusive == false)
        #expect(f.filePattern == "test.py")
        #expect(f.line == 123)
        #expect(f.allFrames == true)

        f = Filter(inclusive: true, functionPattern: "Cache.*", imagePattern: "App")
        #expect(f.filePattern == nil && f.functionPattern == "Cache.*" && f.imagePattern == "App")
    }

    @Test func filterMatch() {
        // Without a line number.
        var f = Filter(inclusive: true, filePattern: "abc")
        #expect(Self.keeps(f, "abc", 0) && Self.keeps(f, "abc", 5) && Self.keeps(f, "abc", 10))
        #expect(!Self.keeps(f, "12356", 0) && !Self.keeps(f, "12356", 5) && !Self.keeps(f, "12356", 10))
        f = Filter(inclusive: false, filePattern: "abc")
        #expect(!Self.keeps(f, "abc", 0) && !Self.keeps(f, "abc", 5) && !Self.keeps(f, "abc", 10))
        #expect(Self.keeps(f, "12356", 0) && Self.keeps(f, "12356", 5) && Self.keeps(f, "12356", 10))

        // With a line number > 0.
        f = Filter(inclusive: true, filePattern: "abc", line: 5)
        #expect(!Self.keeps(f, "abc", 0) && Self.keeps(f, "abc", 5) && !Self.keeps(f, "abc", 10))
        #expect(!Self.keeps(f, "12356", 0) && !Self.keeps(f, "12356", 5) && !Self.keeps(f, "12356", 10))
        f = Filter(inclusive: false, filePattern: "abc", line: 5)
        #expect(Self.keeps(f, "abc", 0) && !Self.keeps(f, "abc", 5) && Self.keeps(f, "abc", 10))
        #expect(Self.keeps(f, "12356", 0) && Self.keeps(f, "12356", 5) && Self.keeps(f, "12356", 10))

        // With line number 0.
        f = Filter(inclusive: true, filePattern: "abc", line: 0)
        #expect(Self.keeps(f, "abc", 0) && !Self.keeps(f, "abc", 5) && !Self.keeps(f, "abc", 10))
        #expect(!Self.keeps(f, "12356", 0) && !Self.keeps(f, "12356", 5) && !Self.keeps(f, "12356", 10))
        f = Filter(inclusive: false, filePattern: "abc", line: 0)
        #expect(!Self.keeps(f, "abc", 0) && Self.keeps(f, "abc", 5) && Self.keeps(f, "abc", 10))
        #expect(Self.keeps(f, "12356", 0) && Self.keeps(f, "12356", 5) && Self.keeps(f, "12356", 10))

        // `matches` is the polarity-free test.
        #expect(Filter(inclusive: false, filePattern: "abc", line: 5).matches(Self.frame("abc", 5)))
        #expect(!Filter(inclusive: true, filePattern: "abc", line: 5).matches(Self.frame("abc", 6)))
    }

    @Test func filterMatchFilename() {
        func fnmatch(_ inclusive: Bool, _ file: String, _ pattern: String) -> Bool {
            Self.keeps(Filter(inclusive: inclusive, filePattern: pattern), file, 0)
        }
        #expect(fnmatch(true, "abc", "abc"))
        #expect(!fnmatch(true, "12356", "abc"))
        #expect(!fnmatch(true, "<unknown>", "abc"))
        #expect(!fnmatch(false, "abc", "abc"))
        #expect(fnmatch(false, "12356", "abc"))
        #expect(fnmatch(false, "<unknown>", "abc"))
    }

    @Test func filterMatchFilenameJoker() {
        func fnmatch(_ file: String, _ pattern: String) -> Bool {
            Filter(inclusive: true, filePattern: pattern).matches(Self.frame(file, 0))
        }
        // Empty string.
        #expect(!fnmatch("abc", ""))
        #expect(!fnmatch("", "abc"))
        #expect(fnmatch("", ""))
        #expect(fnmatch("", "*"))
        // No *.
        #expect(fnmatch("abc", "abc"))
        #expect(!fnmatch("abc", "abcd"))
        #expect(!fnmatch("abc", "def"))
        // a*
        #expect(fnmatch("abc", "a*"))
        #expect(fnmatch("abc", "abc*"))
        #expect(!fnmatch("abc", "b*"))
        #expect(!fnmatch("abc", "abcd*"))
        // a*b
        #expect(fnmatch("abc", "a*c"))
        #expect(fnmatch("abcdcx", "a*cx"))
        #expect(!fnmatch("abb", "a*c"))
        #expect(!fnmatch("abcdce", "a*cx"))
        // a*b*c
        #expect(fnmatch("abcde", "a*c*e"))
        #expect(fnmatch("abcbdefeg", "a*bd*eg"))
        #expect(!fnmatch("abcdd", "a*c*e"))
        #expect(!fnmatch("abcbdefef", "a*bd*eg"))
        // Case sensitive (POSIX).
        #expect(!fnmatch("aBC", "ABc"))
        #expect(!fnmatch("aBcDe", "Ab*dE"))
        #expect(!fnmatch("a.pyc", "a.PY"))
        #expect(!fnmatch("a.py", "a.PYC"))
        // No alternate separator.
        #expect(!fnmatch("a/b", "a\\b"))
        #expect(!fnmatch("a\\b", "a/b"))
        #expect(!fnmatch("a/b\\c", "a\\b/c"))
        #expect(!fnmatch("a/b/c", "a\\b\\c"))
        // `*` and `?` match `/` (fnmatch without FNM_PATHNAME, as Python's).
        #expect(fnmatch("/src/Sources/MyApp/Cache.swift", "*/Sources/MyApp/*"))
        #expect(fnmatch("a/b/c.py", "a*.py"))
        #expect(fnmatch("a/b", "a?b"))
        #expect(!fnmatch("/src/Sources/Other/Cache.swift", "*/Sources/MyApp/*"))
        // Character classes.
        #expect(fnmatch("abc", "[a-c]bc"))
        #expect(!fnmatch("abc", "[!a]bc"))
        #expect(fnmatch("*.py", "[*].py") && !fnmatch("x.py", "[*].py"))
        // A backslash is an ordinary character in Python's patterns, not an escape.
        #expect(fnmatch("a\\b", "a\\b"))
        #expect(fnmatch("C:\\src\\a.py", "C:\\src\\*"))
    }

    @Test func filterMatchTrace() {
        let t1 = [("a.py", 2), ("b.py", 3)]
        let t2 = [("b.py", 4), ("b.py", 5)]
        let t3 = [("c.py", 5), ("<unknown>", 0)]
        let unknown = [("<unknown>", 0)]

        var f = Filter(inclusive: true, filePattern: "b.py", allFrames: true)
        #expect(Self.keeps(f, t1) && Self.keeps(f, t2) && !Self.keeps(f, t3) && !Self.keeps(f, unknown))
        f = Filter(inclusive: true, filePattern: "b.py", allFrames: false)
        #expect(!Self.keeps(f, t1) && Self.keeps(f, t2) && !Self.keeps(f, t3) && !Self.keeps(f, unknown))
        f = Filter(inclusive: false, filePattern: "b.py", allFrames: true)
        #expect(!Self.keeps(f, t1) && !Self.keeps(f, t2) && Self.keeps(f, t3) && Self.keeps(f, unknown))
        f = Filter(inclusive: false, filePattern: "b.py", allFrames: false)
        #expect(Self.keeps(f, t1) && !Self.keeps(f, t2) && Self.keeps(f, t3) && Self.keeps(f, unknown))
        f = Filter(inclusive: false, filePattern: "<unknown>", allFrames: false)
        #expect(Self.keeps(f, t1) && Self.keeps(f, t2) && Self.keeps(f, t3) && !Self.keeps(f, unknown))
        f = Filter(inclusive: true, filePattern: "<unknown>", allFrames: true)
        #expect(!Self.keeps(f, t1) && !Self.keeps(f, t2) && Self.keeps(f, t3) && Self.keeps(f, unknown))
        f = Filter(inclusive: false, filePattern: "<unknown>", allFrames: true)
        #expect(Self.keeps(f, t1) && Self.keeps(f, t2) && !Self.keeps(f, t3) && !Self.keeps(f, unknown))
    }

    /// Which traces of `create_snapshots()`'s first snapshot `filters` keep, as (size, frames) pairs.
    static func kept(_ filters: [Filter]) -> [String] {
        let (snapshot, _) = createSnapshots()
        return snapshot.filtered(by: filters).traces.map { trace in
            "\(trace.size) " + trace.traceback.frames.map(\.description).joined(separator: " ")
        }
    }

    @Test func filterTraces() {
        let (snapshot, _) = Self.createSnapshots()
        let original = snapshot.traces
        let filter1 = Filter(inclusive: false, filePattern: "b.py")
        let filter2 = Filter(inclusive: true, filePattern: "a.py", line: 2)
        let filter3 = Filter(inclusive: true, filePattern: "a.py", line: 5)

        // Exclude b.py.
        let snapshot3 = snapshot.filtered(by: [filter1])
        #expect(snapshot3.traces == Array(original[0..<4]) + [original[5]])
        // The original snapshot is untouched, and the rest of it carried over.
        #expect(snapshot.traces == original)
        #expect(snapshot3.tracebackLimit == 2 && snapshot3.timestamp == snapshot.timestamp)

        // Only two lines of a.py.
        let snapshot4 = snapshot3.filtered(by: [filter2, filter3])
        #expect(snapshot4.traces == Array(original[0..<4]))

        // No filter: the same traces.
        #expect(snapshot.filtered(by: []).traces == original)
    }

    /// Inclusive and exclusive combinations (expected lists from CPython 3.11's `filter_traces`).
    @Test func filterTracesCombinations() {
        let a2 = "10 a.py:2 b.py:4", a5 = "2 a.py:5 b.py:4", b1 = "66 b.py:1", unknown = "7 <unknown>:0"
        #expect(Self.kept([Filter(inclusive: true, filePattern: "a.py"), Filter(inclusive: false, filePattern: "a.py", line: 5)])
                == [a2, a2, a2])
        #expect(Self.kept([Filter(inclusive: false, filePattern: "b.py", allFrames: true)]) == [unknown])
        #expect(Self.kept([Filter(inclusive: true, filePattern: "b.py", allFrames: true)]) == [a2, a2, a2, a5, b1])
        #expect(Self.kept([Filter(inclusive: true, filePattern: "b.py", line: 4, allFrames: true),
                           Filter(inclusive: false, filePattern: "a.py", line: 5)]) == [a2, a2, a2])
        #expect(Self.kept([Filter(inclusive: false, filePattern: "a.py"), Filter(inclusive: false, filePattern: "<unknown>")])
                == [b1])
        #expect(Self.kept([Filter(inclusive: true, filePattern: "*"), Filter(inclusive: false, filePattern: "*.py")]) == [unknown])
        #expect(Self.kept([Filter(inclusive: true, filePattern: "?.py", line: 1), Filter(inclusive: true, filePattern: "<*>")])
                == [b1, unknown])
        #expect(Self.kept([Filter(inclusive: true, filePattern: "z.py")]) == [])
        #expect(Self.kept([Filter(inclusive: false, filePattern: "*", line: 0)]) == [a2, a2, a2, a5, b1])
    }

    @Test func filterByFunctionImageAndLine() {
        let cHelper = Frame(function: "helper", file: "helper.c", line: 9, image: "libHelpers.so", address: 0x9000,
                            mangledName: "helper")
        let snapshot = Snapshot(traces: [
            Trace(traceback: Self.nativeTraceback, size: 100, count: 1),                      // -> Cache.swift:42
            Trace(traceback: Traceback(frames: [Self.malloc, cHelper, Self.caller]), size: 30, count: 1),  // -> helper.c:9
            Trace(traceback: Traceback(frames: [Self.malloc, Self.slowAlloc]), size: 7, count: 1),         // -> malloc
        ], tracebackLimit: 16, timestamp: 0, processID: 1)
        func sizes(_ filters: [Filter]) -> [Int] { snapshot.filtered(by: filters).traces.map(\.size) }

        // Readable or mangled function names.
        #expect(sizes([Filter(inclusive: true, functionPattern: "Cache.*")]) == [100])
        #expect(sizes([Filter(inclusive: true, functionPattern: "$s3App5CacheC*")]) == [100])
        #expect(sizes([Filter(inclusive: false, functionPattern: "helper")]) == [100, 7])
        // The attribution frame unless allFrames.
        #expect(sizes([Filter(inclusive: true, functionPattern: "Server.*")]) == [])
        #expect(sizes([Filter(inclusive: true, functionPattern: "Server.*", allFrames: true)]) == [100, 30])
        #expect(sizes([Filter(inclusive: true, imagePattern: "libc.so*")]) == [7])
        #expect(sizes([Filter(inclusive: true, imagePattern: "libc.so*", allFrames: true)]) == [100, 30, 7])
        #expect(sizes([Filter(inclusive: false, imagePattern: "libHelpers.so", allFrames: true)]) == [100, 7])
        #expect(sizes([Filter(inclusive: true, imagePattern: "App")]) == [100])
        // A line alone, in any file.
        #expect(sizes([Filter(inclusive: true, line: 9)]) == [30])
        #expect(sizes([Filter(inclusive: true, line: 17, allFrames: true)]) == [100, 30])
        // Every pattern set must match.
        #expect(sizes([Filter(inclusive: true, filePattern: "*.swift", functionPattern: "Cache.*", line: 42)]) == [100])
        #expect(sizes([Filter(inclusive: true, filePattern: "*.swift", functionPattern: "Cache.*", line: 43)]) == [])
        #expect(sizes([Filter(inclusive: true, functionPattern: "helper", imagePattern: "App")]) == [])
        // A frame without a file, function or image never matches a pattern for it.
        #expect(sizes([Filter(inclusive: true, filePattern: "*")]) == [100, 30])
        #expect(sizes([Filter(inclusive: true, functionPattern: "*")]) == [100, 30, 7])
        #expect(!Filter(inclusive: true, imagePattern: "*").matches(Self.frame("a.py", 1)))
        // No pattern at all: every frame.
        #expect(sizes([Filter(inclusive: true)]) == [100, 30, 7])
        #expect(sizes([Filter(inclusive: false)]) == [])
        // An empty traceback has no attribution frame: no inclusive filter keeps it, no exclusive one drops it.
        let empty = Snapshot(traces: [Trace(traceback: Traceback(frames: []), size: 1, count: 1)], tracebackLimit: 1,
                             timestamp: 0, processID: 1)
        #expect(empty.filtered(by: [Filter(inclusive: true)]).traces.isEmpty)
        #expect(empty.filtered(by: [Filter(inclusive: false)]).traces.count == 1)
    }

    // MARK: - Reports

    @Test func reportTop() throws {
        let (snapshot, _) = Self.createSnapshots()
        #expect(try snapshot.report(top: 2, tracebacks: 1) == """
            [ Top 2 ]
            #1: b.py:1: size=66 B, count=1, average=66 B
                b.py:1
            #2: a.py:2: size=30 B, count=3, average=10 B
            2 other: size=9 B, count=2
            Total: size=105 B, count=6
            dropped allocations: 0

            """)
        // Every key shown: no "other" line; the largest trace behind each key, down to `tracebackDepth` frames.
        #expect(try snapshot.report(tracebackDepth: 1) == """
            [ Top 10 ]
            #1: b.py:1: size=66 B, count=1, average=66 B
                b.py:1
            #2: a.py:2: size=30 B, count=3, average=10 B
                a.py:2
            #3: <unknown>:0: size=7 B, count=1, average=7 B
                <unknown>:0
            #4: a.py:5: size=2 B, count=1, average=2 B
            Total: size=105 B, count=6
            dropped allocations: 0

            """)
        #expect(try snapshot.report(top: 0) == """
            [ Top 0 ]
            4 other: size=105 B, count=6
            Total: size=105 B, count=6
            dropped allocations: 0

            """)
    }

    @Test func reportCountersAndGroupings() throws {
        let (snapshot, _) = Self.createSnapshots()
        var peak = snapshot
        peak.moment = .peak
        peak.droppedAllocations = 5
        peak.tracedMemory = TracedMemory(current: 105, peak: 20480, liveBlocks: 6)
        #expect(try peak.report(top: 1, groupedBy: .file, tracebacks: 0) == """
            [ Top 1 at the peak ]
            #1: b.py:0: size=66 B, count=1, average=66 B
            2 other: size=39 B, count=5
            Total: size=105 B, count=6
            Traced memory: current=105 B, peak=20.0 KiB; snapshot at the peak; dropped allocations: 5

            """)
        #expect(try snapshot.report(top: 2, groupedBy: .traceback, tracebacks: 2) == """
            [ Top 2 ]
            #1: b.py:1: size=66 B, count=1, average=66 B
                b.py:1
            #2: a.py:2: size=30 B, count=3, average=10 B
                a.py:2
                b.py:4
            2 other: size=9 B, count=2
            Total: size=105 B, count=6
            dropped allocations: 0

            """)
        let native = Snapshot(traces: [Trace(traceback: Self.nativeTraceback, size: 4096, count: 4)], tracebackLimit: 16,
                              timestamp: 0, processID: 1)
        #expect(try native.report(groupedBy: .function, tracebackDepth: 4) == """
            [ Top 10 ]
            #1: Cache.insert(_:for:) (/src/Sources/App/Cache.swift): size=4096 B, count=4, average=1024 B
                (3 allocator and runtime frames above)
                /src/Sources/App/Cache.swift:42 in Cache.insert(_:for:)
                /src/Sources/App/Server.swift:17 in Server.handle(_:)
            Total: size=4096 B, count=4
            dropped allocations: 0

            """)
        Self.expectInvalidArgument { _ = try snapshot.report(top: -1) }
    }

    /// A `.now` snapshot keeps the stacks whose blocks were all freed (count 0, for their totals). Live memory
    /// is what statistics, diffs, filters' results and reports show: adding such traces — at new keys, at keys
    /// with live traces, in the newer or the older snapshot, before a zero-size live trace of the same key —
    /// changes none of them.
    @Test func freedSitesChangeNoStatisticOrReport() throws {
        let (live, live2) = Self.createSnapshots()
        let zeroSize = Trace(traceback: Self.stack([("zero.py", 1), ("main.py", 1)]), size: 0, count: 1)
        func freed(_ frames: [(String, Int)]) -> Trace {
            Trace(traceback: Self.stack(frames), size: 0, count: 0, allocatedSize: 512, allocatedCount: 4)
        }
        var (snapshot, snapshot2) = (live, live2)
        snapshot.traces += [zeroSize]
        snapshot2.traces += [zeroSize]
        let (withLive, withLive2) = (snapshot, snapshot2)
        snapshot.traces.insert(contentsOf: [freed([("zero.py", 1), ("other.py", 2)]), freed([("e.py", 1)]),
                                            freed([("a.py", 2), ("b.py", 4)])], at: 0)
        snapshot2.traces.insert(contentsOf: [freed([("zero.py", 1), ("other.py", 2)]), freed([("d.py", 9)]),
                                             freed([("a.py", 5), ("z.py", 1)])], at: 0)
        #expect(snapshot.totalSize == withLive.totalSize && snapshot.totalCount == withLive.totalCount)
        #expect(snapshot2.totalSize == withLive2.totalSize && snapshot2.totalCount == withLive2.totalCount)
        for key in GroupingKey.allCases {
            #expect(try snapshot.statistics(groupedBy: key) == withLive.statistics(groupedBy: key), "\(key)")
            #expect(try snapshot2.compared(to: snapshot, groupedBy: key) == withLive2.compared(to: withLive, groupedBy: key),
                    "\(key)")
            #expect(try snapshot.compared(to: snapshot2, groupedBy: key) == withLive.compared(to: withLive2, groupedBy: key),
                    "\(key)")
            #expect(try snapshot2.report(groupedBy: key, relativeTo: nil) == withLive2.report(groupedBy: key, relativeTo: nil))
            #expect(try snapshot2.report(comparedTo: snapshot, groupedBy: key, relativeTo: nil)
                    == withLive2.report(comparedTo: withLive, groupedBy: key, relativeTo: nil))
            if key != .traceback {
                #expect(try snapshot2.statistics(groupedBy: key, cumulative: true)
                        == withLive2.statistics(groupedBy: key, cumulative: true), "\(key)")
            }
        }
        let filters = [Filter(inclusive: true, filePattern: "*.py"), Filter(inclusive: false, filePattern: "c.py")]
        #expect(try snapshot2.filtered(by: filters).statistics(groupedBy: .line)
                == withLive2.filtered(by: filters).statistics(groupedBy: .line))
        // The zero-size live trace is the one whose traceback the report shows for its key.
        #expect(try snapshot2.report(top: 10, tracebacks: 10, relativeTo: nil).contains("    main.py:1"))
        // The filtered snapshot keeps the freed traces it admits (their totals are still there).
        #expect(snapshot2.filtered(by: filters).traces.contains { $0.count == 0 && $0.allocatedSize == 512 })
    }

    @Test func reportComparedTo() throws {
        let (snapshot, snapshot2) = Self.createSnapshots()
        #expect(try snapshot2.report(comparedTo: snapshot, top: 3, tracebacks: 2) == """
            [ Top 3 differences ]
            #1: a.py:5: size=5002 B (+5000 B), count=2 (+1), average=2501 B
                a.py:5
                b.py:4
            #2: c.py:578: size=400 B (+400 B), count=1 (+1), average=400 B
                c.py:578
            #3: b.py:1: size=0 B (-66 B), count=0 (-1)
            2 other: size=30 B (-7 B)
            Total: size=5432 B (+5327 B), count=6 (+0)
            dropped allocations: 0

            """)
        #expect(try snapshot.report(comparedTo: snapshot2, top: 1, tracebacks: 0) == """
            [ Top 1 differences ]
            #1: a.py:5: size=2 B (-5000 B), count=1 (-1), average=2 B
            4 other: size=103 B (-327 B)
            Total: size=105 B (-5327 B), count=6 (+0)
            dropped allocations: 0

            """)
        Self.expectInvalidArgument { _ = try snapshot2.report(comparedTo: snapshot, top: -5) }
    }
}

/// A small deterministic generator (SplitMix64) for shuffles and fuzzing.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E9B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

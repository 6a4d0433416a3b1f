import AllocationTracking
import Foundation
import Testing
import TrackerTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Snapshots with exact contents, written by the test: the commands' output on them is exact.
enum Fixture {
    static let insert = Frame(function: "Cache.insert(_:for:)", file: "/src/App/Cache.swift", line: 42, image: "App")
    static let parse = Frame(function: "Parser.parse(_:)", file: "/src/App/Parser.swift", line: 9, image: "App")
    static let render = Frame(function: "renderResponse(for:)", file: "/src/App/Render.swift", line: 7, image: "App")
    static let handle = Frame(function: "Server.handle(_:)", file: "/src/App/Server.swift", line: 17, image: "App")
    static let main = Frame(function: "main", file: "/src/App/main.swift", line: 3, image: "App")

    static func trace(_ leaf: Frame, size: Int, count: Int) -> Trace {
        Trace(traceback: Traceback(frames: [leaf, handle, main]), size: size, count: count)
    }

    static let old = Snapshot(traces: [trace(insert, size: 10240, count: 10), trace(parse, size: 2048, count: 2)],
                              tracebackLimit: 32, timestamp: 1_795_000_000, processID: 42, executable: "App")
    static let new = Snapshot(traces: [trace(insert, size: 40960, count: 40), trace(parse, size: 1024, count: 1),
                                       trace(render, size: 4096, count: 4)],
                              tracebackLimit: 32, timestamp: 1_795_000_060, processID: 42, executable: "App")

    /// Writes both snapshots into a new directory: old.json, new.json.
    static func files() throws -> URL {
        let directory = try temporaryDirectory("fixture")
        try old.write(to: directory.appendingPathComponent("old.json"))
        try new.write(to: directory.appendingPathComponent("new.json"))
        return directory
    }
}

@Suite struct ReadingCommands {
    @Test func topPrintsTheTracemallocText() throws {
        let directory = try Fixture.files()
        let result = try runTool(["top", "new.json", "--limit", "2"], in: directory)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == """
            [ Top 2 ]
            #1: /src/App/Cache.swift:42: size=40.0 KiB, count=40, average=1024 B
                /src/App/Cache.swift:42 in Cache.insert(_:for:)
                /src/App/Server.swift:17 in Server.handle(_:)
                /src/App/main.swift:3 in main
            #2: /src/App/Render.swift:7: size=4096 B, count=4, average=1024 B
                /src/App/Render.swift:7 in renderResponse(for:)
                /src/App/Server.swift:17 in Server.handle(_:)
                /src/App/main.swift:3 in main
            1 other: size=1024 B, count=1
            Total: size=45.0 KiB, count=45
            dropped allocations: 0

            """)
    }

    @Test func topAsJSONWithFilters() throws {
        let directory = try Fixture.files()
        let result = try runTool(["top", "new.json", "--by", "function", "--exclude", "Cache.*", "--format", "json"],
                                 in: directory)
        #expect(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let entries = json["entries"] as! [[String: Any]]
        #expect(entries.map { ($0["frame"] as! [String: Any])["function"] as! String } == ["renderResponse(for:)", "Parser.parse(_:)"])
        #expect(entries.map { $0["size"] as! Int } == [4096, 1024])
        #expect(json["totalSize"] as? Int == 5120)

        let included = try runTool(["top", "new.json", "--include", "*/Parser.swift", "--format", "json"], in: directory)
        let kept = (try JSONSerialization.jsonObject(with: Data(included.stdout.utf8)) as! [String: Any])["entries"] as! [[String: Any]]
        #expect(kept.count == 1 && kept[0]["size"] as? Int == 1024)
    }

    @Test func topCumulativeCountsCallers() throws {
        let directory = try Fixture.files()
        let result = try runTool(["top", "new.json", "--by", "function", "--cumulative", "--limit", "1"], in: directory)
        #expect(result.status == 0, "\(result.stderr)")
        // Server.handle(_:) is on every stack: it holds everything (main too; equal sizes sort by key).
        #expect(result.stdout.split(separator: "\n").dropFirst().first?.hasSuffix("size=45.0 KiB, count=45, average=1024 B") == true,
                "\(result.stdout)")
    }

    @Test func peakIsRequiredWhenAsked() throws {
        let directory = try Fixture.files()
        let result = try runTool(["top", "new.json", "--peak"], in: directory)
        #expect(result.status == 1)
        #expect(result.stderr == "alloc-track: new.json holds the snapshot of a moment (now), not the peak's\n")
    }

    @Test func diffAsTextAndJSON() throws {
        let directory = try Fixture.files()
        let text = try runTool(["diff", "old.json", "new.json", "--limit", "1"], in: directory)
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.hasPrefix("""
            [ Top 1 differences ]
            #1: /src/App/Cache.swift:42: size=40.0 KiB (+30.0 KiB), count=40 (+30), average=1024 B
            """), "\(text.stdout)")
        #expect(text.stdout.contains("2 other: size=5120 B (+3072 B)\nTotal: size=45.0 KiB (+33.0 KiB), count=45 (+33)\n"),
                "\(text.stdout)")

        let json = try runTool(["diff", "old.json", "new.json", "--by", "function", "--format", "json"], in: directory)
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any]
        let entries = object["entries"] as! [[String: Any]]
        #expect(entries.map { ($0["frame"] as! [String: Any])["function"] as! String }
            == ["Cache.insert(_:for:)", "renderResponse(for:)", "Parser.parse(_:)"])
        #expect(entries.map { $0["sizeDiff"] as! Int } == [30720, 4096, -1024])
        #expect(entries.map { $0["countDiff"] as! Int } == [30, 4, -1])
        #expect(object["totalSizeDiff"] as? Int == 33792)
    }

    @Test func foldedStacks() throws {
        let directory = try Fixture.files()
        let result = try runTool(["folded", "new.json"], in: directory)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == """
            main;Server.handle(_:);Cache.insert(_:for:) 40960
            main;Server.handle(_:);Parser.parse(_:) 1024
            main;Server.handle(_:);renderResponse(for:) 4096

            """)
        let objects = try runTool(["folded", "new.json", "--value", "inuse_objects"], in: directory)
        #expect(objects.stdout.hasPrefix("main;Server.handle(_:);Cache.insert(_:for:) 40\n"))
    }

    @Test func pprofWritesANewProfileThatGoToolPprofReads() throws {
        let directory = try Fixture.files()
        let result = try runTool(["pprof", "new.json", "-o", "heap.pb.gz"], in: directory)
        #expect(result.status == 0, "\(result.stderr)")
        let path = directory.appendingPathComponent("heap.pb.gz").path
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(bytes.prefix(2) == Data([0x1f, 0x8b]))
        // Never replaces a file.
        let again = try runTool(["pprof", "new.json", "-o", "heap.pb.gz"], in: directory)
        #expect(again.status == 1)
        #expect(again.stderr.hasPrefix("alloc-track: cannot create heap.pb.gz: it exists"))
        #expect(again.stderr.split(separator: "\n").count == 1)
        // The real reader, where Go is installed (CI installs it).
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/go") else { return }
        let top = try runTool(["go", "tool", "pprof", "-top", "-sample_index=inuse_space", path],
                              executable: URL(fileURLWithPath: "/usr/bin/env"))
        #expect(top.status == 0, "\(top.stderr)")
        #expect(top.stdout.contains("Cache.insert(_:for:)"), "\(top.stdout)")
    }

    /// The page itself is tested in AllocationTrackingFlameGraphTests (in a real Chromium); here, what the
    /// command does with files: a new 0600 page holding the snapshot's frames and totals, the diff mode, never
    /// replacing a file.
    @Test func flamegraphWritesOneSelfContainedPage() throws {
        let directory = try Fixture.files()
        let result = try runTool(["flamegraph", "new.json", "-o", "flame.html"], in: directory)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr == "alloc-track: wrote flame.html\n", "no progress line when stderr is not a terminal")
        let path = directory.appendingPathComponent("flame.html").path
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        let page = try String(contentsOfFile: path, encoding: .utf8)
        #expect(page.hasPrefix("<!DOCTYPE html>"))
        for name in ["Cache.insert(_:for:)", "renderResponse(for:)", "Parser.parse(_:)", "Server.handle(_:)"] {
            #expect(page.contains(name), "\(name)")
        }
        #expect(page.contains("46080"), "the live bytes' total (40960 + 4096 + 1024) is in the page's data")
        // Loads nothing: the only URL is the SVG namespace's, a name, not something fetched.
        let urls = page.components(separatedBy: "://").dropFirst().map { "://" + $0.prefix(30) }
        #expect(!urls.isEmpty && urls.allSatisfy { $0.hasPrefix("://www.w3.org/2000/svg") }, "\(urls)")
        #expect(!page.contains("https://"))
        // Default name: FILE with .html; the diff mode.
        let diff = try runTool(["flamegraph", "new.json", "--diff", "old.json"], in: directory)
        #expect(diff.status == 0, "\(diff.stderr)")
        let diffPage = try String(contentsOfFile: directory.appendingPathComponent("new.html").path, encoding: .utf8)
        #expect(diffPage.contains("new.json compared with old.json"))
        #expect(diffPage != page)
        let again = try runTool(["flamegraph", "new.json", "-o", "flame.html"], in: directory)
        #expect(again.status == 1)
        #expect(again.stderr.hasPrefix("alloc-track: cannot create flame.html: it exists"))
    }

    @Test func errorsAreOneLineAndNonZero() throws {
        let directory = try Fixture.files()
        try Data("{\"format\": 1".utf8).write(to: directory.appendingPathComponent("broken.json"))
        for arguments in [["top", "missing.json"], ["top", "broken.json"], ["diff", "old.json", "missing.json"],
                          ["folded", "broken.json"], ["pprof", "missing.json"], ["reports", "no-such-directory"],
                          ["flamegraph", "missing.json"], ["flamegraph", "new.json", "--diff", "broken.json"]] {
            let result = try runTool(arguments, in: directory)
            #expect(result.status == 1, "\(arguments)")
            #expect(result.stderr.hasPrefix("alloc-track: "), "\(arguments): \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(arguments): \(result.stderr)")
            #expect(result.stdout.isEmpty)
        }
    }

    @Test func everyCommandHasHelpWithAnExample() throws {
        for command in ["run", "top", "diff", "pprof", "folded", "flamegraph", "reports"] {
            let result = try runTool([command, "--help"])
            #expect(result.status == 0)
            #expect(result.stdout.contains("Example:\n  alloc-track \(command) "), "\(command): \(result.stdout)")
        }
    }
}

/// Leaks into the tracker's view from a function with a name the report can show.
@inline(never) func growTheReportedCache(_ blocks: Int, _ keep: inout [UnsafeMutableRawPointer]) {
    for _ in 0..<blocks { keep.append(UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 16)) }
}
/// The line above that allocates (the report's growth names it).
let growTheReportedCacheLine = #line - 3

@Suite(.trackerExclusive) struct ReportsCommand {
    @Test func timelineAndGrowth() throws {
        let directory = try temporaryDirectory("reports")
        try AllocationTracker.start(.init(report: .init(directory: directory.path, standardError: false),
                                          limits: .init(containerFraction: nil, onAllocationFailure: false)))
        var keep: [UnsafeMutableRawPointer] = []
        growTheReportedCache(10, &keep)
        // Names resolved once, as in a service that has been up a while: a report resolves names within 0.5 s
        // and prints the rest as image+offset, and a cold lookup in this large debug binary can take longer.
        _ = try AllocationTracker.takeSnapshot()
        _ = try AllocationTracker.writeReport(reason: "first")
        usleep(1_100_000)  // report names and times are to the second
        growTheReportedCache(100, &keep)
        _ = try AllocationTracker.takeSnapshot()
        _ = try AllocationTracker.writeReport(reason: "second")
        AllocationTracker.stop()
        keep.forEach { $0.deallocate() }

        // The text output: the timeline, then the growth. Tracking is process-wide and this test process runs
        // other suites meanwhile, whose frees between the two reports can outrank this growth (a diff is sorted
        // by the absolute change, as tracemalloc's): the growing line is looked for among the first 20, with its
        // exact change.
        let result = try runTool(["reports", directory.path, "--limit", "20"])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.first == "[ 2 reports in \(directory.path) ]")
        #expect(lines.dropFirst().prefix(2).allSatisfy { $0.contains(" | on demand | tracked ") && $0.contains(" | rss ") },
                "\(result.stdout)")
        #expect(result.stdout.contains("Growth from the first report to the last:\n[ Top 20 differences ]\n#1: "))
        // The growing line is the one in growTheReportedCache: 100 more blocks of 4 KiB (and the array holding
        // them, appended to on the same line: its larger buffer, 1 KiB more). The line's absolute count depends on
        // what the compiler inlined into it (the array's own allocations), not its growth.
        let site = "Tests/AllocTrackTests/AllocTrackTests.swift:\(growTheReportedCacheLine): "
        let grown = result.stdout.split(separator: "\n").first { $0.contains(": " + site) }
        #expect(grown?.contains(" (+401 KiB), count=") == true && grown?.contains(" (+100), ") == true, "\(result.stdout)")

        let json = try runTool(["reports", directory.path, "--format", "json", "--limit", "20"])
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any]
        let reports = object["reports"] as! [[String: Any]]
        #expect(reports.count == 2)
        let tracked = reports.compactMap { $0["trackedBytes"] as? Int }
        // At least what this test keeps live at each report (10, then 110 blocks of 4 KiB): the process-wide
        // figure also holds what other tests' threads allocate and free meanwhile, so their difference is noise.
        #expect(tracked.count == 2 && tracked[0] >= 10 * 4096 && tracked[1] >= 110 * 4096, "\(tracked)")
        let growth = (object["growth"] as! [String: Any])["entries"] as! [[String: Any]]
        let grownEntry = growth.first { ($0["frame"] as? [String: Any])?["function"] as? String == "growTheReportedCache(_:_:)" }
        let sizeDiff = grownEntry?["sizeDiff"] as? Int ?? 0
        #expect(grownEntry?["countDiff"] as? Int == 100 && sizeDiff >= 100 * 4096 && sizeDiff < 101 * 4096, "\(growth)")
    }
}

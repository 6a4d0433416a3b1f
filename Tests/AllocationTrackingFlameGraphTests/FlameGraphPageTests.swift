import AllocationTracking
import AllocationTrackingFlameGraph
import Foundation
import Testing

/// The page's HTML and the data it embeds, for snapshots the tests make (exact: every value is known).
@Suite struct FlameGraphPageTests {
    let metrics = FlameGraphPage.metrics

    @Test func embedsTheExactTotalsAndStacks() throws {
        let html = try FlameGraphPage.render(Fixtures.leaky, title: "heap of App")
        let data = try Fixtures.data(of: html)
        #expect(data.title == "heap of App")
        #expect(data.timestamp == 1_700_000_000)
        #expect(data.baseTimestamp == nil && data.baseTotals == nil && data.nodes.base == nil)
        // Each file and image once, in the order met.
        #expect(data.files == ["/src/App/main.swift", "/src/App/Handler.swift", Fixtures.hostile.file!])
        #expect(data.images == ["App", "libswiftCore.so", "libc.so.6"])
        // live bytes, live blocks, allocated bytes, allocated blocks
        #expect(data.totals == [751_000, 616, 951_000, 2_217])
        #expect(metrics == ["live bytes", "live blocks", "allocated bytes", "allocated blocks"])

        let hostile = Fixtures.hostile.function!
        // Root first, cut at the attribution frame: no malloc above user code; the all-system stack whole.
        #expect(data.stacks(0) == [
            "main;serve();handle(_:cache:);renderResponse(for:)": 600_000,
            "main;serve();handle(_:cache:)": 100_000,
            "main;\(hostile)": 50_000,
            "swift_slowAlloc;malloc": 1_000,
        ])
        #expect(data.stacks(1) == [
            "main;serve();handle(_:cache:);renderResponse(for:)": 600,
            "main;serve();handle(_:cache:)": 10,
            "main;\(hostile)": 5,
            "swift_slowAlloc;malloc": 1,
        ])
        // The freed stack counts for the allocated metrics only.
        #expect(data.stacks(2) == [
            "main;serve();handle(_:cache:);renderResponse(for:)": 700_000,
            "main;serve();handle(_:cache:);formatLogLine(for:)": 90_000,
            "main;serve();handle(_:cache:)": 100_000,
            "main;\(hostile)": 60_000,
            "swift_slowAlloc;malloc": 1_000,
        ])
        #expect(data.stacks(3)["main;serve();handle(_:cache:);formatLogLine(for:)"] == 1_500)
        for metric in 0..<4 {
            #expect(data.stacks(metric).values.reduce(0, +) == data.totals[metric], "\(metrics[metric])")
        }

        // Frames with their locations, exactly as given.
        let frames = (0..<data.frames.name.count).map {
            "\(data.frames.name[$0]) @ \(data.file(ofFrame: $0) ?? "-"):\(data.frames.line[$0]) in \(data.image(ofFrame: $0) ?? "-")"
        }
        #expect(Set(frames) == [
            "main @ /src/App/main.swift:40 in App",
            "serve() @ /src/App/main.swift:12 in App",
            "handle(_:cache:) @ /src/App/Handler.swift:30 in App",
            "renderResponse(for:) @ /src/App/Handler.swift:8 in App",
            "formatLogLine(for:) @ /src/App/Handler.swift:20 in App",
            "\(hostile) @ /src/App/<weird> & \"file\".cpp:7 in App",
            "swift_slowAlloc @ -:0 in libswiftCore.so",
            "malloc @ -:0 in libc.so.6",
        ])
        #expect(frames.count == 8, "each frame once")
    }

    @Test func nodesArePreorderWithSortedSiblings() throws {
        let data = try Fixtures.data(of: try FlameGraphPage.render(Fixtures.leaky, title: "t"))
        // A parent before its children (the page adds values up in one backward pass).
        #expect(data.nodes.depth[0] == 0 && data.nodes.frame[0] == -1)
        #expect(data.nodes.depth.dropFirst().allSatisfy { $0 > 0 })
        #expect(data.nodes.depth == [0, 1, 2, 2, 3, 4, 4, 1, 2])
        // Only the nodes where stacks end carry values.
        #expect(data.nodes.ends.map { data.paths[$0] } == [
            "main;\(Fixtures.hostile.function!)", "main;serve();handle(_:cache:)",
            "main;serve();handle(_:cache:);formatLogLine(for:)", "main;serve();handle(_:cache:);renderResponse(for:)",
            "swift_slowAlloc;malloc",
        ])
        let paths = data.paths
        #expect(paths == [
            "", "main", "main;\(Fixtures.hostile.function!)",
            "main;serve()", "main;serve();handle(_:cache:)",
            "main;serve();handle(_:cache:);formatLogLine(for:)", "main;serve();handle(_:cache:);renderResponse(for:)",
            "swift_slowAlloc", "swift_slowAlloc;malloc",
        ])
    }

    @Test func noNameCanBreakOutOfTheDataOrTheMarkup() throws {
        let title = "</script><b>\"&'"
        let html = try FlameGraphPage.render(Fixtures.leaky, title: title)
        // Two script elements, each closed once: no name ends one early; no comment opens inside one.
        #expect(Fixtures.occurrences(of: "</script", in: html) == 2)
        #expect(Fixtures.occurrences(of: "<script", in: html) == 2)
        #expect(!html.contains("<!--"))
        #expect(!html.contains("alert(1)</"))
        #expect(html.contains("<title>&lt;/script&gt;&lt;b&gt;&quot;&amp;&#39;</title>"))
        #expect(html.contains("<h1>&lt;/script&gt;&lt;b&gt;&quot;&amp;&#39;</h1>"))
        // The JSON escapes <, > and & inside strings, and still reads back as the names given.
        #expect(html.contains(#"operator\u003c\u003c\u003cT\u003e(a \u0026 b, \"q\", 'r') \u003c/script\u003e"#))
        let data = try Fixtures.data(of: html)
        #expect(data.title == title)
        #expect(data.frames.name.contains(Fixtures.hostile.function!))
        #expect(data.files.contains(Fixtures.hostile.file!))
    }

    @Test func needsNoNetwork() throws {
        let html = try FlameGraphPage.render(Fixtures.leaky, title: "t")
        #expect(html.contains(#"<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">"#))
        for loader in ["<link", "src=", "href=", "@import", "url(", "fetch(", "XMLHttpRequest", "https://"] {
            #expect(!html.contains(loader), "\(loader)")
        }
        // The only URL is the SVG namespace, a name that is never fetched.
        #expect(Fixtures.occurrences(of: "http://", in: html) == Fixtures.occurrences(of: "http://www.w3.org/2000/svg", in: html))
    }

    @Test func sampledSnapshotsSayEstimatedOnce() throws {
        var sampled = Fixtures.leaky
        sampled.sampling = .poisson(meanBytes: 524_288)
        let html = try FlameGraphPage.render(sampled, title: "t")
        #expect(Fixtures.occurrences(of: "estimated", in: html.lowercased()) == 1)
        #expect(html.contains("<p class=\"note\">Every size and count here is estimated: the allocations were sampled (poisson(512 KiB), a sample every 524288 bytes on average).</p>"))
        let exact = try FlameGraphPage.render(Fixtures.leaky, title: "t")
        #expect(Fixtures.occurrences(of: "estimated", in: exact.lowercased()) == 0)
        // A diff with one sampled side is estimated too.
        let diff = try FlameGraphPage.render(Fixtures.leaky, comparedTo: sampled, title: "t")
        #expect(Fixtures.occurrences(of: "estimated", in: diff.lowercased()) == 1)
    }

    @Test func saysWhatADroppedAllocationLeftOut() throws {
        var snapshot = Fixtures.leaky
        snapshot.droppedAllocations = 3
        let html = try FlameGraphPage.render(snapshot, title: "t")
        #expect(html.contains("<p class=\"note\">3 allocations could not be recorded (a full table): the graph is missing them.</p>"))
        #expect(!(try FlameGraphPage.render(Fixtures.leaky, title: "t")).contains("could not be recorded"))
    }

    @Test func differentialGraphEmbedsBothSides() throws {
        let older = Snapshot(traces: [
            Trace(traceback: Fixtures.stack(Fixtures.render, Fixtures.handle, Fixtures.serve, Fixtures.main), size: 200_000, count: 200),
            // Gone by the newer snapshot: must still be in the tree, with 0 after.
            Trace(traceback: Fixtures.stack(Fixtures.log, Fixtures.handle, Fixtures.serve, Fixtures.main), size: 30_000, count: 3),
        ], tracebackLimit: 16, timestamp: 1_699_999_000, processID: 4242, executable: "App")
        let html = try FlameGraphPage.render(Fixtures.leaky, comparedTo: older, title: "growth")
        let data = try Fixtures.data(of: html)
        #expect(data.baseTotals == [230_000, 203, 230_000, 203])
        #expect(data.totals == [751_000, 616, 951_000, 2_217])
        #expect(data.baseTimestamp == 1_699_999_000)
        #expect(data.stacks(0, base: true) == [
            "main;serve();handle(_:cache:);renderResponse(for:)": 200_000,
            "main;serve();handle(_:cache:);formatLogLine(for:)": 30_000,
        ])
        #expect(data.stacks(0)["main;serve();handle(_:cache:);renderResponse(for:)"] == 600_000)
        #expect(html.contains("<span class=\"grew\">red: grew</span>"))
        #expect(html.contains("<p id=\"source\">from App, pid 4242, now to App, pid 4242, now</p>"))
        #expect(!(try FlameGraphPage.render(Fixtures.leaky, title: "t")).contains("id=\"legend\""))
    }

    @Test func framesAreMatchedByWhatTheyShowNotByAddress() throws {
        // Two runs of one program load it at different addresses: the diff must still line the frames up.
        func leak(at base: UInt) -> Snapshot {
            let frames = [Frame(function: "leak()", file: "/src/a.swift", line: 3, image: "App", address: base + 0x10),
                          Frame(function: "main", file: "/src/main.swift", line: 1, image: "App", address: base + 0x20)]
            return Snapshot(traces: [Trace(traceback: Traceback(frames: frames), size: 64, count: 1)], tracebackLimit: 8)
        }
        let data = try Fixtures.data(of: try FlameGraphPage.render(leak(at: 0x5000), comparedTo: leak(at: 0x9000), title: "t"))
        #expect(data.paths == ["", "main", "main;leak()"])
        #expect(data.stacks(0) == ["main;leak()": 64] && data.stacks(0, base: true) == ["main;leak()": 64])
    }

    @Test func aFunctionCallingFromSeveralLinesIsOneFrame() throws {
        // LeakyCacheDemo's main calls handle from two loops: one box for main, holding both, with both lines.
        func main(line: Int) -> Frame { Frame(function: "main", file: "/src/main.swift", line: line, image: "App") }
        let leak = Frame(function: "leak()", file: "/src/a.swift", line: 3, image: "App")
        let snapshot = Snapshot(traces: [
            Trace(traceback: Traceback(frames: [leak, main(line: 63)]), size: 100, count: 1),
            Trace(traceback: Traceback(frames: [leak, main(line: 61)]), size: 50, count: 1),
            Trace(traceback: Traceback(frames: [leak, main(line: 70)]), size: 25, count: 1),
        ], tracebackLimit: 8)
        let data = try Fixtures.data(of: try FlameGraphPage.render(snapshot, title: "t"))
        #expect(data.paths == ["", "main", "main;leak()"])
        #expect(data.stacks(0) == ["main;leak()": 175])
        let frame = try #require(data.frames.name.firstIndex(of: "main"))
        #expect(data.frames.line[frame] == 61)
        #expect(data.frames.otherLines == [[frame, 63, 70]])
    }

    @Test func allocatorLeafKeepsTheWholeStack() throws {
        let data = try Fixtures.data(of: try FlameGraphPage.render(Fixtures.leaky, title: "t", leaf: .allocator))
        #expect(data.stacks(0)["main;serve();handle(_:cache:);renderResponse(for:);swift_slowAlloc;malloc"] == 600_000)
    }

    @Test func unsymbolicatedAndInlinedFrames() throws {
        let inlined = Frame(function: "helper()", file: "/src/a.swift", line: 9, image: "App", address: 0x40, isInlined: true)
        let caller = Frame(function: "caller()", file: "/src/a.swift", line: 20, image: "App", address: 0x40)
        let bare = Frame(address: 0xdead)
        let snapshot = Snapshot(traces: [Trace(traceback: Traceback(frames: [inlined, caller, bare]), size: 8, count: 1)],
                                tracebackLimit: 8)
        let data = try Fixtures.data(of: try FlameGraphPage.render(snapshot, title: "t"))
        #expect(data.paths == ["", "0xdead", "0xdead;caller()", "0xdead;caller();helper()"])
        let helper = try #require(data.frames.name.firstIndex(of: "helper()"))
        #expect(data.frames.inlined == [helper])
        #expect(data.file(ofFrame: try #require(data.frames.name.firstIndex(of: "0xdead"))) == nil)
    }

    @Test func emptySnapshotRendersAnEmptyGraph() throws {
        let snapshot = Snapshot(traces: [], tracebackLimit: 8)
        let data = try Fixtures.data(of: try FlameGraphPage.render(snapshot, title: "t"))
        #expect(data.totals == [0, 0, 0, 0] && data.paths == [""])
    }

    @Test func refusesTotalsBeyondIntMax() throws {
        let trace = Trace(traceback: Fixtures.stack(Fixtures.render), size: Int.max, count: 1)
        let snapshot = Snapshot(traces: [trace, trace], tracebackLimit: 8)
        #expect(throws: AllocationTrackingError.self) { try FlameGraphPage.render(snapshot, title: "t") }
    }
}

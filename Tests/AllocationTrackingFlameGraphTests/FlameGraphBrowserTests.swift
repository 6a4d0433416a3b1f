import AllocationTracking
import AllocationTrackingFlameGraph
import Foundation
import TrackerTestSupport
import Testing

/// The page opened in a real headless Chromium (Debian's `chromium`), driven with real mouse and key events over
/// the DevTools protocol by `cdp_driver.py` (Python with `websocket-client` from PyPI). `.ci/run` installs both;
/// without them these tests are skipped and say why. Screenshots are saved as artifacts, their paths printed.
@Suite(.serialized) struct FlameGraphBrowserTests {
    static let unavailable = "chromium or python3's websocket-client is not installed (apt-get install chromium; pip install websocket-client)"

    @Test(.enabled(if: Browser.isAvailable, Comment(rawValue: unavailable)))
    func rendersSearchesAndZooms() throws {
        let html = try FlameGraphPage.render(Fixtures.leaky, title: "heap of App")
        let seen = try Browser.open(html, artifacts: "leaky", search: "response", click: "handle(_:cache:)")
        #expect(seen.errors.isEmpty, "\(seen.errors)")
        #expect(seen.title == "heap of App" && seen.heading == "heap of App")
        #expect(seen.summary == "live bytes: 733.4 KiB in total")
        let width = seen.chartWidth
        #expect(width > 1000)

        // Rectangles for the expected frames, names whole (the hostile one too: escaped, not interpreted).
        let hostile = Fixtures.hostile.function!
        #expect(Set(seen.frames.map(\.name)) == ["all", "main", "serve()", "handle(_:cache:)", "renderResponse(for:)",
                                                 hostile, "swift_slowAlloc", "malloc"])
        // Widths in proportion to live bytes (formatLogLine holds none: not drawn).
        let total = 751_000.0
        for (name, bytes) in [("all", total), ("main", 750_000), ("handle(_:cache:)", 700_000),
                              ("renderResponse(for:)", 600_000), (hostile, 50_000), ("malloc", 1_000)] {
            let frame = try #require(seen.frame(name))
            #expect(abs(frame.width - width * bytes / total) < 1, "\(name): \(frame.width)")
        }
        // The leaking function is the widest frame but for its callers.
        let leak = try #require(seen.frame("renderResponse(for:)"))
        let callers: Set = ["all", "main", "serve()", "handle(_:cache:)"]
        #expect(seen.frames.filter { !callers.contains($0.name) && $0.name != leak.name }.allSatisfy { $0.width < leak.width })
        // Callers above callees.
        let (main, serve, handle) = (try #require(seen.frame("main")), try #require(seen.frame("serve()")),
                                     try #require(seen.frame("handle(_:cache:)")))
        #expect(main.y < serve.y && serve.y < handle.y && handle.y < leak.y)

        // Hover: the full name, file:line, image, value and share.
        #expect(seen.tooltip == "handle(_:cache:)\n/src/App/Handler.swift:30\nin App\nlive bytes: 683.6 KiB, 93.21% of all\nin the frame itself: 97.7 KiB")

        // Search typed key by key: the match highlighted, its share shown.
        #expect(seen.searchFocused == "search" && seen.searchValue == "response")
        #expect(seen.matched == "matched: 79.89% of live bytes (585.9 KiB)")
        #expect(seen.searchFrames.filter { $0.classes.contains("match") }.map(\.name) == ["renderResponse(for:)"])

        // A click zooms: the clicked frame full width, its callees rescaled, its callers dimmed, the rest gone.
        let zoomed = try #require(seen.zoomFrames.first { $0.name == "handle(_:cache:)" })
        #expect(abs(zoomed.width - width) < 1)
        #expect(abs(try #require(seen.zoomFrames.first { $0.name == "renderResponse(for:)" }).width - width * 600 / 700) < 1)
        #expect(Set(seen.zoomFrames.map(\.name)) == callers.union(["renderResponse(for:)"]))
        #expect(Set(seen.zoomFrames.filter { $0.classes.contains("ancestor") }.map(\.name)) == ["all", "main", "serve()"])
        #expect(seen.zoomSummary == "live bytes: 733.4 KiB in total; zoomed into handle(_:cache:): 683.6 KiB")
        // Back returns to the whole graph.
        #expect(seen.backFrames.map(\.name) == seen.frames.map(\.name))
        #expect(zip(seen.backFrames, seen.frames).allSatisfy { abs($0.width - $1.width) < 0.01 })

        // The metric menu by keyboard: live blocks.
        #expect(seen.metricValue == "1")
        #expect(seen.metricSummary == "live blocks: 616 blocks in total")
        #expect(abs(try #require(seen.metricFrames.first { $0.name == "renderResponse(for:)" }).width - width * 600 / 616) < 1)
        print("flame graph screenshots: \(seen.screenshots.joined(separator: " "))")
    }

    @Test(.enabled(if: Browser.isAvailable, Comment(rawValue: unavailable)))
    func differentialGraphColoursGrowthRedAndShrinkageBlue() throws {
        let older = Snapshot(traces: [
            Trace(traceback: Fixtures.stack(Fixtures.render, Fixtures.handle, Fixtures.serve, Fixtures.main), size: 200_000, count: 200),
            Trace(traceback: Fixtures.stack(Fixtures.hostile, Fixtures.main), size: 150_000, count: 15),
        ], tracebackLimit: 16, timestamp: 1_699_999_000, processID: 4242, executable: "App")
        let html = try FlameGraphPage.render(Fixtures.leaky, comparedTo: older, title: "growth")
        let seen = try Browser.open(html, artifacts: "diff", search: "render", click: "renderResponse(for:)")
        #expect(seen.errors.isEmpty, "\(seen.errors)")
        let grew = try #require(seen.frame("renderResponse(for:)")).fillColour
        let shrank = try #require(seen.frame(Fixtures.hostile.function!)).fillColour
        #expect(grew.red == 255 && grew.green < 120 && grew.blue == grew.green, "\(grew)")     // the largest growth: deep red
        #expect(shrank.blue == 255 && shrank.red > grew.green && shrank.red == shrank.green, "\(shrank)")
        #expect(seen.summary == "live bytes: 341.8 KiB → 733.4 KiB (+391.6 KiB)")
        #expect(seen.tooltip == "renderResponse(for:)\n/src/App/Handler.swift:8\nin App\nlive bytes: 195.3 KiB → 585.9 KiB (+390.6 KiB, 114.29% of before)")
        print("differential flame graph screenshots: \(seen.screenshots.joined(separator: " "))")
    }

    /// 10 000 call sites: the page stays small enough to open fast, and works. Prints the file size and the time
    /// to the first picture (figures, not a pass/fail bound: timing is for benchmarks).
    @Test(.enabled(if: Browser.isAvailable, Comment(rawValue: unavailable)))
    func tenThousandSites() throws {
        let snapshot = Fixtures.synthetic(sites: 10_000)
        #expect(snapshot.traces.count == 10_000)
        let started = ContinuousClock.now
        let html = try FlameGraphPage.render(snapshot, title: "10 000 sites")
        let renderTime = ContinuousClock.now - started
        let size = html.utf8.count
        #expect(size < 4_000_000, "\(size) bytes")
        let seen = try Browser.open(html, artifacts: "10k", search: "renderResponse", click: "handle(_:cache:)")
        #expect(seen.errors.isEmpty, "\(seen.errors)")
        let leak = try #require(seen.frame("renderResponse(for:)"))
        let callers: Set = ["all", "main", "serve()", "handle(_:cache:)"]
        #expect(seen.frames.filter { !callers.contains($0.name) && $0.name != leak.name }.allSatisfy { $0.width < leak.width })
        #expect(seen.matched.hasPrefix("matched: "))
        #expect(seen.zoomFrames.contains { $0.name == "handle(_:cache:)" && abs($0.width - seen.chartWidth) < 1 })
        let nodes = try Fixtures.data(of: html).nodes.depth.count
        print("flame graph of 10 000 sites: \(nodes) nodes, \(size) bytes of HTML, made in \(renderTime), first picture at \(seen.renderedAtMs) ms after navigation (\(seen.navigationToRenderWallMs) ms wall), \(seen.frames.count) frames drawn; screenshots: \(seen.screenshots.joined(separator: " "))")
    }
}

/// The LeakyCacheDemo's own snapshot (a real one: symbolicated frames of a real run), saved by
/// `swift run --package-path Examples LeakyCacheDemo PATH`; `.ci/run` saves it and sets `FLAMEGRAPH_DEMO_SNAPSHOT`.
/// Its `initial.png`, at 1000×300, is the README's picture (docs/flamegraph-leaky-cache-demo.png).
@Suite struct FlameGraphDemoTests {
    static let snapshotPath = ProcessInfo.processInfo.environment["FLAMEGRAPH_DEMO_SNAPSHOT"]

    @Test(.enabled(if: snapshotPath != nil && Browser.isAvailable,
                   "needs FLAMEGRAPH_DEMO_SNAPSHOT (a snapshot saved by LeakyCacheDemo), chromium and websocket-client"))
    func demoSnapshotShowsTheLeak() throws {
        let snapshot = try Snapshot(contentsOf: URL(fileURLWithPath: Self.snapshotPath!))
        let html = try FlameGraphPage.render(snapshot, title: "LeakyCacheDemo: live bytes")
        let seen = try Browser.open(html, artifacts: "demo", search: "renderResponse", click: "handle(_:cache:)",
                                    size: (1000, 300))
        #expect(seen.errors.isEmpty, "\(seen.errors)")
        // The leak: the response bodies the cache keeps, allocated in renderResponse(for:), called from
        // handle(_:cache:). It holds most of the live bytes: the widest frame but for its callers.
        let leak = try #require(seen.frame("renderResponse(for:)"))
        let handle = try #require(seen.frame("handle(_:cache:)"))
        #expect(leak.width > seen.chartWidth / 2, "\(leak.width) of \(seen.chartWidth)")
        #expect(handle.y < leak.y)
        let callers = seen.frames.filter { $0.y < leak.y && $0.x <= leak.x + 0.5 && $0.x + $0.width >= leak.x + leak.width - 0.5 }
        #expect(seen.frames.filter { frame in frame.name != leak.name && !callers.contains { $0.node == frame.node } }
            .allSatisfy { $0.width < leak.width })
        #expect(seen.matched.hasPrefix("matched: "))
        print("demo flame graph screenshots: \(seen.screenshots.joined(separator: " "))")
    }
}

/// Runs `cdp_driver.py` on a page and decodes what it saw.
enum Browser {
    static func find(_ name: String) -> URL? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        return path.split(separator: ":").map { URL(fileURLWithPath: String($0)).appendingPathComponent(name) }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    static let python = find("python3")
    static let isAvailable: Bool = {
        guard find("chromium") != nil, let python else { return false }
        return (try? run(python, ["-c", "import websocket"]))?.status == 0
    }()

    static let driver = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("cdp_driver.py")

    /// Where screenshots and pages are kept after the run: `$FLAMEGRAPH_ARTIFACTS`, or a directory under the
    /// temporary directory.
    static var artifactRoot: URL {
        if let directory = ProcessInfo.processInfo.environment["FLAMEGRAPH_ARTIFACTS"] { return URL(fileURLWithPath: directory) }
        return FileManager.default.temporaryDirectory.appendingPathComponent("swift-allocation-tracking-artifacts/flamegraph")
    }

    struct Frame: Decodable {
        var name: String
        var node: Int
        var x, y, width, height: Double
        var cls: String
        var fill: String
        var classes: [Substring] { cls.split(separator: " ") }
    }

    struct Seen: Decodable {
        var renderedAtMs: Double
        var navigationToRenderWallMs: Int
        var title, heading, summary: String
        var notes: [String]
        var chartWidth: Double
        var frames: [Frame]
        var tooltip: String?
        var searchFocused, searchValue, matched: String
        var searchFrames: [Frame]
        var zoomFrames: [Frame]
        var zoomSummary: String
        var backFrames: [Frame]
        var metricValue, metricSummary: String
        var metricFrames: [Frame]
        var errors: [String]
        var screenshots: [String]

        /// The widest drawn frame named `name`.
        func frame(_ name: String) -> Frame? { frames.filter { $0.name == name }.max { $0.width < $1.width } }
    }

    static func open(_ html: String, artifacts name: String, search: String, click: String,
                     size: (width: Int, height: Int) = (1280, 800),
                     sourceLocation: SourceLocation = #_sourceLocation) throws -> Seen {
        let directory = artifactRoot.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let page = directory.appendingPathComponent("page.html")
        try Data(html.utf8).write(to: page)
        let result = try run(python!, [driver.path, page.path, directory.path, "--search", search, "--click", click,
                                        "--width", String(size.width), "--height", String(size.height)])
        try #require(result.status == 0, "cdp_driver.py exited \(result.status): \(result.error)", sourceLocation: sourceLocation)
        print("flame graph page: \(page.path)")
        return try JSONDecoder().decode(Seen.self, from: result.output)
    }

    struct Result {
        var status: Int32
        var output: Data
        var error: String
    }

    /// Runs a program through the shared runner (output and errors drained while it runs, so that no pipe fills up and
    /// blocks it; killed at a deadline, so that a browser that never answers fails the test, not the run).
    static func run(_ executable: URL, _ arguments: [String]) throws -> Result {
        let result = try runChildProcess(executable, arguments, timeout: 240)
        return Result(status: result.status, output: result.output, error: result.error)
    }
}

extension Browser.Frame {
    /// The rectangle's fill, `rgb(r,g,b)`, as numbers.
    var fillColour: (red: Int, green: Int, blue: Int) {
        let parts = fill.drop { $0 != "(" }.dropFirst().prefix { $0 != ")" }.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        return parts.count == 3 ? (parts[0], parts[1], parts[2]) : (-1, -1, -1)
    }
}

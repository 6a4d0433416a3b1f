import AllocationTracking
import AllocationTrackingFlameGraph
import Foundation
import Testing

/// Snapshots the tests make, and the page's embedded data read back.
enum Fixtures {
    static let malloc = Frame(function: "malloc", image: "libc.so.6")
    static let slowAlloc = Frame(function: "swift_slowAlloc", image: "libswiftCore.so")
    static let main = Frame(function: "main", file: "/src/App/main.swift", line: 40, image: "App")
    static let serve = Frame(function: "serve()", file: "/src/App/main.swift", line: 12, image: "App")
    static let handle = Frame(function: "handle(_:cache:)", file: "/src/App/Handler.swift", line: 30, image: "App")
    static let render = Frame(function: "renderResponse(for:)", file: "/src/App/Handler.swift", line: 8, image: "App")
    static let log = Frame(function: "formatLogLine(for:)", file: "/src/App/Handler.swift", line: 20, image: "App")
    /// A name made to break a page that does not escape: it ends the script element, opens a comment and quotes.
    static let hostile = Frame(function: "operator<<<T>(a & b, \"q\", 'r') </script><script>alert(1)</script><!--",
                               file: "/src/App/<weird> & \"file\".cpp", line: 7, image: "App")

    static func stack(_ frames: Frame...) -> Traceback { Traceback(frames: [malloc, slowAlloc] + frames) }

    /// A leak (renderResponse holds most live bytes), temporary work (formatLogLine: everything freed), and the
    /// hostile name.
    static var leaky: Snapshot {
        Snapshot(traces: [
            Trace(traceback: stack(render, handle, serve, main), size: 600_000, count: 600,
                  allocatedSize: 700_000, allocatedCount: 700),
            Trace(traceback: stack(log, handle, serve, main), size: 0, count: 0, allocatedSize: 90_000, allocatedCount: 1_500),
            Trace(traceback: stack(handle, serve, main), size: 100_000, count: 10),
            Trace(traceback: stack(hostile, main), size: 50_000, count: 5, allocatedSize: 60_000, allocatedCount: 6),
            // Every frame system code: the stack is shown whole.
            Trace(traceback: Traceback(frames: [malloc, slowAlloc]), size: 1_000, count: 1),
        ], tracebackLimit: 16, timestamp: 1_700_000_000, processID: 4242, executable: "App")
    }

    /// `sites` call sites of a service-like program, the same for every run (a fixed linear congruential
    /// generator): stacks 3 to 24 frames deep through shared layers (workers, modules, components, helpers), each
    /// ending in a function of its own; plus the leak, `renderResponse(for:)`, holding about a third of the live
    /// bytes.
    static func synthetic(sites: Int) -> Snapshot {
        var state: UInt64 = 0x2545F4914F6CDD1D
        func next(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
        func frame(_ name: String, _ file: String, _ line: Int) -> Frame {
            Frame(function: name, file: "/src/Service/\(file).swift", line: line, image: "Service")
        }
        var traces: [Trace] = []
        var leaked = 0
        for site in 0..<(sites - 1) {
            let worker = next(8)
            var frames = [frame("main", "main", 10), frame("worker\(worker)()", "Workers", 20 + worker)]
            let module = next(40)
            frames.append(frame("Module\(module).run()", "Modules", module * 10))
            // A call site's line is the caller's: one per component and level.
            for level in 0..<next(20) {
                let component = next(12)
                frames.append(frame("Component\(component).step\(level)()", "Components", component * 100 + level))
            }
            frames.append(frame("site\(site)(_:)", "Sites", site))
            let size = (next(4096) + 1) * 16
            leaked += size
            traces.append(Trace(traceback: Traceback(frames: [malloc] + frames.reversed()), size: size, count: 1 + next(8),
                                allocatedSize: size * 2, allocatedCount: 2 + next(8)))
        }
        traces.append(Trace(traceback: stack(render, handle, serve, frame("main", "main", 10)), size: leaked / 2, count: 1_000))
        return Snapshot(traces: traces, tracebackLimit: 32, timestamp: 1_700_000_000, processID: 1, executable: "Service")
    }

    /// The page's data block, decoded, with the files and images looked up and the nodes' parents and self
    /// values rebuilt (see `FlameGraphPage`'s data layout).
    struct PageData: Decodable {
        struct Frames: Decodable {
            var name: [String]
            var file: [Int]
            var line: [Int]
            var image: [Int]
            var inlined: [Int]
            var otherLines: [[Int]]
        }
        struct Nodes: Decodable {
            var depth: [Int]
            var frame: [Int]
            var ends: [Int]
            var values: [Int]
            var base: [Int]?
        }
        var title: String
        var timestamp: Double?
        var baseTimestamp: Double?
        var totals: [Int]
        var baseTotals: [Int]?
        var files: [String]
        var images: [String]
        var frames: Frames
        var nodes: Nodes

        func file(ofFrame frame: Int) -> String? { frames.file[frame] < 0 ? nil : files[frames.file[frame]] }
        func image(ofFrame frame: Int) -> String? { frames.image[frame] < 0 ? nil : images[frames.image[frame]] }

        /// Each node's parent: the closest node before it one level up (-1 for the root).
        var parents: [Int] {
            var parents = [-1]
            var last = [0]
            for node in nodes.depth.indices.dropFirst() {
                let depth = nodes.depth[node]
                parents.append(depth >= 1 && depth <= last.count ? last[depth - 1] : -2)
                if depth < last.count { last[depth] = node } else { last.append(node) }
            }
            return parents
        }

        /// Each node's path from the root as names joined by ";" (the root is "").
        var paths: [String] {
            var paths: [String] = []
            for (node, parent) in parents.enumerated() {
                if parent < 0 { paths.append(""); continue }
                let name = frames.name[nodes.frame[node]]
                paths.append(paths[parent].isEmpty ? name : paths[parent] + ";" + name)
            }
            return paths
        }

        /// The self values of `metric` of each path that has any (the stacks, as folded stacks would list them).
        func stacks(_ metric: Int, base: Bool = false) -> [String: Int] {
            let values = base ? nodes.base ?? [] : nodes.values
            let paths = self.paths
            var stacks: [String: Int] = [:]
            for (index, node) in nodes.ends.enumerated() where values[index * 4 + metric] != 0 {
                stacks[paths[node]] = values[index * 4 + metric]
            }
            return stacks
        }
    }

    static let dataStart = "<script type=\"application/json\" id=\"flame-data\">"

    static func data(of html: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> PageData {
        let start = try #require(html.range(of: dataStart), sourceLocation: sourceLocation)
        let end = try #require(html.range(of: "</script>", range: start.upperBound..<html.endIndex), sourceLocation: sourceLocation)
        return try JSONDecoder().decode(PageData.self, from: Data(html[start.upperBound..<end.lowerBound].utf8))
    }

    static func occurrences(of needle: String, in text: String) -> Int {
        text.components(separatedBy: needle).count - 1
    }
}

import AllocationTracking

/// A snapshot as one self-contained HTML page with an interactive flame graph (what `alloc-track flamegraph`
/// writes).
///
/// The page needs no network: its styles, its script and the snapshot's call tree are inline, and its content
/// security policy forbids loading anything. It shows live bytes first; a menu switches to live blocks, allocated
/// bytes or allocated blocks. Hovering a frame shows its full name, `file:line`, image, value and share; clicking
/// one zooms into it (Back and Reset, or Escape, zoom out); the search box highlights the frames whose function,
/// file or image contains the text and says what share of the total they hold.
///
/// Each stack starts at its attribution frame by default, as `Snapshot.foldedStacks` and `Snapshot.pprof` cut it
/// (the allocator and runtime frames above your code are left out); `leaf: .allocator` keeps the whole stack. The
/// root is at the top, callers above callees.
///
/// With `comparedTo: base`, the page is a differential flame graph of what changed from `base` to `snapshot`:
/// each frame is red when its value grew and blue when it shrank, the deeper the colour the larger the change;
/// a frame's width is the larger of its two values, so that what was freed stays visible.
///
/// ```swift
/// let page = try FlameGraphPage.render(snapshot, title: "heap of MyService")
/// let diff = try FlameGraphPage.render(newer, comparedTo: older, title: "growth of MyService")
/// ```
///
/// Names are escaped for HTML and for the inline script: a function named `</script>` is text on the page.
/// The call tree is embedded compactly (a synthetic snapshot of 10 000 call sites and 98 000 tree nodes makes a
/// page of about 1.1 MB), and frames narrower than half a pixel are left out of the picture until zoomed into
/// (their values still count), so a large snapshot draws a few hundred rectangles, not one per node.
public enum FlameGraphPage {
    /// The page's metrics, in the order of its menu (the first is shown first).
    public static let metrics = ["live bytes", "live blocks", "allocated bytes", "allocated blocks"]

    /// The HTML page of `snapshot`, or of its change from `base`, titled `title`.
    ///
    /// - Throws: `.invalidArgument` when the values of stacks that end at the same frame add up beyond `Int.max`.
    public static func render(_ snapshot: Snapshot, comparedTo base: Snapshot? = nil, title: String,
                              leaf: Snapshot.SampleLeaf = .attributionFrame,
                              attribution: Attribution = .default) throws -> String {
        var tree = _FlameGraphTree(leaf: leaf, attribution: attribution)
        try tree.add(snapshot, isBase: false)
        if let base { try tree.add(base, isBase: true) }
        let data = try dataJSON(tree, snapshot: snapshot, base: base, title: title)

        var html = ""
        html.reserveCapacity(data.utf8.count + _FlameGraphAssets.style.utf8.count + _FlameGraphAssets.script.utf8.count + 4096)
        html += """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
            <meta name="generator" content="swift-allocation-tracking">
            <title>\(escapingHTML(title))</title>
            <style>\(_FlameGraphAssets.style)</style>
            </head>
            <body>
            <header>
            <h1>\(escapingHTML(title))</h1>
            <p id="source">\(escapingHTML(sourceLine(snapshot, base: base)))</p>

            """
        for note in notes(snapshot, base: base) {
            html += "<p class=\"note\">\(escapingHTML(note))</p>\n"
        }
        html += """
            <p id="summary"></p>
            <div id="controls">
            <label>Metric <select id="metric">\(metrics.enumerated().map { "<option value=\"\($0.offset)\">\($0.element)</option>" }.joined())</select></label>
            <button type="button" id="back" disabled>Back</button>
            <button type="button" id="reset" disabled>Reset zoom</button>
            <label>Search <input type="search" id="search" autocomplete="off" placeholder="function, file or image" spellcheck="false"></label>
            <span id="matched"></span>
            </div>
            \(base == nil ? "" : "<p id=\"legend\"><span class=\"grew\">red: grew</span> <span class=\"shrank\">blue: shrank</span> — width: the larger of before and after</p>")
            </header>
            <main id="chart"><svg id="flame" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="flame graph"></svg></main>
            <div id="tooltip" role="tooltip" hidden></div>
            <script type="application/json" id="flame-data">
            """
        html += data
        html += "</script>\n<script>"
        html += _FlameGraphAssets.script
        html += "</script>\n</body>\n</html>\n"
        return html
    }

    /// Where the snapshot comes from: executable, process, moment, time.
    private static func sourceLine(_ snapshot: Snapshot, base: Snapshot?) -> String {
        func describe(_ snapshot: Snapshot) -> String {
            var parts: [String] = []
            if let executable = snapshot.executable { parts.append(executable) }
            parts.append("pid \(snapshot.processID)")
            parts.append(snapshot.moment == .peak ? "at the peak" : "now")
            return parts.joined(separator: ", ")
        }
        guard let base else { return describe(snapshot) }
        return "from \(describe(base)) to \(describe(snapshot))"
    }

    /// The page's notes, each shown once: estimates (sampling) and what the snapshot is missing (dropped
    /// allocations).
    private static func notes(_ snapshot: Snapshot, base: Snapshot?) -> [String] {
        var notes: [String] = []
        let sampled = [snapshot.sampling, base?.sampling].compactMap { $0 }.filter { $0 != .exact }
        if let sampling = sampled.first {
            notes.append("Every size and count here is estimated: the allocations were sampled (\(sampling), a sample every \(sampling.meanBytes) bytes on average).")
        }
        let dropped = snapshot.droppedAllocations + (base?.droppedAllocations ?? 0)
        if dropped > 0 {
            notes.append("\(dropped) allocations could not be recorded (a full table): the graph is missing them.")
        }
        return notes
    }

    // MARK: - The embedded data

    /// The call tree as JSON, in the shape the script reads, compact (a page of 10 000 call sites is a few
    /// megabytes at most):
    ///
    ///     {"title": …, "timestamp": seconds, "baseTimestamp": seconds | null,
    ///      "totals": [live bytes, live blocks, allocated bytes, allocated blocks], "baseTotals": [...] | null,
    ///      "files": [...], "images": [...],
    ///      "frames": {"name": [...], "file": [index | -1], "line": [...], "image": [index | -1], "inlined": [frame…],
    ///                 "otherLines": [[frame, line…]…]},
    ///      "nodes": {"depth": [...], "frame": [...], "ends": [node…], "values": [4 per end], "base": [4 per end] | null}}
    ///
    /// Nodes are in preorder, node 0 the root (depth 0, frame -1): a node's parent is the closest node before it
    /// one level up. `ends` are the nodes where stacks end, in order, and `values` their self values (the sum of
    /// those stacks), four per end in the order of `metrics`; `base` the same for the base snapshot. A frame's
    /// `line` is its lowest line; `otherLines` lists the rest for the frames met at several lines.
    private static func dataJSON(_ tree: _FlameGraphTree, snapshot: Snapshot, base: Snapshot?, title: String) throws -> String {
        let order = tree.preorder()
        var depths = Array(repeating: 0, count: order.count)
        for node in order.dropFirst() { depths[node] = depths[tree.parents[node]] + 1 }
        let width = _FlameGraphTree.metricCount
        let ends = order.indices.filter { index in
            let node = order[index]
            return (0..<width).contains { tree.values[node * width + $0] != 0 || tree.baseValues[node * width + $0] != 0 }
        }
        func endValues(_ values: [Int]) -> [Int] {
            ends.flatMap { values[(order[$0] * width)..<(order[$0] * width + width)] }
        }
        var files = _Interned(), images = _Interned()
        let fileIndices = tree.frames.map { files.index($0.file) }
        let imageIndices = tree.frames.map { images.index($0.image) }

        var json = _JSONWriter()
        json.raw("{\"title\":"); json.string(title)
        json.raw(",\"timestamp\":"); json.number(snapshot.timestamp)
        json.raw(",\"baseTimestamp\":"); json.number(base?.timestamp)
        json.raw(",\"totals\":"); json.integers(try totals(snapshot))
        json.raw(",\"baseTotals\":")
        if let base { json.integers(try totals(base)) } else { json.raw("null") }
        json.raw(",\n\"files\":"); json.strings(files.values)
        json.raw(",\n\"images\":"); json.strings(images.values)
        json.raw(",\n\"frames\":{\"name\":"); json.strings(tree.frames.map(\.name))
        json.raw(",\n\"file\":"); json.integers(fileIndices)
        let lines = tree.lines.map { $0.sorted() }
        json.raw(",\n\"line\":"); json.integers(lines.map { $0.first ?? 0 })
        json.raw(",\n\"image\":"); json.integers(imageIndices)
        json.raw(",\n\"inlined\":"); json.integers(tree.frames.indices.filter { tree.frames[$0].isInlined })
        json.raw(",\n\"otherLines\":[")
        for (index, frame) in lines.indices.filter({ lines[$0].count > 1 }).enumerated() {
            if index > 0 { json.raw(",") }
            json.integers([frame] + lines[frame].dropFirst())
        }
        json.raw("]")
        json.raw("},\n\"nodes\":{\"depth\":"); json.integers(order.map { depths[$0] })
        json.raw(",\n\"frame\":"); json.integers(order.map { tree.frameOfNode[$0] })
        json.raw(",\n\"ends\":"); json.integers(ends)
        json.raw(",\n\"values\":"); json.integers(endValues(tree.values))
        json.raw(",\n\"base\":")
        if base != nil { json.integers(endValues(tree.baseValues)) } else { json.raw("null") }
        json.raw("}}\n")
        return json.text
    }

    /// The snapshot's totals of the four metrics; exact sums of its traces.
    private static func totals(_ snapshot: Snapshot) throws -> [Int] {
        var totals = Array(repeating: 0, count: _FlameGraphTree.metricCount)
        for trace in snapshot.traces {
            for (metric, value) in _FlameGraphTree.values(of: trace).enumerated() {
                let (sum, overflow) = totals[metric].addingReportingOverflow(value)
                guard !overflow else {
                    throw AllocationTrackingError(.invalidArgument, "cannot draw the flame graph: the \(metrics[metric]) add up beyond \(Int.max)")
                }
                totals[metric] = sum
            }
        }
        return totals
    }

    /// Text for HTML content and attribute values.
    static func escapingHTML(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

/// Strings numbered in the order first met (nil is -1): the page names each file and image once.
struct _Interned {
    private(set) var values: [String] = []
    private var indices: [String: Int] = [:]

    mutating func index(_ value: String?) -> Int {
        guard let value else { return -1 }
        if let index = indices[value] { return index }
        values.append(value)
        indices[value] = values.count - 1
        return values.count - 1
    }
}

/// JSON text for the page's inline data block. Strings escape `<`, `>` and `&` as `\u003c`… besides what JSON
/// requires, so that no name can end the `<script>` element (`</script>`) or open a comment (`<!--`) in it; and
/// U+2028/U+2029, which older script parsers take for line ends.
struct _JSONWriter {
    private(set) var text = ""

    mutating func raw(_ fragment: String) { text += fragment }

    mutating func string(_ value: String?) {
        guard let value else { text += "null"; return }
        text += "\""
        // Most names need no escaping: append them whole (0xE2 leads U+2028 and U+2029 in UTF-8).
        if !value.utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C || $0 == 0x3C || $0 == 0x3E || $0 == 0x26 || $0 == 0xE2 }) {
            text += value
            text += "\""
            return
        }
        for scalar in value.unicodeScalars {
            switch scalar.value {
            case 0x22: text += "\\\""
            case 0x5C: text += "\\\\"
            case 0x0A: text += "\\n"
            case 0x0D: text += "\\r"
            case 0x09: text += "\\t"
            case 0x00..<0x20, 0x3C, 0x3E, 0x26, 0x2028, 0x2029:
                let hex = String(scalar.value, radix: 16)
                text += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: text.unicodeScalars.append(scalar)
            }
        }
        text += "\""
    }

    /// A number, or null for none and for what JSON cannot write (infinities, NaN).
    mutating func number(_ value: Double?) {
        guard let value, value.isFinite else { text += "null"; return }
        text += String(value)
    }

    mutating func strings(_ values: [String]) {
        text += "["
        for (index, value) in values.enumerated() {
            if index > 0 { text += "," }
            string(value)
        }
        text += "]"
    }

    mutating func integers(_ values: [Int]) {
        text += "["
        for (index, value) in values.enumerated() {
            if index > 0 { text += "," }
            text += String(value)
        }
        text += "]"
    }
}

import AllocationTracking
import AllocationTrackingFlameGraph
import ArgumentParser
import Foundation

struct FlameGraph: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flamegraph",
        abstract: "A saved snapshot as one self-contained interactive flame-graph HTML file (no network).",
        discussion: """
            Example:
              alloc-track flamegraph heap.json -o flame.html
              alloc-track flamegraph after.json --diff before.json -o growth.html

            Live bytes by call stack (a menu switches to live blocks, allocated bytes or allocated blocks); hover
            for a frame's name, file:line and share, click to zoom, search to highlight. With --diff, frames are
            coloured by growth from the older snapshot (red grew, blue shrank).
            """
    )

    @Argument(help: "A snapshot file.") var file: String
    @Option(help: "An older snapshot: draw the differences from it.") var diff: String?
    @Option(name: .shortAndLong, help: "The page to write (a new file; default: FILE with .html).")
    var output: String?
    @Option(help: "The page's title (default: the file's name).") var title: String?

    func run() throws {
        try failing {
            let snapshot = try loadSnapshot(file)
            let base = try diff.map(loadSnapshot)
            let path = output ?? (file.hasSuffix(".json") ? String(file.dropLast(5)) : file) + ".html"
            let name = title ?? (diff.map { "\(file) compared with \($0)" } ?? file)
            progress("drawing \(snapshot.traces.count) call stacks")
            let page = try FlameGraphPage.render(snapshot, comparedTo: base, title: name)
            try writeNewFile(path, Data(page.utf8))
            FileHandle.standardError.write(Data("alloc-track: wrote \(path)\n".utf8))
        }
    }
}

/// A progress line on a terminal only (stderr a tty): scripts and logs get nothing.
func progress(_ message: String) {
    guard isatty(2) == 1 else { return }
    FileHandle.standardError.write(Data("alloc-track: \(message)…\n".utf8))
}

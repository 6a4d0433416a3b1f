import Foundation
import Testing

/// Every Swift code block of the README stands in a file that is compiled: an example in `Examples/` (built and
/// run by `.ci/run`), a test, or — for the README's Package.swift — `Examples/ReadmeManifest/Package.swift`, which
/// is evaluated here. A README snippet that no longer compiles, or that drifted from the code that does, fails.
@Suite("README") struct ReadmeTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The ```swift blocks of a Markdown text, with the line each starts on.
    static func swiftBlocks(of markdown: String) -> [(line: Int, body: [String])] {
        var blocks: [(Int, [String])] = []
        var current: [String]?
        var start = 0
        for (index, line) in markdown.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if current == nil, line.hasPrefix("```swift") {
                current = []
                start = index + 2
            } else if current != nil, line.hasPrefix("```") {
                blocks.append((start, current!))
                current = nil
            } else if current != nil {
                current!.append(String(line))
            }
        }
        return blocks
    }

    /// The lines that carry code: blank and comment-only lines dropped, white space folded (an example may indent
    /// a snippet inside a type, and explain it with comments of its own).
    static func codeLines<S: Sequence>(_ lines: S) -> [String] where S.Element: StringProtocol {
        lines.map { $0.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ") }
            .filter { !$0.isEmpty && !$0.hasPrefix("//") }
    }

    /// Whether `block`'s code lines stand, in order and contiguous, among `file`'s code lines.
    static func contains(_ file: [String], _ block: [String]) -> Bool {
        guard !block.isEmpty else { return true }
        guard file.count >= block.count else { return false }
        return (0...(file.count - block.count)).contains { start in
            file[start..<(start + block.count)].elementsEqual(block)
        }
    }

    /// Swift files of the examples and tests (and the manifests), outside build folders.
    static func compiledFiles() throws -> [(path: String, lines: [String])] {
        var files: [(String, [String])] = []
        for folder in ["Examples", "Tests"] {
            let base = root.appendingPathComponent(folder)
            guard let walker = FileManager.default.enumerator(at: base, includingPropertiesForKeys: nil) else { continue }
            for case let url as URL in walker {
                if url.lastPathComponent.hasPrefix(".build") { walker.skipDescendants(); continue }
                guard url.pathExtension == "swift" else { continue }
                let text = try String(contentsOf: url, encoding: .utf8)
                files.append((url.path, codeLines(text.split(separator: "\n", omittingEmptySubsequences: false))))
            }
        }
        return files
    }

    @Test func everySwiftBlockIsCompiledSomewhere() throws {
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        let blocks = Self.swiftBlocks(of: readme)
        #expect(blocks.count >= 4, "the README's Swift blocks were not found")
        let files = try Self.compiledFiles()
        for block in blocks {
            let code = Self.codeLines(block.body)
            let homes = files.filter { Self.contains($0.lines, code) }.map(\.path)
            #expect(!homes.isEmpty, """
                README.md:\(block.line): this Swift block is in no example or test, so nothing compiles it. \
                Put it, verbatim, in Examples/ (or a test): \(code.first ?? "")
                """)
        }
    }

    /// The matcher itself: a changed line, a missing line, or lines out of order are not found.
    @Test func theMatcherFindsOnlyWhatIsThere() {
        let file = Self.codeLines(["import A", "", "  let x = f()   // note", "// comment", "print(x)"])
        #expect(Self.contains(file, Self.codeLines(["let x = f() // note", "print(x)"])))
        #expect(!Self.contains(file, Self.codeLines(["let x = g() // note", "print(x)"])))
        #expect(!Self.contains(file, Self.codeLines(["print(x)", "let x = f() // note"])))
        #expect(!Self.contains(file, Self.codeLines(["import A", "print(x)"])))
        let blocks = Self.swiftBlocks(of: "text\n```swift\nlet a = 1\n```\n```sh\nls\n```\n")
        #expect(blocks.count == 1 && blocks[0].line == 3 && blocks[0].body == ["let a = 1"])
    }

    /// The README's Package.swift is a real manifest: `swift package dump-package` evaluates it (it fetches and
    /// builds nothing).
    @Test func theReadmeManifestEvaluates() throws {
        let swift = ["/opt/swift/usr/bin/swift", "/usr/bin/swift"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let swift else {
            print("theReadmeManifestEvaluates: skipped, no swift executable found")
            return
        }
        let result = try runChild(URL(fileURLWithPath: swift), [
            "package", "--package-path", Self.root.appendingPathComponent("Examples/ReadmeManifest").path,
            "dump-package",
        ])
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.contains("\"name\" : \"MyService\""), "\(result.output.prefix(400))")
        #expect(result.output.contains("swift-allocation-tracking"))
    }
}

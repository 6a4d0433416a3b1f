import AllocationTracking
import ArgumentParser
import Foundation

/// `alloc-track`: runs unmodified programs tracked, and reads, diffs and converts saved snapshots. Public API of
/// AllocationTracking only.
@main
struct AllocTrack: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alloc-track",
        abstract: "Track the native heap of unmodified programs; read, diff and convert saved snapshots.",
        discussion: """
            Examples:
              alloc-track run -o heap.json -- ./my-service --port 8080
              alloc-track top heap.json --by function --limit 5
              alloc-track diff before.json after.json
              alloc-track pprof heap.json -o heap.pb.gz && go tool pprof -top heap.pb.gz
              alloc-track folded heap.json | flamegraph.pl > heap.svg
              alloc-track flamegraph heap.json -o flame.html
              alloc-track reports /var/log/app
            """,
        subcommands: [Run.self, Top.self, Diff.self, Pprof.self, Folded.self, FlameGraph.self, Reports.self, CheckPreload.self]
    )
}

// MARK: - Shared pieces

/// A failure that ends the command: printed as one line (`alloc-track: …`), exit status 1 (or `status`).
struct CommandFailure: Error, CustomStringConvertible {
    var message: String
    var status: Int32 = 1
    init(_ message: String, status: Int32 = 1) {
        self.message = message
        self.status = status
    }
    var description: String { message }
}

extension ParsableCommand {
    /// Runs `body`, turning a library error or a `CommandFailure` into one line on stderr and a non-zero exit.
    func failing(_ body: () throws -> Void) throws {
        do { try body() } catch let failure as CommandFailure {
            printError(failure.message)
            throw ExitCode(failure.status)
        } catch let error as AllocationTrackingError {
            printError(error.message)
            throw ExitCode(1)
        }
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data(("alloc-track: " + message.replacingOccurrences(of: "\n", with: " ") + "\n").utf8))
}

/// Writes `text` to stdout as it is (no newline added).
func output(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

/// Loads a snapshot file: what `Snapshot.write(to:)` and the reports' `.json` companions hold.
func loadSnapshot(_ path: String) throws -> Snapshot {
    var status = stat()
    if stat(path, &status) == 0, status.st_size > 16 << 20 {
        progress("reading \(path) (\(status.st_size >> 20) MiB)")
    }
    return try Snapshot(contentsOf: URL(fileURLWithPath: path))
}

/// A new output file: 0600, `O_CREAT|O_EXCL|O_NOFOLLOW` (an existing file or a planted symlink is refused, never
/// replaced), everything written and fsync'd, removed when it could not be.
func writeNewFile(_ path: String, _ data: Data) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
    guard fd >= 0 else {
        let why = errno == EEXIST ? "it exists (alloc-track never replaces a file; remove it or choose another path)"
            : String(cString: strerror(errno))
        throw CommandFailure("cannot create \(path): \(why)")
    }
    var failure: Int32 = 0
    data.withUnsafeBytes { bytes in
        var offset = 0
        while offset < bytes.count {
            let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n > 0 { offset += n } else if n < 0 && errno == EINTR { continue } else { failure = n < 0 ? errno : EIO; break }
        }
    }
    if failure == 0 && fsync(fd) != 0 && errno != EINVAL { failure = errno }
    close(fd)
    if failure != 0 {
        unlink(path)
        throw CommandFailure("cannot write \(path): \(String(cString: strerror(failure))); the file is removed")
    }
}

/// JSON for `--format json`: sorted keys, so the output is stable enough to script and diff against.
func jsonText<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self) + "\n"
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

extension GroupingKey: ExpressibleByArgument {}

/// A frame as JSON: what a script needs to name a site.
struct FrameJSON: Encodable {
    var function: String?
    var file: String?
    var line: Int?
    var image: String?

    init(_ frame: Frame?) {
        function = frame?.function
        file = frame?.file
        line = frame.flatMap { $0.line > 0 ? $0.line : nil }
        image = frame?.image
    }
}

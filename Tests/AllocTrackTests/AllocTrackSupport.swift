import Foundation
import TrackerTestSupport
#if canImport(Glibc)
import Glibc
#endif

struct ToolResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// A fresh directory for one test.
func temporaryDirectory(_ label: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("alloc-track-\(label)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Runs `executable` (by default the built `alloc-track`) through the shared runner (output drained while it runs, killed at
/// the deadline: a hang — a signal never forwarded, a child that never exits — fails the test with status 137), in
/// `directory`, without the test process's own tracker settings. `whileRunning` gets the child's pid.
func runTool(_ arguments: [String], executable: URL = productURL("alloc-track"), in directory: URL? = nil,
             environment: [String: String] = [:], removing: [String] = [],
             timeout: TimeInterval = 600, whileRunning: ((pid_t) throws -> Void)? = nil) throws -> ToolResult {
    let result = try runChildProcess(
        executable, arguments, environment: environment,
        removing: ["ALLOCATION_TRACKING", "ALLOC_TRACK_PRELOAD", "ALLOC_TRACK_FOLLOW_CHILDREN", "LD_PRELOAD"] + removing,
        directory: directory, timeout: timeout, whileRunning: whileRunning)
    return ToolResult(status: result.signalled ? 128 + result.status : result.status, stdout: result.text,
                      stderr: result.error)
}

/// Compiles a C or C++ source at test time with the system compiler, with debug information (the tracker names
/// functions and lines from it).
func compile(_ source: String, language: String, in directory: URL, name: String) throws -> URL {
    let file = directory.appendingPathComponent(name + (language == "c" ? ".c" : ".cpp"))
    try source.write(to: file, atomically: true, encoding: .utf8)
    let binary = directory.appendingPathComponent(name)
    let compiler = language == "c" ? "cc" : "c++"
    let build = try runTool([compiler, "-g", "-O0", "-fno-omit-frame-pointer", "-o", binary.path, file.path],
                            executable: URL(fileURLWithPath: "/usr/bin/env"))
    guard build.status == 0 else { throw CompileError(message: build.stderr) }
    return binary
}

struct CompileError: Error { var message: String }

/// The real Python interpreter (pyenv's `python3` is a shell script: tracked without --follow-children, the
/// script would be the program, not the interpreter).
func realPython() throws -> String? {
    let result = try runTool(["python3", "-c", "import sys; print(sys.executable)"], executable: URL(fileURLWithPath: "/usr/bin/env"))
    let path = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    return result.status == 0 && !path.isEmpty ? path : nil
}

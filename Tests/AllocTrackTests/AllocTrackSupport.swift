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

/// Runs `executable` (by default the built `alloc-track`) with its output in files (no pipe to fill up), in
/// `directory`, without the test process's own ALLOCATION_TRACKING. `whileRunning` gets the child's pid.
func runTool(_ arguments: [String], executable: URL = productURL("alloc-track"), in directory: URL? = nil,
             environment: [String: String] = [:], removing: [String] = [],
             timeout: TimeInterval = 600, whileRunning: ((pid_t) throws -> Void)? = nil) throws -> ToolResult {
    let scratch = try temporaryDirectory("io")
    defer { try? FileManager.default.removeItem(at: scratch) }
    let out = scratch.appendingPathComponent("out"), err = scratch.appendingPathComponent("err")
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    _ = FileManager.default.createFile(atPath: err.path, contents: nil)
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = directory }
    var env = ProcessInfo.processInfo.environment
    for key in ["ALLOCATION_TRACKING", "ALLOC_TRACK_PRELOAD", "ALLOC_TRACK_FOLLOW_CHILDREN", "LD_PRELOAD"] + removing {
        env.removeValue(forKey: key)
    }
    for (key, value) in environment { env[key] = value }
    process.environment = env
    process.standardOutput = try FileHandle(forWritingTo: out)
    process.standardError = try FileHandle(forWritingTo: err)
    try process.run()
    // A hang (a signal never forwarded, a child that never exits) fails the test with status 137, not the run.
    let killer = DispatchWorkItem { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
    defer { killer.cancel() }
    try whileRunning?(process.processIdentifier)
    process.waitUntilExit()
    let status = process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    return ToolResult(status: status, stdout: try String(contentsOf: out, encoding: .utf8),
                      stderr: try String(contentsOf: err, encoding: .utf8))
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

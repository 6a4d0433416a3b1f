import AllocationTrackingTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What a child process did: its status, what it printed, and whether the deadline killed it.
public struct ChildProcessResult: Sendable {
    /// The exit status, or the signal's number when a signal ended it (Foundation's `terminationStatus`).
    public var status: Int32
    /// True when a signal ended it.
    public var signalled: Bool
    public var output: Data
    public var error: String
    public var text: String { String(decoding: output, as: UTF8.self) }
}

/// The one way every test target runs a program (scenarios, `alloc-track`, `go tool pprof`, the Chromium driver).
///
/// - Standard output and error are pipes drained by a thread of their own while the child runs: a pipe nobody
///   reads holds 64 KiB and then blocks its writer (a report on standard error while the parent waited for
///   standard output's end did that). Pipes, not files, since some scenarios limit their file sizes.
/// - Started with posix_spawn (`ats_spawn`) in a process group of its own and reaped here with waitpid, not with
///   Foundation's Process: Process learns of an exit through SIGCHLD, which a thread of this process that does not
///   block it can swallow, and then waits for ever on a zombie (a CI run hung there for an hour).
/// - A deadline: a child still running after `timeout` is killed with its process group (SIGKILL) and its result
///   says so on standard error, so that a hang fails its test with what the child printed instead of stalling the
///   whole run.
/// - `removing` drops variables of the test process's own environment (by default `ALLOCATION_TRACKING`, which
///   would otherwise configure the child's tracker).
public func runChildProcess(_ executable: URL, _ arguments: [String], environment: [String: String] = [:],
                            removing: [String] = ["ALLOCATION_TRACKING"], directory: URL? = nil, input: Data? = nil,
                            timeout: TimeInterval = 300,
                            whileRunning: ((pid_t) throws -> Void)? = nil) throws -> ChildProcessResult {
    let scratch = FileManager.default.temporaryDirectory
        .appendingPathComponent("child-\(getpid())-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: scratch) }
    let inURL = scratch.appendingPathComponent("in")
    try (input ?? Data()).write(to: inURL)

    var env = ProcessInfo.processInfo.environment
    for key in removing { env.removeValue(forKey: key) }
    for (key, value) in environment { env[key] = value }
    let argv = ([executable.path] + arguments).map { strdup($0) } + [nil]
    let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { (argv + envp).forEach { free($0) } }
    // Close-on-exec: no other child started meanwhile (tests run in parallel) inherits them and keeps them open.
    var outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
    var failed = ats_pipe_cloexec(&outPipe)
    guard failed == 0 else { throw ChildProcessError(message: "pipe: \(String(cString: strerror(failed)))") }
    failed = ats_pipe_cloexec(&errPipe)
    guard failed == 0 else {
        close(outPipe[0]); close(outPipe[1])
        throw ChildProcessError(message: "pipe: \(String(cString: strerror(failed)))")
    }
    var pid: pid_t = 0
    let spawned = ats_spawn(executable.path, argv, envp, directory?.path, input == nil ? nil : inURL.path, outPipe[1],
                            errPipe[1], &pid)
    close(outPipe[1]); close(errPipe[1])
    let drain = PipeDrain(output: outPipe[0], error: errPipe[0])
    guard spawned == 0 else {
        drain.finish(grace: 0)
        throw ChildProcessError(message: "cannot start \(executable.path): \(String(cString: strerror(spawned)))")
    }
    let deadline = Date().addingTimeInterval(timeout)
    var status: Int32 = 0
    var killedByDeadline = false
    func killGroup() { kill(-pid, SIGKILL); kill(pid, SIGKILL) }
    /// Waits for the child (polling: no SIGCHLD involved) until it exits or the deadline kills it.
    func reap() {
        while true {
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid || (result < 0 && errno != EINTR) { return }
            if result == 0 && Date() >= deadline {
                killedByDeadline = true
                killGroup()
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                return
            }
            usleep(5_000)
        }
    }
    do {
        try whileRunning?(pid)
    } catch {
        killGroup()
        reap()
        drain.finish(grace: 2)
        throw error
    }
    reap()
    // What the child started in its group and left running goes with it; then what is left in the pipes (a
    // grandchild outside the group that still holds them open is given two seconds).
    kill(-pid, SIGKILL)
    let (output, errorData) = drain.finish(grace: 2)
    var errorText = String(decoding: errorData, as: UTF8.self)
    if killedByDeadline {
        errorText += "\n[test harness: \(executable.lastPathComponent) \(arguments.joined(separator: " ")) was still "
            + "running after \(Int(timeout)) s and was killed]\n"
    }
    let signalled = status & 0x7f != 0 && status & 0x7f != 0x7f
    return ChildProcessResult(status: signalled ? status & 0x7f : (status >> 8) & 0xff, signalled: signalled,
                              output: output, error: errorText)
}

public struct ChildProcessError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// Reads a child's two pipes on a thread of its own until both reach their end, or until `finish` gives up.
private final class PipeDrain: @unchecked Sendable {
    private let lock = NSCondition()
    private var output = Data(), error = Data()
    private var done = false, stop = false
    private let fds: [Int32]

    init(output: Int32, error: Int32) {
        fds = [output, error]
        let thread = Thread { [self] in run() }
        thread.start()
    }

    private func run() {
        var open = [true, true]
        var buffer = [UInt8](repeating: 0, count: 65536)
        while open.contains(true) {
            if lock.withLock({ stop }) { break }
            var polls = fds.enumerated().map { pollfd(fd: open[$0.offset] ? $0.element : -1, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&polls, nfds_t(polls.count), 50)
            if ready < 0 && errno != EINTR { break }
            for index in 0..<2 where open[index] && polls[index].revents != 0 {
                let count = read(fds[index], &buffer, buffer.count)
                if count > 0 {
                    lock.withLock {
                        if index == 0 { output.append(contentsOf: buffer[0..<count]) } else { error.append(contentsOf: buffer[0..<count]) }
                    }
                } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                    open[index] = false
                }
            }
        }
        for fd in fds { close(fd) }
        lock.withLock { done = true; lock.broadcast() }
    }

    /// What was read, once both pipes ended or `grace` seconds passed.
    @discardableResult
    func finish(grace: TimeInterval) -> (Data, Data) {
        lock.lock()
        defer { lock.unlock() }
        let until = Date().addingTimeInterval(grace)
        while !done && lock.wait(until: until) {}
        stop = true
        while !done { lock.wait() }
        return (output, error)
    }
}

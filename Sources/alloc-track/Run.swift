import AllocationTracking
import ArgumentParser
import Foundation
import Synchronization

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run an unmodified program with the tracker preloaded; write its snapshot when it exits.",
        discussion: """
            The program runs with libAllocationTrackingPreload.so in LD_PRELOAD (found next to alloc-track, or at \
            $ALLOC_TRACK_PRELOAD), configured through ALLOCATION_TRACKING. Its exit status is passed through (death \
            by a signal as 128+N); SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 sent to alloc-track are forwarded. \
            The snapshot is written when the program exits normally (exit(), return from main), not when a signal \
            kills it. Programs it starts are not tracked unless --follow-children. A program that links \
            swift-allocation-tracking itself is tracked once, by its own copy.
            Example:
              alloc-track run --sample 512KiB -o heap.json -- python3 -c 'x = [bytes(4096) for _ in range(1000)]'
            """
    )

    @Option(help: ArgumentHelp("Sample every SIZE bytes on average (Poisson) instead of every allocation.", valueName: "size"))
    var sample: String?
    @Option(help: "libunwind (default: sees through code without frame pointers) or framepointers (cheaper).")
    var unwinder: String?
    @Option(help: ArgumentHelp("Write reports (soft limits, signal, allocation failure) to this directory.", valueName: "dir"))
    var reportDir: String?
    @Option(help: ArgumentHelp("Report when tracked live memory crosses SIZE (512MiB).", valueName: "size"))
    var softLimit: String?
    @Option(help: ArgumentHelp("Report when the container's memory crosses this fraction of its limit (0.9, 90%, off).", valueName: "fraction"))
    var container: String?
    @Option(help: ArgumentHelp("Report when the program receives this signal (SIGUSR2).", valueName: "signal"))
    var signal: String?
    @Option(name: .shortAndLong, help: ArgumentHelp("The snapshot file (a new file; default alloc-track-<pid>.json).", valueName: "path"))
    var output: String?
    @Flag(help: "Track the processes the program starts too (each writes its own report files, not the snapshot).")
    var followChildren = false
    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("The program and its arguments (after --).", valueName: "program"))
    var command: [String] = []

    func run() throws {
        var exitStatus: Int32 = 0
        try failing {
            var command = self.command
            // `run --help` reaches here: the program's arguments are captured as they are.
            if command == ["--help"] || command == ["-h"] { throw CleanExit.helpRequest(self) }
            if command.first == "--" { command.removeFirst() }
            guard !command.isEmpty else { throw CommandFailure("no program to run: alloc-track run [options] -- PROGRAM ARGS…") }
            let path = output ?? "alloc-track-\(getpid()).json"
            let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
            guard !absolute.contains(",") else { throw CommandFailure("-o \(path): a path with a comma cannot be passed to the tracker") }
            if access(absolute, F_OK) == 0 {
                throw CommandFailure("-o \(path) exists (alloc-track never replaces a file; remove it or choose another path)")
            }
            let setting = try trackerSetting(snapshotPath: absolute)
            let library = try Preload.find()
            exitStatus = try Child.run(command, environment: environment(setting: setting, library: library))
            if access(absolute, F_OK) == 0 {
                FileHandle.standardError.write(Data("alloc-track: snapshot written to \(path)\n".utf8))
            } else if exitStatus > 128 {
                FileHandle.standardError.write(Data("alloc-track: \(command[0]) was killed by signal \(exitStatus - 128): no snapshot (it is written at a normal exit)\n".utf8))
            } else {
                FileHandle.standardError.write(Data("alloc-track: no snapshot was written to \(path) (the program left with _exit, or exec'd another program?)\n".utf8))
            }
        }
        throw ExitCode(exitStatus)
    }

    /// The `ALLOCATION_TRACKING` value, checked by the library's own parser so that a bad option is one line here
    /// rather than a line from the child.
    func trackerSetting(snapshotPath: String) throws -> String {
        var parts = ["announce=off"]
        func add(_ key: String, _ value: String?, option: String) throws {
            guard let value else { return }
            guard !value.contains(","), !value.contains("=") || key == "report_dir" else {
                throw CommandFailure("--\(option) \(value): no commas")
            }
            parts.append("\(key)=\(value)")
        }
        try add("sample", sample, option: "sample")
        try add("unwinder", unwinder, option: "unwinder")
        try add("report_dir", reportDir.map { $0.hasPrefix("/") ? $0 : FileManager.default.currentDirectoryPath + "/" + $0 }, option: "report-dir")
        try add("soft_limit", softLimit, option: "soft-limit")
        try add("container", container, option: "container")
        try add("signal", signal, option: "signal")
        parts.append("snapshot_at_exit=\(snapshotPath)")
        let setting = parts.joined(separator: ",")
        _ = try AllocationTracker.Configuration.parse(environmentValue: setting)
        return setting
    }

    func environment(setting: String, library: String) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment["ALLOCATION_TRACKING"] = setting
        let existing = environment["LD_PRELOAD"].map { $0.isEmpty ? "" : ":" + $0 } ?? ""
        environment["LD_PRELOAD"] = library + existing
        // The preloaded Swift runtime would otherwise install its crash backtracer in the program (a C program, a
        // shell), which then handles SIGSEGV and friends itself: a crash would no longer die by its signal.
        if environment["SWIFT_BACKTRACE"] == nil { environment["SWIFT_BACKTRACE"] = "enable=no" }
        if followChildren { environment["ALLOC_TRACK_FOLLOW_CHILDREN"] = "1" } else {
            environment.removeValue(forKey: "ALLOC_TRACK_FOLLOW_CHILDREN")
        }
        return environment
    }
}

/// Finding the preload library and checking it loads, before anything is started.
enum Preload {
    static let fileName = "libAllocationTrackingPreload.so"

    /// `$ALLOC_TRACK_PRELOAD` when set (an override), else next to the alloc-track binary (where `swift build` and
    /// an install put it). Checked by the loader itself (`loadFailure`): a library that cannot load (a missing libswiftCore) would otherwise
    /// only print a loader warning in the child and run it untracked.
    static func find() throws -> String {
        let path: String
        if let override = ProcessInfo.processInfo.environment["ALLOC_TRACK_PRELOAD"], !override.isEmpty {
            path = override
        } else {
            let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
                ?? CommandLine.arguments[0]
            path = (executable as NSString).deletingLastPathComponent + "/" + fileName
        }
        guard access(path, R_OK) == 0 else {
            throw CommandFailure("the preload library \(path) is missing: build it (swift build --product AllocationTrackingPreload) next to alloc-track, or set ALLOC_TRACK_PRELOAD to its path")
        }
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        if let why = loadFailure(absolute) {
            throw CommandFailure("the preload library \(path) cannot be loaded: \(why)")
        }
        return absolute
    }

    /// Why the loader refuses to preload `path`, or nil when it loads. Checked by preloading it for real, into
    /// alloc-track itself run as `check-preload`: a `dlopen` here would refuse it even when it is fine, since
    /// its initial-exec TLS fits only in a process that loads it at start (as LD_PRELOAD does).
    static func loadFailure(_ path: String) -> String? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe")
        process.arguments = ["check-preload"]
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "ALLOCATION_TRACKING")
        environment["LD_PRELOAD"] = path
        process.environment = environment
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        do { try process.run() } catch { return "cannot start the check: \(error)" }
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        // ld.so: "ERROR: ld.so: object 'X' from LD_PRELOAD cannot be preloaded (REASON): ignored."
        if let line = text.split(separator: "\n").first(where: { $0.contains("cannot be preloaded") }) {
            if let open = line.range(of: "cannot be preloaded ("), let close = line.range(of: "): ignored", options: .backwards) {
                return String(line[open.upperBound..<close.lowerBound])
            }
            return String(line)
        }
        return process.terminationStatus == 0 ? nil : "the check exited with status \(process.terminationStatus): \(text)"
    }
}

/// `alloc-track check-preload` (hidden): does nothing, in a process started with the preload library in
/// LD_PRELOAD, so that the loader says whether it can load it.
struct CheckPreload: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check-preload", shouldDisplay: false)
}

/// The child: started with posix_spawnp, the forwarded signals delivered to it, its status passed through.
enum Child {
    static let forwarded: [Int32] = [SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2]
    /// The child's pid, for the signal handler (0 until it is known). Atomic: the handler may run on any of
    /// alloc-track's threads that does not block the signal, not only the one that sets it.
    static let pid = Atomic<Int32>(0)
    /// Forwarded signals that arrived before the child's pid was known (bit N: signal N).
    static let early = Atomic<UInt64>(0)

    /// Sends the signals kept in `early` to the child, once: whoever of the handler and the spawning thread
    /// exchanges the bits gets them.
    static func sendEarly(to child: pid_t) {
        let missed = early.exchange(0, ordering: .sequentiallyConsistent)
        for signal in forwarded where missed & (1 << UInt64(signal)) != 0 { kill(child, signal) }
    }

    static func run(_ command: [String], environment: [String: String]) throws -> Int32 {
        var blocked = sigset_t(), previous = sigset_t()
        sigemptyset(&blocked)
        for signal in forwarded { sigaddset(&blocked, signal) }
        var action = sigaction()
        action.sa_flags = SA_SIGINFO | SA_RESTART
        action.__sigaction_handler.sa_sigaction = { signal, info, _ in
            // A key typed at the terminal (SI_KERNEL) reaches the whole foreground process group, the child
            // included: forwarding it would deliver it twice. Signals sent with kill (SI_USER, SI_QUEUE) are
            // forwarded.
            if let info, info.pointee.si_code == SI_KERNEL { return }
            // Before the child exists (a thread that does not block the signal took it while the child was being
            // started), keep it: it is sent as soon as the child's pid is known. The pid is read again after the
            // bit is set: if the spawning thread stored the pid and took `early` in between, the bit would
            // otherwise be left there and the signal never forwarded (a test saw exactly that under load).
            let known = Child.pid.load(ordering: .sequentiallyConsistent)
            if known > 0 { kill(known, signal); return }
            Child.early.bitwiseOr(1 << UInt64(signal), ordering: .sequentiallyConsistent)
            let now = Child.pid.load(ordering: .sequentiallyConsistent)
            if now > 0 { Child.sendEarly(to: now) }
        }
        // Both globals initialised here, before any handler can run (a lazy initialisation inside a handler could
        // wait on the interrupted thread).
        _ = pid.load(ordering: .relaxed)
        _ = early.load(ordering: .relaxed)
        for signal in forwarded { sigaction(signal, &action, nil) }
        pthread_sigmask(SIG_BLOCK, &blocked, &previous)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The child starts with alloc-track's mask as it was, less the forwarded signals (unblocked, at their
        // default actions): alloc-track may itself have been started with them blocked — a process spawned from a
        // libdispatch worker thread inherits that thread's mask, which blocks nearly everything — and a forwarded
        // signal the child blocks would never arrive.
        var childMask = previous
        for signal in forwarded { sigdelset(&childMask, signal) }
        posix_spawnattr_setsigmask(&attributes, &childMask)
        posix_spawnattr_setsigdefault(&attributes, &blocked)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = command.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var child: pid_t = 0
        let spawned = posix_spawnp(&child, command[0], nil, &attributes, argv, envp)
        if spawned == 0 {
            pid.store(child, ordering: .sequentiallyConsistent)
            sendEarly(to: child)
        }
        // alloc-track takes the forwarded signals from here on, whatever mask it was started with (see above).
        pthread_sigmask(SIG_SETMASK, &childMask, nil)
        guard spawned == 0 else {
            throw CommandFailure("cannot run \(command[0]): \(String(cString: strerror(spawned)))",
                                 status: spawned == ENOENT ? 127 : 126)
        }
        var status: Int32 = 0
        while waitpid(child, &status, 0) < 0 {
            guard errno == EINTR else { throw CommandFailure("waitpid: \(String(cString: strerror(errno)))") }
        }
        // The shells' convention: the exit code, or 128 + the signal that killed it.
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }
}

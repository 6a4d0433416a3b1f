#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension AllocationTracker.Configuration {
    /// Where reports go and what they hold.
    ///
    /// ```swift
    /// try AllocationTracker.start(.init(
    ///     report: .init(directory: URL(fileURLWithPath: "/var/log/app"), topSites: 20),
    ///     limits: .init(trackedBytes: 512 << 20, rssBytes: nil, containerFraction: 0.9,
    ///                   onAllocationFailure: true, signal: SIGUSR2)))
    /// ```
    public struct Report: Hashable, Sendable {
        /// A directory for `alloc-report-<pid>-<UTC time>.txt` files (mode 0600, never overwriting, never
        /// following a symlink; a `.json` snapshot next to it when memory allows). Nil: standard error only.
        public var directory: String?
        /// Sites listed (by live bytes, and by growth since the previous report). 1…1000, default 20.
        public var topSites: Int
        /// Also write every report to standard error (what `kubectl logs --previous` shows). Default true.
        public var standardError: Bool

        public init(directory: String? = nil, topSites: Int = 20, standardError: Bool = true) {
            self.directory = directory
            self.topSites = topSites
            self.standardError = standardError
        }

        /// `directory` as a file URL (`URL(fileURLWithPath: "/var/log/app")`).
        public init(directory: URL, topSites: Int = 20, standardError: Bool = true) {
            self.init(directory: directory.path, topSites: topSites, standardError: standardError)
        }
    }

    /// When to write a report on its own. Each limit fires once when crossed, re-arms only after usage falls
    /// below the limit by `hysteresis` (a fraction of the limit), and never more often than `minimumInterval`
    /// seconds: a process hovering at its limit does not flood its disk or logs. The soft limits are checked by
    /// a background watchdog thread every `pollInterval` seconds (it does not allocate on a poll); the
    /// allocation-failure report is written by the failing call itself, without allocating.
    public struct Limits: Hashable, Sendable {
        /// Tracked live bytes (`tracedMemory.current`). Nil: off.
        public var trackedBytes: Int?
        /// Resident set size of the process, in bytes (`/proc/self/statm`). Nil: off.
        public var rssBytes: Int?
        /// A fraction (0 < f ≤ 1) of the container's memory limit (cgroup v2 `memory.max`, v1
        /// `memory.limit_in_bytes`), crossed by the cgroup's usage: the last chance before the kernel's OOM
        /// killer sends SIGKILL. Nil, or no limit set on the cgroup: off. Default 0.9.
        public var containerFraction: Double?
        /// A report when a malloc-family call fails for lack of memory (not for invalid arguments). Default true.
        public var onAllocationFailure: Bool
        /// A signal that writes a report on demand (like `jcmd GC.heap_dump`), e.g. `SIGUSR2`. Nil: off (the
        /// default, so the process's own handling of the signal is not replaced unasked).
        public var signal: Int32?
        /// A report of what is still live when the process exits normally (a leak report). Default false.
        public var reportAtExit: Bool
        /// Re-arm margin, as a fraction of each limit (default 0.05: re-arms below 95 % of the limit).
        public var hysteresis: Double
        /// Seconds between two reports of the same trigger, at least (default 10), the allocation-failure
        /// report included.
        public var minimumInterval: Double
        /// Seconds the watchdog stays off the heap after an allocation failed for want of memory (a request
        /// smaller than the machine's memory; a failed `malloc(SIZE_MAX)` is no sign of pressure), with
        /// `onAllocationFailure`: no soft-limit or signal report (they are written once the pause is over, if
        /// still due), no name refresh, and the failure report's follow-up (its JSON snapshot, `onReport`) only
        /// afterwards — because in Swift an allocation that fails traps, and what memory is left belongs to the
        /// process's own error path. Every later failure starts the pause again, so it only has to outlast the
        /// last one.
        ///
        /// Default 10: an error path that sheds load or drops caches frees its memory well within a second, so
        /// ten seconds leave a wide margin on a loaded machine (many polls of the watchdog), while the follow-up
        /// of the report still arrives while the failure is news. (It is also the pause earlier versions took,
        /// when `minimumInterval` doubled as it.) 0 … 1,000,000,000.
        public var pauseAfterAllocationFailure: Double
        /// Seconds between two polls of the watchdog (default 0.1).
        public var pollInterval: Double
        /// A report when memory is projected to reach its limit within this horizon at its current rate (a
        /// least-squares line over the last `predictedExhaustion` of the trend history): the cgroup's working set
        /// (its usage when `memory.stat` cannot be read) against the container's limit, and tracked bytes against
        /// `trackedBytes` when set. Noise does not fire it: the line needs at least 5 samples in the window, a fit
        /// (r²) of at least 0.8, and a rise in each third of the window (one jump is not a trend). It fires once
        /// per crossing into the horizon, re-arms when the projection is beyond the horizon by `hysteresis` (a
        /// projected time over `horizon / (1 - hysteresis)`) or growth stops, and respects `minimumInterval`, as the
        /// other triggers do. Nil (the default): off. Needs `Configuration.trend` on; the window is read at its
        /// interval, so keep `trend.interval` well under the horizon (a tenth or less). Also `predict=10m`.
        public var predictedExhaustion: Duration? = nil
        /// Where cgroup files are found: the cgroup mount (also `cgroup_root=` in `ALLOCATION_TRACKING`) and the
        /// process's cgroup list. Test seams (tests point them at a fake tree), not API.
        @_spi(Testing) public var cgroupRoot = "/sys/fs/cgroup"
        @_spi(Testing) public var procSelfCgroup = "/proc/self/cgroup"

        public init(trackedBytes: Int? = nil, rssBytes: Int? = nil, containerFraction: Double? = 0.9,
                    onAllocationFailure: Bool = true, signal: Int32? = nil, reportAtExit: Bool = false,
                    hysteresis: Double = 0.05, minimumInterval: Double = 10, pauseAfterAllocationFailure: Double = 10,
                    pollInterval: Double = 0.1) {
            self.trackedBytes = trackedBytes
            self.rssBytes = rssBytes
            self.containerFraction = containerFraction
            self.onAllocationFailure = onAllocationFailure
            self.signal = signal
            self.reportAtExit = reportAtExit
            self.hysteresis = hysteresis
            self.minimumInterval = minimumInterval
            self.pauseAfterAllocationFailure = pauseAfterAllocationFailure
            self.pollInterval = pollInterval
        }
    }

    func validateReports() throws {
        func bad(_ message: String) -> AllocationTrackingError { AllocationTrackingError(.invalidConfiguration, message) }
        guard (1...1000).contains(report.topSites) else { throw bad("topSites must be 1…1000, got \(report.topSites)") }
        if let directory = report.directory, directory.isEmpty { throw bad("the report directory is empty") }
        if let bytes = limits.trackedBytes, bytes <= 0 { throw bad("trackedBytes must be positive, got \(bytes)") }
        if let bytes = limits.rssBytes, bytes <= 0 { throw bad("rssBytes must be positive, got \(bytes)") }
        // Below 1 % the threshold rounds to nothing a cgroup ever reports as "crossed" in a useful way: a limit
        // that fires at start-up or never is a mistake, not a setting.
        if let fraction = limits.containerFraction, !(fraction >= 0.01 && fraction <= 1) {
            throw bad("containerFraction must be 0.01…1 (1 %…100 % of the container's limit), got \(fraction)")
        }
        if let signal = limits.signal, !Self.isReportSignal(signal) {
            throw bad("signal \(signal) cannot be used for reports: \(Self.reportSignalsRule)")
        }
        guard limits.hysteresis >= 0 && limits.hysteresis < 1 else { throw bad("hysteresis must be in [0, 1), got \(limits.hysteresis)") }
        guard limits.minimumInterval >= 0 && limits.minimumInterval <= 1e9 else {
            throw bad("minimumInterval must be 0…1000000000 seconds, got \(limits.minimumInterval)")
        }
        guard limits.pauseAfterAllocationFailure >= 0 && limits.pauseAfterAllocationFailure <= 1e9 else {
            throw bad("pauseAfterAllocationFailure must be 0…1000000000 seconds, "
                      + "got \(limits.pauseAfterAllocationFailure)")
        }
        guard limits.pollInterval >= 0.001 && limits.pollInterval <= 3600 else {
            throw bad("pollInterval must be 0.001…3600 seconds, got \(limits.pollInterval)")
        }
    }

    /// Checks at `start` that reports can be written where configured, so a mistake shows at once, not at the
    /// first report (which may be the one before an OOM kill): the directory must be an absolute path short
    /// enough for a report's file name, exist, be a directory, and be writable. Throws `.invalidConfiguration`.
    func checkReportDirectory() throws {
        guard let directory = report.directory else { return }
        func bad(_ message: String) -> AllocationTrackingError {
            AllocationTrackingError(.invalidConfiguration, "report directory \(_quoted(directory)): \(message)")
        }
        guard directory.hasPrefix("/") else { throw bad("must be an absolute path") }
        // The allocation-failure report builds `<directory>/alloc-report-<pid>-<time>.txt` in a 4 KiB buffer.
        guard directory.utf8.count <= Self.maximumReportDirectoryLength else {
            throw bad("is longer than \(Self.maximumReportDirectoryLength) bytes")
        }
        var info = stat()
        guard stat(directory, &info) == 0 else { throw bad(String(cString: strerror(errno))) }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw bad("is not a directory") }
        guard access(directory, W_OK | X_OK) == 0 else { throw bad("is not writable: \(String(cString: strerror(errno)))") }
    }

    static let maximumReportDirectoryLength = 4000

    /// Signals a report may take: those whose default action nobody relies on. SIGTERM and SIGINT end a process
    /// gracefully (an orchestrator's stop), SIGHUP reloads, SIGQUIT dumps, SIGURG and SIGWINCH have meanings to
    /// runtimes and terminals; SIGUSR1, SIGUSR2 and the real-time signals are free for applications.
    static func isReportSignal(_ signal: Int32) -> Bool {
        signal == SIGUSR1 || signal == SIGUSR2 || (realTimeSignals).contains(signal)
    }

    static var realTimeSignals: ClosedRange<Int32> { __libc_current_sigrtmin()...__libc_current_sigrtmax() }

    /// `SIGUSR2`, `SIGRTMIN+3`: the name `parseSignal` reads back.
    static func signalName(_ signal: Int32) -> String {
        switch signal {
        case SIGUSR1: return "SIGUSR1"
        case SIGUSR2: return "SIGUSR2"
        case realTimeSignals.lowerBound: return "SIGRTMIN"
        case realTimeSignals: return "SIGRTMIN+\(signal - realTimeSignals.lowerBound)"
        default: return "signal \(signal)"
        }
    }

    static var reportSignalsRule: String {
        "use SIGUSR1, SIGUSR2 or a real-time signal (SIGRTMIN…SIGRTMAX, \(realTimeSignals.lowerBound)…"
            + "\(realTimeSignals.upperBound)); other signals' default actions are relied on (SIGTERM and SIGINT stop "
            + "the process gracefully)"
    }

    /// Whether the watchdog thread has work: a soft limit to poll, a signal to serve or a history to keep (names
    /// for the allocation-failure report are prepared by it too).
    var needsWatchdog: Bool {
        limits.trackedBytes != nil || limits.rssBytes != nil || limits.containerFraction != nil
            || limits.signal != nil || limits.onAllocationFailure || trend.isEnabled
    }

    /// The `ALLOCATION_TRACKING` keys of reports and limits (see `parse(environmentValue:)`). Returns false
    /// when `key` is not one of them.
    mutating func parseReportKey(_ key: String, _ text: String) throws -> Bool {
        func bad(_ message: String) -> AllocationTrackingError { AllocationTrackingError(.invalidConfiguration, message) }
        func onOff() throws -> Bool {
            switch text.lowercased() {
            case "1", "on", "true", "yes": return true
            case "0", "off", "false", "no": return false
            default: throw bad("\(key) must be on or off, got \(_quoted(text))")
            }
        }
        func bytes() throws -> Int? {
            if ["off", "none", "0"].contains(text.lowercased()) { return nil }
            guard let value = Self.parseBytes(text) else {
                throw bad("\(key) must be a size such as 512MiB, 2GiB or 1048576 (binary: KiB MiB GiB TiB, Ki Mi Gi Ti, "
                          + "K M G T; decimal: kB MB GB TB), got \(_quoted(text))")
            }
            return value
        }
        func seconds() throws -> Double {
            guard let value = Self.parseSeconds(text) else {
                throw bad("\(key) must be a duration with its unit, such as 100ms, 10s, 1m or 1h, got \(_quoted(text))")
            }
            return value
        }
        switch key {
        case "report_dir": report.directory = text.isEmpty ? nil : text
        case "top":
            guard let n = Int(text) else { throw bad("top must be a number, got \(_quoted(text))") }
            report.topSites = n
        case "stderr": report.standardError = try onOff()
        case "soft_limit", "tracked_limit": limits.trackedBytes = try bytes()
        case "rss_limit": limits.rssBytes = try bytes()
        case "container":
            if ["off", "none", "0"].contains(text.lowercased()) { limits.containerFraction = nil; break }
            let trimmed = text.hasSuffix("%") ? String(text.dropLast()) : text
            guard let value = Double(trimmed) else { throw bad("container must be a fraction such as 0.9 or 90%, got \(_quoted(text))") }
            limits.containerFraction = text.hasSuffix("%") ? value / 100 : value
        case "on_failure", "oom_report": limits.onAllocationFailure = try onOff()
        case "signal":
            if ["off", "none", "0"].contains(text.lowercased()) { limits.signal = nil; break }
            guard let signal = Self.parseSignal(text) else {
                throw bad("signal must be SIGUSR1, SIGUSR2, SIGRTMIN+n, SIGRTMAX-n or their number, got \(_quoted(text)): "
                          + Self.reportSignalsRule)
            }
            limits.signal = signal
        case "at_exit": limits.reportAtExit = try onOff()
        case "hysteresis":
            let trimmed = text.hasSuffix("%") ? String(text.dropLast()) : text
            guard let value = Double(trimmed) else { throw bad("hysteresis must be a fraction such as 0.05 or 5%, got \(_quoted(text))") }
            limits.hysteresis = text.hasSuffix("%") ? value / 100 : value
        case "min_interval": limits.minimumInterval = try seconds()
        case "failure_pause": limits.pauseAfterAllocationFailure = try seconds()
        case "interval", "poll_interval": limits.pollInterval = try seconds()
        case "cgroup_root": limits.cgroupRoot = text
        default: return false
        }
        return true
    }

    static let reportKeys = "report_dir, top, stderr, soft_limit, rss_limit, container, on_failure, signal, at_exit, "
        + "hysteresis, min_interval, failure_pause, interval, cgroup_root"

    /// A size: a whole number of bytes (`1048576`), or a number with a unit. Binary units (powers of 1024):
    /// `KiB MiB GiB TiB` (IEC), `Ki Mi Gi Ti` (Kubernetes), `K M G T` (Docker's `--memory`, the JVM's `-Xmx`);
    /// decimal units (powers of 1000): `kB MB GB TB`, as Kubernetes reads `M` too but this library does not.
    /// Case-insensitive. `B` for bytes.
    static func parseBytes(_ text: String) -> Int? {
        let lower = text.lowercased().replacingOccurrences(" ", "")
        let units: [(String, Double)] = [
            ("kib", 0x1p10), ("mib", 0x1p20), ("gib", 0x1p30), ("tib", 0x1p40),
            ("ki", 0x1p10), ("mi", 0x1p20), ("gi", 0x1p30), ("ti", 0x1p40),
            ("kb", 1e3), ("mb", 1e6), ("gb", 1e9), ("tb", 1e12),
            ("k", 0x1p10), ("m", 0x1p20), ("g", 0x1p30), ("t", 0x1p40), ("b", 1),
        ]
        for (suffix, scale) in units where lower.hasSuffix(suffix) {
            guard let value = Double(lower.dropLast(suffix.count)), value > 0, value * scale < 9e18,
                  value * scale >= 1 else { return nil }
            return Int(value * scale)
        }
        guard let value = Int(lower), value > 0 else { return nil }
        return value
    }

    /// A duration with its unit: `100ms`, `10s`, `1.5s`, `2m`, `1h`. A bare number is refused: `interval=100`
    /// could mean milliseconds as easily as seconds.
    static func parseSeconds(_ text: String) -> Double? {
        let lower = text.lowercased().replacingOccurrences(" ", "")
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, scale) in units where lower.hasSuffix(suffix) {
            guard let value = Double(lower.dropLast(suffix.count)), value >= 0, value.isFinite else { return nil }
            return value * scale
        }
        return nil
    }

    /// `SIGUSR2`, `USR2`, `12`, `SIGRTMIN`, `SIGRTMIN+3`, `RTMAX-1`. Any number parses (validation says which
    /// signals are allowed); unknown names do not.
    static func parseSignal(_ text: String) -> Int32? {
        if let n = Int32(text) { return n }
        var name = text.uppercased()
        if name.hasPrefix("SIG") { name.removeFirst(3) }
        for (base, value) in [("RTMIN", realTimeSignals.lowerBound), ("RTMAX", realTimeSignals.upperBound)]
        where name.hasPrefix(base) {
            let rest = name.dropFirst(base.count)
            if rest.isEmpty { return value }
            guard let offset = Int32(rest.hasPrefix("+") ? String(rest.dropFirst()) : String(rest)) else { return nil }
            return value + offset
        }
        let names: [String: Int32] = ["USR1": SIGUSR1, "USR2": SIGUSR2, "HUP": SIGHUP, "QUIT": SIGQUIT,
                                      "PWR": SIGPWR, "URG": SIGURG, "WINCH": SIGWINCH, "TERM": SIGTERM,
                                      "INT": SIGINT, "KILL": SIGKILL]
        return names[name]
    }
}

/// `text` quoted for an error message: control characters escaped (a value from the environment may hold
/// anything, and is echoed to a terminal or a log), and cut after 120 characters.
func _quoted(_ text: String) -> String { "'" + _escaped(text, limit: 120) + "'" }

/// `text` with control characters escaped (`\n`, `\x1b`, …), cut after `limit` characters (then `…`).
func _escaped(_ text: String, limit: Int) -> String {
    var out = ""
    for (i, scalar) in text.unicodeScalars.enumerated() {
        if i == limit { out += "…"; break }
        switch scalar {
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        case "\r": out += "\\r"
        case "'": out += "\\'"
        case "\\": out += "\\\\"
        default:
            if scalar.value < 0x20 || scalar.value == 0x7F || (0x80..<0xA0).contains(scalar.value) {
                out += "\\x" + (scalar.value < 16 ? "0" : "") + String(scalar.value, radix: 16)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out
}

extension String {
    func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}

import AllocationTracking
import Foundation
import TrackerTestSupport
import Testing

extension TrackerTests {
    /// Reports written before the process dies: soft limits, the container's limit, a signal, on demand.
    /// Each scenario runs in a child process; the test asserts on what the child left behind.
    @Suite struct Reports {
        let scenarios = productURL("TrackerScenarios")

        static func temporaryDirectory() throws -> URL {
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("cat-reports-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            return url
        }

        static func reports(in directory: URL) throws -> [URL] {
            try FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)
                .filter { $0.lastPathComponent.hasPrefix("alloc-report-") && $0.pathExtension == "txt" }
        }

        static func line(_ output: String) -> String? {
            output.split(separator: " ").first { $0.hasPrefix("line=") }.map { String($0.dropFirst(5)) }
        }

        @Test func trackedSoftLimitReportsOnceAndDoesNotFlood() throws {
            let directory = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let result = try runChild(scenarios, ["softlimit", directory.path])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            let files = try Self.reports(in: directory)
            #expect(files.count == 1, "\(files)")
            #expect(result.output.contains("callbacks=1"), "\(result.output)")
            let file = try #require(files.first)
            let text = try String(contentsOf: file, encoding: .utf8)
            #expect(text.contains("report: tracked memory limit"))
            #expect(text.contains("crossed the limit 8192 KiB"))
            let line = try #require(Self.line(result.output.trimmingCharacters(in: .whitespacesAndNewlines)))
            #expect(text.contains("support.c:\(line): size="), "\(text)")
            #expect(text.contains("share="))
            #expect(text.contains("oom_score: "))
            #expect(text.contains("dropped allocations=0"))
            let attributes = try FileManager.default.attributesOfItem(atPath: file.path)
            #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
            // The snapshot's JSON next to it loads.
            let json = file.deletingPathExtension().appendingPathExtension("json")
            let snapshot = try Snapshot(contentsOf: json)
            #expect(snapshot.totalSize >= 8 << 20)
        }

        @Test func containerLimitOnAFakeCgroupV2Tree() throws {
            let root = try Self.temporaryDirectory()
            let directory = try Self.temporaryDirectory()
            defer {
                try? FileManager.default.removeItem(at: root)
                try? FileManager.default.removeItem(at: directory)
            }
            try FileManager.default.createDirectory(atPath: root.path + "/cg/test", withIntermediateDirectories: true)
            try "0::/test\n".write(toFile: root.path + "/proc_cgroup", atomically: true, encoding: .utf8)
            try "1000000\n".write(toFile: root.path + "/cg/test/memory.current", atomically: true, encoding: .utf8)
            try "10000000\n".write(toFile: root.path + "/cg/test/memory.max", atomically: true, encoding: .utf8)
            let result = try runChild(scenarios, ["container-fake", root.path, directory.path])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            #expect(result.output.contains("before=0"), "no report below 90 %: \(result.output)")
            let files = try Self.reports(in: directory)
            #expect(files.count == 1)
            let text = try String(contentsOf: try #require(files.first), encoding: .utf8)
            #expect(text.contains("report: container memory limit"))
            #expect(text.contains("cgroup: v2, usage=9277 KiB, limit=9766 KiB (95.0%)"), "\(text)")
            #expect(text.contains("crossed 90.0% of its limit"))
        }

        /// The real thing: a child in a memory cgroup with a 128 MiB limit grows until the kernel's OOM killer
        /// sends SIGKILL; the report written at 90 % of the limit, before the kill, names the growing line.
        @Test(.enabled(if: Self.ownMemoryCgroup.map { access($0, W_OK) == 0 } ?? false,
                       "needs a writable cgroup v1 memory hierarchy (root, cgroup v1)"))
        func reportIsWrittenBeforeTheOOMKiller() throws {
            let cgroup = try #require(Self.makeMemoryCgroup(limit: 128 << 20), "could not create a memory cgroup")
            defer { rmdir(cgroup) }
            let directory = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let result = try runChild(URL(fileURLWithPath: "/bin/sh"), [
                "-c", "echo $$ > \(cgroup)/cgroup.procs && exec '\(scenarios.path)' container-grow '\(directory.path)'",
            ])
            #expect(result.status == 9, "expected death by SIGKILL; status \(result.status): \(result.error.suffix(500))")
            let files = try Self.reports(in: directory)
            #expect(files.count >= 1, "no report file; standard error: \(result.error.suffix(1500))")
            let text = try String(contentsOf: try #require(files.first), encoding: .utf8)
            #expect(text.contains("report: container memory limit"))
            #expect(text.contains("support.c:"), "\(text)")
            #expect(text.contains("ats_malloc_touched"), "\(text)")
            #expect(result.error.contains("==== swift-allocation-tracking report: container memory limit"))
        }

        /// A nested memory cgroup under this process's own (cgroup v1), with `limit` bytes; nil when this
        /// machine does not allow it.
        /// This process's cgroup v1 memory directory, or nil.
        static var ownMemoryCgroup: String? {
            guard let text = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8),
                  let line = text.split(separator: "\n").first(where: {
                      let parts = $0.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
                      return parts.count == 3 && parts[1].split(separator: ",").contains("memory")
                  })
            else { return nil }
            let own = String(line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)[2])
            let path = "/sys/fs/cgroup/memory" + (own == "/" ? "" : own)
            return FileManager.default.fileExists(atPath: path) ? path : nil
        }

        static func makeMemoryCgroup(limit: Int) -> String? {
            guard let own = ownMemoryCgroup else { return nil }
            let path = own + "/cat-test-\(getpid())"
            guard mkdir(path, 0o755) == 0 || errno == EEXIST else { return nil }
            do {
                try "0\n".write(toFile: path + "/memory.swappiness", atomically: false, encoding: .utf8)
            } catch {}
            do {
                try "\(limit)\n".write(toFile: path + "/memory.limit_in_bytes", atomically: false, encoding: .utf8)
            } catch {
                rmdir(path)
                return nil
            }
            return path
        }

        @Test func signalWritesAReportWhileOtherThreadsAllocate() throws {
            let directory = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let result = try runChild(scenarios, ["signal", directory.path])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            #expect(result.output.contains("reports=1"), "\(result.output)")
            let text = try String(contentsOf: try #require(Self.reports(in: directory).first), encoding: .utf8)
            #expect(text.contains("report: signal"))
            let line = try #require(Self.line(result.output.trimmingCharacters(in: .whitespacesAndNewlines)))
            #expect(text.contains("support.c:\(line): size=121 KiB, count=1"), "\(text)")
        }

        /// After an allocation failure the watchdog stays off the heap for `pauseAfterAllocationFailure` (in Swift a
        /// failing allocation traps): a report requested by signal meanwhile is written once the pause is over.
        @Test func watchdogPausesAfterAnAllocationFailure() throws {
            let directory = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let result = try runChild(scenarios, ["failure-pause", directory.path])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            let values = keyValues(result.output)
            #expect(values["malloc_succeeded"] == "0")
            #expect(values["failure_reports"] == "1", "\(result.output)")
            // Checked 0.6 s after the failure (unless the machine stalled the child past the 2 s pause).
            if let checked = values["checked_after"].flatMap(Double.init), checked < 2 {
                #expect(values["signal_during_pause"] == "0", "\(result.output)")
            }
            #expect(values["signal_after_pause"] == "1", "\(result.output)")
            let writtenAfter = try #require(values["written_after"].flatMap(Double.init), "\(result.output)")
            #expect(writtenAfter >= 2, "\(result.output)")
            // Once the pause is over, the failure's follow-up: onReport with the text as written, and the peak
            // snapshot as JSON next to it, naming the site that held the most.
            #expect(values["failure_callbacks"] == "1", "\(result.output)")
            #expect(values["callbacks"] == "2", "\(result.output)")
            #expect(values["failure_reason"] == "malloc(83886080)_returned_NULL_(ENOMEM)", "\(result.output)")
            #expect(values["failure_text_matches_file"] == "true", "\(result.output)")
            #expect(values["failure_json_loaded"] == "true", "\(result.output)")
            #expect(values["json_moment"] == "peak", "\(result.output)")
            #expect(values["json_top"] == "support.c:\(values["held_line"] ?? "?")", "\(result.output)")
            // A failed malloc(1 << 62) (more than the machine's memory) does not pause the watchdog.
            #expect(values["impossible_size_pauses"] == "false", "\(result.output)")
        }

        /// The watchdog's refresh resolves names for the sites the allocation-failure report prints, nothing else
        /// ahead of time (issue 13: warming every new site cost a core at start-up): in a child, after a refresh
        /// the addresses of 40 new stacks that hold nothing live (so are no top site) are all still unresolved.
        @Test func refreshDoesNotResolveSitesTheReportCannotPrint() throws {
            let result = try runChild(scenarios, ["warm-up"])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            let values = keyValues(result.output)
            let atStart = values["uncached_at_start"].flatMap(Int.init) ?? 0
            #expect((values["addresses"].flatMap(Int.init) ?? 0) >= 2, "\(result.output)")  // the call and the malloc
            #expect(atStart > 0, "\(result.output)")
            #expect(values["uncached_after"].flatMap(Int.init) == atStart, "\(result.output)")
        }

        @Test func plantedSymlinksAreNotFollowed() throws {
            let directory = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let target = directory.appendingPathComponent("victim")
            try "precious\n".write(to: target, atomically: true, encoding: .utf8)
            let result = try runChild(scenarios, ["report-symlink", directory.path, target.path])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            #expect(try String(contentsOf: target, encoding: .utf8) == "precious\n")
            #expect(result.output.contains("-1.txt") || result.output.contains("-2.txt"), "\(result.output)")
            let files = try Self.reports(in: directory).filter {
                (try? FileManager.default.destinationOfSymbolicLink(atPath: $0.path)) == nil
            }
            #expect(files.count == 1)
            // The JSON companion: created like the text file (0600, never through or over a planted symlink), at
            // the next free name; every planted symlink is still one, pointing where it did.
            let json = try #require(keyValues(result.output)["json"].flatMap { $0 == "none" ? nil : $0 }, "\(result.output)")
            let stem = try #require(keyValues(result.output)["file"]).dropLast(4)
            #expect(json == stem + "-1.json", "\(result.output)")
            let attributes = try FileManager.default.attributesOfItem(atPath: json)
            #expect(attributes[.type] as? FileAttributeType == .typeRegular)
            #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600, "\(attributes)")
            #expect(try Snapshot(contentsOf: URL(fileURLWithPath: json)).traces.isEmpty == false)
            let links = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".json") }
                .filter { (try? FileManager.default.destinationOfSymbolicLink(atPath: directory.path + "/" + $0)) == target.path }
            #expect(links.count == 12, "\(links)")
            #expect(!(try FileManager.default.contentsOfDirectory(atPath: directory.path).contains { $0.hasPrefix(".") }))
        }

        /// The process is killed (SIGXFSZ: RLIMIT_FSIZE 0 kills it at the first byte written to a file, as an OOM
        /// kill can land at any moment) while the report's file is written: the stderr copy, the one a container's
        /// log keeps, is already complete.
        @Test func reportReachesStandardErrorBeforeItsFile() throws {
            let directory = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let result = try runChild(scenarios, ["report-killed", directory.path, "on-demand"])
            #expect(result.status == SIGXFSZ, "expected death by SIGXFSZ: \(result.output)\(result.error.suffix(800))")
            #expect(result.error.contains("==== swift-allocation-tracking report: on demand ====\nreason: killed while writing\n"),
                    "\(result.error)")
            #expect(result.error.contains("\n==== end of report ====\n"), "\(result.error)")
        }

        /// Files that cannot be written completely, by a real kernel limit: RLIMIT_FSIZE (SIGXFSZ ignored, so a write
        /// past it fails with EFBIG after taking what fits; no root needed). The on-demand report, the
        /// allocation-failure report (from inside malloc) with its follow-up, and `Snapshot.write(to:)` over an
        /// existing file each say what was and was not written, and leave no empty, half-written JSON or temporary
        /// file. A partial text report is removed when the stderr copy is complete, kept when it is the only copy.
        @Test(arguments: [("0", "on"), ("1000", "on"), ("1000", "off")])
        func fileSizeLimitLeavesNoEmptyOrPartialFiles(limit: String, standardError: String) throws {
            let directory = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            try "old\n".write(to: directory.appendingPathComponent("explicit.json"), atomically: false, encoding: .utf8)
            let result = try runChild(scenarios, ["report-disk-full", directory.path, limit, standardError])
            let written = limit == "0" ? "after 0 of" : "after 1000 of"
            try Self.checkFullDisk(result, error: "File too large (errno \(EFBIG))", written: written,
                                   partialKept: limit != "0" && standardError == "off")
        }

        /// The same on a real full filesystem: a 64 KiB tmpfs filled to the last byte (needs root to mount).
        @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root: the RLIMIT_FSIZE variant runs instead"))
        func fullFilesystemLeavesNoEmptyFiles() throws {
            let mountPoint = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: mountPoint) }
            let mount = try runChild(URL(fileURLWithPath: "/bin/mount"), ["-t", "tmpfs", "-o", "size=64k", "tmpfs", mountPoint.path])
            guard mount.status == 0 else {
                print("fullFilesystemLeavesNoEmptyFiles: skipped, cannot mount a tmpfs here: \(mount.error)")
                return
            }
            defer { _ = try? runChild(URL(fileURLWithPath: "/bin/umount"), [mountPoint.path]) }
            try "old\n".write(to: mountPoint.appendingPathComponent("explicit.json"), atomically: false, encoding: .utf8)
            // Fill it: a file that takes every block left.
            let filler = open(mountPoint.path + "/filler", O_WRONLY | O_CREAT | O_EXCL, 0o600)
            #expect(filler >= 0)
            var block = [UInt8](repeating: 0x78, count: 4096)
            while write(filler, &block, block.count) > 0 {}
            #expect(errno == ENOSPC)
            close(filler)
            let result = try runChild(scenarios, ["report-disk-full", mountPoint.path, "none", "on"])
            try Self.checkFullDisk(result, error: "No space left on device (errno \(ENOSPC))", written: "after 0 of",
                                   partialKept: false, otherEntries: ["filler"])
        }

        static func checkFullDisk(_ result: ChildResult, error: String, written: String, partialKept: Bool,
                                  otherEntries: Set<String> = [], sourceLocation: SourceLocation = #_sourceLocation) throws {
            let context = "\(result.output)\n\(result.error)"
            #expect(result.status == 0, "\(context)", sourceLocation: sourceLocation)
            let lines = result.output.split(separator: "\n").map(String.init)
            func all(_ key: String) -> [String] {
                lines.filter { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)).replacingOccurrences(of: "_", with: " ") }
            }
            let values = keyValues(result.output)
            #expect(values["malloc_succeeded"] == "0", "\(context)", sourceLocation: sourceLocation)
            // What each report says it could not write.
            for label in ["on_demand", "failure"] {
                let problems = all(label + "_problem")
                let text = try #require(problems.first { $0.contains("report file") }, "\(label): \(context)",
                                        sourceLocation: sourceLocation)
                #expect(text.contains(": \(error) \(written) "), "\(text)", sourceLocation: sourceLocation)
                #expect(text.contains(partialKept ? "the incomplete file is kept" : "the file is removed"), "\(text)",
                        sourceLocation: sourceLocation)
                let json = try #require(problems.first { $0.contains("snapshot JSON") }, "\(label): \(context)",
                                        sourceLocation: sourceLocation)
                #expect(json.contains(": \(error) ") && json.hasSuffix("the file is removed"), "\(json)",
                        sourceLocation: sourceLocation)
                #expect(values[label + "_json"] == "none", "\(context)", sourceLocation: sourceLocation)
                #expect((values[label + "_file"] == "none") != partialKept, "\(context)", sourceLocation: sourceLocation)
            }
            // The same said on stderr (with stderr on, after the complete report).
            #expect(result.error.contains("swift-allocation-tracking: could not write the report file "),
                    "\(context)", sourceLocation: sourceLocation)
            #expect(result.error.contains("swift-allocation-tracking: could not write the allocation-failure report file "),
                    "\(context)", sourceLocation: sourceLocation)
            #expect(!result.error.contains("could not write all of"), sourceLocation: sourceLocation)
            // Snapshot.write(to:) over an existing file: an error, the old file intact.
            #expect(values["explicit_error"] == "cannotWriteFile", "\(context)", sourceLocation: sourceLocation)
            #expect(values["explicit_unchanged"] == "true", "\(context)", sourceLocation: sourceLocation)
            // Nothing else left: no empty or half-written file, no temporary file.
            let entries = all("entry").map { $0.split(separator: ":").map(String.init) }
            for entry in entries where entry[0] != "explicit.json" && !otherEntries.contains(entry[0]) {
                #expect(partialKept && entry[0].hasSuffix(".txt") && entry[1] == "1000" && entry[2] == "600",
                        "left behind: \(entry) \(context)", sourceLocation: sourceLocation)
            }
            #expect(entries.filter { $0[0].hasSuffix(".txt") }.count == (partialKept ? 2 : 0), "\(entries)",
                    sourceLocation: sourceLocation)
            #expect(Set(entries.map { $0[0] }).isSuperset(of: otherEntries.union(["explicit.json"])), "\(entries)",
                    sourceLocation: sourceLocation)
        }

        @Test func unwritableDirectoryStillReportsOnStandardError() throws {
            let result = try runChild(scenarios, ["report-unwritable"])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            #expect(result.output.contains("file=none problems=1"))
            let directory = result.output.split(separator: "\n").first { $0.hasPrefix("directory=") }?.dropFirst(10) ?? "?"
            #expect(result.error.contains("swift-allocation-tracking: cannot create a report file in \(directory): No such file or directory"))
            #expect(result.error.contains("==== swift-allocation-tracking report: on demand"))
            #expect(result.error.contains("==== end of report ===="))
        }

        @Test func reportConfigurationFromTheEnvironment() throws {
            typealias C = AllocationTracker.Configuration
            let parsed = try #require(try C.parse(environmentValue:
                "report_dir=/var/log/app,soft_limit=512MiB,container=0.9,signal=SIGUSR2,rss_limit=2GiB,interval=50ms,min_interval=30s,hysteresis=10%,top=5,at_exit=on"))
            #expect(parsed.report.directory == "/var/log/app")
            #expect(parsed.report.topSites == 5)
            #expect(parsed.limits.trackedBytes == 512 << 20)
            #expect(parsed.limits.rssBytes == 2 << 30)
            #expect(parsed.limits.containerFraction == 0.9)
            #expect(parsed.limits.signal == SIGUSR2)
            #expect(parsed.limits.pollInterval == 0.05)
            #expect(parsed.limits.minimumInterval == 30)
            #expect(parsed.limits.hysteresis == 0.1)
            #expect(parsed.limits.reportAtExit)
            #expect(try C.parse(environmentValue: "container=off")?.limits.containerFraction == nil)
            #expect(try C.parse(environmentValue: "container=85%")?.limits.containerFraction == 0.85)
            for bad in ["soft_limit=lots", "container=2", "signal=SIGKILL", "signal=FOO", "interval=fast", "top=0",
                        "on_failure=maybe", "hysteresis=1.5", "report_dir=",
                        // Signals whose default action is relied on, by name or by number (SIGTERM stops a pod).
                        "signal=15", "signal=2", "signal=SIGTERM", "signal=INT", "signal=HUP", "signal=SIGQUIT",
                        "signal=99", "signal=RTMAX+1",
                        // Settings that were silently wrong: empty settings, durations without a unit, limits that
                        // can never fire usefully.
                        ",", " , ", "frames=3,,top=2", "frames=3,", "interval=100", "min_interval=10",
                        "container=1e-300", "container=0.5%", "soft_limit=0.5B"] {
                let error = #expect(throws: AllocationTrackingError.self, "\(bad)") { try C.parse(environmentValue: bad) }
                #expect(error?.code == .invalidConfiguration, "\(bad)")
            }
            let signalError = #expect(throws: AllocationTrackingError.self) { try C.parse(environmentValue: "signal=15") }
            #expect(signalError?.message.contains("SIGUSR1, SIGUSR2 or a real-time signal") == true, "\(String(describing: signalError))")
            // Allowed signals, by name and number; the real-time ones relative to SIGRTMIN/SIGRTMAX.
            let rtmin = __libc_current_sigrtmin(), rtmax = __libc_current_sigrtmax()
            for (text, signal) in [("USR1", SIGUSR1), ("SIGUSR2", SIGUSR2), ("\(SIGUSR2)", SIGUSR2), ("SIGRTMIN", rtmin),
                                   ("SIGRTMIN+3", rtmin + 3), ("rtmax-1", rtmax - 1), ("\(rtmin + 1)", rtmin + 1)] {
                #expect(try C.parse(environmentValue: "signal=\(text)")?.limits.signal == signal, "\(text)")
            }
            // Sizes: binary and decimal units, each spelling users type.
            for (text, bytes) in [("32MiB", 32 << 20), ("32Mi", 32 << 20), ("32M", 32 << 20), ("32m", 32 << 20),
                                  ("32MB", 32_000_000), ("32mb", 32_000_000), ("64kB", 64_000), ("64KiB", 64 << 10),
                                  ("1.5GiB", 3 << 29), ("2Gi", 2 << 30), ("1048576", 1 << 20), ("512B", 512)] {
                #expect(try C.parse(environmentValue: "soft_limit=\(text)")?.limits.trackedBytes == bytes, "\(text)")
            }
            // Durations need their unit.
            #expect(try C.parse(environmentValue: "interval=250ms")?.limits.pollInterval == 0.25)
            #expect(try C.parse(environmentValue: "min_interval=1h")?.limits.minimumInterval == 3600)
            let unitError = #expect(throws: AllocationTrackingError.self) { try C.parse(environmentValue: "interval=100") }
            #expect(unitError?.message == "interval must be a duration with its unit, such as 100ms, 10s, 1m or 1h, got '100'")
            // What is echoed back is escaped: control characters from the environment never reach a terminal raw.
            let escaped = #expect(throws: AllocationTrackingError.self) { try C.parse(environmentValue: "top=\u{1b}[31mred\n") }
            #expect(escaped?.message == "top must be a number, got '\\x1b[31mred'", "\(String(describing: escaped))")
            let newline = #expect(throws: AllocationTrackingError.self) { try C.parse(environmentValue: "top=a\tb\u{7}c") }
            #expect(newline?.message == "top must be a number, got 'a\\tb\\x07c'", "\(String(describing: newline))")
            // A bad value in the environment: one clear line, tracking off, the process runs on.
            let result = try runChild(scenarios, ["env"], environment: ["ALLOCATION_TRACKING": "soft_limit=lots"])
            #expect(result.status == 0)
            #expect(result.output.contains("tracing=false"))
            #expect(result.error == "swift-allocation-tracking: ALLOCATION_TRACKING=soft_limit=lots: soft_limit must be a size such as 512MiB, 2GiB or 1048576 (binary: KiB MiB GiB TiB, Ki Mi Gi Ti, K M G T; decimal: kB MB GB TB), got 'lots'; tracking is off\n")
        }

        /// A report directory that cannot be used is refused at start with one clear line, not at the first
        /// report (which may be the one before an OOM kill). Nothing is started.
        @Test func reportDirectoryIsCheckedAtStart() throws {
            let directory = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let file = directory.appendingPathComponent("a-file")
            _ = FileManager.default.createFile(atPath: file.path, contents: Data("x".utf8))
            let cases: [(String, String)] = [
                ("relative/reports", "must be an absolute path"),
                (directory.path + "/missing", "No such file or directory"),
                (file.path, "is not a directory"),
                ("/" + String(repeating: "d", count: 5000), "is longer than 4000 bytes"),
            ]
            for (path, expected) in cases {
                let error = #expect(throws: AllocationTrackingError.self, "\(path.prefix(80))") {
                    try AllocationTracker.start(.init(report: .init(directory: path)))
                }
                #expect(error?.code == .invalidConfiguration)
                #expect(error?.message.hasPrefix("report directory '") == true, "\(String(describing: error))")
                #expect(error?.message.contains(expected) == true, "\(String(describing: error))")
                #expect(error?.message.contains("\n") == false)
            }
            // Unwritable: root writes anywhere, so this case needs an ordinary user.
            if geteuid() != 0 {
                let locked = directory.appendingPathComponent("locked")
                try FileManager.default.createDirectory(at: locked, withIntermediateDirectories: false,
                                                        attributes: [.posixPermissions: 0o500])
                let error = #expect(throws: AllocationTrackingError.self) {
                    try AllocationTracker.start(.init(report: .init(directory: locked.path)))
                }
                #expect(error?.message.contains("is not writable") == true)
            } else {
                print("reportDirectoryIsCheckedAtStart: the unwritable-directory case is skipped: running as root")
            }
        }

        @Test func atExitReportListsLeaksAndGrowthSinceThePreviousReport() throws {
            let directory = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let result = try runChild(scenarios, ["at-exit", directory.path])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            let line = try #require(Self.line(result.output.trimmingCharacters(in: .whitespacesAndNewlines)))
            let texts = try Self.reports(in: directory).map { try String(contentsOf: $0, encoding: .utf8) }
            #expect(texts.count == 2)
            let onDemand = try #require(texts.first { $0.contains("report: on demand") })
            let exit = try #require(texts.first { $0.contains("report: exit") })
            #expect(onDemand.contains("support.c:\(line): size=48.8 KiB, count=1"), "\(onDemand)")
            #expect(!onDemand.contains("growth since the previous report"))
            #expect(exit.contains("support.c:\(line): size=244 KiB, count=5"), "\(exit)")
            #expect(exit.contains("growth since the previous report"))
            #expect(exit.contains("support.c:\(line): size=244 KiB (+195 KiB), count=5 (+4)"), "\(exit)")
        }

        @Test func writeReportWhileStoppedThrows() throws {
            AllocationTracker.stop()
            let error = #expect(throws: AllocationTrackingError.self) { try AllocationTracker.writeReport() }
            #expect(error?.code == .notTracing)
        }
    }
}

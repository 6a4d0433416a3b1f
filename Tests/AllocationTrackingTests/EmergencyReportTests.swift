import AllocationTracking
import AllocationTrackingTestSupport
import CAllocationTracking
import Foundation
import TrackerTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension TrackerTests.Processes {
    /// A child under RLIMIT_AS allocates 1 MiB blocks from one C line until malloc fails. The allocation-failure
    /// report must exist, complete, every time (20 runs), written without a single malloc, and the child's own
    /// error path must run normally afterwards.
    /// `n` MiB in tracemalloc's units: KiB under 10 MiB, one decimal under 100 MiB, none above.
    static func mebibytes(_ n: Int) -> String { n < 10 ? "\(n * 1024) KiB" : n < 100 ? "\(n).0 MiB" : "\(n) MiB" }

    @Test func allocationFailureWritesACompleteReport() throws {
        let scenarios = productURL("TrackerScenarios")
        var complete = 0
        for run in 0..<20 {
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("ats-oom-\(getpid())-\(run)-\(UInt32.random(in: 0...UInt32.max))")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
            defer { try? FileManager.default.removeItem(at: directory) }
            let result = try runChild(scenarios, ["oom", directory.path])
            let context = "run \(run)\n\(result.output)\(result.error)"
            #expect(result.status == 0, "\(context)")
            #expect(result.output.contains("error path ran\n"), "\(context)")
            #expect(result.output.contains("internal_allocations=0\n"), "the report called malloc: \(context)")
            #expect(result.output.contains("reports=1 skipped=1\n"), "\(context)")
            let values = keyValues(result.output)
            let pid = try #require(values["pid"], "\(context)")
            let line = try #require(values["line"], "\(context)")
            let blocks = try #require(values["blocks"], "\(context)")

            let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            #expect(files.count == 1, "\(files) \(context)")
            let name = try #require(files.first, "\(context)")
            #expect(name.hasPrefix("alloc-report-\(pid)-") && name.hasSuffix(".txt"), "\(name)")
            let path = directory.appendingPathComponent(name).path
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600, "\(attributes)")
            let text = try String(contentsOfFile: path, encoding: .utf8)
            let checks = [
                "==== swift-allocation-tracking report: allocation failure ====\n",
                "trigger: allocation failure: malloc(1048576) returned NULL (ENOMEM)\n",
                "\npid: \(pid)\n",
                "\ntracked current: ", "\ntracked peak: ",
                "\ndropped allocations: 0\n",
                "\nrss: ", "\noom_score: ",
                "top ",
                // The site holding the memory, by name and line (pre-resolved by the refresh).
                // tracemalloc's units: under 10 MiB the size is printed in KiB.
                "\n#1: \(Self.mebibytes(Int(blocks) ?? 0)) in \(blocks) blocks (",
                "    ats_oom_block at ", "support.c:\(line) ← ats_allocate_until_failure at support.c:",
                "==== end of report (\(path)) ====\n",
            ]
            for check in checks { #expect(text.contains(check), "missing \(check.debugDescription) in run \(run):\n\(text)") }
            #expect(result.error.contains(text), "stderr lacks the report: \(context)")
            if checks.allSatisfy({ text.contains($0) }), result.status == 0, result.error.contains(text) { complete += 1 }
        }
        #expect(complete == 20)
    }

    /// A request no machine could satisfy is a program error, not memory pressure: 1,000 × `malloc(SIZE_MAX)`,
    /// `new char[memory + swap + 1 GiB]` and a request over RLIMIT_AS (set after start: read at the failure) write
    /// no report and take no rate limit — one stderr line in all, counted — so the real exhaustion that follows
    /// gets the full report, which counts them.
    @Test func impossibleSizeTakesNoReport() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ats-impossible-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try runChild(productURL("TrackerScenarios"), ["impossible-size", directory.path])
        let context = "\(result.output)\(result.error)"
        #expect(result.status == 0, "\(context)")
        let values = keyValues(result.output)
        #expect(values["malloc_max_failed"] == "1000", "\(context)")
        #expect(values["new_failed"] == "true", "\(context)")
        #expect(values["over_limit_failed"] == "true", "\(context)")
        #expect(values["impossible_pauses"] == "false", "\(context)")
        #expect(values["reports_before_exhaustion"] == "0", "\(context)")
        #expect(values["skipped_before_exhaustion"] == "0", "\(context)")
        #expect(values["exhaustion_errno"] == "\(ENOMEM)", "\(context)")
        #expect(values["reports"] == "1" && values["skipped"] == "0", "\(context)")
        #expect(values["impossible"] == "1002", "\(context)")
        // One line for all of them (its own rate limit), naming the first and the bound it exceeds.
        let lines = result.error.split(separator: "\n").filter { $0.contains("for a request larger than") }
        #expect(lines.count == 1, "\(result.error)")
        #expect(lines.first?.hasPrefix("swift-allocation-tracking: malloc(18446744073709551615) returned NULL for a "
                                       + "request larger than this machine's memory and swap (") == true, "\(lines)")
        #expect(lines.first?.contains("a program error, not memory pressure; no allocation-failure report (1 such request so far") == true)
        // The report is the real exhaustion's, and counts the impossible requests.
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        #expect(files.count == 1, "\(files) \(context)")
        let text = try String(contentsOfFile: directory.appendingPathComponent(try #require(files.first)).path, encoding: .utf8)
        #expect(text.contains("trigger: allocation failure: malloc(1048576) returned NULL (ENOMEM)\n"), "\(text)")
        #expect(text.contains("\nallocation failures not reported (rate limit or concurrent): 0\n"), "\(text)")
        #expect(text.contains("\nrequests larger than the machine or the address-space limit (not reported): 1002\n"), "\(text)")
    }

    /// The process is killed (SIGXFSZ, by RLIMIT_FSIZE 0: at the first byte written to the file, as an OOM kill can
    /// land at any moment) while the allocation-failure report's file is written: the stderr copy — the one a
    /// container's log keeps — is already complete, though the report is longer than the writer's 4 KiB buffer.
    @Test func allocationFailureReportReachesStderrBeforeItsFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ats-killed-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try runChild(productURL("TrackerScenarios"), ["report-killed", directory.path, "allocation-failure"])
        #expect(result.status == SIGXFSZ, "expected death by SIGXFSZ: \(result.output)\(result.error.suffix(800))")
        #expect(!result.output.contains("survived"))
        let start = try #require(result.error.range(of: "==== swift-allocation-tracking report: allocation failure ===="),
                                 "\(result.error)")
        let report = result.error[start.lowerBound...]
        #expect(report.utf8.count > Int(CAT_TW_BUFFER_SIZE), "the report must be longer than one buffer: \(report)")
        #expect(report.contains("trigger: allocation failure: malloc(83886080) returned NULL (ENOMEM)\n"))
        #expect(report.contains("\n#60: "), "\(report)")
        #expect(report.contains("==== end of report (\(directory.path)/alloc-report-"), "\(report.suffix(300))")
    }

    /// Sites with no pre-resolved name (no refresh ran) are printed as `image+0xoffset (build id …)`, without
    /// dladdr or DWARF.
    @Test func allocationFailureReportFallsBackToImageOffsets() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ats-oom-nonames-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try runChild(productURL("TrackerScenarios"), ["oom", directory.path, "nonames"])
        #expect(result.status == 0, "\(result.output)\(result.error)")
        #expect(result.output.contains("error path ran\n"))
        #expect(result.output.contains("internal_allocations=0\n"))
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        let name = try #require(files.first)
        let text = try String(contentsOfFile: directory.appendingPathComponent(name).path, encoding: .utf8)
        let site = try #require(text.range(of: "\n#1: ").map { text[$0.upperBound...] }, "\(text)")
        let frames = site.split(separator: "\n").dropFirst().prefix(2)
        #expect(frames.first?.hasPrefix("    TrackerScenarios+0x") == true, "\(text)")
        #expect(frames.first?.contains(" (build id ") == true, "\(text)")
        #expect(!text.contains("ats_oom_block"), "\(text)")
    }

    /// Several threads failing at once: one report, the other failures skipped and counted, every thread's error
    /// path runs.
    @Test func concurrentAllocationFailuresWriteOneReport() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ats-oom-threads-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try runChild(productURL("TrackerScenarios"), ["oom-threads", directory.path])
        #expect(result.status == 0, "\(result.output)\(result.error)")
        #expect(result.output.contains("enomem_threads=4\n"), "\(result.output)")
        #expect(result.output.contains("reports=1 skipped=3\n"), "\(result.output)")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        #expect(files.count == 1, "\(files)")
        #expect(result.error.components(separatedBy: "==== end of report").count == 2, "\(result.error)")
    }

    /// The allocation-failure report takes its settings from the configuration given to `start`, as the other
    /// reports do: with `standardError: false` nothing reaches stderr but the file is written, and the cgroup
    /// lines come from the configured (here fake, cgroup v2) tree, not the machine's.
    @Test func allocationFailureReportFollowsTheConfiguration() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("ats-oom-cg-\(UUID().uuidString)")
        let directory = root.appendingPathComponent("reports")
        try FileManager.default.createDirectory(atPath: root.path + "/cg/test", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(at: root) }
        try "0::/test\n".write(toFile: root.path + "/proc_cgroup", atomically: true, encoding: .utf8)
        try "9500000\n".write(toFile: root.path + "/cg/test/memory.current", atomically: true, encoding: .utf8)
        try "10000000\n".write(toFile: root.path + "/cg/test/memory.max", atomically: true, encoding: .utf8)
        let before = Int64(Date().timeIntervalSince1970)
        let result = try runChild(productURL("TrackerScenarios"), ["oom-configured", directory.path, root.path])
        let after = Int64(Date().timeIntervalSince1970)
        let context = "\(result.output)\(result.error)"
        #expect(result.status == 0, "\(context)")
        #expect(keyValues(result.output)["errno"] == "\(ENOMEM)", "\(context)")
        #expect(keyValues(result.output)["reports"] == "1", "\(context)")
        #expect(!result.error.contains("swift-allocation-tracking"), "stderr=off, yet: \(result.error)")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        #expect(files.count == 1, "\(files) \(context)")
        let text = try String(contentsOfFile: directory.appendingPathComponent(try #require(files.first)).path,
                              encoding: .utf8)
        #expect(text.hasPrefix("==== swift-allocation-tracking report: allocation failure ====\n"), "\(text)")
        #expect(text.contains("\ncgroup v2 usage: 9277 KiB (9500000 B), limit: 9766 KiB (10000000 B)\n"), "\(text)")
        // The time line, by the one date formatter: the text matches the unix seconds next to it.
        let timeLine = try #require(text.split(separator: "\n").first { $0.hasPrefix("time: ") }, "\(text)")
        let unix = try #require(timeLine.split(separator: "(unix ").last.flatMap { Int64($0.dropLast()) },
                                "\(timeLine)")
        #expect((before...after).contains(unix), "\(timeLine)")
        var time = time_t(unix), parts = tm()
        gmtime_r(&time, &parts)
        let expected = String(format: "time: %04d-%02d-%02dT%02d:%02d:%02dZ (unix %lld)", parts.tm_year + 1900,
                              parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec, unix)
        #expect(String(timeLine) == expected)
    }

    /// The watchdog's pause after an allocation failure is `pauseAfterAllocationFailure`, not `minimumInterval`:
    /// a report requested by signal just after the failure is written once the pause is over — after 1 s when the
    /// minimum interval is 60 s, after 3 s when it is 0.2 s.
    @Test func pauseAfterAnAllocationFailureFollowsItsOwnSetting() throws {
        for (minimumInterval, pause, latest) in [(60.0, 1.0, 15.0), (0.2, 3.0, 18.0)] {
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("ats-pause-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
            defer { try? FileManager.default.removeItem(at: directory) }
            let result = try runChild(productURL("TrackerScenarios"),
                                      ["pause-after-failure", directory.path, "\(minimumInterval)", "\(pause)"])
            let context = "minimumInterval \(minimumInterval), pause \(pause): \(result.output)\(result.error)"
            #expect(result.status == 0, "\(context)")
            let values = keyValues(result.output)
            #expect(values["malloc_succeeded"] == "0", "\(context)")
            let after = try #require(values["signal_report_after"].flatMap(Double.init), "\(context)")
            #expect(after >= pause, "\(context)")
            #expect(after < latest, "\(context)")
        }
    }
}

/// `key=value` pairs of a scenario's output (space- or line-separated; the last one wins).
func keyValues(_ output: String) -> [String: String] {
    var values: [String: String] = [:]
    for line in output.split(separator: "\n") {
        for pair in line.split(separator: " ") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { values[String(parts[0])] = String(parts[1]) }
        }
    }
    return values
}

extension TrackerTests {
    /// The one-line names the emergency report prints: the attribution frame, then the next two non-system frames.
    @Test static func emergencyNameLine() {
        let frames = [
            Frame(function: "malloc", image: "libc.so.6"),
            Frame(function: "swift_slowAlloc", image: "libswiftCore.so"),
            Frame(function: "renderResponse(for:)", file: "Sources/App/main.swift", line: 21, image: "App"),
            Frame(function: "$sSa6appendyyxnF", file: "/x/swift/stdlib/public/core/Array.swift", line: 9, image: "App"),
            Frame(function: "handle(_:cache:)", file: "/src/Sources/App/main.swift", line: 31, image: "App"),
            Frame(image: "App", address: 0x1234, imageOffset: 0x234),
            Frame(function: "main", file: "/src/Sources/App/main.swift", line: 40, image: "App"),
        ]
        #expect(_EmergencyNames.line(for: frames)
            == "renderResponse(for:) at Sources/App/main.swift:21 ← handle(_:cache:) at main.swift:31 ← App+0x234")
        #expect(_EmergencyNames.line(for: []) == "")
        // In the one path style: a file under the working directory is shown relative to it.
        let cwd = FileManager.default.currentDirectoryPath
        let absolute = [Frame(function: "leak()", file: cwd + "/Sources/App/./Leak.swift", line: 7, image: "App")]
        #expect(_EmergencyNames.line(for: absolute) == "leak() at Sources/App/Leak.swift:7")
    }
}

extension TrackerTests {
    /// `failure_pause` sets `Limits.pauseAfterAllocationFailure` (parsed like `min_interval`, validated like it),
    /// and the configuration's description gives it back.
    @Test static func failurePauseConfiguration() throws {
        typealias C = AllocationTracker.Configuration
        #expect(C.Limits().pauseAfterAllocationFailure == 10)
        let parsed = try #require(try C.parse(environmentValue: "failure_pause=2s,min_interval=30s"))
        #expect(parsed.limits.pauseAfterAllocationFailure == 2)
        #expect(parsed.limits.minimumInterval == 30)
        #expect(try C.parse(environmentValue: "failure_pause=250ms")?.limits.pauseAfterAllocationFailure == 0.25)
        #expect(parsed.description.contains(",failure_pause=2.0s"), "\(parsed.description)")
        #expect(try C.parse(environmentValue: parsed.description)?.limits == parsed.limits)
        for bad in ["failure_pause=soon", "failure_pause=-1s"] {
            let error = #expect(throws: AllocationTrackingError.self, "\(bad)") { try C.parse(environmentValue: bad) }
            #expect(error?.code == .invalidConfiguration, "\(bad)")
        }
        var configuration = C()
        configuration.limits.pauseAfterAllocationFailure = 2e9
        #expect(throws: AllocationTrackingError.self) { try configuration.validate() }
        configuration.limits.pauseAfterAllocationFailure = .nan
        #expect(throws: AllocationTrackingError.self) { try configuration.validate() }
    }

    /// The image list the allocation-failure report prints unnamed frames from (`cat_images_find`) is built by the
    /// one program-header walker (`cat_loaded_images_visit`): the image holding a C function of the test support
    /// code and libc's `getpid` are found, with the walker's range, load bias and build id, named by basename.
    @Test static func imageListAgreesWithTheLoadedImagesWalker() throws {
        struct Search {
            var address: UInt
            var found = false
            var start: UInt = 0, end: UInt = 0, bias: UInt = 0
            var buildID: [UInt8] = []
            var path = ""
        }
        func walk(_ address: UInt) -> Search {
            var search = Search(address: address)
            withUnsafeMutablePointer(to: &search) { pointer in
                cat_loaded_images_visit({ image, context in
                    let search = context!.assumingMemoryBound(to: Search.self)
                    let address = search.pointee.address
                    guard address >= image.pointee.start && address < image.pointee.end else { return 0 }
                    search.pointee.found = true
                    search.pointee.start = image.pointee.start
                    search.pointee.end = image.pointee.end
                    search.pointee.bias = image.pointee.bias
                    search.pointee.buildID = withUnsafeBytes(of: image.pointee.buildID) {
                        Array($0.prefix(Int(image.pointee.buildIDLength)))
                    }
                    search.pointee.path = String(cString: image.pointee.path)
                    return 1
                }, pointer)
            }
            return search
        }
        let getpidAddress = UInt(bitPattern: dlsym(UnsafeMutableRawPointer(bitPattern: 0), "getpid"))
        #expect(getpidAddress != 0)
        cat_images_capture()
        #expect(cat_images_count() > 1)
        for address in [UInt(ats_alloc_text_start()), getpidAddress] {
            let walked = walk(address)
            #expect(walked.found, "no image holds 0x\(String(address, radix: 16))")
            var entry = cat_image_entry()
            #expect(cat_images_find(address, &entry))
            let name = withUnsafeBytes(of: entry.name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            #expect(name == String(walked.path.split(separator: "/").last ?? ""), "\(name) vs \(walked.path)")
            #expect(entry.start == walked.start && entry.end == walked.end)
            #expect(entry.bias == walked.bias)
            let entryID = withUnsafeBytes(of: entry.buildID) { Array($0.prefix(Int(entry.buildIDLength))) }
            #expect(entryID == walked.buildID)
        }
        var entry = cat_image_entry()
        #expect(cat_images_find(0, &entry) == false)
        var libc = cat_image_entry()
        _ = cat_images_find(getpidAddress, &libc)
        let libcName = withUnsafeBytes(of: libc.name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        #expect(libcName.hasPrefix("libc"), "\(libcName)")
        #expect(libc.buildIDLength > 0, "Debian's libc has a GNU build id")
    }
}

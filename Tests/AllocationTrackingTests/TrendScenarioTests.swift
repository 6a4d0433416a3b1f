import AllocationTracking
import Foundation
import TrackerTestSupport
import Testing

extension TrackerTests {
    /// The trend in child processes: suspects and time to the limit against the truth in a fake cgroup v2 tree,
    /// and the predictive report in a real memory cgroup before the kernel's OOM killer.
    @Suite struct TrendScenarios {
        let scenarios = productURL("TrackerScenarios")

        static func value(_ key: String, in output: String) -> String? {
            output.split(whereSeparator: { $0 == "\n" || $0 == " " }).first { $0.hasPrefix(key + "=") }
                .map { String($0.dropFirst(key.count + 1)) }
        }

        @Test func leakIsTheTopSuspectAndTheLimitIsProjected() throws {
            let root = try Reports.temporaryDirectory()
            let directory = try Reports.temporaryDirectory()
            defer {
                try? FileManager.default.removeItem(at: root)
                try? FileManager.default.removeItem(at: directory)
            }
            try FileManager.default.createDirectory(atPath: root.path + "/cg/test", withIntermediateDirectories: true)
            try "0::/test\n".write(toFile: root.path + "/proc_cgroup", atomically: true, encoding: .utf8)
            let result = try runChild(scenarios, ["trend-leak", root.path, directory.path])
            let out = result.output
            #expect(result.status == 0, "\(out)\(result.error)")

            // 1. Noise 20 MB under the limit fires nothing.
            #expect(Self.value("phase1Reports", in: out) == "0", "\(out)")

            // 2. The time to the limit within 20 % of the truth.
            let eta = try #require(Self.value("etaSeconds", in: out).flatMap(Double.init), "\(out)")
            let truthEta = try #require(Self.value("truthEta", in: out).flatMap(Double.init))
            #expect(abs(eta - truthEta) <= 0.2 * truthEta, "eta \(eta) s, truth \(truthEta) s")
            #expect(Self.value("phase2Reports", in: out) == "0", "4 GB away: nothing to report: \(out)")

            // The leaking line is the top suspect, its rate within 10 % of the truth; the cache that warmed up
            // and held, and the churn, are not suspects.
            let leakLine = try #require(Self.value("leakLine", in: out))
            let cacheLine = try #require(Self.value("cacheLine", in: out))
            let churnLine = try #require(Self.value("churnLine", in: out))
            #expect(Self.value("suspect0", in: out) == leakLine, "\(out)")
            let rate = try #require(Self.value("rate", in: out).flatMap(Double.init))
            let truthRate = try #require(Self.value("truthRate", in: out).flatMap(Double.init))
            #expect(abs(rate - truthRate) <= 0.1 * truthRate, "rate \(rate) B/s, truth \(truthRate) B/s")
            let suspectLines = out.split(separator: "\n").filter { $0.hasPrefix("suspect") }
                .compactMap { Self.value(String($0.prefix { $0 != "=" }), in: String($0)) }
            #expect(!suspectLines.contains(cacheLine) && !suspectLines.contains(churnLine), "\(out)")

            // 3. The limit a second ahead: one predictive report, naming the leak among the growing sites.
            #expect(Self.value("phase3Reports", in: out) == "1", "\(out)")
            let files = try Reports.reports(in: directory)
            #expect(files.count == 1)
            let text = try String(contentsOf: try #require(files.first), encoding: .utf8)
            #expect(text.contains("==== swift-allocation-tracking report: predicted exhaustion ===="), "\(text)")
            #expect(text.contains("reason: cgroup v2 working set "), "\(text)")
            #expect(text.contains("within the 1.5 s horizon"), "\(text)")
            #expect(text.contains("; the predictive trigger reads the working set"), "\(text)")
            let growing = try #require(text.components(separatedBy: "[ Steadily growing sites ]").last)
            #expect(growing.contains("#1: Tests/TrackerScenarios/Scenarios/TrendLeak.swift:\(leakLine): +")
                    || growing.contains("TrendLeak.swift:\(leakLine): +"), "\(text)")
            #expect(!growing.contains("TrendLeak.swift:\(cacheLine): +"), "\(text)")
        }

        /// In a memory cgroup with a 128 MiB limit (cgroup v1 here), growing 50 MiB/s: the predictive report (2 s
        /// horizon) comes before the container report at 90 % and before the kernel's SIGKILL, and names the
        /// growing line.
        @Test(.enabled(if: Reports.ownMemoryCgroup.map { access($0, W_OK) == 0 } ?? false,
                       "needs a writable cgroup v1 memory hierarchy (root, cgroup v1)"))
        func predictiveReportComesBeforeTheSoftLimitAndTheOOMKiller() throws {
            let cgroup = try #require(Reports.makeMemoryCgroup(limit: 128 << 20), "could not create a memory cgroup")
            defer { rmdir(cgroup) }
            let directory = try Reports.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let result = try runChild(URL(fileURLWithPath: "/bin/sh"), [
                "-c", "echo $$ > \(cgroup)/cgroup.procs && exec '\(scenarios.path)' predict-grow '\(directory.path)'",
            ])
            #expect(result.status == 9, "expected death by SIGKILL; status \(result.status): \(result.error.suffix(500))")
            let stderr = result.error
            let predicted = try #require(stderr.range(of: "==== swift-allocation-tracking report: predicted exhaustion ===="),
                                         "no predictive report: \(stderr.suffix(2000))")
            if let container = stderr.range(of: "==== swift-allocation-tracking report: container memory limit ====") {
                #expect(predicted.lowerBound < container.lowerBound)
            }
            // The predictive report is whole in its file, says it read the working set, and names the growing line.
            let texts = try Reports.reports(in: directory).map { try String(contentsOf: $0, encoding: .utf8) }
            let text = try #require(texts.first { $0.contains("report: predicted exhaustion") }, "\(texts)")
            #expect(text.contains("==== end of report ===="))
            #expect(text.contains("reason: cgroup v1 working set "), "\(text)")
            let growing = try #require(text.components(separatedBy: "[ Steadily growing sites ]").last)
            #expect(growing.contains("#1: ") && growing.contains("ats_malloc_touched"), "\(text)")
        }
    }
}

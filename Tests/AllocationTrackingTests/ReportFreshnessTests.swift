import AllocationTracking
import Foundation
import TrackerTestSupport
import Testing

extension TrackerTests {
    /// Reports asked for under load: on time, with their content's time, the names not ready in time said, and
    /// report signals that arrive meanwhile counted and said.
    @Suite struct ReportFreshness {
        let scenarios = productURL("TrackerScenarios")

        /// 20 signals under allocation load from four threads, with the symbolicator held by cold whole-snapshot
        /// batches in a fifth: each report is written within a second (the README gives the measured p95: 0.64–0.98 s
        /// in a debug build on a loaded 2-core machine). The bound asserted is generous, for a loaded CI machine;
        /// before, a report waited for every name behind whatever held the symbolicator: p95 2.5 s, maximum 4.5 s
        /// in this scenario, and no content time.
        @Test func signalReportsAppearWithinASecondUnderLoad() throws {
            let directory = try Reports.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let result = try runChild(scenarios, ["signal-latency", directory.path])
            print(result.output)
            #expect(result.status == 0, "\(result.output)\(result.error)")
            let values = keyValues(result.output)
            let p95 = try #require(values["p95_ms"].flatMap(Int.init), "\(result.output)")
            #expect(p95 < 2000, "p95 \(p95) ms: \(result.output)")
            #expect(values["reports"] == "20", "\(result.output)")
            #expect(values["with_content_time"] == "20", "\(result.output)")
        }

        @Test func signalsArrivingDuringAReportAreMergedAndSaid() throws {
            let result = try runChild(scenarios, ["signal-merge"])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            #expect(result.output.contains("reports=2 written=2 merged=2"), "\(result.output)")
            #expect(result.output.contains("report1_signals=(none)"), "\(result.output)")
            #expect(result.output.contains("report2_signals=signals: 2 report signals merged into this one "
                                           + "(they arrived while another report was being written, or during the pause after an allocation failure)"), "\(result.output)")
        }

        /// Names not resolved within the budget print as `image+0xoffset (build id …)` and the report says how
        /// many; its content time is there either way.
        @Test func namesNotReadyInTimePrintAsImageOffsetWithBuildID() throws {
            let result = try runChild(scenarios, ["report-unnamed"])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            let output = result.output
            let unnamed = try #require(output.components(separatedBy: "=== unnamed\n").last?
                .components(separatedBy: "=== named\n").first)
            let named = try #require(output.components(separatedBy: "=== named\n").last?
                .components(separatedBy: "=== end").first)
            let line = try #require(output.split(separator: "\n").first { $0.hasPrefix("line=") }?.dropFirst(5))
            let count = try #require(unnamed.split(separator: "\n").first { $0.hasPrefix("names: ") })
            #expect(count.contains(" return addresses not resolved within 0.0 s"), "\(unnamed)")
            #expect(count.contains("shown as image+0xoffset (build id …)"), "\(unnamed)")
            let notNamed = Int(count.dropFirst("names: ".count).prefix { $0.isNumber }) ?? 0
            #expect(notNamed > 0, "\(unnamed)")
            // The support library's site, by image and offset, with its build id.
            let unnamedFrame = try Regex(#"(TrackerScenarios|libAllocationTrackingTestSupport[^ ]*)\+0x[0-9a-f]+ \(build id [0-9a-f]{16,}\)"#)
            #expect(unnamed.contains(unnamedFrame), "\(unnamed)")
            #expect(!unnamed.contains("support.c:\(line)"), "\(unnamed)")
            #expect(unnamed.contains("\ncontent: as of "), "\(unnamed)")
            // Once the names are cached (a snapshot took them), a report has every one at once.
            #expect(named.contains("support.c:\(line): size=195 KiB, count=1"), "\(named)")
            #expect(!named.contains("\nnames: "), "\(named)")
        }

        func keyValues(_ output: String) -> [String: String] {
            var values: [String: String] = [:]
            for word in output.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
                let pair = word.split(separator: "=", maxSplits: 1)
                if pair.count == 2 { values[String(pair[0])] = String(pair[1]) }
            }
            return values
        }
    }
}

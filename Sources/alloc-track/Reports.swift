import AllocationTracking
import ArgumentParser
import Foundation

struct Reports: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The reports in a report directory as a timeline, and the growth between the first and the last.",
        discussion: """
            Reads the alloc-report-<pid>-<time>.txt files and their .json snapshots (report_dir=, --report-dir).
            Example:
              alloc-track reports /var/log/app --limit 5
            """
    )

    @Argument(help: "A report directory.") var directory: String
    @Option(help: "Sites shown in the growth between the first and the last report.") var limit: Int = 10
    @Option(help: "text or json.") var format: OutputFormat = .text

    func run() throws {
        try failing {
            let entries = try ReportEntry.load(directory)
            guard !entries.isEmpty else { throw CommandFailure("no alloc-report-*.txt in \(directory)") }
            let snapshots = entries.compactMap(\.snapshot)
            if format == .json {
                var growth: DiffJSON?
                if let first = snapshots.first, let last = snapshots.last, snapshots.count > 1 {
                    growth = DiffJSON(first, last, try last.compared(to: first, groupedBy: .line), limit: limit)
                }
                output(try jsonText(ReportsJSON(reports: entries.map(\.json), growth: growth)))
                return
            }
            var lines = ["[ \(entries.count) report\(entries.count == 1 ? "" : "s") in \(directory) ]"]
            for entry in entries {
                lines.append([entry.time, entry.trigger, "tracked " + entry.tracked, "rss " + (entry.rss ?? "?"),
                              "cgroup " + (entry.cgroup ?? "?"), entry.name].joined(separator: " | "))
            }
            output(lines.joined(separator: "\n") + "\n")
            if let first = snapshots.first, let last = snapshots.last, snapshots.count > 1 {
                output("\nGrowth from the first report to the last:\n")
                output(try last.report(comparedTo: first, top: limit))
            } else {
                output("\n(one report with a snapshot: no growth to show)\n")
            }
        }
    }
}

/// One report: its text file's header lines and its JSON snapshot, when there is one.
struct ReportEntry {
    var name: String
    var time: String
    var trigger: String
    var tracked: String
    var rss: String?
    var cgroup: String?
    var snapshot: Snapshot?
    var timestamp: Double

    var json: ReportsJSON.Report {
        .init(file: name, time: time, trigger: trigger, trackedBytes: snapshot?.tracedMemory?.current, tracked: tracked,
              rss: rss, cgroup: cgroup)
    }

    /// The reports of `directory`, oldest first. Both report shapes are read: the watchdog's (`rss: 98.7 MiB`,
    /// `cgroup: v1, usage=…`) and the allocation-failure report's (`rss: 27.9 MiB (… B)`, `cgroup v1 usage: …`).
    static func load(_ directory: String) throws -> [ReportEntry] {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: directory) } catch {
            throw CommandFailure("cannot read the directory \(directory): \((error as NSError).localizedDescription)")
        }
        var entries: [ReportEntry] = []
        for name in names where name.hasPrefix("alloc-report-") && name.hasSuffix(".txt") {
            let path = directory + "/" + name
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false).prefix(40).map(String.init)
            func after(_ prefix: String) -> String? {
                lines.first { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
            }
            var trigger = "?"
            if let header = lines.first(where: { $0.hasPrefix("==== swift-allocation-tracking report: ") }) {
                trigger = String(header.dropFirst("==== swift-allocation-tracking report: ".count))
                if trigger.hasSuffix(" ====") { trigger.removeLast(5) }
            }
            let stem = String(path.dropLast(4))
            let snapshot = try? Snapshot(contentsOf: URL(fileURLWithPath: stem + ".json"))
            var tracked = after("tracked: ").flatMap { $0.split(separator: ",").first.map(String.init) }
                ?? after("tracked current: ").map { String($0.prefix { $0 != "(" }).trimmingCharacters(in: .whitespaces) }
                ?? "?"
            if tracked.hasPrefix("current=") { tracked.removeFirst("current=".count) }
            let rss = after("rss: ").map { String($0.prefix { $0 != "(" }).trimmingCharacters(in: .whitespaces) }
            let cgroup = (after("cgroup: ") ?? after("cgroup ")).map { String($0.prefix { $0 != ";" }) }
            let time = after("time: ").map { String($0.prefix { $0 != " " }) } ?? "?"
            entries.append(ReportEntry(name: name, time: time, trigger: trigger, tracked: tracked, rss: rss,
                                       cgroup: cgroup, snapshot: snapshot, timestamp: snapshot?.timestamp ?? 0))
        }
        // The time in the file name and the text is to the second: the snapshot's timestamp orders within one.
        return entries.sorted { ($0.time, $0.timestamp, $0.name) < ($1.time, $1.timestamp, $1.name) }
    }
}

struct ReportsJSON: Encodable {
    struct Report: Encodable {
        var file: String
        var time: String
        var trigger: String
        var trackedBytes: Int?
        var tracked: String
        var rss: String?
        var cgroup: String?
    }
    var reports: [Report]
    var growth: DiffJSON?
}

import AllocationTracking
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum ReportSymlinkScenario: Scenario {
    static let name = "report-symlink"

    static func run(_ arguments: ArraySlice<String>) {
        // Symlinks planted at the report's first names are not followed: the report gets the next free name. So
        // are those planted at its JSON companion's names (`…Z.json`, `…Z-1.json`, `…Z-2.json`): the JSON takes
        // the next free name too, the symlinks stay as they were.
        let directory = String(arguments.dropFirst().first!)
        let target = String(arguments.dropFirst(2).first!)
        try! AllocationTracker.start(.init(report: .init(directory: directory, standardError: false),
                                           limits: .init(containerFraction: nil, onAllocationFailure: false)))
        let now = Int64(time(nil))
        for second in now...(now + 3) {
            let name = "\(directory)/alloc-report-\(getpid())-\(_utcCompact(second)).txt"
            symlink(target, name)
            for suffix in ["", "-1", "-2"] {
                symlink(target, "\(directory)/alloc-report-\(getpid())-\(_utcCompact(second))\(suffix).json")
            }
        }
        let report = try! AllocationTracker.writeReport(reason: "symlink test")
        AllocationTracker.stop()
        print("file=\(report.file ?? "none")")
        print("json=\(report.snapshotFile ?? "none")")
    }
}

import AllocationTracking
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum ReportUnwritableScenario: Scenario {
    static let name = "report-unwritable"

    static func run(_ arguments: ArraySlice<String>) {
        // The directory is checked at start, so it goes away afterwards (a volume unmounted, a directory
        // cleaned up): the report must still reach stderr complete, and say in one line why the file could not be made.
        let directory = "/tmp/allocation-reports-unwritable-\(getpid())"
        mkdir(directory, 0o700)
        try! AllocationTracker.start(.init(report: .init(directory: directory),
                                           limits: .init(containerFraction: nil, onAllocationFailure: false)))
        rmdir(directory)
        print("directory=\(directory)")
        let report = try! AllocationTracker.writeReport(reason: "unwritable test")
        AllocationTracker.stop()
        print("file=\(report.file ?? "none") problems=\(report.problems.count)")
    }
}

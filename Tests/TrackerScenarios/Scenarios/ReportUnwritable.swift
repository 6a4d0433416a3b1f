import AllocationTracking
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum ReportUnwritableScenario: Scenario {
    static let name = "report-unwritable"

    static func run(_ arguments: ArraySlice<String>) {
        try! AllocationTracker.start(.init(report: .init(directory: "/nonexistent-allocation-reports/x"),
                                           limits: .init(containerFraction: nil, onAllocationFailure: false)))
        let report = try! AllocationTracker.writeReport(reason: "unwritable test")
        AllocationTracker.stop()
        print("file=\(report.file ?? "none") problems=\(report.problems.count)")
    }
}

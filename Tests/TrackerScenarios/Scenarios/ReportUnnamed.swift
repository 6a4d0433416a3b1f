@_spi(Testing) import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A report whose names are not ready in time (a budget of 0 and an empty symbol cache): its frames print as
/// `image+0xoffset (build id …)` and it says how many were not named. Then, with the default budget, a report
/// names them.
enum ReportUnnamedScenario: Scenario {
    static let name = "report-unnamed"

    static func run(_ arguments: ArraySlice<String>) {
        try! AllocationTracker.start(.init(report: .init(standardError: false), limits: quiet))
        var line: Int32 = 0
        let block = ats_malloc_touched(200_000, &line)
        AllocationTracker._removeCachedSymbols()
        let budget = AllocationTracker._reportNameBudget
        AllocationTracker._reportNameBudget = .zero
        let unnamed = try! AllocationTracker.writeReport(reason: "names not ready")
        AllocationTracker._reportNameBudget = budget
        // Names resolved meanwhile, as in a service that has been up a while (a cold lookup in this debug binary
        // can outlast the budget on a loaded machine): the report takes them from the cache at once.
        _ = try! AllocationTracker.takeSnapshot()
        let named = try! AllocationTracker.writeReport(reason: "names ready")
        free(block)
        AllocationTracker.stop()
        print("line=\(line)")
        print("=== unnamed\n\(unnamed.text)=== named\n\(named.text)=== end")
    }
}

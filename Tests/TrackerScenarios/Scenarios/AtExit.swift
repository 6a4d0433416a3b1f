import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum AtExitScenario: Scenario {
    static let name = "at-exit"

    static func run(_ arguments: ArraySlice<String>) {
        // An on-demand report, then more growth, then exit: the at-exit report lists what is still live and what
        // grew since the first report.
        let directory = String(arguments.dropFirst().first!)
        try! AllocationTracker.start(.init(report: .init(directory: URL(fileURLWithPath: directory), standardError: false),
                                           limits: .init(containerFraction: nil, onAllocationFailure: false,
                                                         reportAtExit: true)))
        var line: Int32 = 0
        var blocks: [UnsafeMutableRawPointer?] = [ats_malloc_touched(50_000, &line)]
        try! AllocationTracker.writeReport(reason: "before growth")
        for _ in 0..<4 { blocks.append(ats_malloc_touched(50_000, &line)) }
        print("line=\(line)")
        withExtendedLifetime(blocks) {}
        exit(0)
    }
}

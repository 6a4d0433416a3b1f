import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The real thing, predicted: grows by 1 MiB every 20 ms (pages touched) in a memory cgroup until the kernel's
/// OOM killer ends it. With a 2 s horizon the predictive report comes when the working set is about 2 s from the
/// limit, well before the container report at 90 % of it (a quarter of a second from the limit) and the kill.
enum PredictGrowScenario: Scenario {
    static let name = "predict-grow"

    static func run(_ arguments: ArraySlice<String>) {
        let directory = String(arguments.dropFirst().first!)
        var configuration = AllocationTracker.Configuration(
            report: .init(directory: directory),
            limits: .init(containerFraction: 0.9, pollInterval: 0.02))
        configuration.limits.predictedExhaustion = .seconds(2)
        configuration.trend.interval = .milliseconds(50)
        configuration.trend.length = .seconds(10)
        try! AllocationTracker.start(configuration)
        var line: Int32 = 0
        var kept: [UnsafeMutableRawPointer?] = []
        kept.reserveCapacity(100_000)
        while true {
            kept.append(ats_malloc_touched(1 << 20, &line))
            usleep(20_000)
        }
    }
}

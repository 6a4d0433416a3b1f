import AllocationTracking
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum EnvScenario: Scenario {
    static let name = "env"

    static func run(_ arguments: ArraySlice<String>) {
        // Started (or not) by ALLOCATION_TRACKING before main.
        print("pid=\(getpid())")
        print("tracing=\(AllocationTracker.isTracing)")
        print("configuration=\(AllocationTracker.configuration.map { "\($0)" } ?? "none")")
    }
}

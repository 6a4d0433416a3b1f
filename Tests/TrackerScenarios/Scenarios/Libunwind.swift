import AllocationTracking
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum LibunwindScenario: Scenario {
    static let name = "libunwind"

    static func run(_ arguments: ArraySlice<String>) {
        do {
            try AllocationTracker.start(.init(unwinder: .libunwind))
            print("started=true")
        } catch let error as AllocationTrackingError {
            print("code=\(error.code)")
            print("message=\(error.message)")
        } catch {
            fail("\(error)")  // start() throws AllocationTrackingError only
        }
        print("tracing=\(AllocationTracker.isTracing)")
    }
}

import AllocationTracking
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum AvailabilityScenario: Scenario {
    static let name = "availability"

    static func run(_ arguments: ArraySlice<String>) {
        // Built with --sanitize=address/thread, the interposer is compiled out and start() says so.
        print("available=\(AllocationTracker.isAvailable)")
        do {
            try AllocationTracker.start()
            print("started=true")
        } catch let error as AllocationTrackingError {
            print("code=\(error.code)")
        } catch {
            fail("\(error)")  // start() throws AllocationTrackingError only
        }
    }
}

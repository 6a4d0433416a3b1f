import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum DlcloseScenario: Scenario {
    static let name = "dlclose"

    static func run(_ arguments: ArraySlice<String>) {
        // dlclose <library>: a block allocated by a dlopen'ed library stays live after the library is unloaded. The
        // snapshots before and after must work: the symbol cache and image maps start over, the unloaded frames lose
        // their names, the block stays accounted to its site and the caller's frames keep theirs.
        let path = String(arguments.dropFirst().first!)
        try! AllocationTracker.start(.init(unwinder: .libunwind, limits: quiet))
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else { fail("dlopen: \(String(cString: dlerror()))") }
        typealias Allocate = @convention(c) (Int) -> UnsafeMutableRawPointer?
        let allocate = unsafeBitCast(dlsym(handle, "ats_plugin_allocate")!, to: Allocate.self)
        let block = allocate(4242)!
        func site(_ snapshot: Snapshot) -> Trace? { snapshot.traces.first { $0.size == 4242 && $0.count == 1 } }
        func named(_ trace: Trace?) -> Bool { trace?.traceback.frames.contains { $0.function == "ats_plugin_allocate" } == true }
        func callerNamed(_ trace: Trace?) -> Bool {
            trace?.traceback.frames.contains { $0.file?.hasSuffix("Dlclose.swift") == true } == true
        }
        let before = site(try! AllocationTracker.takeSnapshot())
        let unloaded = dlclose(handle) == 0
        let after = site(try! AllocationTracker.takeSnapshot())
        print("named_before=\(named(before)) caller_before=\(callerNamed(before)) unloaded=\(unloaded)")
        print("site_after=\(after != nil) named_after=\(named(after)) caller_after=\(callerNamed(after))")
        free(block)
        AllocationTracker.stop()
    }
}

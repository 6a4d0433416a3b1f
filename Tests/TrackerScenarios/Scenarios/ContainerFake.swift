@_spi(Testing) import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum ContainerFakeScenario: Scenario {
    static let name = "container-fake"

    static func run(_ arguments: ArraySlice<String>) {
        // A fake cgroup v2 tree: usage below, then above 90 % of memory.max.
        let root = String(arguments.dropFirst().first!)
        let directory = String(arguments.dropFirst(2).first!)
        var limits = AllocationTracker.Configuration.Limits(containerFraction: 0.9, pollInterval: 0.02)
        limits.cgroupRoot = root + "/cg"
        limits.procSelfCgroup = root + "/proc_cgroup"
        try! AllocationTracker.start(.init(report: .init(directory: directory, standardError: false), limits: limits))
        var line: Int32 = 0
        let block = ats_malloc_touched(100_000, &line)
        usleep(200_000)
        print("before=\(try! FileManager.default.contentsOfDirectory(atPath: directory).count)")
        try! "9500000\n".write(toFile: root + "/cg/test/memory.current", atomically: true, encoding: .utf8)
        // Until the report is there (the next poll, 20 ms, then its names within their 0.5 s budget), not a fixed
        // time: stopping sooner would abandon it. At most 30 s.
        for _ in 0..<1500 where (try? FileManager.default.contentsOfDirectory(atPath: directory))?
            .contains(where: { $0.hasSuffix(".json") }) != true {
            usleep(20_000)
        }
        AllocationTracker.stop()
        free(block)
        print("line=\(line)")
    }
}

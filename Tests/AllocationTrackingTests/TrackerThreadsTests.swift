import AllocationTracking
import Foundation
import Testing

extension TrackerTests {
    /// The tracker's threads carry names, so that `top -H`, `perf` and `/proc/PID/task/*/comm` show its own CPU apart
    /// from the program's (the real-service benchmark could only measure it per process before).
    @Suite struct TrackerThreads {
        static func threadNames() -> [String] {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
            return tasks.compactMap { task in
                (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8))?
                    .trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }

        @Test func theWatchdogAndTheNamesThreadAreNamed() throws {
            try withTracking(.init(unwinder: .framePointers)) {
                // Each names itself as it starts: give them a moment.
                var names = Self.threadNames()
                for _ in 0..<200 where !(names.contains("alloc-watchdog") && names.contains("alloc-names")) {
                    usleep(10_000)
                    names = Self.threadNames()
                }
                #expect(names.contains("alloc-watchdog"), "\(names)")
                #expect(names.contains("alloc-names"), "\(names)")
            }
            // Stopped: both gone (joined).
            let after = Self.threadNames()
            #expect(!after.contains("alloc-watchdog") && !after.contains("alloc-names"), "\(after)")
        }
    }
}

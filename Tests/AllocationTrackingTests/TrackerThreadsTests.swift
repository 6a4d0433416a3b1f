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

        /// The signal mask of each thread named `name`, from /proc (bit N-1: signal N).
        static func blockedSignals(ofThreadNamed name: String) -> [UInt64] {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
            return tasks.compactMap { task -> UInt64? in
                guard (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8))?
                        .trimmingCharacters(in: .whitespacesAndNewlines) == name,
                      let status = try? String(contentsOfFile: "/proc/self/task/\(task)/status", encoding: .utf8),
                      let line = status.split(separator: "\n").first(where: { $0.hasPrefix("SigBlk:") })
                else { return nil }
                return UInt64(line.dropFirst("SigBlk:".count).trimmingCharacters(in: .whitespaces), radix: 16)
            }
        }

        /// The tracker's threads block every asynchronous signal (the watchdog unblocks the report signal alone), so
        /// that a signal sent to the process reaches the program's threads as it would without the library: a
        /// shell run by `alloc-track run` lost its trapped signals when a tracker thread took them.
        @Test func theTrackersThreadsLeaveSignalsToTheProgram() throws {
            // Started from a thread that blocks nothing, as a program's main thread: the test runner's threads
            // block most signals already, and the tracker's threads would inherit that.
            var empty = sigset_t(), previous = sigset_t()
            sigemptyset(&empty)
            pthread_sigmask(SIG_SETMASK, &empty, &previous)
            defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
            try withTracking(.init(unwinder: .framePointers, limits: .init(signal: SIGUSR2))) {
                var watchdog: [UInt64] = [], names: [UInt64] = []
                for _ in 0..<200 where watchdog.isEmpty || names.isEmpty {
                    usleep(10_000)
                    (watchdog, names) = (Self.blockedSignals(ofThreadNamed: "alloc-watchdog"),
                                         Self.blockedSignals(ofThreadNamed: "alloc-names"))
                }
                func bit(_ signal: Int32) -> UInt64 { 1 << UInt64(signal - 1) }
                let program = [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGCHLD, SIGALRM, SIGPIPE, SIGWINCH]
                    .reduce(UInt64(0)) { $0 | bit($1) }
                let faults = [SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT].reduce(UInt64(0)) { $0 | bit($1) }
                #expect(watchdog.count == 1 && names.count == 1, "\(watchdog) \(names)")
                for mask in watchdog + names {
                    #expect(mask & program == program, "\(String(mask, radix: 16))")
                    #expect(mask & faults == 0, "\(String(mask, radix: 16))")
                }
                // The report signal: the watchdog takes it, the names thread does not.
                #expect(watchdog.allSatisfy { $0 & bit(SIGUSR2) == 0 }, "\(watchdog.map { String($0, radix: 16) })")
                #expect(names.allSatisfy { $0 & bit(SIGUSR2) != 0 }, "\(names.map { String($0, radix: 16) })")
            }
        }
    }
}

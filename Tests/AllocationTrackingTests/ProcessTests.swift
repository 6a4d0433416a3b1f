import AllocationTracking
import Foundation
import TrackerTestSupport
import Testing

extension TrackerTests {
    /// Scenarios that need a process of their own (see Tests/TrackerScenarios).
    @Suite struct Processes {
        let scenarios = productURL("TrackerScenarios")

        @Test(arguments: ["libunwind", "framepointers"])
        func forkChildKeepsAConsistentTracker(unwinder: String) throws {
            let result = try runChild(scenarios, ["fork", unwinder])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            #expect(result.output.contains("forks=20 ok"))
        }

        /// A signal handler that frees and allocates while it interrupted the tracker's hook: its events are
        /// queued and recorded when the hook exits (thread_state.c). Before, its frees were lost (phantom live
        /// blocks, duplicate keys) and its allocations untracked. 300 k iterations within 2x the untracked CPU time.
        @Test func signalHandlerFreesAndAllocationsInsideTheHookAreRecorded() throws {
            let result = try runChild(scenarios, ["signal-frees"])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            #expect(result.output.contains("signal-frees ok"), "\(result.output)")
        }

        @Test func environmentStartsTracking() throws {
            let result = try runChild(scenarios, ["env"],
                                      environment: ["ALLOCATION_TRACKING": "frames=24,unwinder=framepointers"])
            #expect(result.output.contains("tracing=true"))
            #expect(result.output.contains("configuration=frames=24,unwinder=framepointers"))
            // One line says tracking is on and what will write reports where (the defaults: the container
            // limit and allocation failures, to stderr).
            let pid = result.output.split(separator: "\n").first { $0.hasPrefix("pid=") }?.dropFirst(4) ?? "?"
            #expect(result.error == "swift-allocation-tracking: tracking on (ALLOCATION_TRACKING), pid \(pid): "
                    + "unwinder=framepointers, frames=24; memory history every 10.0 s for 1h 0m (79.0 KiB); reports on "
                    + "container at 90% of its limit, allocation failure to stderr (announce=off: no line)\n",
                    "\(result.error)")
            let defaults = try runChild(scenarios, ["env"], environment: ["ALLOCATION_TRACKING": "1"])
            #expect(defaults.output.contains("configuration=frames=32,unwinder=libunwind"))
            #expect(defaults.error.hasPrefix("swift-allocation-tracking: tracking on (ALLOCATION_TRACKING)"))
            // Everything that writes a report is named, the signal with the command that sends it.
            let directory = "/tmp/allocation-tracking-announce-\(getpid())"  // the at-exit report lands here
            mkdir(directory, 0o700)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let full = try runChild(scenarios, ["env"], environment: [
                "ALLOCATION_TRACKING": "soft_limit=512MiB,rss_limit=1GiB,container=85%,signal=SIGUSR2,at_exit=on,"
                    + "predict=10m,trend=5s,trend_length=10m,report_dir=\(directory)"])
            let fullPid = full.output.split(separator: "\n").first { $0.hasPrefix("pid=") }?.dropFirst(4) ?? "?"
            // (The at-exit report follows on stderr: the first line is the announcement.)
            let firstLine = String(full.error.prefix { $0 != "\n" })
            let expected: String = "swift-allocation-tracking: tracking on (ALLOCATION_TRACKING), pid \(fullPid): "
                    + "unwinder=libunwind, frames=32; memory history every 5.0 s for 10m 0s (26.5 KiB); reports on "
                    + "tracked memory 512 MiB, RSS 1024 MiB, container at 85% of its limit, allocation failure, signal "
                    + "SIGUSR2 (kill -USR2 \(fullPid)), a limit predicted within 10m 0s, exit to stderr and "
                    + "\(directory) (announce=off: no line)"
            #expect(firstLine == expected, "\(full.error)")
            // Suppressible.
            let quiet = try runChild(scenarios, ["env"], environment: ["ALLOCATION_TRACKING": "frames=24,announce=off"])
            #expect(quiet.output.contains("tracing=true"))
            #expect(quiet.error.isEmpty, "\(quiet.error)")
        }

        @Test(arguments: ["frames=999", "unwinder=dwarf", "verbose=yes", "frames"])
        func malformedEnvironmentLeavesTrackingOffWithOneLine(value: String) throws {
            let result = try runChild(scenarios, ["env"], environment: ["ALLOCATION_TRACKING": value])
            #expect(result.status == 0)
            #expect(result.output.contains("tracing=false"))
            let lines = result.error.split(separator: "\n")
            #expect(lines.count == 1)
            #expect(lines.first?.hasPrefix("swift-allocation-tracking: ALLOCATION_TRACKING=\(value):") == true)
            #expect(lines.first?.hasSuffix("tracking is off") == true)
        }

        @Test func missingLibunwindIsAClearError() throws {
            let result = try runChild(scenarios, ["libunwind"],
                                      environment: ["ALLOCATION_TRACKING_LIBUNWIND": "/nonexistent/libunwind.so.8"])
            #expect(result.output.contains("code=unwinderUnavailable"))
            #expect(result.output.contains("apt-get install -y libunwind8"))
            #expect(result.output.contains("tracing=false"))
        }

        /// Another interposer below us (as a preloaded jemalloc, or ordo-one's malloc-interposer, would be) keeps
        /// seeing every call: we forward with dlsym(RTLD_NEXT), not to glibc directly.
        @Test func chainsToTheNextInterposer() throws {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ats-chain-\(getpid())")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let source = directory.appendingPathComponent("counting.c")
            let library = directory.appendingPathComponent("libcounting.so")
            try countingInterposer.write(to: source, atomically: true, encoding: .utf8)
            let compiler = ["/usr/bin/cc", "/usr/bin/gcc", "/usr/bin/clang"].first {
                FileManager.default.isExecutableFile(atPath: $0)
            }
            let cc = try #require(compiler, "a C compiler is needed to build the second interposer")
            let build = try runChild(URL(fileURLWithPath: cc),
                                     ["-shared", "-fPIC", "-O2", "-o", library.path, source.path, "-ldl"])
            try #require(build.status == 0, "\(build.error)")
            let result = try runChild(scenarios, ["chain"], environment: ["LD_PRELOAD": library.path])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            #expect(result.output.contains("next_allocator_mallocs=1000\n"))
            #expect(result.output.contains("tracked_allocations=1000\n"))
            #expect(result.output.contains("helper_bytes=48000 helper_blocks=1000"))
        }
    }
}

extension TrackerTests.Processes {
    /// A block allocated by a library that is then dlclose'd: snapshots keep working (the symbol cache and image
    /// maps start over), the block stays accounted, the unloaded frames lose their names (documented) and the
    /// caller's keep theirs.
    @Test func snapshotsAfterDlclose() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ats-dlclose-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = directory.appendingPathComponent("plugin.c")
        let library = directory.appendingPathComponent("libplugin.so")
        try """
        #include <stdlib.h>
        __attribute__((noinline)) void *ats_plugin_allocate(size_t size) {
            void *block = malloc(size);
            __asm__ __volatile__("" ::: "memory");
            return block;
        }
        """.write(to: source, atomically: true, encoding: .utf8)
        let compiler = ["/usr/bin/cc", "/usr/bin/gcc", "/usr/bin/clang"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
        let cc = try #require(compiler, "a C compiler is needed to build the library")
        let build = try runChild(URL(fileURLWithPath: cc), ["-shared", "-fPIC", "-g", "-O1", "-o", library.path, source.path])
        try #require(build.status == 0, "\(build.error)")
        let result = try runChild(productURL("TrackerScenarios"), ["dlclose", library.path])
        #expect(result.status == 0, "\(result.output)\(result.error)")
        let values = keyValues(result.output)
        #expect(values["named_before"] == "true", "\(result.output)")
        #expect(values["caller_before"] == "true", "\(result.output)")
        #expect(values["unloaded"] == "true", "\(result.output)")
        #expect(values["site_after"] == "true", "\(result.output)")
        #expect(values["named_after"] == "false", "\(result.output)")
        #expect(values["caller_after"] == "true", "\(result.output)")
    }
}

/// A minimal malloc interposer that counts malloc calls and forwards to the next one.
let countingInterposer = """
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
uint64_t counting_interposer_mallocs;
static void *(*next_malloc)(size_t);
static char bootstrap[4096];
static int resolving;
void *malloc(size_t size) {
    if (!next_malloc) {
        if (resolving) return bootstrap;
        resolving = 1;
        next_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
        resolving = 0;
    }
    __atomic_fetch_add(&counting_interposer_mallocs, 1, __ATOMIC_RELAXED);
    return next_malloc(size);
}
"""

extension TrackerTests.Processes {
    /// `takeSnapshot(at: .peak)` names the sites that held the memory when the peak was set, with their exact
    /// sizes, and its total equals the peak (in a child where only one thread allocates).
    @Test func peakSnapshotShowsWhoHeldThePeak() throws {
        let result = try runChild(productURL("TrackerScenarios"), ["peak"])
        #expect(result.status == 0, "\(result.output)\(result.error)")
        #expect(result.output.contains("peak ok checks=11"), "\(result.output)")
    }

    /// Exact mode's per-thread counter deltas: a thread's exit folds them, reads are exact (the watchdog's trend
    /// samples too), and the peak is within the stated bound (64 KiB per other thread holding deltas) of the true
    /// peak.
    @Test func threadDeltasFoldAtExitAndKeepThePeakWithinTheBound() throws {
        let result = try runChild(productURL("TrackerScenarios"), ["threadDeltas"])
        #expect(result.status == 0, "\(result.output)\(result.error)")
        #expect(result.output.contains("threadDeltas ok checks=10"), "\(result.output)")
    }
}

extension TrackerTests.Processes {
    /// The tracker's threads allocate from a private heap that the tracker counts: blocks of every kind (malloc,
    /// calloc, realloc, aligned, large) are intact, freed by any thread and reused; the resident bytes reported are
    /// what /proc/self/smaps shows for the heap's mapping; the tracker's threads use it; a forked child can free
    /// its blocks.
    @Test func trackerThreadsAllocateFromACountedHeap() throws {
        let result = try runChild(productURL("TrackerScenarios"), ["tracker-heap"])
        #expect(result.status == 0, "\(result.output)\(result.error)")
        #expect(result.output.contains("tracker-heap ok checks=829"), "\(result.output)")
    }

    /// A clearTraces that cannot map new tables (the address space is exhausted) stops tracking the whole way: the
    /// watchdog thread exits too, instead of polling on for a tracker that is gone.
    @Test func clearTracesOutOfMemoryStopsTheWatchdog() throws {
        let result = try runChild(productURL("TrackerScenarios"), ["clear-out-of-memory"])
        #expect(result.status == 0, "\(result.output)\(result.error)")
        #expect(result.output.contains("tables_grew=true tracing=false watchdog_exited=true\n"), "\(result.output)")
    }
}

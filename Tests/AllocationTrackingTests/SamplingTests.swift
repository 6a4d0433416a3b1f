@_spi(Testing) import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
import TrackerTestSupport
import Testing

extension TrackerTests {
    /// Sampled mode (`Configuration.sampling = .poisson(meanBytes:)`): its accuracy against known truth, its
    /// bookkeeping across realloc, clearTraces, fork, stop/start and measurements, its configuration, and the
    /// way every output says its values are estimates.
    @Suite struct Sampling {
        static let note = "estimated from samples every 512 KiB on average"

        /// The statistical checks (bounds and their derivation: Scenarios/SamplingAccuracy.swift), in a process
        /// where nothing else allocates, over 20 seeds.
        @Test func estimatesAreUnbiasedAndWithinTheirStandardDeviation() throws {
            let result = try runChild(productURL("TrackerScenarios"), ["sampling-accuracy"])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            #expect(result.output.contains("sampling-accuracy ok checks=546"), "\(result.output)")
        }

        /// No sampled block double-counted or lost; `current` returns to exactly 0; measurements exact.
        @Test func noSampledBlockIsLostOrCountedTwice() throws {
            let result = try runChild(productURL("TrackerScenarios"), ["sampling-lifecycle"])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            #expect(result.output.contains("sampling-lifecycle ok checks=18"), "\(result.output)")
        }

        /// The weights' series arithmetic (no libm inside malloc) against libm: s/p and 2^16/p with
        /// p = −expm1(−s/T), rounded, for sizes from 1 B to far beyond T.
        @Test(arguments: [4096, 512 << 10, 1 << 30])
        func weightsMatchLibm(meanBytes: Int) {
            var size = 1
            while size < 1 << 40 {
                for s in [size, size + 1, size * 3 / 2] {
                    let p = -expm1(-Double(s) / Double(meanBytes))
                    let w = AllocationTracker._sampleWeight(size: s, meanBytes: meanBytes)
                    #expect(abs(Double(w.bytes) - Double(s) / p) <= 0.5 + Double(s) / p * 1e-12, "s=\(s) T=\(meanBytes)")
                    #expect(abs(Double(w.blocks) - 65536 / p) <= 0.5 + 65536 / p * 1e-12, "s=\(s) T=\(meanBytes)")
                }
                size *= 2
            }
            // Far beyond T a block is exactly itself.
            #expect(AllocationTracker._sampleWeight(size: 64 * meanBytes, meanBytes: meanBytes) == (64 * meanBytes, 65536))
        }

        /// The README's "Production" snippet, as it stands there.
        @Test func readmeProductionSnippet() throws {
            try AllocationTracker.start(.init(sampling: .poisson(meanBytes: 512 << 10)))
            let memory = AllocationTracker.tracedMemory   // memory.isEstimate == true: unbiased estimates
            defer { AllocationTracker.stop() }
            #expect(memory.isEstimate)
        }

        @Test func configurationParsesValidatesAndPrints() throws {
            let sampled = try #require(try AllocationTracker.Configuration.parse(environmentValue: "sample=512KiB"))
            #expect(sampled.sampling == .poisson(meanBytes: 512 << 10))
            #expect(sampled.description.contains(",sample=524288"))
            #expect(try AllocationTracker.Configuration.parse(environmentValue: sampled.description) == sampled)
            #expect(try AllocationTracker.Configuration.parse(environmentValue: "sample=off")?.sampling == .exact)
            #expect(try AllocationTracker.Configuration.parse(environmentValue: "frames=8")?.sampling == .exact)
            #expect(!AllocationTracker.Configuration().description.contains("sample"))
            #expect(try AllocationTracker.Configuration.parse(environmentValue: "sample=0")?.sampling == .exact)
            for bad in ["sample=lots", "sample=-5", "sample=", "sample=0.5B"] {
                #expect(throws: AllocationTrackingError.self, "\(bad)") {
                    try AllocationTracker.Configuration.parse(environmentValue: bad)
                }
            }
            do {
                try AllocationTracker.Configuration(sampling: .poisson(meanBytes: 0)).validate()
                Issue.record("meanBytes 0 validated")
            } catch let error as AllocationTrackingError {
                #expect(error.message.contains("sampling meanBytes must be 1…"), "\(error.message)")
            }
            #expect(throws: AllocationTrackingError.self) {
                try AllocationTracker.Configuration(sampling: .poisson(meanBytes: (1 << 40) + 1)).validate()
            }
        }

        /// `ALLOCATION_TRACKING=sample=512KiB` starts a sampled tracker and says so in its start line.
        @Test func environmentStartsSampledAndAnnouncesIt() throws {
            let result = try runChild(productURL("TrackerScenarios"), ["env"],
                                      environment: ["ALLOCATION_TRACKING": "sample=512KiB,on_failure=off,container=off"])
            #expect(result.output.contains("tracing=true"), "\(result.output)\(result.error)")
            #expect(result.output.contains(",sample=524288"), "\(result.output)")
            #expect(result.error.contains("frames=32, sampled every 512 KiB on average (values are estimates); memory "
                                          + "history every 10.0 s for 1h 0m (79.0 KiB); no reports"),
                    "\(result.error)")
            let exact = try runChild(productURL("TrackerScenarios"), ["env"], environment: ["ALLOCATION_TRACKING": "sample=off"])
            #expect(!exact.output.contains("sample="), "\(exact.output)")
            #expect(!exact.error.contains("sampled"), "\(exact.error)")
        }

        /// In the process: counters and snapshots say they are estimates; the note appears once in a report and
        /// a diff; the snapshot file keeps the setting, and a file without it loads as exact.
        @Test func snapshotsReportsAndFilesCarryTheSetting() throws {
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("ats-sampled-\(getpid()).json")
            defer { try? FileManager.default.removeItem(at: url) }
            try withTracking(.init(sampling: .poisson(meanBytes: 512 << 10))) {
                #expect(AllocationTracker.tracedMemory.isEstimate)
                #expect(AllocationTracker.tracedMemory.description.hasSuffix(" (estimated)"))
                // s = 16 T: sampled with p = 1 − e^−16, weighs s/p = s + 0.94 B. From the C helper: an optimised
                // build removes a malloc/free pair whose block is never used.
                var big: UnsafeMutableRawPointer? = nil
                #expect(ats_allocate("malloc", 1, 8 << 20, &big) == 1)
                defer { free(big) }
                let snapshot = try AllocationTracker.takeSnapshot()
                let peak = try AllocationTracker.takeSnapshot(at: .peak)
                #expect(snapshot.sampling == .poisson(meanBytes: 512 << 10))
                #expect(peak.sampling == snapshot.sampling)
                #expect(snapshot.tracedMemory?.isEstimate == true)
                let traces = helperTraces(snapshot)
                #expect(traces.count == 1 && abs(traces[0].size - 8 << 20) <= 1 && traces[0].count == 1, "\(traces)")
                for text in [try snapshot.report(), try snapshot.report(comparedTo: peak), try peak.report()] {
                    #expect(text.components(separatedBy: Self.note).count == 2, "\(text)")
                }
                try snapshot.write(to: url)
                let json = try String(contentsOf: url, encoding: .utf8)
                #expect(json.contains("\"sampleMeanBytes\":524288"))
                let loaded = try Snapshot(contentsOf: url)
                #expect(loaded.sampling == snapshot.sampling)
                #expect(loaded.tracedMemory?.isEstimate == true)
                // Without the key (every file written before sampling existed): exact.
                try json.replacingOccurrences(of: ",\"sampleMeanBytes\":524288", with: "")
                    .write(to: url, atomically: false, encoding: .utf8)
                let old = try Snapshot(contentsOf: url)
                #expect(old.sampling == .exact)
                #expect(old.tracedMemory?.isEstimate == false)
                #expect(try !old.report().contains("estimated"))
            }
            #expect(!AllocationTracker.tracedMemory.isEstimate)
            try withTracking(.init()) {
                #expect(!AllocationTracker.tracedMemory.isEstimate)
                let snapshot = try AllocationTracker.takeSnapshot()
                #expect(snapshot.sampling == .exact)
            }
        }

        /// A soft limit on tracked bytes compares the estimate, and its report says it is one.
        @Test func softLimitUsesTheEstimate() throws {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ats-sampled-soft-\(getpid())")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let result = try runChild(productURL("TrackerScenarios"), ["softlimit", directory.path, "sampled"])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            #expect(result.output.contains("callbacks=1"), "\(result.output)")
            let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".txt") }
            #expect(files.count == 1, "\(files)")
            let text = try String(contentsOfFile: directory.appendingPathComponent(try #require(files.first)).path, encoding: .utf8)
            #expect(text.contains("crossed the limit 8192 KiB"), "\(text)")
            #expect(text.contains("(estimated from samples every 128 KiB on average)"), "\(text)")
        }

        /// The allocation-failure report in sampled mode: the failing request is named exactly, the tracked
        /// values are marked as estimates, the site holding the memory is there (1 MiB blocks, s = 2T: hundreds
        /// of them, each sampled with p = 0.86), and the report still allocates nothing.
        @Test func allocationFailureReportInSampledMode() throws {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ats-sampled-oom-\(getpid())")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let result = try runChild(productURL("TrackerScenarios"), ["oom", directory.path, "sampled"])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            #expect(result.output.contains("internal_allocations=0\n"), "\(result.output)")
            let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            #expect(files.count == 1, "\(files)")
            let text = try String(contentsOfFile: directory.appendingPathComponent(try #require(files.first)).path, encoding: .utf8)
            let line = try #require(keyValues(result.output)["line"])
            for check in ["trigger: allocation failure: malloc(1048576) returned NULL (ENOMEM)\n",
                          "\ntracked values: estimated from samples every 512 KiB on average\ntracked current: ",
                          "\n#1: ", "support.c:\(line) ← ats_allocate_until_failure at support.c:"] {
                #expect(text.contains(check), "missing \(check.debugDescription):\n\(text)")
            }
        }
    }
}

extension PprofExport {
    /// A sampled snapshot's profile: `period` is T, the values are the snapshot's (already estimates, as Go
    /// writes them), and `go tool pprof` reads it; an exact one keeps period 1.
    @Test(.enabled(if: PprofTools.hasPython, "python3 is not installed"))
    func sampledProfileHasThePeriod() throws {
        var snapshot = Self.sample()
        snapshot.sampling = .poisson(meanBytes: 512 << 10)
        let decoded = try #require(try PprofTools.decode(try snapshot.pprof()))
        #expect(decoded.period == 524_288)
        let values = Set((decoded.sample ?? []).compactMap(\.value))
        for trace in snapshot.traces where trace.allocatedCount > 0 {
            #expect(values.contains([trace.allocatedCount, trace.allocatedSize, trace.count, trace.size].map { Int64($0) }))
        }
        let exact = try #require(try PprofTools.decode(try Self.sample().pprof()))
        #expect(exact.period == 1)
    }
}

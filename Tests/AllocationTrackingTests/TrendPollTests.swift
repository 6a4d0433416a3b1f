@_spi(Testing) @testable import AllocationTracking
import CAllocationTracking
import Foundation
import Testing

extension TrackerTests {
    /// What the watchdog does at every trend sample allocates nothing (`Configuration.Trend`: "sampling allocates
    /// nothing" beyond the ring allocated at start): reading RSS and the cgroup's usage, working set and limit,
    /// reading the top sites, appending to the ring, and fitting the series for the predictive trigger.
    /// Measured with the tracker's own per-thread measurement, which records every allocation of this thread.
    @Suite struct TrendPoll {
        @Test func aTrendSampleAllocatesNothing() throws {
            var configuration = AllocationTracker.Configuration(unwinder: .framePointers)
            configuration.trend.interval = .milliseconds(10)
            configuration.trend.length = .seconds(1)  // 101 samples: the loop below wraps the ring
            configuration.trend.sites = 10
            try withTracking(configuration) {
                // Live blocks for readSites to find (one call stack; the runner's threads add others).
                var blocks: [UnsafeMutableRawPointer?] = []
                for size in 1...10 { blocks.append(keepBlock(size * 4096)) }
                defer { for block in blocks { free(block) } }

                let history = _TrendHistory(configuration.trend)
                var cgroup = cat_cgroup()
                let hasCgroup = cat_cgroup_detect(nil, nil, &cgroup) == 0
                // One sample first, unmeasured: the first fit allocates twice, once per process (seen here; the
                // runtime's first use of its types), which is not a per-poll cost. Every sample after it must not.
                history.append(time: 0, tracked: 0, rss: 0, usage: 0, workingSet: 0, limit: 0)
                _ = history.fitRecent(1, windowNs: 500_000_000)
                var fitted = 0
                let measurement = try AllocationTracker.measure {
                    for index in 1...250 {
                        let rss = cat_process_rss_bytes()
                        var usage: UInt64 = 0, limit: UInt64 = 0, workingSet: UInt64 = 0
                        if hasCgroup { _ = cat_cgroup_read_working_set(&cgroup, &usage, &limit, &workingSet) }
                        history.readSites()
                        history.append(time: UInt64(index) * 10_000_000, tracked: UInt64(index) << 12, rss: rss,
                                       usage: usage, workingSet: workingSet, limit: limit)
                        if history.fitRecent(1, windowNs: 500_000_000) != nil { fitted += 1 }
                    }
                }
                #expect(measurement.allocations == 0, "\(measurement.allocations) allocations in 250 samples")
                #expect(fitted == 250, "every sample fits a line with the ones before it")
                // The ring holds what was appended (the newest 101), with the sites read.
                let samples = history.samples()
                #expect(samples.count == 101)
                #expect(samples.last?.tracked == 250 << 12)
                #expect((samples.last?.sites.count ?? 0) >= 1)
                #expect(hasCgroup == false || samples.last?.containerUsage != nil)
            }
        }
    }
}

/// A live block from a call stack of its own.
@inline(never)
private func keepBlock(_ size: Int) -> UnsafeMutableRawPointer? {
    let block = malloc(size)
    if let block { memset(block, 1, size) }
    return block
}

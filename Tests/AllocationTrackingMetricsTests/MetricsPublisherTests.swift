import AllocationTracking
import AllocationTrackingMetrics
import Foundation
import MetricsTestKit
import Testing
import TrackerTestSupport

/// The publisher against swift-metrics' own test backend: names, labels, values, counters as increments, and
/// the projection that disappears when growth stops.
@Suite(.serialized, .trackerExclusive) struct MetricsPublisherTests {
    let labels = [("service", "test")]

    @Test func nothingIsRecordedWhileTheTrackerIsOff() throws {
        let metrics = TestMetrics()
        MetricsPublisher(dimensions: labels, factory: metrics).publish()
        #expect(throws: (any Error).self) { try metrics.expectGauge("allocation_tracking_heap_bytes", labels) }
        #expect(throws: (any Error).self) { try metrics.expectCounter("allocation_tracking_allocations_total", labels) }
    }

    @Test func publishesTheTrackersFigures() async throws {
        var configuration = AllocationTracker.Configuration(
            report: .init(standardError: false),
            limits: .init(trackedBytes: 1 << 30, containerFraction: nil, onAllocationFailure: false, pollInterval: 0.005))
        configuration.trend.interval = .milliseconds(20)
        configuration.trend.length = .seconds(10)
        try AllocationTracker.start(configuration)
        defer { AllocationTracker.stop() }
        let metrics = TestMetrics()
        let publisher = MetricsPublisher(window: .milliseconds(400), dimensions: labels, factory: metrics)

        // 64 KiB every 10 ms for 0.4 s: a steady 6.4 MB/s of tracked growth.
        var blocks: [UnsafeMutableRawPointer?] = []
        blocks.reserveCapacity(100)
        for _ in 0..<40 {
            blocks.append(malloc(64 << 10))
            try await Task.sleep(for: .milliseconds(10))
        }
        let before = AllocationTracker.tracedMemory
        publisher.publish()
        let heap = try #require(try metrics.expectGauge("allocation_tracking_heap_bytes", labels).lastValue)
        #expect(heap >= Double(40 << 16) && heap >= Double(before.current) * 0.5, "\(heap) vs \(before)")
        #expect(try metrics.expectGauge("allocation_tracking_heap_peak_bytes", labels).lastValue ?? 0 >= heap)
        #expect(try metrics.expectGauge("allocation_tracking_heap_blocks", labels).lastValue ?? 0 >= 40)
        #expect(try metrics.expectGauge("allocation_tracking_tracker_memory_bytes", labels).lastValue ?? 0 > 0)
        let allocations = try metrics.expectCounter("allocation_tracking_allocations_total", labels).totalValue
        #expect(allocations >= 40 && allocations >= Int64(before.totalAllocations))
        #expect(try metrics.expectCounter("allocation_tracking_allocated_bytes_total", labels).totalValue >= 40 << 16)
        #expect(try metrics.expectCounter("allocation_tracking_dropped_allocations_total", labels).totalValue == 0)
        #expect(try metrics.expectGauge("allocation_tracking_rss_bytes", labels).lastValue ?? 0 > 0)
        #expect(try metrics.expectGauge("allocation_tracking_heap_limit_bytes", labels).lastValue == Double(1 << 30))
        #expect(throws: (any Error).self, "no RSS limit configured: no gauge") {
            try metrics.expectGauge("allocation_tracking_rss_limit_bytes", labels)
        }
        let growth = try #require(try metrics.expectGauge("allocation_tracking_growth_bytes_per_second",
                                                          labels + [("series", "heap")]).lastValue)
        #expect(growth > 1e6, "\(growth) B/s")
        let eta = try #require(try metrics.expectGauge("allocation_tracking_seconds_to_limit",
                                                       labels + [("limit", "heap")]).lastValue)
        #expect(eta > 0)

        // Counters publish increments: a second publication adds what happened since, not the totals again.
        // The sum of the increments is the tracker's total at the moment of publishing.
        let lower = AllocationTracker.tracedMemory.totalAllocations
        publisher.publish()
        let upper = AllocationTracker.tracedMemory.totalAllocations
        let again = try metrics.expectCounter("allocation_tracking_allocations_total", labels).totalValue
        #expect(Int64(lower) <= again && again <= Int64(upper), "\(lower) ≤ \(again) ≤ \(upper)")

        // Reports by trigger, with a label value Prometheus accepts.
        let onDemand = labels + [("trigger", "on_demand")]
        #expect(try metrics.expectCounter("allocation_tracking_reports_total", onDemand).totalValue
                == Int64(AllocationTracker.reportsWritten[.onDemand] ?? -1))
        let reportsBefore = try metrics.expectCounter("allocation_tracking_reports_total", onDemand).totalValue
        try AllocationTracker.writeReport(reason: "metrics test")
        publisher.publish()
        #expect(try metrics.expectCounter("allocation_tracking_reports_total", onDemand).totalValue == reportsBefore + 1)
        #expect(try metrics.expectCounter("allocation_tracking_reports_total",
                                          labels + [("trigger", "container_memory_limit")]).totalValue == 0)
        // Report signals merged into another report (none in this process: no report signal is set).
        #expect(try metrics.expectCounter("allocation_tracking_report_signals_merged_total", labels).totalValue
                == Int64(AllocationTracker.reportSignalsMerged))

        // Growth stops (everything freed): the projection disappears, and the published rate is the trend's. The
        // heap series is process-wide, and the test suites of other targets allocate in this process meanwhile (in
        // the parallel release suite, megabytes in 200 ms: an absolute bound on the slope failed there), so the
        // rate is compared with the trend the publisher read, not with zero.
        let trackedBeforeFrees = AllocationTracker.tracedMemory.current
        for block in blocks { free(block) }
        try await Task.sleep(for: .milliseconds(200))
        publisher.publish()
        // Whether this test's frees dominated the window: other suites allocated 18 MiB in it once (the flame
        // graph's tests), and then the process-wide rate rightly rose.
        let windowFell = trackedBeforeFrees - AllocationTracker.tracedMemory.current >= 2_000_000
        let after = try #require(try metrics.expectGauge("allocation_tracking_growth_bytes_per_second",
                                                         labels + [("series", "heap")]).lastValue)
        let trend = try AllocationTracker.trend(over: .milliseconds(400))
        let trendRate = try #require(trend.tracked).bytesPerSecond
        if after <= 0 {
            #expect(throws: (any Error).self, "not growing: no projection") {
                try metrics.expectGauge("allocation_tracking_seconds_to_limit", labels + [("limit", "heap")])
            }
        }
        // The drop of 2.5 MiB lies inside the window: when it dominated the window, the rate fell below the growth's.
        #expect(!windowFell || after < growth, "\(after) B/s after the frees, \(growth) B/s before")
        // One sample (20 ms) may have arrived between the publication and this read.
        #expect(abs(after - trendRate) <= max(0.5 * abs(trendRate), 1e6), "published \(after), trend \(trendRate)")
    }

    @Test func startPublishingRecordsAtOnceAndStops() async throws {
        try AllocationTracker.start(.init(limits: .init(containerFraction: nil, onAllocationFailure: false)))
        defer { AllocationTracker.stop() }
        let metrics = TestMetrics()
        let publisher = AllocationTrackingMetrics.startPublishing(every: .milliseconds(20), factory: metrics)
        defer { publisher.stop() }
        for _ in 0..<200 where (try? metrics.expectGauge("allocation_tracking_heap_bytes")) == nil {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(try metrics.expectGauge("allocation_tracking_heap_bytes").lastValue != nil)
    }
}

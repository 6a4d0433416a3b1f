import AllocationTracking
import CoreMetrics
import Synchronization

/// Publishes the tracker's figures through swift-metrics, for Prometheus (swift-prometheus), OpenTelemetry
/// (swift-otel) or any other backend bootstrapped with `MetricsSystem.bootstrap`.
///
/// ```swift
/// import AllocationTracking
/// import AllocationTrackingMetrics
///
/// try AllocationTracker.start()
/// let publisher = AllocationTrackingMetrics.startPublishing()   // every 10 s, on a task of its own
/// // …
/// publisher.stop()
/// ```
///
/// The names follow Prometheus's conventions: one prefix (`allocation_tracking_`), base units in the name
/// (`_bytes`, `_seconds`), `_total` on counters, dimensions as labels; the process's own metrics (`process_*`)
/// are left to swift-system-metrics. With the default prefix:
///
/// | metric | kind | what | OpenTelemetry counterpart |
/// | --- | --- | --- | --- |
/// | `allocation_tracking_heap_bytes` | gauge | tracked live bytes (`tracedMemory.current`) | |
/// | `allocation_tracking_heap_peak_bytes` | gauge | their peak | |
/// | `allocation_tracking_heap_blocks` | gauge | live blocks | |
/// | `allocation_tracking_allocations_total` | counter | malloc-family allocations | |
/// | `allocation_tracking_allocated_bytes_total` | counter | bytes they requested | |
/// | `allocation_tracking_dropped_allocations_total` | counter | allocations the tables could not record | |
/// | `allocation_tracking_tracker_memory_bytes` | gauge | the tracker's own tables | |
/// | `allocation_tracking_heap_limit_bytes` | gauge | the soft limit on tracked bytes (`limits.trackedBytes`; absent: none) | |
/// | `allocation_tracking_rss_limit_bytes` | gauge | the soft limit on RSS (`limits.rssBytes`; absent: none) | |
/// | `allocation_tracking_rss_bytes` | gauge | resident set size | `process.memory.usage` |
/// | `allocation_tracking_cgroup_usage_bytes` | gauge | the memory cgroup's usage | `container.memory.usage` |
/// | `allocation_tracking_cgroup_working_set_bytes` | gauge | usage less inactive file cache | `container.memory.working_set` |
/// | `allocation_tracking_cgroup_limit_bytes` | gauge | the cgroup's limit (absent: none) | `container.memory.limit` |
/// | `allocation_tracking_growth_bytes_per_second{series}` | gauge | least-squares slope over the window; `series`: `heap`, `rss`, `cgroup_usage`, `working_set` | |
/// | `allocation_tracking_growth_fit_ratio{series}` | gauge | its fit (r², 0…1) | |
/// | `allocation_tracking_seconds_to_limit{limit}` | gauge | projected time to a limit, absent while not growing; `limit`: `container`, `container_trigger`, `heap`, `rss` | |
/// | `allocation_tracking_reports_total{trigger}` | counter | reports written, by trigger (`container_memory_limit`, `predicted_exhaustion`, …) | |
///
/// The series, the growth figures and the time to the limits come from the watchdog's history
/// (`AllocationTracker.trend(over:)`): they are as fresh as its last sample (`Configuration.trend.interval`) and
/// absent when the history is off. While the tracker is stopped nothing is recorded.
public enum AllocationTrackingMetrics {
    /// Starts publishing every `interval` on a detached task, and once right away. Returns the publisher;
    /// publishing stops when `stop()` is called (or the publisher is released).
    ///
    /// - Parameters:
    ///   - interval: Time between two updates (default 10 s, the trend's default interval).
    ///   - window: The window the growth rates and projections are fitted over (default 15 minutes).
    ///   - prefix: The metric names' prefix (default `allocation_tracking_`).
    ///   - dimensions: Labels added to every metric (the service, say).
    ///   - factory: The metrics backend (default: the one bootstrapped in `MetricsSystem`).
    public static func startPublishing(every interval: Duration = .seconds(10), window: Duration = .seconds(900),
                                       prefix: String = "allocation_tracking_", dimensions: [(String, String)] = [],
                                       factory: MetricsFactory = MetricsSystem.factory) -> MetricsPublisher {
        let publisher = MetricsPublisher(window: window, prefix: prefix, dimensions: dimensions, factory: factory)
        publisher.start(every: interval)
        return publisher
    }
}

/// Records the tracker's figures into swift-metrics (see `AllocationTrackingMetrics`). `publish()` records once;
/// `AllocationTrackingMetrics.startPublishing` calls it periodically.
public final class MetricsPublisher: Sendable {
    private let window: Duration
    private let prefix: String
    private let dimensions: [(String, String)]
    private let factory: MetricsFactory
    private let task = Mutex<Task<Void, Never>?>(nil)
    /// What the counters last published (counters only go up: swift-metrics takes increments).
    private let state = Mutex(State())

    private struct State {
        var allocations = 0
        var allocatedBytes = 0
        var dropped = 0
        var mergedSignals = 0
        var reports: [AllocationReport.Trigger: Int] = [:]
        /// Gauges that exist now and may have to disappear (a limit that stopped being approached).
        var present: Set<String> = []
    }

    public init(window: Duration = .seconds(900), prefix: String = "allocation_tracking_",
                dimensions: [(String, String)] = [], factory: MetricsFactory = MetricsSystem.factory) {
        self.window = window
        self.prefix = prefix
        self.dimensions = dimensions
        self.factory = factory
    }

    deinit { task.withLock { $0?.cancel() } }

    func start(every interval: Duration) {
        let newTask = Task.detached { [weak self] in
            while !Task.isCancelled {
                self?.publish()
                try? await Task.sleep(for: interval)
            }
        }
        task.withLock { $0 = newTask }
    }

    /// Stops the periodic publishing (the metrics keep their last values in the backend).
    public func stop() { task.withLock { $0?.cancel(); $0 = nil } }

    /// Records every metric once now. Does nothing while the tracker is stopped.
    public func publish() {
        guard AllocationTracker.isTracing else { return }
        let memory = AllocationTracker.tracedMemory
        gauge("heap_bytes", memory.current)
        gauge("heap_peak_bytes", memory.peak)
        gauge("heap_blocks", memory.liveBlocks)
        gauge("tracker_memory_bytes", AllocationTracker.trackerMemory)
        let reports = AllocationTracker.reportsWritten
        let mergedSignals = AllocationTracker.reportSignalsMerged
        let increments = state.withLock { state -> [(String, [(String, String)], Int)] in
            // A total below the last one means the tables were cleared (clearTraces, a restart): count afresh.
            func delta(_ now: Int, _ last: inout Int) -> Int {
                defer { last = now }
                return now >= last ? now - last : now
            }
            var out = [
                ("allocations_total", [], delta(memory.totalAllocations, &state.allocations)),
                ("allocated_bytes_total", [], delta(memory.totalAllocatedBytes, &state.allocatedBytes)),
                ("dropped_allocations_total", [], delta(memory.droppedAllocations, &state.dropped)),
                ("report_signals_merged_total", [], delta(mergedSignals, &state.mergedSignals)),
            ] as [(String, [(String, String)], Int)]
            for trigger in AllocationReport.Trigger.allCases {
                var last = state.reports[trigger] ?? -1
                let now = reports[trigger] ?? 0
                // First publication: the counter appears (at its value), so that rate() has a series to start from.
                let amount = last < 0 ? now : delta(now, &last)
                state.reports[trigger] = now
                out.append(("reports_total", [("trigger", Self.labelValue(trigger))], amount))
            }
            return out
        }
        for (name, labels, amount) in increments {
            Counter(label: prefix + name, dimensions: dimensions + labels, factory: factory).increment(by: Int64(amount))
        }

        guard let trend = try? AllocationTracker.trend(over: window) else { return }
        var present: Set<String> = []
        func optional(_ name: String, _ labels: [(String, String)], _ value: Double?) {
            let key = name + labels.map { "|\($0.0)=\($0.1)" }.joined()
            if let value {
                Gauge(label: prefix + name, dimensions: dimensions + labels, factory: factory).record(value)
                present.insert(key)
            }
        }
        // The configured soft limits, so that a dashboard or a rule can put the heap next to its limit
        // (`allocation_tracking_heap_bytes / allocation_tracking_heap_limit_bytes`).
        let limits = AllocationTracker.configuration?.limits
        optional("heap_limit_bytes", [], limits?.trackedBytes.map(Double.init))
        optional("rss_limit_bytes", [], limits?.rssBytes.map(Double.init))
        optional("rss_bytes", [], trend.rss.map { Double($0.latest) })
        optional("cgroup_usage_bytes", [], trend.containerUsage.map { Double($0.latest) })
        optional("cgroup_working_set_bytes", [], trend.workingSet.map { Double($0.latest) })
        optional("cgroup_limit_bytes", [], trend.containerLimit.map(Double.init))
        for (series, rate) in [("heap", trend.tracked), ("rss", trend.rss), ("cgroup_usage", trend.containerUsage),
                               ("working_set", trend.workingSet)] {
            optional("growth_bytes_per_second", [("series", series)], rate.map(\.bytesPerSecond))
            optional("growth_fit_ratio", [("series", series)], rate.map(\.fit))
        }
        for (limit, time) in [("container", trend.timeToContainerLimit), ("container_trigger", trend.timeToContainerSoftLimit),
                              ("heap", trend.timeToTrackedLimit), ("rss", trend.timeToRSSLimit)] {
            optional("seconds_to_limit", [("limit", limit)], time.map(Self.seconds))
        }
        // Gauges that were present and are not now (a limit no longer approached) are destroyed, so that the
        // backend drops the series rather than repeat a stale projection.
        let gone = state.withLock { state -> Set<String> in
            defer { state.present = present }
            return state.present.subtracting(present)
        }
        for key in gone {
            let parts = key.split(separator: "|").map(String.init)
            let labels = parts.dropFirst().map { part -> (String, String) in
                let pair = part.split(separator: "=", maxSplits: 1).map(String.init)
                return (pair[0], pair.count > 1 ? pair[1] : "")
            }
            Gauge(label: prefix + parts[0], dimensions: dimensions + labels, factory: factory).destroy()
        }
    }

    private func gauge(_ name: String, _ value: Int) {
        Gauge(label: prefix + name, dimensions: dimensions, factory: factory).record(Double(value))
    }

    /// `container memory limit` → `container_memory_limit`: a Prometheus label value without spaces.
    static func labelValue(_ trigger: AllocationReport.Trigger) -> String {
        trigger.rawValue.lowercased().split(whereSeparator: { !$0.isLetter && !$0.isNumber }).joined(separator: "_")
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
    }
}

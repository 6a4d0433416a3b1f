import Synchronization

extension AllocationTracker {
    /// Reports written since the process started, by trigger (every trigger present, 0 when it wrote none): what
    /// `AllocationTrackingMetrics` publishes as `allocation_tracking_reports_total{trigger=…}`. An
    /// allocation-failure report counts once its follow-up ran (the watchdog, after its pause).
    public static var reportsWritten: [AllocationReport.Trigger: Int] {
        _ReportCounts.counts.withLock { counts in
            Dictionary(uniqueKeysWithValues: AllocationReport.Trigger.allCases.map { ($0, counts[$0] ?? 0) })
        }
    }
}

/// The counts behind `AllocationTracker.reportsWritten` (a leaf lock; taken after a report is written).
enum _ReportCounts {
    static let counts = Mutex<[AllocationReport.Trigger: Int]>([:])

    static func count(_ trigger: AllocationReport.Trigger) { counts.withLock { $0[trigger, default: 0] += 1 } }
}

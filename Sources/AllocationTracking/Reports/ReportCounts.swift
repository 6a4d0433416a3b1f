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

extension AllocationTracker {
    /// Report signals (`Limits.signal`) merged into another report since the process started: those that arrived
    /// while a report was being written, answered together by the next one (which says how many it merged). Every
    /// signal received is answered by one report: signals received = `reportsWritten[.signal]` + this, once the
    /// reports in progress are written. Published by `AllocationTrackingMetrics` as
    /// `allocation_tracking_report_signals_merged_total`.
    public static var reportSignalsMerged: Int { _ReportCounts.mergedSignals.load(ordering: .relaxed) }

    /// How long a report waits for the names of its frames before printing the rest as `image+0xoffset` (tests:
    /// 0 shows what a report looks like when the symbolicator is busy).
    @_spi(Testing) public static var _reportNameBudget: Duration {
        get { .nanoseconds(Int64(_ReportWriter.nameBudgetNs.load(ordering: .relaxed))) }
        set {
            let (seconds, attoseconds) = newValue.components
            _ReportWriter.nameBudgetNs.store(UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000),
                                             ordering: .relaxed)
        }
    }
}

/// The counts behind `AllocationTracker.reportsWritten` (a leaf lock; taken after a report is written) and
/// `reportSignalsMerged`.
enum _ReportCounts {
    static let counts = Mutex<[AllocationReport.Trigger: Int]>([:])
    static let mergedSignals = Atomic<Int>(0)

    static func count(_ trigger: AllocationReport.Trigger) { counts.withLock { $0[trigger, default: 0] += 1 } }
    static func countMergedSignals(_ signals: Int) { mergedSignals.add(signals, ordering: .relaxed) }
}

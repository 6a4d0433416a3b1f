import CAllocationTracking
import Synchronization
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A top-allocators report: written on its own when a limit is crossed (see `Configuration.Limits`), on a
/// signal, at exit, or on demand with `AllocationTracker.writeReport(reason:)`.
///
/// The text goes to standard error first (so that it survives in a container's log, `kubectl logs --previous`,
/// even when the process is killed while the files are written), then to `alloc-report-<pid>-<UTC time>.txt` in
/// `Configuration.Report.directory`, then the snapshot as JSON next to it (`.json`, or the next free name). Both
/// files are mode 0600, created with `O_CREAT|O_EXCL|O_NOFOLLOW` and fsync'd; a file that cannot be written
/// completely (a full disk) is removed — except a partial text file that is the report's only copy (standard
/// error off or failing) — and `problems` says what was and was not written.
public struct AllocationReport: Sendable {
    public enum Trigger: String, Sendable, Hashable, CaseIterable {
        case allocationFailure = "allocation failure"
        case trackedLimit = "tracked memory limit"
        case rssLimit = "RSS limit"
        case containerLimit = "container memory limit"
        /// Memory is projected to reach its limit within `Limits.predictedExhaustion`.
        case predictedExhaustion = "predicted exhaustion"
        case signal
        case onDemand = "on demand"
        case exit = "exit"
    }

    public var trigger: Trigger
    public var reason: String
    /// The report as written.
    public var text: String
    /// The report file, or nil (no directory configured, or it could not be created or written: see `problems`).
    public var file: String?
    /// The snapshot's JSON file next to it, or nil (see `problems`).
    public var snapshotFile: String?
    /// What could not be done (an unwritable directory, a full disk: what was and was not written); also written
    /// to standard error.
    public var problems: [String]
    /// The snapshot the report was made from.
    public var snapshot: Snapshot
}

extension AllocationTracker {
    /// Writes a report now (trigger `.onDemand`), like jemalloc's `prof.dump` or `jcmd GC.heap_dump`.
    ///
    /// - Throws: `.notTracing` when tracking is stopped.
    @discardableResult
    public static func writeReport(reason: String = "requested by the application") throws -> AllocationReport {
        try _ReportWriter.write(trigger: .onDemand, reason: reason)
    }

    /// Called after every report is written (from the thread that wrote it: the watchdog for limits and
    /// signals), to flush logs or export a profile. Runs outside the allocation path; keep it short. For an
    /// allocation failure (written inside the failing call, without allocating) the watchdog calls it once its
    /// pause after the failure (`Limits.pauseAfterAllocationFailure`) is over, with the report's text and the peak
    /// snapshot.
    public static var onReport: (@Sendable (AllocationReport) -> Void)? {
        get { _ReportWriter.callback.withLock { $0 } }
        set { _ReportWriter.callback.withLock { $0 = newValue } }
    }
}

/// Builds and writes reports (outside malloc; the calling thread's tracking is suspended meanwhile).
enum _ReportWriter {
    /// Writes `snapshot` as JSON next to the report at `path` (`_ReportFile.writeCompanion`: 0600, never over an
    /// existing file); returns the JSON's path, or nil with what went wrong added to `problems`.
    static func writeSnapshotJSON(_ snapshot: Snapshot, nextTo path: String, problems: inout [String]) -> String? {
        do {
            let data = try snapshot.jsonData()
            let json = data.withUnsafeBytes { _ReportFile.writeCompanion(of: path, $0) }
            if json.succeeded { return json.path }
            if json.path.isEmpty || (json.written == 0 && !json.removed) {
                problems.append("cannot create the snapshot JSON next to \(path): \(_ReportFile.describe(json.error))")
            } else {
                problems.append(json.problem("the snapshot JSON"))
            }
        } catch {
            problems.append("could not encode the snapshot JSON: \(error)")
        }
        return nil
    }

    static let callback = Mutex<(@Sendable (AllocationReport) -> Void)?>(nil)
    /// The previous report's snapshot and time, for "growth since the previous report".
    static let previous = Mutex<(Snapshot, String)?>(nil)
    /// Serialises report writing (the watchdog and an on-demand call may coincide).
    static let writing = Mutex(())
    /// The allocation-failure report sequence (`cat_emergency_followup_sequence`) already followed up; set to
    /// the current value at every start, so only reports written while tracking runs are followed up.
    static let followedUp = Atomic<UInt64>(0)

    /// How long a report waits for the names of its frames (see `_ReportNames`): what is not named by then is
    /// printed as `image+0xoffset (build id …)`. A report asked for by signal or by `writeReport` must appear
    /// within a second; the at-exit report has nobody waiting on it and the process's own shutdown to keep up
    /// with, so it waits longer. Settable for tests (`_reportNameBudget`).
    static let nameBudgetNs = Atomic<UInt64>(500_000_000)
    static let exitNameBudgetNs: UInt64 = 10_000_000_000

    /// `mergedSignals`: report signals beyond the one this report answers, which arrived while the previous
    /// report was being written (said in the report, counted in `reportSignalsMerged`).
    static func write(trigger: AllocationReport.Trigger, reason: String, mergedSignals: Int = 0) throws -> AllocationReport {
        let state = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        defer { _ = cat_thread_set_state(state) }
        guard let configuration = AllocationTracker.configuration else {
            throw AllocationTrackingError(.notTracing, "writeReport() needs tracking on: call AllocationTracker.start() first")
        }
        let report = try writing.withLock { _ in
            try compose(trigger: trigger, reason: reason, configuration: configuration, mergedSignals: mergedSignals)
        }
        if mergedSignals > 0 { _ReportCounts.countMergedSignals(mergedSignals) }
        _ReportCounts.count(trigger)
        callback.withLock { $0 }?(report)
        return report
    }

    /// A report of live memory (and its snapshot JSON). Its content is copied first, at the moment the report was
    /// asked for (what crossed a limit, what the signal asked about), then its frames are named within the budget;
    /// the header says when the content was copied and when the report was written, how many frames were not named
    /// in time, and how many signals were merged into it.
    static func compose(trigger: AllocationReport.Trigger, reason: String, configuration: AllocationTracker.Configuration,
                        mergedSignals: Int = 0) throws -> AllocationReport {
        let copy = try AllocationTracker._copyTraces(.live)
        let budget = trigger == .exit ? exitNameBudgetNs : nameBudgetNs.load(ordering: .relaxed)
        _ReportNames.captureImages()  // for the frames not named in time (image+offset, build id)
        let addresses = copy.addresses
        let names = _ReportNames.resolve(addresses, deadlineNs: copy.copiedAtNs &+ budget)
        let unnamed = addresses.subtracting(names.keys)
        let frameNames = _FrameNames(names, unnamed: _ReportNames.unnamed)
        let snapshot = copy.snapshot(names: frameNames)
        let writtenUnixNs = _unixNanoseconds()
        let seconds = writtenUnixNs / 1_000_000_000
        let time = _utcTimestamp(seconds)
        let top = configuration.report.topSites
        var lines: [String] = []
        lines.append("==== swift-allocation-tracking report: \(trigger.rawValue) ====")
        lines.append("reason: \(reason)")
        lines.append("time: \(time)")
        lines.append("content: as of \(_utcClock(copy.copiedAtUnixNs)) UTC, written \(_utcClock(writtenUnixNs)) UTC")
        if !unnamed.isEmpty {
            lines.append("names: \(unnamed.count) of \(addresses.count) return addresses not resolved within "
                         + "\(_fixed(Double(budget) / 1e9, decimals: 1, sign: false)) s (symbolication busy or slow): "
                         + "shown as image+0xoffset (build id …)")
        }
        if mergedSignals > 0 {
            lines.append("signals: \(mergedSignals) report signal\(mergedSignals == 1 ? "" : "s") merged into this one "
                         + "(they arrived while another report was being written, or during the pause after an allocation failure)")
        }
        lines.append("pid: \(snapshot.processID)" + (snapshot.executable.map { " (\($0))" } ?? ""))
        let memory = snapshot.tracedMemory ?? TracedMemory()
        lines.append("tracked: current=\(_formatSize(memory.current)), peak=\(_formatSize(memory.peak)), "
                     + "live blocks=\(memory.liveBlocks), dropped allocations=\(memory.droppedAllocations)"
                     + (_ReportFormatter.estimateNote(snapshot.sampling).map { " (\($0))" } ?? ""))
        lines.append("rss: \(_formatSize(Int(truncatingIfNeeded: cat_process_rss_bytes())))")
        lines.append(_ReportFormatter.trackerMemory(AllocationTracker.trackerMemoryBreakdown))
        if let cgroup = _Watchdog.cgroupReading(configuration) { lines.append(_ReportFormatter.cgroup(cgroup, configuration)) }
        var score: Int32 = 0, adjust: Int32 = 0
        if cat_read_oom_score(&score, &adjust) == 0 { lines.append("oom_score: \(score), oom_score_adj: \(adjust)") }

        let stats = try snapshot.statistics(groupedBy: .line)
        let samples = snapshot._largestTraces(by: .line, attribution: .default)
        let total = max(1, snapshot.totalSize)
        lines.append(_ReportFormatter.heading("Top \(top) sites by live bytes"))
        let buildIDs = unnamed.isEmpty ? [:] : Self.buildIDs(snapshot.images)
        lines += _ReportFormatter.ranked(stats.prefix(top), depth: 4, attribution: .default,
                                         line: { "\($0), share=\(_percent($0.size, of: total))" },
                                         traceback: { _, stat in samples[snapshot._keyOf(stat.traceback, .line)]?.traceback },
                                         annotate: { frame in
            guard unnamed.contains(frame.address), frame.function == nil, let image = frame.image,
                  let id = buildIDs[image] else { return nil }
            return "(build id \(id))"
        })
        if stats.count > top {
            let rest = stats.dropFirst(top)
            lines.append(_ReportFormatter.rest(rest.count, "other sites", size: rest.reduce(0) { $0 + $1.size },
                                               count: rest.reduce(0) { $0 + $1.count }))
        }
        if let (older, olderTime) = previous.withLock({ $0 }) {
            lines.append(_ReportFormatter.heading("Top \(top) growth since the previous report (\(olderTime))"))
            let diffs = try snapshot.compared(to: older, groupedBy: .line).filter { $0.sizeDiff > 0 }
                .sorted { $0.sizeDiff > $1.sizeDiff }
            lines += _ReportFormatter.ranked(diffs.prefix(top), depth: 0, attribution: .default,
                                             line: \.description) { _, _ in nil }
            if diffs.isEmpty { lines.append("(no site grew)") }
        }
        lines += _ReportFormatter.trendLines(_Watchdog.reportTrend(configuration, names: frameNames), topSites: min(top, 5))
        lines.append("==== end of report ====")
        let text = _ReportFormatter.text(lines)
        previous.withLock { $0 = (snapshot, time) }

        // Standard error first: under a fast OOM kill the copy in the container's log is the one that survives.
        // The text file is created before (so that a problem creating it is said with the report) and written
        // after; the JSON last.
        var problems: [String] = []
        var file: String?
        var snapshotFile: String?
        var fd: Int32 = -1
        var path = ""
        if let directory = configuration.report.directory {
            var buffer = [CChar](repeating: 0, count: 4096)
            fd = cat_report_open_file(directory, Int32(snapshot.processID), seconds, &buffer, buffer.count)
            path = _ReportFile.path(buffer)
            if fd < 0 {
                problems.append("cannot create a report file in \(directory): \(_ReportFile.describe(-fd)); "
                                + "the report is on standard error only")
            }
        }
        var standardErrorHasTheReport = false
        if configuration.report.standardError || !problems.isEmpty {
            var out = configuration.report.standardError ? text : ""
            for problem in problems { out += "swift-allocation-tracking: \(problem)\n" }
            let complete = _ReportFile.writeStandardError(out)
            standardErrorHasTheReport = configuration.report.standardError && complete
        }
        let reported = problems.count
        if fd >= 0 {
            var utf8 = text
            let outcome = utf8.withUTF8 {
                _ReportFile.finish(fd, path: path, bytes: UnsafeRawBufferPointer($0),
                                   keepPartial: !standardErrorHasTheReport)
            }
            if outcome.succeeded {
                file = path
            } else {
                if !outcome.removed { file = path }
                problems.append(outcome.problem("the report file", removedBecause: standardErrorHasTheReport
                    ? " (the report is on standard error)" : " (it held nothing)"))
            }
            // The snapshot as JSON next to the text file (the text's own name, written or not, gives its name).
            snapshotFile = writeSnapshotJSON(snapshot, nextTo: path, problems: &problems)
        }
        if problems.count > reported {
            _ReportFile.writeStandardError(problems[reported...].map { "swift-allocation-tracking: \($0)\n" }.joined())
        }
        return AllocationReport(trigger: trigger, reason: reason, text: text, file: file, snapshotFile: snapshotFile,
                                problems: problems, snapshot: snapshot)
    }

    /// Each image's build id by file name (the name an unnamed frame shows).
    static func buildIDs(_ images: [Snapshot.Image]) -> [String: String] {
        var ids: [String: String] = [:]
        for image in images {
            guard let id = image.buildID else { continue }
            ids[String(image.path.split(separator: "/").last ?? Substring(image.path))] = id
        }
        return ids
    }

    /// A session begins (`_TrackerLifecycle.startLocked`, before arming): only allocation-failure reports written
    /// from now on are followed up.
    static func beginSession() { followedUp.store(cat_emergency_followup_sequence(), ordering: .releasing) }

    /// Forgets the previous report (tracking stopped or cleared).
    static func reset() { previous.withLock { $0 = nil } }

    /// Whether an allocation-failure report was written since the last follow-up (polled by the watchdog; no
    /// allocation).
    static var allocationFailureAwaitsFollowUp: Bool {
        cat_emergency_followup_sequence() != followedUp.load(ordering: .acquiring)
    }

    /// What the allocation-failure report could not do from inside the failing malloc, done by the watchdog once
    /// its pause after the failure is over (memory may be back): the snapshot JSON next to the text file — the
    /// *peak* snapshot, who held the memory at its highest, which an allocation failure normally is (the text
    /// file's own list is the live memory at the failure) — and the `onReport` callback, with the text as written.
    /// Returns nil when tracking stopped meanwhile.
    static func followUpAllocationFailure() -> AllocationReport? {
        let state = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        defer { _ = cat_thread_set_state(state) }
        let report: AllocationReport? = writing.withLock { _ in
            // The report's path and sequence, copied consistently (another report may be written meanwhile: it
            // gets its own follow-up), before the snapshot.
            var buffer = [CChar](repeating: 0, count: 4200)
            var outcome = cat_emergency_file_outcome()
            let sequence = cat_emergency_followup(&buffer, buffer.count, &outcome)
            guard sequence != followedUp.load(ordering: .acquiring) else { return nil }
            followedUp.store(sequence, ordering: .releasing)
            guard let snapshot = try? AllocationTracker.takeSnapshot(at: .peak) else { return nil }
            let path = _ReportFile.path(buffer)
            // What the report itself could not write (already said on stderr by the report).
            var problems: [String] = []
            if outcome.error != 0 {
                let error = _ReportFile.describe(outcome.error)
                if path.isEmpty {
                    problems.append("cannot create the allocation-failure report file: \(error)")
                } else {
                    problems.append("could not write the allocation-failure report file \(path): \(error) after "
                                    + "\(outcome.written) of \(outcome.total) bytes; "
                                    + (outcome.removed != 0 ? "the file is removed" : "the incomplete file is kept"))
                }
            }
            let reported = problems.count
            let fileRemains = !path.isEmpty && outcome.removed == 0
            var text = ""
            var snapshotFile: String?
            if fileRemains {
                do {
                    text = try String(contentsOf: URL(fileURLWithPath: path), encoding: .utf8)
                } catch {
                    problems.append("could not read back the allocation-failure report \(path): \(error)")
                }
            }
            if !path.isEmpty {
                snapshotFile = writeSnapshotJSON(snapshot, nextTo: path, problems: &problems)
            }
            if problems.count > reported {
                _ReportFile.writeStandardError(problems[reported...].map { "swift-allocation-tracking: \($0)\n" }.joined())
            }
            // The trigger line of the text ("trigger: allocation failure: malloc(1048576) returned NULL (ENOMEM)").
            let prefix = "trigger: allocation failure: "
            let reason = text.split(separator: "\n").first { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
                ?? "an allocation failed (the report is on standard error)"
            return AllocationReport(trigger: .allocationFailure, reason: reason, text: text, file: fileRemains ? path : nil,
                                    snapshotFile: snapshotFile, problems: problems, snapshot: snapshot)
        }
        if let report {
            _ReportCounts.count(.allocationFailure)
            callback.withLock { $0 }?(report)
        }
        return report
    }
}

/// `2026-11-21T19:40:00Z` from Unix seconds: `cat_format_utc`, the one date formatter of every report (C and
/// Swift; no locale, no allocation-heavy formatter).
func _utcTimestamp(_ seconds: Int64) -> String {
    withUnsafeTemporaryAllocation(of: CChar.self, capacity: Int(CAT_UTC_TEXT_SIZE)) { buffer in
        let length = cat_format_utc(seconds, false, buffer.baseAddress!)
        return String(decoding: UnsafeRawBufferPointer(start: buffer.baseAddress, count: length), as: UTF8.self)
    }
}

/// `19:40:00.123` (UTC) from nanoseconds since the Unix epoch: the time of day of `_utcTimestamp`, with
/// milliseconds (a report's content and writing times are seconds apart at most).
func _utcClock(_ unixNanoseconds: Int64) -> String {
    let seconds = unixNanoseconds >= 0 ? unixNanoseconds / 1_000_000_000 : (unixNanoseconds + 1) / 1_000_000_000 - 1
    let millis = Int((unixNanoseconds - seconds * 1_000_000_000) / 1_000_000)
    let stamp = _utcTimestamp(seconds)  // …THH:MM:SSZ
    let clock = stamp.split(separator: "T").last.map { $0.dropLast() } ?? Substring(stamp)
    return "\(clock)." + (millis < 10 ? "00" : millis < 100 ? "0" : "") + "\(millis)"
}

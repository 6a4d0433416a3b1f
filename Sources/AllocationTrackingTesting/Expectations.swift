import AllocationTracking
import Foundation
import Testing

// Allocation expectations for Swift Testing (and XCTest, below). Built on the public API only:
// `AllocationTracker.measure` and the `AllocationMeasurement` it returns.

extension AllocationMeasurement {
    /// The failure text for a scope that leaked, or nil when nothing allocated in the scope is still live:
    /// the leaked blocks and bytes, then the top `limit` leaking sites (file:line and function), largest first.
    /// With `callerFile` (the test's `#filePath`), each site also names the line of that file its stack passes
    /// through: the test's own call into the leaking code, which the allocating line alone does not show.
    public func leakFailureMessage(limit: Int = 5, callerFile: String? = nil) -> String? {
        guard leakedBlocks > 0 else { return nil }
        var lines = ["\(leakedBlocks) block(s) (\(leakedBytes) B) allocated inside the scope are still live at its end."]
        lines += topSites(limit: limit, callerFile: callerFile)
        return lines.joined(separator: "\n")
    }

    /// "Top sites" lines: `  file:line in function: N blocks, B bytes`, from `leaked` grouped by traceback so
    /// that each site keeps its stack; with `callerFile`, followed by `    called from file:line in function`.
    public func topSites(limit: Int = 5, callerFile: String? = nil) -> [String] {
        guard let statistics = try? leaked.statistics(groupedBy: .line), !statistics.isEmpty else { return [] }
        var lines = ["Top leaking sites:"]
        for statistic in statistics.prefix(limit) {
            let frame = statistic.traceback.attributionFrame()
            var site = frame?.description ?? "<no stack: counting-only measurement>"
            if let function = frame?.function, frame?.file != nil { site += " in \(function)" }
            lines.append("  \(site): \(statistic.count) block(s), \(statistic.size) B")
            if let callerFile, let caller = callerFrame(of: statistic, in: callerFile, after: frame) {
                var text = "    called from \(caller.description)"
                if let function = caller.function { text += " in \(function)" }
                lines.append(text)
            }
        }
        return lines
    }

    /// The most recent frame in `file` below the site's attribution frame, in any of the leaked stacks that
    /// share the site's line (a `.line` statistic keeps only the attribution frame, so the full stacks come from
    /// `leaked`).
    private func callerFrame(of statistic: Statistic, in file: String, after site: Frame?) -> Frame? {
        let attribution = Attribution.default
        for trace in leaked.traces where trace.count > 0 {
            let frames = trace.traceback.frames
            guard let siteFrame = attribution.attributionFrame(of: trace.traceback),
                  siteFrame.file == site?.file, siteFrame.line == site?.line,
                  let start = frames.firstIndex(of: siteFrame) else { continue }
            for candidate in frames[frames.index(after: start)...] where candidate.line > 0 {
                if let path = candidate.file, _sameSourceFile(path, file) { return candidate }
            }
        }
        return nil
    }
}

/// Whether two spellings of a source path name one file: equal, or one ends with the other at a path boundary
/// (debug information may record a path relative to the package while `#filePath` is absolute).
func _sameSourceFile(_ a: String, _ b: String) -> Bool {
    if a == b { return true }
    let (long, short) = a.count >= b.count ? (a, b) : (b, a)
    return !short.isEmpty && long.hasSuffix(short) && (short.hasPrefix("/") || long.dropLast(short.count).hasSuffix("/"))
}

extension AllocationMeasurement {

    /// The failure text when more than `limit` allocations were made, or nil.
    public func allocationsFailureMessage(atMost limit: Int) -> String? {
        guard allocations > limit else { return nil }
        return "\(allocations) allocations (\(allocatedBytes) B) inside the scope; expected at most \(limit)."
    }

    /// The failure text when more than `limit` bytes were allocated, or nil.
    public func allocatedBytesFailureMessage(atMost limit: Int) -> String? {
        guard allocatedBytes > limit else { return nil }
        return "\(allocatedBytes) B allocated inside the scope (\(allocations) allocations); expected at most \(limit) B."
    }
}

extension AllocationMeasurement {
    /// The failure text when the tracker dropped allocations while the scope ran (its counts may be low).
    public var droppedFailureMessage: String? {
        guard droppedAllocations > 0 else { return nil }
        return "the tracker could not record \(droppedAllocations) allocation(s) while measuring (a full table: "
            + "raise Configuration.maxTraces): the counts are incomplete."
    }
}

private func record(_ message: String?, _ comment: Comment?, _ sourceLocation: SourceLocation) {
    guard let message else { return }
    Issue.record(comment.map { "\($0.rawValue)\n\(message)" } ?? Comment(rawValue: message), sourceLocation: sourceLocation)
}

/// Records an issue when a block allocated inside `body` (on the calling thread, or every thread with
/// `.process`) is still live when it returns, naming the top leaking sites with file:line.
/// Returns the measurement; rethrows what `body` throws.
@discardableResult
public func expectNoLeaks<R>(_ comment: Comment? = nil, scope: AllocationTracker.MeasurementScope = .thread,
                             sourceLocation: SourceLocation = #_sourceLocation,
                             _ body: () throws -> R) throws -> AllocationMeasurement {
    let measurement = try AllocationTracker.measure(scope, captureStacks: true, body)
    record(measurement.droppedFailureMessage, comment, sourceLocation)
    record(measurement.leakFailureMessage(callerFile: sourceLocation.filePath), comment, sourceLocation)
    return measurement
}

/// Records an issue when `body` makes more than `limit` allocations (counting-only: no stacks captured).
@discardableResult
public func expectAllocations<R>(atMost limit: Int, _ comment: Comment? = nil,
                                 scope: AllocationTracker.MeasurementScope = .thread,
                                 sourceLocation: SourceLocation = #_sourceLocation,
                                 _ body: () throws -> R) throws -> AllocationMeasurement {
    let measurement = try AllocationTracker.measure(scope, captureStacks: false, body)
    record(measurement.droppedFailureMessage, comment, sourceLocation)
    record(measurement.allocationsFailureMessage(atMost: limit), comment, sourceLocation)
    return measurement
}

/// Records an issue when `body` allocates more than `limit` bytes (counting-only).
@discardableResult
public func expectAllocatedBytes<R>(atMost limit: Int, _ comment: Comment? = nil,
                                    scope: AllocationTracker.MeasurementScope = .thread,
                                    sourceLocation: SourceLocation = #_sourceLocation,
                                    _ body: () throws -> R) throws -> AllocationMeasurement {
    let measurement = try AllocationTracker.measure(scope, captureStacks: false, body)
    record(measurement.droppedFailureMessage, comment, sourceLocation)
    record(measurement.allocatedBytesFailureMessage(atMost: limit), comment, sourceLocation)
    return measurement
}

/// `expectNoLeaks` for async code: a process-wide measurement (use it in `.serialized` tests).
@discardableResult
public func expectNoLeaks<R>(_ scope: AllocationTracker.AsyncMeasurementScope, _ comment: Comment? = nil,
                             sourceLocation: SourceLocation = #_sourceLocation,
                             _ body: () async throws -> R) async throws -> AllocationMeasurement {
    let measurement = try await AllocationTracker.measure(scope, captureStacks: true, body)
    record(measurement.droppedFailureMessage, comment, sourceLocation)
    record(measurement.leakFailureMessage(callerFile: sourceLocation.filePath), comment, sourceLocation)
    return measurement
}

/// `expectAllocations(atMost:)` for async code: a process-wide measurement (use it in `.serialized` tests).
@discardableResult
public func expectAllocations<R>(atMost limit: Int, _ scope: AllocationTracker.AsyncMeasurementScope,
                                 _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation,
                                 _ body: () async throws -> R) async throws -> AllocationMeasurement {
    let measurement = try await AllocationTracker.measure(scope, captureStacks: false, body)
    record(measurement.droppedFailureMessage, comment, sourceLocation)
    record(measurement.allocationsFailureMessage(atMost: limit), comment, sourceLocation)
    return measurement
}

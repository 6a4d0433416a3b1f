import AllocationTrackingTestSupport
import Testing

/// A suite trait: the suite owns the process-wide tracker while it runs. Every test target is linked into one
/// test process, so suites in different targets that start/stop the tracker (or measure, which starts it
/// implicitly) would otherwise stop each other's tracker. Applied once per suite (tests inside pass through).
/// One copy, in this support target, for both test targets.
public struct TrackerExclusive: SuiteTrait, TestScoping {
    public var isRecursive: Bool { false }

    public init() {}

    public func provideScope(for test: Test, testCase: Test.Case?,
                             performing function: @Sendable () async throws -> Void) async throws {
        guard test.isSuite else { return try await function() }
        while ats_tracker_try_acquire() == 0 { try await Task.sleep(for: .milliseconds(5)) }
        defer { ats_tracker_release() }
        try await function()
    }
}

extension Trait where Self == TrackerExclusive {
    public static var trackerExclusive: Self { TrackerExclusive() }
}

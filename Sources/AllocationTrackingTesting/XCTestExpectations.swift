#if canImport(XCTest)
import AllocationTracking
import XCTest

// The same expectations for XCTest: failures are reported with XCTFail at the caller's file:line.

/// XCTest: fails when a block allocated inside `body` is still live when it returns (top sites named).
@discardableResult
public func XCTAssertNoLeaks<R>(_ message: @autoclosure () -> String = "",
                                scope: AllocationTracker.MeasurementScope = .thread,
                                file: StaticString = #filePath, line: UInt = #line,
                                _ body: () throws -> R) throws -> AllocationMeasurement {
    let measurement = try AllocationTracker.measure(scope, captureStacks: true, body)
    if let failure = measurement.leakFailureMessage() { XCTFail(join(message(), failure), file: file, line: line) }
    return measurement
}

/// XCTest: fails when `body` makes more than `limit` allocations.
@discardableResult
public func XCTAssertAllocations<R>(atMost limit: Int, _ message: @autoclosure () -> String = "",
                                    scope: AllocationTracker.MeasurementScope = .thread,
                                    file: StaticString = #filePath, line: UInt = #line,
                                    _ body: () throws -> R) throws -> AllocationMeasurement {
    let measurement = try AllocationTracker.measure(scope, captureStacks: false, body)
    if let failure = measurement.allocationsFailureMessage(atMost: limit) {
        XCTFail(join(message(), failure), file: file, line: line)
    }
    return measurement
}

/// XCTest: fails when `body` allocates more than `limit` bytes.
@discardableResult
public func XCTAssertAllocatedBytes<R>(atMost limit: Int, _ message: @autoclosure () -> String = "",
                                       scope: AllocationTracker.MeasurementScope = .thread,
                                       file: StaticString = #filePath, line: UInt = #line,
                                       _ body: () throws -> R) throws -> AllocationMeasurement {
    let measurement = try AllocationTracker.measure(scope, captureStacks: false, body)
    if let failure = measurement.allocatedBytesFailureMessage(atMost: limit) {
        XCTFail(join(message(), failure), file: file, line: line)
    }
    return measurement
}

private func join(_ message: String, _ failure: String) -> String { message.isEmpty ? failure : "\(message)\n\(failure)" }
#endif

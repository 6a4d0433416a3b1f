#if canImport(XCTest)
import AllocationTracking
import XCTest

// The same expectations for XCTest: failures are reported with XCTFail at the caller's file:line. Like the Swift
// Testing ones, they also fail when the tracker dropped allocations while measuring (the counts are incomplete).

/// XCTest: fails when a block allocated inside `body` is still live when it returns (top sites named).
@discardableResult
public func XCTAssertNoLeaks<R>(_ message: @autoclosure () -> String = "",
                                scope: AllocationTracker.MeasurementScope = .thread,
                                file: StaticString = #filePath, line: UInt = #line,
                                _ body: () throws -> R) throws -> AllocationMeasurement {
    let measurement = try AllocationTracker.measure(scope, captureStacks: true, body)
    fail(measurement.droppedFailureMessage, message(), file, line)
    fail(measurement.leakFailureMessage(callerFile: "\(file)"), message(), file, line)
    return measurement
}

/// XCTest: fails when `body` makes more than `limit` allocations.
@discardableResult
public func XCTAssertAllocations<R>(atMost limit: Int, _ message: @autoclosure () -> String = "",
                                    scope: AllocationTracker.MeasurementScope = .thread,
                                    file: StaticString = #filePath, line: UInt = #line,
                                    _ body: () throws -> R) throws -> AllocationMeasurement {
    let measurement = try AllocationTracker.measure(scope, captureStacks: false, body)
    fail(measurement.droppedFailureMessage, message(), file, line)
    fail(measurement.allocationsFailureMessage(atMost: limit), message(), file, line)
    return measurement
}

/// XCTest: fails when `body` allocates more than `limit` bytes.
@discardableResult
public func XCTAssertAllocatedBytes<R>(atMost limit: Int, _ message: @autoclosure () -> String = "",
                                       scope: AllocationTracker.MeasurementScope = .thread,
                                       file: StaticString = #filePath, line: UInt = #line,
                                       _ body: () throws -> R) throws -> AllocationMeasurement {
    let measurement = try AllocationTracker.measure(scope, captureStacks: false, body)
    fail(measurement.droppedFailureMessage, message(), file, line)
    fail(measurement.allocatedBytesFailureMessage(atMost: limit), message(), file, line)
    return measurement
}

private func fail(_ failure: String?, _ message: String, _ file: StaticString, _ line: UInt) {
    guard let failure else { return }
    XCTFail(message.isEmpty ? failure : "\(message)\n\(failure)", file: file, line: line)
}
#endif

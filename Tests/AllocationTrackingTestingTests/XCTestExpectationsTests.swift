#if canImport(XCTest)
import AllocationTracking
import AllocationTrackingTesting
import AllocationTrackingTestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// A deliberately leaking function for `XCTAssertNoLeaks`: the line of its allocation is returned so the test
/// can look for it in the failure message.
@inline(never)
func xctLeakyFunction() -> (block: UnsafeMutableRawPointer, line: Int) {
    let line = #line + 1
    let block = UnsafeMutableRawPointer.allocate(byteCount: 80, alignment: 16)
    return (block, line)
}

/// Exactly this many blocks of this size per `allocateAndFree()` (from the C helper, so no Swift runtime
/// allocation can add to the count).
private let blockCount = 3
private let blockSize = 100

/// The XCTest helpers (`XCTAssertNoLeaks`, `XCTAssertAllocations(atMost:)`, `XCTAssertAllocatedBytes(atMost:)`).
///
/// Failing cases are proven to fail: on swift-corelibs-xctest, `XCTFail` ends in
/// `XCTestCase.recordFailure(withDescription:inFile:atLine:expected:)`, which this class overrides. Inside
/// `capturingFailures` the failures are kept for the test to check (message, file, line) instead of being
/// recorded; everywhere else they are forwarded to XCTest, so a passing case that fails, fails the test.
///
/// The class holds the process-wide tracker flag (like the `.trackerExclusive` suites) from `setUp` to `tearDown`:
/// XCTest tests share the test process with the Swift Testing suites that start and stop the tracker.
final class XCTestExpectationsTests: XCTestCase {
    private struct Failure {
        var description: String
        var file: String
        var line: Int
    }

    private var expectingFailures = false
    private var captured: [Failure] = []
    private var holdsTracker = false
    private var blocks: UnsafeMutablePointer<UnsafeMutableRawPointer?>?

    override func setUpWithError() throws {
        try super.setUpWithError()
        // Wait for the suite holding the tracker to finish, as the `.trackerExclusive` trait does.
        while ats_tracker_try_acquire() == 0 { usleep(5_000) }
        holdsTracker = true
        _ = mallocName  // a lazily initialised global: first use outside every measurement
        let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: blockCount)
        blocks.initialize(repeating: nil, count: blockCount)
        self.blocks = blocks
        // Warm-up: the first call may instantiate runtime metadata (cached for ever).
        XCTAssertEqual(ats_allocate(mallocName, blockCount, blockSize, blocks), Int32(blockCount))
        ats_free_all(blocks, blockCount)
        allocateAndFree()
    }

    override func tearDown() {
        blocks?.deallocate()
        blocks = nil
        if holdsTracker {
            ats_tracker_release()
            holdsTracker = false
        }
        super.tearDown()
    }

    override func recordFailure(withDescription description: String, inFile filePath: String, atLine lineNumber: Int,
                                expected: Bool) {
        if expectingFailures {
            captured.append(Failure(description: description, file: filePath, line: lineNumber))
        } else {
            super.recordFailure(withDescription: description, inFile: filePath, atLine: lineNumber, expected: expected)
        }
    }

    /// Runs `body` with XCTest failures captured instead of recorded; returns its result and the failures.
    /// Put no assertions of the test itself inside.
    private func capturingFailures<R>(_ body: () throws -> R) rethrows -> (R, [Failure]) {
        captured = []
        expectingFailures = true
        defer { expectingFailures = false }
        let result = try body()
        let failures = captured
        captured = []
        return (result, failures)
    }

    /// `blockCount` mallocs of `blockSize` bytes from the C helper, all freed. Measured: nothing else in it
    /// (an XCTAssert here would be measured too); `setUp` checks the helper succeeds.
    private func allocateAndFree() {
        guard let blocks else { return }
        _ = ats_allocate(mallocName, blockCount, blockSize, blocks)
        ats_free_all(blocks, blockCount)
    }

    /// The failure was reported once, at `line` of this file (the caller's location), and its description ends with
    /// `message` (what XCTest prints after its "failed - " prefix).
    private func assertOneFailure(_ failures: [Failure], endingWith message: String, atLine line: Int,
                                  file: StaticString = #filePath, testLine: UInt = #line) {
        XCTAssertEqual(failures.count, 1, "\(failures.map(\.description))", file: file, line: testLine)
        guard let failure = failures.first else { return }
        XCTAssertTrue(failure.description.hasSuffix(message),
                      "description: \(failure.description)\nexpected it to end with: \(message)", file: file, line: testLine)
        XCTAssertEqual(failure.file, "\(#filePath)", file: file, line: testLine)
        XCTAssertEqual(failure.line, line, file: file, line: testLine)
    }

    // MARK: XCTAssertNoLeaks

    func testNoLeaksPassesWhenEverythingIsFreed() throws {
        let m = try XCTAssertNoLeaks { allocateAndFree() }
        XCTAssertEqual(m.allocations, blockCount)
        XCTAssertEqual(m.allocatedBytes, blockCount * blockSize)
        XCTAssertEqual(m.frees, blockCount)
        XCTAssertEqual(m.leakedBlocks, 0)
    }

    func testNoLeaksFailsNamingTheLeakingLine() throws {
        let probe = xctLeakyFunction()  // warm-up, and the line the failure must name
        probe.block.deallocate()
        var leaked: UnsafeMutableRawPointer?
        defer { leaked?.deallocate() }

        let callLine = #line + 1
        let (m, failures) = try capturingFailures { try XCTAssertNoLeaks { leaked = xctLeakyFunction().block } }

        XCTAssertEqual(m.allocations, 1)
        XCTAssertEqual(m.leakedBlocks, 1)
        XCTAssertEqual(m.leakedBytes, 80)
        XCTAssertEqual(failures.count, 1, "\(failures.map(\.description))")
        let failure = try XCTUnwrap(failures.first)
        XCTAssertEqual(failure.file, "\(#filePath)")
        XCTAssertEqual(failure.line, callLine)
        let description = failure.description
        XCTAssertTrue(description.contains("1 block(s) (80 B) allocated inside the scope are still live at its end."),
                      description)
        XCTAssertTrue(description.contains("Top leaking sites:"), description)
        XCTAssertTrue(description.contains("XCTestExpectationsTests.swift:\(probe.line) in xctLeakyFunction"), description)
        XCTAssertTrue(description.contains(": 1 block(s), 80 B"), description)
        // The test's own line that called the leaking code, not only the allocating line.
        XCTAssertTrue(description.contains("called from ") &&
                      description.contains("XCTestExpectationsTests.swift:\(callLine)"), description)
    }

    // MARK: XCTAssertAllocations(atMost:)

    func testAllocationsPassesAtTheLimit() throws {
        let m = try XCTAssertAllocations(atMost: blockCount) { allocateAndFree() }
        XCTAssertEqual(m.allocations, blockCount)
        XCTAssertEqual(m.allocatedBytes, blockCount * blockSize)
    }

    func testAllocationsFailsOverTheLimit() throws {
        let callLine = #line + 1
        let (m, failures) = try capturingFailures { try XCTAssertAllocations(atMost: blockCount - 1) { allocateAndFree() } }

        XCTAssertEqual(m.allocations, blockCount)
        assertOneFailure(failures, endingWith: "3 allocations (300 B) inside the scope; expected at most 2.",
                         atLine: callLine)
    }

    func testAllocationsFailureStartsWithTheUserMessage() throws {
        let callLine = #line + 1
        let (_, failures) = try capturingFailures { try XCTAssertAllocations(atMost: 1, "my message") { allocateAndFree() } }

        assertOneFailure(failures, endingWith: "my message\n3 allocations (300 B) inside the scope; expected at most 1.",
                         atLine: callLine)
    }

    // MARK: XCTAssertAllocatedBytes(atMost:)

    func testAllocatedBytesPassesAtTheLimit() throws {
        let m = try XCTAssertAllocatedBytes(atMost: blockCount * blockSize) { allocateAndFree() }
        XCTAssertEqual(m.allocations, blockCount)
        XCTAssertEqual(m.allocatedBytes, blockCount * blockSize)
    }

    func testAllocatedBytesFailsOverTheLimit() throws {
        let callLine = #line + 2
        let (m, failures) = try capturingFailures {
            try XCTAssertAllocatedBytes(atMost: blockCount * blockSize - 1) { allocateAndFree() }
        }

        XCTAssertEqual(m.allocatedBytes, blockCount * blockSize)
        assertOneFailure(failures, endingWith: "300 B allocated inside the scope (3 allocations); expected at most 299 B.",
                         atLine: callLine)
    }

    // MARK: Dropped allocations

    /// With the trace table full, the scope's allocations cannot all be recorded: every helper fails, saying so,
    /// even though the (incomplete) counts are within the limits.
    func testDroppedAllocationsFailEveryHelper() throws {
        try AllocationTracker.start(.init(maxFrames: 8, unwinder: .framePointers, maxTraces: 16))
        defer { AllocationTracker.stop() }
        var filler: [UnsafeMutableRawPointer] = []
        defer { for block in filler { free(block) } }
        for depth in 1...64 { filler.append(try XCTUnwrap(ats_malloc_at_depth(32, Int32(depth)))) }  // fills the table
        let expected = "the tracker could not record"

        let leakLine = #line + 1
        let (leaks, leakFailures) = try capturingFailures { try XCTAssertNoLeaks { allocateAndFree() } }
        XCTAssertGreaterThan(leaks.droppedAllocations, 0)
        XCTAssertEqual(leakFailures.count, 1, "\(leakFailures.map(\.description))")
        XCTAssertTrue(leakFailures.first?.description.contains(expected) == true, "\(leakFailures.map(\.description))")
        XCTAssertEqual(leakFailures.first?.line, leakLine)

        let countLine = #line + 1
        let (counts, countFailures) = try capturingFailures { try XCTAssertAllocations(atMost: 100) { allocateAndFree() } }
        XCTAssertGreaterThan(counts.droppedAllocations, 0)
        XCTAssertEqual(countFailures.count, 1, "\(countFailures.map(\.description))")
        XCTAssertTrue(countFailures.first?.description.contains(expected) == true, "\(countFailures.map(\.description))")
        XCTAssertEqual(countFailures.first?.line, countLine)

        let (bytes, byteFailures) = try capturingFailures { try XCTAssertAllocatedBytes(atMost: 1 << 20) { allocateAndFree() } }
        XCTAssertGreaterThan(bytes.droppedAllocations, 0)
        XCTAssertEqual(byteFailures.count, 1, "\(byteFailures.map(\.description))")
        XCTAssertTrue(byteFailures.first?.description.contains(expected) == true, "\(byteFailures.map(\.description))")
    }
}
#endif

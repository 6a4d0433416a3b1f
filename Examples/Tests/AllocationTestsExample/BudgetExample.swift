import AllocationTracking
import AllocationTrackingTesting
import Foundation
import Testing

// The README's budget example: the budget lives in allocation-budgets.json next to this file.

/// The code under test: one scratch buffer per message, freed.
struct SmallMessage { var bytes = 64 }
let smallMessage = SmallMessage()

func encode(_ message: SmallMessage) -> Int {
    let scratch = UnsafeMutableRawPointer.allocate(byteCount: message.bytes, alignment: 8)
    defer { scratch.deallocate() }
    return message.bytes
}

@Suite struct BudgetExample {
    init() { _ = encode(smallMessage) }  // warm up

    // Tests/MyServiceTests/allocation-budgets.json: { "encodeSmallMessage": { "allocations": 1, "tolerance": 0.05 } }
    // The test reads the file by path: the target `exclude`s it (see the Package.swift above), or SwiftPM warns.
    @Test func encodeSmallMessage() throws {
        let budgets = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("allocation-budgets.json")
        try expectAllocations(withinBudget: "encodeSmallMessage", file: budgets) { _ = encode(smallMessage) }
    }
}

import AllocationTracking
import Foundation
import Testing

/// Allocation budgets kept in a JSON file next to the tests (SwiftNIO style), one entry per test:
///
/// ```json
/// { "encodeSmallMessage": { "allocations": 12, "tolerance": 0.05 },
///   "parseHeader":        { "allocations": 3 } }
/// ```
///
/// A measurement fails when its count is above the budget, and also when it is below it by more than the
/// tolerance (a fraction of the budget; 0 by default), so an improvement lowers the budget instead of leaving
/// room for the next regression.
public struct AllocationBudgets: Sendable, Hashable, Codable {
    public struct Budget: Sendable, Hashable, Codable {
        public var allocations: Int
        public var tolerance: Double?
        public init(allocations: Int, tolerance: Double? = nil) {
            self.allocations = allocations
            self.tolerance = tolerance
        }
    }

    public var budgets: [String: Budget]

    public init(_ budgets: [String: Budget]) { self.budgets = budgets }

    public init(contentsOf file: URL) throws {
        budgets = try JSONDecoder().decode([String: Budget].self, from: Data(contentsOf: file))
    }

    public init(from decoder: Decoder) throws { budgets = try [String: Budget](from: decoder) }
    public func encode(to encoder: Encoder) throws { try budgets.encode(to: encoder) }

    /// The failure text for `measured` allocations under the budget `name`, or nil when it is within budget.
    public func failureMessage(name: String, measured: Int) -> String? {
        guard let budget = budgets[name] else {
            return "no allocation budget named \"\(name)\": add \"\(name)\": { \"allocations\": \(measured) }"
        }
        if measured > budget.allocations {
            return "\(name): \(measured) allocations, over the budget of \(budget.allocations) (+\(measured - budget.allocations))."
        }
        // Under by more than the tolerance fails, measured exactly: 11 against 12 at 5 % is 8.3 % under. (Rounding
        // the floor down let any count within one allocation of it pass.) The small epsilon keeps a count exactly at
        // the tolerance passing despite binary fractions (0.05 × 100 is not exactly 5).
        let tolerance = max(0, budget.tolerance ?? 0)
        let shortfall = Double(budget.allocations - measured)
        if shortfall > tolerance * Double(budget.allocations) + 1e-9 {
            return "\(name): \(measured) allocations, below the budget of \(budget.allocations) by more than the "
                + "tolerance (\(tolerance)): the budget is stale, lower it to \(measured)."
        }
        return nil
    }
}

/// Measures `body` (counting-only, thread scope by default) and records an issue when its allocation count
/// is over the budget `name` in `file`, or below it by more than the budget's tolerance.
@discardableResult
public func expectAllocations<R>(withinBudget name: String, file: URL,
                                 scope: AllocationTracker.MeasurementScope = .thread,
                                 sourceLocation: SourceLocation = #_sourceLocation,
                                 _ body: () throws -> R) throws -> AllocationMeasurement {
    let budgets = try AllocationBudgets(contentsOf: file)
    let measurement = try AllocationTracker.measure(scope, captureStacks: false, body)
    if let message = budgets.failureMessage(name: name, measured: measurement.allocations) {
        Issue.record(Comment(rawValue: message), sourceLocation: sourceLocation)
    }
    if let message = measurement.droppedFailureMessage {
        Issue.record(Comment(rawValue: message), sourceLocation: sourceLocation)
    }
    return measurement
}

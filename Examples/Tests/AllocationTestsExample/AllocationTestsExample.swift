import AllocationTracking
import AllocationTrackingTesting
import Testing

/// A small cache: the code under test.
final class Cache {
    private var storage: [Int: [UInt8]] = [:]
    func put(_ key: Int, _ value: [UInt8]) { storage[key] = value }
    func removeAll() { storage.removeAll() }
}

@Test func cacheDoesNotLeak() throws {
    let cache = Cache()
    cache.put(0, [1]); cache.removeAll()          // warm up: first-use metadata is cached forever
    try expectNoLeaks {                           // fails listing the top leaking sites with file:line
        cache.put(1, [UInt8](repeating: 0, count: 100))
        cache.removeAll()
    }
}

@Test func encodingStaysCheap() throws {
    let values = [1, 2, 3]
    _ = values.map { $0 * 2 }                     // warm up
    try expectAllocations(atMost: 1) { _ = values.map { $0 * 2 } }
    try expectAllocatedBytes(atMost: 4096) { _ = values.map { $0 * 2 } }
    let m = try AllocationTracker.measure { _ = values.map { $0 * 2 } }
    #expect(m.allocations == 1 && m.frees == 1 && m.leakedBlocks == 0, "\(m)")
}

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
    let encode = {                                // one scratch buffer, freed
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: 256, alignment: 8)
        scratch.deallocate()
    }
    encode()                                      // warm up
    try expectAllocations(atMost: 1) { encode() }
    try expectAllocatedBytes(atMost: 4096) { encode() }
    let m = try AllocationTracker.measure { encode() }
    #expect(m.allocations == 1 && m.frees == 1 && m.leakedBlocks == 0, "\(m)")
}

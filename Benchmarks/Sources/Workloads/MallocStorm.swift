import CWorkloads
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Workload M, the malloc storm: `threads` threads, each running `iterations` steps over its own pool of
/// `slots` slots. Each step picks a random slot (xorshift64, fixed seed per thread): a full slot is freed, an
/// empty one receives malloc(16…2016) called at a call depth of 10…21 frames (`cw_malloc_at_depth`), so stacks
/// differ by depth. Every block still live at the end is freed.
///
/// Deterministic: the same parameters always make the same calls. Returns the number of malloc calls.
public enum MallocStorm {
    public static let defaultThreads = 2
    public static let defaultIterations = 2_000_000
    public static let defaultSlots = 1024

    @discardableResult
    public static func run(threads: Int = defaultThreads, iterations: Int = defaultIterations,
                           slots: Int = defaultSlots) -> Int {
        runOnThreads(threads) { index in
            storm(seed: seed(for: index), iterations: iterations, slots: slots)
        }.reduce(0, +)
    }

    /// The number of malloc calls `run` makes, computed without allocating.
    public static func mallocCount(threads: Int = defaultThreads, iterations: Int = defaultIterations,
                                   slots: Int = defaultSlots) -> Int {
        var total = 0
        for index in 0..<threads {
            var full = [Bool](repeating: false, count: slots)
            var state = seed(for: index)
            for _ in 0..<iterations {
                state = xorshift(state)
                let slot = Int(state & UInt64(slots - 1))
                if full[slot] { full[slot] = false } else { full[slot] = true; total += 1 }
            }
        }
        return total
    }

    static func seed(for thread: Int) -> UInt64 { 0x9E37_79B9_7F4A_7C15 &+ UInt64(thread) &* 0xBF58_476D_1CE4_E5B9 }

    @inline(__always)
    static func xorshift(_ x: UInt64) -> UInt64 {
        var x = x
        x ^= x << 13
        x ^= x >> 7
        x ^= x << 17
        return x
    }

    @inline(never)
    static func storm(seed: UInt64, iterations: Int, slots: Int) -> Int {
        precondition(slots > 0 && slots & (slots - 1) == 0, "slots must be a power of two")
        let pool = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: slots)
        pool.initialize(repeating: nil, count: slots)
        defer { pool.deallocate() }
        var state = seed
        var mallocs = 0
        let mask = UInt64(slots - 1)
        for _ in 0..<iterations {
            state = xorshift(state)
            let slot = Int(state & mask)
            if let block = pool[slot] {
                free(block)
                pool[slot] = nil
            } else {
                let size = 16 + Int((state >> 16) % 2001)      // 16…2016 bytes
                let depth = 10 + UInt32((state >> 40) % 12)    // 10…21 frames
                pool[slot] = cw_malloc_at_depth(depth, size)
                mallocs += 1
            }
        }
        for slot in 0..<slots where pool[slot] != nil { free(pool[slot]) }
        return mallocs
    }
}

/// Runs `body(0)…body(count - 1)` on `count` new threads, waits for all of them and returns their results.
public func runOnThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Int) -> [Int] {
    final class Results: @unchecked Sendable {  // each thread writes only its own element
        let values: UnsafeMutablePointer<Int>
        init(_ count: Int) {
            values = .allocate(capacity: count)
            values.initialize(repeating: 0, count: count)
        }
        deinit { values.deallocate() }
    }
    let results = Results(count)
    let group = DispatchGroup()
    for index in 0..<count {
        group.enter()
        let thread = Thread {
            results.values[index] = body(index)
            group.leave()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
    group.wait()
    return Array(UnsafeBufferPointer(start: results.values, count: count))
}

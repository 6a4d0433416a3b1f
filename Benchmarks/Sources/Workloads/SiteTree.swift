#if canImport(Glibc)
import Glibc
#endif

/// Many distinct call stacks from few functions: site `n` allocates one block at the end of the path through a
/// binary recursion chosen by the bits of `n` (`left`/`right` at each of 14 levels).
public enum SiteTree {
    public static let blockSize = 16
    nonisolated(unsafe) static var blocks: [UnsafeMutableRawPointer?] = []

    /// Allocates one live block from each of `sites` distinct stacks (at most 16 384).
    public static func build(sites: Int) {
        blocks = []
        blocks.reserveCapacity(sites)
        for path in 0..<min(sites, 1 << 14) { blocks.append(branch(14, path)) }
    }

    public static func release() {
        for block in blocks { free(block) }
        blocks = []
    }

    @inline(never) static func branch(_ depth: Int, _ path: Int) -> UnsafeMutableRawPointer? {
        if depth == 0 { return malloc(blockSize) }
        return path & (1 << (depth - 1)) != 0 ? left(depth - 1, path) : right(depth - 1, path)
    }

    // `left` and `right` differ (the tag) so the optimiser cannot fold them into one function, and the call
    // after `branch` keeps it from being a tail call: either would merge stacks.
    @inline(never) static func left(_ depth: Int, _ path: Int) -> UnsafeMutableRawPointer? {
        let block = branch(depth, path)
        blackHole(block, tag: 1)
        return block
    }

    @inline(never) static func right(_ depth: Int, _ path: Int) -> UnsafeMutableRawPointer? {
        let block = branch(depth, path)
        blackHole(block, tag: 2)
        return block
    }

    nonisolated(unsafe) static var tags = 0

    @inline(never) static func blackHole(_ pointer: UnsafeMutableRawPointer?, tag: Int) {
        if pointer == nil { tags &+= tag }
    }
}

/// Traced memory counters (all zero while tracking is stopped). Sizes are the sizes callers requested.
public struct TracedMemory: Hashable, Sendable, CustomStringConvertible {
    /// Bytes in live tracked blocks.
    public var current: Int
    /// The highest `current` since start, `clearTraces` or `resetPeak` (rises only when a block is added).
    public var peak: Int
    /// Live tracked blocks.
    public var liveBlocks: Int
    /// Blocks allocated while tracking (freed or not).
    public var totalAllocations: Int
    /// Bytes allocated while tracking (freed or not).
    public var totalAllocatedBytes: Int
    /// Allocations that succeeded but could not be recorded (a table was full), and frees and allocations a
    /// signal handler made inside the tracker's hook beyond what its queue holds (64 per interruption; a free lost
    /// that way leaves its block counted as live). Nonzero means the other counters are not exact. Every report
    /// shows it.
    public var droppedAllocations: Int
    /// True when the tracker samples (`Configuration.sampling` is `.poisson`): the other counters are then
    /// unbiased estimates from the sampled blocks, each weighted by the inverse of its sampling probability,
    /// rather than exact counts. `current` still returns to 0 exactly when everything is freed.
    public var isEstimate: Bool

    public init(current: Int = 0, peak: Int = 0, liveBlocks: Int = 0, totalAllocations: Int = 0,
                totalAllocatedBytes: Int = 0, droppedAllocations: Int = 0, isEstimate: Bool = false) {
        self.current = current
        self.peak = peak
        self.liveBlocks = liveBlocks
        self.totalAllocations = totalAllocations
        self.totalAllocatedBytes = totalAllocatedBytes
        self.droppedAllocations = droppedAllocations
        self.isEstimate = isEstimate
    }

    public var description: String {
        "current=\(current) B, peak=\(peak) B, liveBlocks=\(liveBlocks), totalAllocations=\(totalAllocations), "
            + "totalAllocatedBytes=\(totalAllocatedBytes) B, droppedAllocations=\(droppedAllocations)"
            + (isEstimate ? " (estimated)" : "")
    }
}

import AllocationTracking

@inline(never) func leak(_ n: Int) -> UnsafeMutableRawPointer { UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 16) }
do {
    try AllocationTracker.start(.init(maxFrames: 16, unwinder: CommandLine.arguments.contains("fp") ? .framePointers : .libunwind))
    let before = AllocationTracker.tracedMemory
    var kept: [UnsafeMutableRawPointer] = []
    kept.reserveCapacity(100)
    let after0 = AllocationTracker.tracedMemory
    for _ in 0..<100 { kept.append(leak(1000)) }
    let after = AllocationTracker.tracedMemory
    print(before, after0, after, separator: "\n")
    let s = try AllocationTracker.takeSnapshot()
    for t in s.traces.sorted(by: { $0.size > $1.size }).prefix(3) { print(t, t.traceback.totalFrames, t.traceback.frames.prefix(4)) }
    for p in kept { p.deallocate() }
    print(AllocationTracker.tracedMemory)
    AllocationTracker.stop()
    print(AllocationTracker.tracedMemory, AllocationTracker.trackerMemory)
} catch { print(error) }

/// Work the quick start measures: a few retained buffers (a cache), then more of them.
nonisolated(unsafe) var retained: [[UInt8]] = []

func runWorkload() {
    for i in 0..<100 { retained.append([UInt8](repeating: UInt8(truncatingIfNeeded: i), count: 1000)) }
}

func runMoreWork() {
    for i in 0..<50 { retained.append([UInt8](repeating: UInt8(truncatingIfNeeded: i), count: 4000)) }
}

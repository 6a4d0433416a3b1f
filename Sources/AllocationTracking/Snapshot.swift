/// One frame of a call stack: a return address in the traced process. Symbols (function, file, line) are
/// resolved later, outside malloc, from the address.
public struct Frame: Hashable, Sendable, CustomStringConvertible {
    /// The return address (for the most recent frame: the address just after the call to malloc).
    public var address: UInt

    public init(address: UInt) {
        self.address = address
    }

    public var description: String { "0x" + String(address, radix: 16) }
}

/// A call stack, most recent frame first, truncated to the tracker's `maxFrames`.
public struct Traceback: Hashable, Sendable, CustomStringConvertible {
    public var frames: [Frame]
    /// The depth of the stack before truncation (libunwind: saturates at 1024).
    public var totalFrames: Int

    public init(frames: [Frame], totalFrames: Int? = nil) {
        self.frames = frames
        self.totalFrames = totalFrames ?? frames.count
    }

    public var description: String { frames.map(\.description).joined(separator: "\n") }
}

/// The live blocks allocated from one call stack.
public struct Trace: Hashable, Sendable, CustomStringConvertible {
    public var traceback: Traceback
    /// Live bytes (requested sizes).
    public var size: Int
    /// Live blocks.
    public var count: Int

    public init(traceback: Traceback, size: Int, count: Int) {
        self.traceback = traceback
        self.size = size
        self.count = count
    }

    public var description: String {
        let top = traceback.frames.first.map(\.description) ?? "<no frames>"
        return "\(top): size=\(size) B, count=\(count)"
    }
}

/// The live traced blocks at one moment, one `Trace` per distinct call stack (tracemalloc's `Snapshot`).
public struct Snapshot: Sendable {
    public var traces: [Trace]
    /// `maxFrames` of the tracker that took the snapshot.
    public var tracebackLimit: Int
    /// Allocations the tracker could not record before this snapshot (a full table): the snapshot is missing
    /// them. Reports must show it when non-zero.
    public var droppedAllocations: Int

    public init(traces: [Trace], tracebackLimit: Int, droppedAllocations: Int = 0) {
        self.traces = traces
        self.tracebackLimit = tracebackLimit
        self.droppedAllocations = droppedAllocations
    }

    /// Live bytes over all traces.
    public var totalSize: Int { traces.reduce(0) { $0 + $1.size } }
    /// Live blocks over all traces.
    public var totalCount: Int { traces.reduce(0) { $0 + $1.count } }
}

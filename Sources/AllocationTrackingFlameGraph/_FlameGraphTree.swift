import AllocationTracking

/// The call tree a flame graph draws: one node per distinct path of frames from the root, each holding the values
/// of the stacks that end there (its *self* values); the page adds them up towards the root. Built from the public
/// `Snapshot` API only.
///
/// Frames are merged by what a reader sees of them (function, file, image, inlined), not by address: two
/// snapshots of two runs of one program (different load addresses) then line up frame by frame in a diff. Nor by
/// line: a function that calls on from two lines is one box, as flamegraph.pl and pprof's function granularity
/// draw it (two half-width boxes would hide how much it holds); the page lists the lines.
struct _FlameGraphTree {
    /// A frame as the page shows it.
    struct FrameKey: Hashable {
        var name: String
        var file: String?
        var image: String?
        var isInlined: Bool

        init(_ frame: Frame) {
            // Unsymbolicated frames are named by their image offset or address (`Frame.description`).
            name = frame.function ?? frame.description
            file = frame.file
            image = frame.image
            isInlined = frame.isInlined
        }
    }

    /// The four values of the page's metrics, in the page's order (see `FlameGraphPage.metrics`).
    static func values(of trace: Trace) -> [Int] {
        [trace.size, trace.count, trace.allocatedSize, trace.allocatedCount]
    }

    static let metricCount = 4

    private(set) var frames: [FrameKey] = []
    /// The lines of each frame, in the order met.
    private(set) var lines: [[Int]] = []
    private var frameIndices: [FrameKey: Int] = [:]
    /// Node 0 is the root (no frame). Nodes are numbered as met; `preorder()` renumbers them.
    private(set) var parents: [Int] = [-1]
    private(set) var frameOfNode: [Int] = [-1]
    private var childIndices: [ChildKey: Int] = [:]
    /// `metricCount` self values per node, for the snapshot and (in a diff) for the base.
    private(set) var values: [Int] = Array(repeating: 0, count: metricCount)
    private(set) var baseValues: [Int] = Array(repeating: 0, count: metricCount)

    private struct ChildKey: Hashable {
        var parent: Int
        var frame: Int
    }

    private let leaf: Snapshot.SampleLeaf
    private let attribution: Attribution
    /// Whether each frame met is system code: the same frames recur in many stacks, and each check is a few dozen
    /// glob matches.
    private var isSystem: [Frame: Bool] = [:]

    init(leaf: Snapshot.SampleLeaf, attribution: Attribution) {
        self.leaf = leaf
        self.attribution = attribution
    }

    /// Adds the traces of `snapshot` (of the base snapshot when `isBase`).
    ///
    /// - Throws: `.invalidArgument` when the values of stacks that end at one node add up beyond `Int.max`.
    mutating func add(_ snapshot: Snapshot, isBase: Bool) throws {
        for trace in snapshot.traces {
            let traceValues = Self.values(of: trace)
            guard traceValues.contains(where: { $0 != 0 }) else { continue }
            var node = 0
            for frame in shownFrames(of: trace.traceback).reversed() {
                let index = frameIndex(FrameKey(frame))
                if !lines[index].contains(frame.line) { lines[index].append(frame.line) }
                node = child(of: node, frame: index)
            }
            for metric in 0..<Self.metricCount {
                let slot = node * Self.metricCount + metric
                let (sum, overflow) = (isBase ? baseValues[slot] : values[slot]).addingReportingOverflow(traceValues[metric])
                guard !overflow else {
                    throw AllocationTrackingError(.invalidArgument,
                                                  "cannot draw the flame graph: the stacks ending in \(frames[frameOfNode[node]].name) add up beyond \(Int.max)")
                }
                if isBase { baseValues[slot] = sum } else { values[slot] = sum }
            }
        }
    }

    /// The frames a stack shows, most recent first: from the attribution frame on for `.attributionFrame` (all of
    /// them when every frame is system code, as `Snapshot.foldedStacks` cuts them), all of them for `.allocator`.
    private mutating func shownFrames(of traceback: Traceback) -> ArraySlice<Frame> {
        let frames = traceback.frames[...]
        guard leaf == .attributionFrame else { return frames }
        for index in frames.indices {
            let frame = frames[index]
            let system = isSystem[frame] ?? attribution.isSystem(frame)
            isSystem[frame] = system
            if !system { return frames[index...] }
        }
        return frames
    }

    private mutating func frameIndex(_ key: FrameKey) -> Int {
        if let index = frameIndices[key] { return index }
        frames.append(key)
        lines.append([])
        frameIndices[key] = frames.count - 1
        return frames.count - 1
    }

    private mutating func child(of parent: Int, frame: Int) -> Int {
        let key = ChildKey(parent: parent, frame: frame)
        if let node = childIndices[key] { return node }
        parents.append(parent)
        frameOfNode.append(frame)
        values.append(contentsOf: repeatElement(0, count: Self.metricCount))
        baseValues.append(contentsOf: repeatElement(0, count: Self.metricCount))
        childIndices[key] = parents.count - 1
        return parents.count - 1
    }

    /// The node numbers in depth-first preorder, siblings sorted by name, then file and image (as flamegraph.pl
    /// sorts them: a frame keeps its place when the metric changes, and two snapshots' graphs line up). A parent
    /// comes before its children, which the page relies on to add values up in one backward pass.
    func preorder() -> [Int] {
        var children = Array(repeating: [Int](), count: parents.count)
        for node in 1..<parents.count { children[parents[node]].append(node) }
        var order: [Int] = []
        order.reserveCapacity(parents.count)
        var stack = [0]
        while let node = stack.popLast() {
            order.append(node)
            // Reversed, so that the first in sorted order is popped first.
            stack.append(contentsOf: children[node].sorted { precedes(frames[frameOfNode[$0]], frames[frameOfNode[$1]]) }.reversed())
        }
        return order
    }

    private func precedes(_ a: FrameKey, _ b: FrameKey) -> Bool {
        if a.name != b.name { return a.name < b.name }
        if a.file != b.file { return (a.file ?? "") < (b.file ?? "") }
        if a.image != b.image { return (a.image ?? "") < (b.image ?? "") }
        return !a.isInlined && b.isInlined
    }
}

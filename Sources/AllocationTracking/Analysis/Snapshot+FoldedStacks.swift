extension Snapshot {
    /// The snapshot as folded stacks, the input of flame-graph renderers (Brendan Gregg's `flamegraph.pl`,
    /// `inferno-flamegraph`, speedscope): one line per distinct stack, root first, frames separated by `;`, then
    /// a space and the stack's value of `sampleType`:
    ///
    ///     main;handle(_:cache:);renderResponse(for:) 2611200
    ///
    /// A frame is its readable function name (inlined calls are frames of their own), or for a frame without
    /// one, its description (`libfoo.so+0x1f2e`, `0x7f12…`). The stack starts at `leaf`, by default the attribution
    /// frame, as in `pprof(_:)`. Stacks that end up with the same names are added up; stacks whose value is 0 are
    /// left out (freed stacks, for an inuse type). Lines are sorted, each ends with a newline.
    ///
    /// ```swift
    /// let folded = try AllocationTracker.takeSnapshot().foldedStacks(.inuseSpace)
    /// ```
    ///
    /// - Throws: `.invalidArgument` when the values of stacks that fold together add up beyond `Int.max`.
    public func foldedStacks(_ sampleType: SampleType = .inuseSpace, leaf: SampleLeaf = .attributionFrame,
                             attribution: Attribution = .default) throws -> String {
        var cutter = _SampleLeafCutter(leaf, attribution)
        var names: [Frame: String] = [:]
        var values: [String: Int] = [:]
        for trace in traces {
            let value = sampleType.value(of: trace)
            guard value != 0 else { continue }
            let frames = cutter.frames(of: trace.traceback)
            var stack = ""
            for frame in frames.reversed() {
                if !stack.isEmpty { stack += ";" }
                if let name = names[frame] {
                    stack += name
                } else {
                    let name = Self.foldedName(frame)
                    names[frame] = name
                    stack += name
                }
            }
            if stack.isEmpty { stack = "<no frames>" }
            let (sum, overflow) = values[stack, default: 0].addingReportingOverflow(value)
            guard !overflow else {
                throw AllocationTrackingError(.invalidArgument, "cannot fold the stacks: the \(sampleType.name) of \(stack) adds up beyond \(Int.max)")
            }
            values[stack] = sum
        }
        var text = ""
        for stack in values.keys.sorted() {
            text += stack
            text += " "
            text += String(values[stack]!)
            text += "\n"
        }
        return text
    }

    /// A frame's name in a folded stack: `;` separates frames and a line ends the stack, so neither may appear in
    /// it (C++ and Swift names have neither, but a function name is any symbol).
    static func foldedName(_ frame: Frame) -> String {
        let name = frame.function ?? frame.description
        guard name.utf8.contains(where: { $0 == UInt8(ascii: ";") || $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") })
        else { return name }
        return String(name.map { $0 == ";" ? "," : $0 == "\n" || $0 == "\r" || $0 == "\r\n" ? " " : $0 })
    }
}

extension AllocationTracker {
    /// How the tracker captures and stores allocations.
    ///
    /// ```swift
    /// try AllocationTracker.start(.init(maxFrames: 32, unwinder: .libunwind))
    /// ```
    ///
    /// The same settings can be given to an unmodified program through the environment, read once at process
    /// start: `ALLOCATION_TRACKING=1` (defaults) or `ALLOCATION_TRACKING=frames=24,unwinder=framepointers`.
    public struct Configuration: Hashable, Sendable, CustomStringConvertible {
        /// How call stacks are captured.
        public enum Unwinder: String, Hashable, Sendable, CaseIterable {
            /// libunwind's `unw_backtrace` (DWARF CFI): sees through code built without frame pointers — glibc,
            /// libstdc++, Foundation's C parts. Needs libunwind (Debian: `libunwind8`), loaded at `start`.
            case libunwind
            /// A walk of the frame-pointer chain, bounded by the thread's stack. Several times cheaper. Swift and
            /// C code built by SwiftPM keep frame pointers; glibc and libstdc++ do not, so a stack whose allocation
            /// passes through them (`strdup`, `operator new`) stops or skips there.
            case framePointers
        }

        /// Frames kept per call stack, most recent first: 1…256. The true depth is kept as
        /// `Traceback.totalFrames`.
        public var maxFrames: Int
        public var unwinder: Unwinder
        /// Distinct call stacks the trace table may hold (1…16 777 214). Allocations from further new stacks are
        /// counted in `TracedMemory.droppedAllocations`. Memory is mapped as stacks appear, not up front.
        public var maxTraces: Int

        public init(maxFrames: Int = 32, unwinder: Unwinder = .libunwind, maxTraces: Int = 1 << 20) {
            self.maxFrames = maxFrames
            self.unwinder = unwinder
            self.maxTraces = maxTraces
        }

        /// Throws `.invalidConfiguration` when a value is out of range.
        public func validate() throws {
            guard (1...256).contains(maxFrames) else {
                throw AllocationTrackingError(.invalidConfiguration, "maxFrames must be 1…256, got \(maxFrames)")
            }
            guard (1...16_777_214).contains(maxTraces) else {
                throw AllocationTrackingError(.invalidConfiguration, "maxTraces must be 1…16777214, got \(maxTraces)")
            }
        }

        public var description: String {
            "frames=\(maxFrames),unwinder=\(unwinder == .libunwind ? "libunwind" : "framepointers"),max_traces=\(maxTraces)"
        }

        /// Parses the `ALLOCATION_TRACKING` syntax: `1`/`true`/`on` for the defaults, `0`/`false`/`off` for
        /// "do not start" (returns nil), or comma-separated `key=value` pairs: `frames` (1…256), `unwinder`
        /// (`libunwind` or `framepointers`), `max_traces`. Throws `.invalidConfiguration` naming the bad part.
        public static func parse(environmentValue value: String) throws -> Configuration? {
            let trimmed = value.trimmingWhitespace()
            switch trimmed.lowercased() {
            case "1", "true", "on", "yes": return Configuration()
            case "0", "false", "off", "no", "": return nil
            default: break
            }
            var configuration = Configuration()
            for item in trimmed.split(separator: ",", omittingEmptySubsequences: true) {
                let parts = item.split(separator: "=", maxSplits: 1).map { String($0).trimmingWhitespace() }
                guard parts.count == 2, !parts[0].isEmpty else {
                    throw AllocationTrackingError(.invalidConfiguration, "expected key=value, got '\(item)'")
                }
                let (key, text) = (parts[0].lowercased(), parts[1])
                switch key {
                case "frames", "max_frames":
                    guard let n = Int(text) else {
                        throw AllocationTrackingError(.invalidConfiguration, "frames must be a number, got '\(text)'")
                    }
                    configuration.maxFrames = n
                case "unwinder":
                    switch text.lowercased() {
                    case "libunwind": configuration.unwinder = .libunwind
                    case "framepointers", "frame_pointers", "fp": configuration.unwinder = .framePointers
                    default:
                        throw AllocationTrackingError(
                            .invalidConfiguration, "unwinder must be libunwind or framepointers, got '\(text)'")
                    }
                case "max_traces":
                    guard let n = Int(text) else {
                        throw AllocationTrackingError(.invalidConfiguration, "max_traces must be a number, got '\(text)'")
                    }
                    configuration.maxTraces = n
                default:
                    throw AllocationTrackingError(
                        .invalidConfiguration, "unknown key '\(key)' (known: frames, unwinder, max_traces)")
                }
            }
            try configuration.validate()
            return configuration
        }
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var view = Substring(self)
        while let first = view.first, first.isWhitespace { view.removeFirst() }
        while let last = view.last, last.isWhitespace { view.removeLast() }
        return String(view)
    }
}

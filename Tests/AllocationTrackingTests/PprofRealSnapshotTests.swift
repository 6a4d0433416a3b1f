@testable import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
import Testing

/// Allocates from a generic Swift function, whose name pprof must show whole (`<A>` and the argument labels).
@inline(never)
func pprofBuffers<Element>(_ element: Element, count: Int) -> [[Element]] {
    (0..<count).map { _ in [Element](repeating: element, count: 256) }
}

extension TrackerTests {
    /// Profiles of real snapshots of known allocations, read by the real tools: `go tool pprof` (-raw, -top,
    /// -sample_index, -traces, -dot, -png, -diff_base) must print no error or warning and show exactly the
    /// snapshot's values (exact tracking: the inuse bytes and blocks of each site, the totals, the sums); the folded
    /// stacks render with pyinferno.
    @Suite struct PprofOfRealSnapshots {
        static let keptSize = 4096, burstSize = 65536, burstBlocks = 32, freedSize = 3000, freedBlocks = 5

        /// `count` blocks of `keptSize` bytes from `ats_one` (the C helper's malloc), always from this one stack.
        @inline(never)
        static func allocateKept(_ blocks: inout [UnsafeMutableRawPointer?], from start: Int, count: Int) {
            blocks.withUnsafeMutableBufferPointer { buffer in
                _ = ats_allocate("malloc", count, keptSize, buffer.baseAddress! + start)
            }
        }

        struct Snapshots {
            var older: Snapshot
            var newer: Snapshot
            var peak: Snapshot
        }

        /// 8 kept blocks; 5 blocks allocated and freed (`ats_malloc_at_depth`); generic Swift buffers; the older
        /// snapshot; a 2 MiB burst from C++ (`ats_cxx_new`) freed again, which sets the peak; 8 more kept blocks
        /// from the same stack; the newer and the peak snapshots.
        static func takeSnapshots() throws -> Snapshots {
            var blocks = [UnsafeMutableRawPointer?](repeating: nil, count: 16)
            defer { ats_free_all(&blocks, blocks.count) }
            var buffers: [[Int]] = []
            defer { withExtendedLifetime(buffers) {} }
            return try withTracking(.init(maxFrames: 64, unwinder: .libunwind)) {
                var older: Snapshot?
                for round in 0..<2 {
                    allocateKept(&blocks, from: round * 8, count: 8)
                    guard round == 0 else { continue }
                    for _ in 0..<freedBlocks { free(ats_malloc_at_depth(freedSize, 1)) }
                    buffers = pprofBuffers(7, count: 10)
                    older = try AllocationTracker.takeSnapshot()
                    let burst = (0..<burstBlocks).map { _ in ats_cxx_new(burstSize) }
                    burst.forEach { ats_cxx_delete($0) }
                }
                return Snapshots(older: older!, newer: try AllocationTracker.takeSnapshot(),
                                 peak: try AllocationTracker.takeSnapshot(at: .peak))
            }
        }

        /// The flat values `-top` must show: per leaf function (the attribution frame's), the sum of `type` over
        /// the snapshot's traces.
        static func flat(_ snapshot: Snapshot, _ type: Snapshot.SampleType) -> [String: Int64] {
            var flat: [String: Int64] = [:]
            for trace in snapshot.traces {
                guard let leaf = trace.traceback.attributionFrame(), let function = leaf.function else { continue }
                flat[function, default: 0] += Int64(type.value(of: trace))
            }
            return flat
        }

        /// The samples `-raw` must print: per trace, its four values, its average block size and its stack's
        /// addresses from the attribution frame on, one per location (inlined frames share their physical frame's).
        /// Traces that differ only above the attribution frame become samples with the same stack and, when their
        /// average block size is the same too, pprof merges them (a sample is keyed by its locations and labels):
        /// so are they here.
        static func rawSamples(_ snapshot: Snapshot) -> [PprofTools.RawSample] {
            var merged: [PprofTools.RawSample: [Int64]] = [:]
            for var sample in unmergedSamples(snapshot) {
                let values = sample.values
                sample.values = []
                merged[sample] = zip(merged[sample] ?? [0, 0, 0, 0], values).map { $0 + $1 }
            }
            return merged.map { sample, values in
                var sample = sample
                sample.values = values
                return sample
            }
        }

        static func unmergedSamples(_ snapshot: Snapshot) -> [PprofTools.RawSample] {
            snapshot.traces.compactMap { trace in
                let values = [trace.allocatedCount, trace.allocatedSize, trace.count, trace.size].map(Int64.init)
                guard values.contains(where: { $0 != 0 }) else { return nil }
                let frames = trace.traceback.frames
                let leaf = frames.firstIndex { !Attribution.default.isSystem($0) } ?? 0
                var addresses: [UInt64] = []
                for index in frames.indices.dropFirst(leaf) where !frames[index].isInlined || index == frames.count - 1 {
                    addresses.append(UInt64(frames[index].address))
                }
                if frames.isEmpty { addresses = [0] }
                let blockSize = trace.allocatedCount > 0 ? Int64(trace.allocatedSize / trace.allocatedCount) : 0
                return PprofTools.RawSample(values: values, addresses: addresses, blockSize: blockSize == 0 ? nil : blockSize)
            }
        }

        static func sorted(_ samples: [PprofTools.RawSample]) -> [String] { samples.map(\.description).sorted() }

        static func sum(_ snapshot: Snapshot, _ type: Snapshot.SampleType) -> Int64 {
            snapshot.traces.reduce(0) { $0 + Int64(type.value(of: $1)) }
        }

        @Test(.enabled(if: PprofTools.hasGoAndGraphviz, "go or graphviz is not installed (apt-get install golang-go graphviz)"))
        func goToolPprofShowsTheSnapshotsValues() throws {
            let snapshots = try Self.takeSnapshots()
            try PprofTools.withTemporaryDirectory { directory in
                let newer = snapshots.newer
                let heap = directory.appendingPathComponent("heap.pb.gz")
                try newer.write(pprofTo: heap)

                // -raw: every sample, value for value, stack for stack.
                let raw = PprofTools.parseRaw(try PprofTools.pprof(["-raw", heap.path]).text)
                #expect(Self.sorted(raw.samples) == Self.sorted(Self.rawSamples(newer)))
                #expect(raw.header.contains("PeriodType: space bytes") && raw.header.contains("Period: 1"))
                #expect(raw.mappings.first?.contains(newer.images[0].path) == true)
                #expect(raw.mappings.allSatisfy { $0.hasSuffix("[FN][FL][LN][IN]") }, "\(raw.mappings)")

                // -top for each sample type: the sums, and each leaf function's flat value.
                for type in Snapshot.SampleType.allCases {
                    var arguments = ["-top", "-nodefraction=0", "-sample_index=\(type.name)"]
                    if type.unit == "bytes" { arguments.append("-unit=B") }
                    let top = PprofTools.parseTop(try PprofTools.pprof(arguments + [heap.path]).text)
                    #expect(top.total == Self.sum(newer, type), "\(type.name)")
                    for (function, value) in Self.flat(newer, type) where value != 0 {
                        #expect(top.flat[function] == value, "\(type.name) of \(function)\n\(top.text)")
                    }
                }
                // The known allocations, exactly.
                let inuse = PprofTools.parseTop(try PprofTools.pprof(["-top", "-unit=B", heap.path]).text)
                #expect(inuse.text.contains("Type: inuse_space"))
                #expect(inuse.flat["ats_one"] == Int64(16 * Self.keptSize), "\(inuse.text)")
                #expect(inuse.flat["ats_cxx_new"] == nil)
                #expect(inuse.text.contains("pprofBuffers<A>(_:count:)"), "\(inuse.text)")
                let allocs = PprofTools.parseTop(try PprofTools.pprof(["-sample_index=alloc_space", "-top", "-unit=B",
                                                                       "-nodefraction=0", heap.path]).text)
                #expect(allocs.flat["ats_one"] == Int64(16 * Self.keptSize))
                #expect(allocs.flat["ats_cxx_new"] == Int64(Self.burstBlocks * Self.burstSize), "\(allocs.text)")
                #expect(allocs.flat["ats_malloc_at_depth"] == Int64(Self.freedBlocks * Self.freedSize), "\(allocs.text)")
                let objects = PprofTools.parseTop(try PprofTools.pprof(["-sample_index=inuse_objects", "-top", heap.path]).text)
                #expect(objects.flat["ats_one"] == 16)

                // -traces: the stack from ats_one down, with its block size.
                let traces = try PprofTools.pprof(["-traces", heap.path]).text
                let block = traces.components(separatedBy: "-----------+").first { $0.contains(" ats_one\n") }
                #expect(block?.contains("bytes:  4kB") == true && block?.contains("ats_allocate") == true
                        && block?.contains("allocateKept") == true, "\(traces.prefix(3000))")

                // -dot names the allocating function; -png is a real PNG.
                #expect(try PprofTools.pprof(["-dot", heap.path]).text.contains("ats_one"))
                let png = try PprofTools.pprof(["-png", heap.path]).output
                #expect(png.starts(with: [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))
                #expect(png.count > 24 && String(decoding: png[12..<16], as: UTF8.self) == "IHDR")
                if png.count > 24 {
                    let width = png[16..<20].reduce(0) { $0 << 8 | Int($1) }
                    let height = png[20..<24].reduce(0) { $0 << 8 | Int($1) }
                    #expect(width > 100 && height > 100, "\(width)x\(height)")
                }
            }
        }

        @Test(.enabled(if: PprofTools.hasGo, "go is not installed (apt-get install golang-go)"))
        func thePeakAndTheDeltaProfiles() throws {
            let snapshots = try Self.takeSnapshots()
            try PprofTools.withTemporaryDirectory { directory in
                // The peak: the burst was live, 8 kept blocks were.
                let peak = directory.appendingPathComponent("peak.pb.gz")
                try snapshots.peak.write(pprofTo: peak)
                let peakTop = PprofTools.parseTop(try PprofTools.pprof(["-top", "-unit=B", "-nodefraction=0", peak.path]).text)
                #expect(peakTop.total == Int64(snapshots.peak.totalSize))
                #expect(peakTop.flat["ats_cxx_new"] == Int64(Self.burstBlocks * Self.burstSize), "\(peakTop.text)")
                #expect(peakTop.flat["ats_one"] == Int64(8 * Self.keptSize), "\(peakTop.text)")
                #expect(peakTop.text.contains("at its peak"))
                let peakRaw = PprofTools.parseRaw(try PprofTools.pprof(["-raw", peak.path]).text)
                #expect(Self.sorted(peakRaw.samples) == Self.sorted(Self.rawSamples(snapshots.peak)))

                // The delta: what grew in between, newer minus older for every value.
                let delta = directory.appendingPathComponent("delta.pb.gz")
                try snapshots.newer.pprof(comparedTo: snapshots.older).write(to: delta)
                let growth = Int64(snapshots.newer.totalSize - snapshots.older.totalSize)
                let deltaTop = PprofTools.parseTop(try PprofTools.pprof(["-top", "-unit=B", "-nodefraction=0", delta.path]).text)
                #expect(deltaTop.shown == growth, "\(deltaTop.text)")
                #expect(deltaTop.flat["ats_one"] == Int64(8 * Self.keptSize), "\(deltaTop.text)")
                let deltaAllocs = PprofTools.parseTop(try PprofTools.pprof(["-sample_index=alloc_space", "-top", "-unit=B",
                                                                            "-nodefraction=0", delta.path]).text)
                #expect(deltaAllocs.shown == Self.sum(snapshots.newer, .allocSpace) - Self.sum(snapshots.older, .allocSpace))
                #expect(deltaAllocs.flat["ats_cxx_new"] == Int64(Self.burstBlocks * Self.burstSize))
                #expect(deltaAllocs.flat["ats_malloc_at_depth"] == nil, "nothing allocated there in between")
                _ = try PprofTools.pprof(["-raw", delta.path])

                // -diff_base between two full profiles agrees with the delta profile.
                let older = directory.appendingPathComponent("older.pb.gz")
                let newer = directory.appendingPathComponent("newer.pb.gz")
                try snapshots.older.write(pprofTo: older)
                try snapshots.newer.write(pprofTo: newer)
                let diff = PprofTools.parseTop(try PprofTools.pprof(["-top", "-unit=B", "-nodefraction=0",
                                                                     "-diff_base=" + older.path, newer.path]).text)
                #expect(diff.shown == growth, "\(diff.text)")
                #expect(diff.flat["ats_one"] == Int64(8 * Self.keptSize), "\(diff.text)")
            }
        }

        /// The README's example ("With go tool pprof and continuous profilers"), the file in a temporary directory.
        @Test func theReadmeExampleRuns() throws {
            try PprofTools.withTemporaryDirectory { directory in
                try withTracking(.init(maxFrames: 32)) {
                    let snapshot = try AllocationTracker.takeSnapshot()
                    try snapshot.write(pprofTo: directory.appendingPathComponent("heap.pb.gz"))   // go tool pprof heap.pb.gz
                    let allocs = try snapshot.pprof(.init(defaultSampleType: .allocSpace))      // Go's /debug/pprof/allocs
                    let peak = try AllocationTracker.takeSnapshot(at: .peak).pprof()            // who held the memory at the peak
                    let growth = try AllocationTracker.takeSnapshot().pprof(comparedTo: snapshot) // what grew since (Go's ?seconds=N)
                    let folded = try snapshot.foldedStacks(.inuseSpace)                         // "root;…;leaf 4096" lines
                    for profile in [allocs, peak, growth] { #expect(profile.starts(with: [0x1f, 0x8b])) }
                    #expect(folded.split(separator: "\n").allSatisfy { Int($0.split(separator: " ").last ?? "") != nil })
                }
            }
        }

        @Test(.enabled(if: PprofTools.hasPyinferno, "pyinferno is not installed (pip install pyinferno)"))
        func foldedStacksRenderAsAFlameGraph() throws {
            let snapshot = try Self.takeSnapshots().newer
            let folded = try snapshot.foldedStacks(.inuseSpace)
            let lines = folded.split(separator: "\n")
            #expect(lines.reduce(0) { $0 + Int64($1.split(separator: " ").last!)! } == Int64(snapshot.totalSize))
            let kept = lines.filter { $0.hasSuffix(";ats_allocate;ats_one \(16 * Self.keptSize)") }
            #expect(kept.count == 1, "\(folded)")
            #expect(try snapshot.foldedStacks(.allocSpace).contains(";ats_cxx_new \(Self.burstBlocks * Self.burstSize)\n"))

            let script = """
                import sys
                from pyinferno import flamegraph_from_lines
                sys.stdout.write(flamegraph_from_lines(sys.stdin.read().splitlines(), "inuse_space"))
                """
            let svg = try PprofTools.run(PprofTools.python!, ["-c", script], input: Data(folded.utf8))
            #expect(svg.status == 0 && svg.error.isEmpty, "\(svg.error)")
            #expect(svg.text.hasPrefix("<?xml") && svg.text.contains("<svg"))
            #expect(svg.text.contains("ats_one"))
        }
    }
}

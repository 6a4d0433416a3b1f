@_spi(Testing) import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
import Testing

extension TrackerTests {
    /// The library's own ELF/DWARF symbolicator (`_Symbolicator`) against the toolchain's `Runtime` module it
    /// replaced, on every frame of a real snapshot of this test binary (its own functions, the C support library,
    /// libc and libswiftCore): the same function, and the same file:line as the Runtime module's innermost frame.
    @Suite struct Symbolication {
        @inline(never)
        static func allocateHere(_ count: Int) -> [AttributionBox] {
            (0..<count).map { AttributionBox($0) }
        }

        @Test func namesAndLinesMatchTheRuntimeModule() throws {
            try AllocationTracker.start(.init(maxFrames: 32, unwinder: .libunwind))
            defer { AllocationTracker.stop() }
            let line = #line; let boxes = Self.allocateHere(200)
            let raw = try AllocationTracker.takeSnapshot(symbolicate: false)
            withExtendedLifetime(boxes) {}
            let addresses = Set(raw.traces.flatMap { $0.traceback.frames.map(\.address) })
            #expect(addresses.count > 20)
            AllocationTracker._removeCachedSymbols()
            let ours = AllocationTracker._symbolicate(addresses)
            let reference = AllocationTracker._symbolicate(addresses, usingRuntimeModule: true)
            var compared = 0, withLines = 0
            for address in addresses {
                let theirs = reference[address]!, mine = ours[address]!
                #expect(mine.count == 1, "\(mine)")
                guard let physical = theirs.last, let frame = mine.first, physical.mangledName != "<unknown>" else { continue }
                compared += 1
                #expect(frame.function == physical.function, "\(String(address, radix: 16)): \(frame) vs \(theirs)")
                #expect(frame.mangledName == physical.mangledName)
                #expect(frame.image == physical.image)
                #expect(frame.imageOffset == physical.imageOffset)
                let innermost = theirs.first!
                // libc's lines come from its separate debug file (/usr/lib/debug/.build-id), where the Runtime
                // module finds its symbols but no lines: more here, nothing to compare.
                if innermost.file == nil, frame.image == "libc.so.6" { continue }
                // The Runtime module joins a root directory and a file name into `//<compiler-generated>`.
                let expectedFile = innermost.file?.replacing("//", with: "/")
                #expect(frame.file == expectedFile && frame.line == innermost.line,
                        "\(String(address, radix: 16)): \(frame) vs \(theirs)")
                if frame.file != nil { withLines += 1 }
            }
            #expect(compared > 20)
            #expect(withLines > 5)
            // This function's own frame, by name and line.
            let here = ours.values.compactMap(\.first).first { $0.line == line && ($0.file ?? "").hasSuffix("SymbolicationTests.swift") }
            #expect(here?.function?.contains("namesAndLinesMatchTheRuntimeModule") == true, "\(ours.values)")
        }

        /// The breakdown's parts: the tables are `trackerMemory`, the symbol cache grows with the addresses
        /// resolved (and empties with them), and the sum is the total.
        @Test func trackerMemoryBreakdownCountsTheSymbolCache() throws {
            try AllocationTracker.start(.init(maxFrames: 32, unwinder: .libunwind))
            defer { AllocationTracker.stop() }
            let boxes = Self.allocateHere(10)
            AllocationTracker._removeCachedSymbols()
            let empty = AllocationTracker.trackerMemoryBreakdown
            #expect(empty.symbolCache == 0)
            #expect(empty.tables == AllocationTracker.trackerMemory && empty.tables > 0)
            _ = try AllocationTracker.takeSnapshot()
            withExtendedLifetime(boxes) {}
            let resolved = AllocationTracker.trackerMemoryBreakdown
            let addresses = AllocationTracker._symbolCacheCount
            #expect(addresses > 10)
            // At least one frame object per address, at most a few KiB each.
            #expect(resolved.symbolCache >= addresses * 64 && resolved.symbolCache <= addresses * 4096,
                    "\(resolved.symbolCache) bytes for \(addresses) addresses")
            #expect(resolved.total == resolved.tables + resolved.symbolCache + resolved.names + resolved.history)
            #expect(resolved.description.contains("symbol cache ") && resolved.description.contains("history "))
        }
    }
}

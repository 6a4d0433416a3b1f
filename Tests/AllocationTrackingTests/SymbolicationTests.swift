@_spi(Testing) import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
import Testing

extension TrackerTests {
    /// The library's own ELF/DWARF symbolicator (`_Symbolicator`) against the toolchain's `Runtime` module it
    /// replaced, on every frame of a real snapshot of this test binary (its own functions, the C support library,
    /// libc and libswiftCore): the same frames, inlined ones included (in a release build most of them are), each
    /// with the same function and file:line.
    @Suite struct Symbolication {
        /// The line of `allocateHere`'s body: in a release build `map` and the closure are inlined there, so the
        /// allocation's address expands to inlined frames whose outermost call site is this line.
        static let allocationLine = #line + 3
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
            #expect(addresses.count > 10)
            AllocationTracker._removeCachedSymbols()
            let ours = AllocationTracker._symbolicate(addresses)
            let reference = AllocationTracker._symbolicate(addresses, usingRuntimeModule: true)
            var compared = 0, withLines = 0
            for address in addresses {
                let theirs = reference[address]!, mine = ours[address]!
                // The Runtime module's own failures (an image it no longer recognises): nothing to compare.
                guard let physical = theirs.last, let frame = mine.last, physical.mangledName != "<unknown>",
                      physical.image != nil else { continue }
                compared += 1
                let context = "\(String(address, radix: 16)): \(mine) vs \(theirs)"
                #expect(frame.function == physical.function, "\(context)")
                #expect(frame.mangledName == physical.mangledName, "\(context)")
                #expect(frame.image == physical.image)
                #expect(frame.imageOffset == physical.imageOffset)
                #expect(mine.dropLast().allSatisfy(\.isInlined) && !frame.isInlined, "\(context)")
                // Every inlined call the Runtime module found is one of ours. (It finds fewer and orders them by
                // start address, not by nesting: `llvm-symbolizer` below is the reference for the chain.)
                #expect(Set(theirs.dropLast().map(\.mangledName)).isSubset(of: mine.dropLast().map(\.mangledName)),
                        "\(context)")
                let innermost = theirs.first!, first = mine.first!
                // libc's lines come from its separate debug file (/usr/lib/debug/.build-id), where the Runtime
                // module finds its symbols but no lines: more here, nothing to compare.
                if innermost.file == nil, frame.image == "libc.so.6" { continue }
                // The Runtime module joins a root directory and a file name into `//<compiler-generated>`.
                let expectedFile = innermost.file?.replacing("//", with: "/")
                #expect(first.file == expectedFile && first.line == innermost.line,
                        "\(first.file ?? "nil"):\(first.line) vs \(innermost.file ?? "nil"):\(innermost.line) in \(context)")
                if first.file != nil { withLines += 1 }
            }
            #expect(compared > 10)
            #expect(withLines > 3)

            // The whole chain of the test executable's addresses, inlined frames and call sites, against LLVM's
            // symbolizer (shipped with the Swift toolchain).
            let symbolizer = try #require(PprofTools.find("llvm-symbolizer"), "llvm-symbolizer is not on PATH")
            let executable = raw.images[0]
            let executableName = String(executable.path.split(separator: "/").last!)
            let local = addresses.filter { ours[$0]!.last!.image == executableName }.sorted()
            #expect(local.count >= 3)
            // The file address of the call instruction (return address - 1): the image offset, as the executable
            // is position-independent and its lowest segment starts at 0.
            let input = local.map { "0x" + String(ours[$0]!.last!.imageOffset! - 1, radix: 16) }.joined(separator: "\n")
            let result = try PprofTools.run(symbolizer, ["--obj=\(executable.path)", "--inlining", "--functions=linkage",
                                                         "--no-demangle"], input: Data((input + "\n").utf8))
            #expect(result.status == 0, "\(result.error)")
            let answers = result.text.split(separator: "\n\n", omittingEmptySubsequences: true)
            #expect(answers.count == local.count)
            var withInlinedFrames = 0
            for (address, answer) in zip(local, answers) {
                let lines = answer.split(separator: "\n")
                let expected = stride(from: 0, to: lines.count - 1, by: 2).map { i -> (String, String?, Int) in
                    let place = lines[i + 1].split(separator: ":")  // path:line:column
                    let path = place.count >= 3 ? place.dropLast(2).joined(separator: ":") : nil
                    return (String(lines[i]), path == "??" ? nil : path, place.count >= 3 ? Int(place[place.count - 2]) ?? 0 : 0)
                }
                let mine = ours[address]!
                let context = "\(String(address, radix: 16)): \(mine) vs \(answer)"
                #expect(mine.count == expected.count, "\(context)")
                if expected.count > 1 { withInlinedFrames += 1 }
                for (frame, (name, file, line)) in zip(mine, expected) {
                    #expect(frame.mangledName == name, "\(context)")
                    #expect(frame.file == file && frame.line == line, "\(frame.file ?? "nil"):\(frame.line) in \(context)")
                }
            }
            #if !DEBUG
            // Optimised code: the allocation in `allocateHere` is inside inlined calls, which must be frames.
            #expect(withInlinedFrames > 0)
            let allocations = ours.values.filter { $0.last?.function?.contains("allocateHere") == true && $0.count > 1 }
            #expect(!allocations.isEmpty, "\(ours.values.filter { $0.count > 1 })")
            #expect(allocations.allSatisfy { $0.last?.line == Self.allocationLine }, "\(allocations)")
            // The boxes' own allocation (the array's is the other): AttributionBox's initialiser is an inlined frame.
            #expect(allocations.contains { $0.contains { $0.function?.hasPrefix("AttributionBox.") == true } },
                    "\(allocations)")
            #endif
            // This function's own frame, by name and line.
            let here = ours.values.compactMap(\.last).first { $0.line == line && ($0.file ?? "").hasSuffix("SymbolicationTests.swift") }
            #expect(here?.function?.contains("namesAndLinesMatchTheRuntimeModule") == true, "\(ours.values)")
        }

        /// The breakdown's parts: the tables are `trackerMemory`, the symbol cache grows with the addresses
        /// resolved (and empties with them), and the sum is the total (the part of the symbol cache the tracker's
        /// threads resolved counted once, in `threads`).
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
            #expect(resolved.total == resolved.tables + resolved.symbolCache - resolved.symbolCacheInThreads + resolved.names
                    + resolved.history + resolved.threads)
            #expect(resolved.symbolCacheInThreads <= resolved.symbolCache)
            #expect(resolved.description.contains("symbol cache ") && resolved.description.contains("history "))
        }
    }
}

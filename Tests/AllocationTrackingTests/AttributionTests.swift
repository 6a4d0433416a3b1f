@_spi(Testing) import AllocationTracking
import AllocationTrackingTestSupport
import Foundation
import Testing

/// Objects whose allocation the attribution tests look for.
final class AttributionBox {
    var values: [Int]
    init(_ n: Int) { values = [n] }
}

struct AttributionModel: Codable {
    var name: String
    var tags: [String]
}

extension TrackerTests {
    /// Each kind of Swift allocation lands on the line of this file that made it, not on `malloc`,
    /// `swift_slowAlloc` or the standard library — in debug and release builds.
    @Suite struct AttributionToLines {
        /// What a test keeps alive until the snapshot.
        final class Keeper: @unchecked Sendable { var objects: [Any] = [] }

        /// The `.line` statistic of this file at `line`, if any.
        static func statistic(_ stats: [Statistic], line: Int, file: String = #filePath) -> Statistic? {
            let name = URL(fileURLWithPath: file).lastPathComponent
            return stats.first {
                $0.traceback.frames[0].line == line && ($0.traceback.frames[0].file ?? "").hasSuffix(name)
            }
        }

        static func lines(_ stats: [Statistic]) -> String {
            stats.prefix(15).map(\.description).joined(separator: "\n")
        }

        /// libunwind only: the frame-pointer walk stops inside libswiftCore and libc, which are built without
        /// frame pointers (see the README's unwinder table).
        @Test func swiftAllocationsAreAttributedToTheirLine() throws {
            let unwinder = AllocationTracker.Configuration.Unwinder.libunwind
            let keep = Keeper()
            var expected: [(String, Int)] = []
            let snapshot = try withTracking(.init(maxFrames: 64, unwinder: unwinder)) { () throws -> Snapshot in
                expected.append(("class instance", #line)); keep.objects.append(AttributionBox(1))

                var array: [Int] = []
                expected.append(("array growth", #line)); for i in 0..<5000 { array.append(i) }
                keep.objects.append(array)

                let count = keep.objects.count
                expected.append(("string building", #line)); let text = String(repeating: "abc", count: 200) + "\(count)"
                keep.objects.append(text)

                var dictionary: [Int: Int] = [:]
                expected.append(("dictionary insert", #line)); for i in 0..<500 { dictionary[i] = i }
                keep.objects.append(dictionary)

                let captured = keep.objects.count
                expected.append(("escaping closure", #line)); let closure: () -> Int = { captured * 2 + count }
                keep.objects.append(closure)

                let model = AttributionModel(name: "n", tags: (0..<50).map { "tag\($0)" })
                expected.append(("Foundation JSONEncoder", #line)); let data = try JSONEncoder().encode(model)
                keep.objects.append(data)

                return try AllocationTracker.takeSnapshot()
            }
            let stats = try snapshot.statistics(groupedBy: .line)
            for (kind, line) in expected {
                #expect(Self.statistic(stats, line: line) != nil,
                        "\(kind) (line \(line)) not attributed to its line; top statistics:\n\(Self.lines(stats))")
            }
            withExtendedLifetime(keep) {}
        }

        @Test(arguments: allUnwinders)
        func cAndCxxAllocationsAreAttributedToTheCLine(unwinder: AllocationTracker.Configuration.Unwinder) throws {
            var cLine: Int32 = 0, cxxLine: Int32 = 0
            var blocks: [UnsafeMutableRawPointer?] = []
            let snapshot = try withTracking(.init(maxFrames: 64, unwinder: unwinder)) { () throws -> Snapshot in
                blocks.append(ats_malloc_attributed(777, &cLine))
                blocks.append(ats_cxx_new_attributed(555, &cxxLine))
                return try AllocationTracker.takeSnapshot()
            }
            defer {
                free(blocks[0])
                ats_cxx_delete(blocks[1]!)
            }
            let stats = try snapshot.statistics(groupedBy: .line)
            let c = stats.first { $0.traceback.frames[0].line == Int(cLine) && ($0.traceback.frames[0].file ?? "").hasSuffix("support.c") }
            let cxx = stats.first { $0.traceback.frames[0].line == Int(cxxLine) && ($0.traceback.frames[0].file ?? "").hasSuffix("support_cxx.cpp") }
            #expect(c?.size == 777 && c?.count == 1, "C malloc not at support.c:\(cLine):\n\(Self.lines(stats))")
            // The frame-pointer walk cannot see the C++ caller: operator new (libstdc++) keeps no frame pointer,
            // so the walk continues from the caller's caller (README: unwinders).
            if unwinder == .libunwind {
                #expect(cxx?.size == 555 && cxx?.count == 1, "C++ new not at support_cxx.cpp:\(cxxLine):\n\(Self.lines(stats))")
            }

            // The functions are named: C as is, C++ demangled.
            let functions = try snapshot.statistics(groupedBy: .function)
            #expect(functions.contains { $0.traceback.frames[0].function == "ats_malloc_attributed" && $0.size == 777 })
            if unwinder == .libunwind {
                #expect(functions.contains { ($0.traceback.frames[0].function ?? "").hasPrefix("ats_cxx_new_attributed") && $0.size == 555 })
            }
        }

        @Test func framesCarryFunctionFileLineAndImage() throws {
            var line: Int32 = 0
            var callLine = 0
            var block: UnsafeMutableRawPointer?
            let snapshot = try withTracking(.init(unwinder: .libunwind)) { () throws -> Snapshot in
                callLine = #line; block = ats_malloc_attributed(4321, &line)
                return try AllocationTracker.takeSnapshot()
            }
            defer { free(block) }
            let trace = try #require(snapshot.traces.first { $0.size == 4321 && helperText.contains($0.traceback.frames.first { $0.function == "ats_malloc_attributed" }?.address ?? 0) })
            let frame = try #require(trace.traceback.frames.first { $0.function == "ats_malloc_attributed" })
            #expect(frame.file?.hasSuffix("support.c") == true)
            #expect(frame.line == Int(line))
            #expect(frame.mangledName == "ats_malloc_attributed")
            #expect(frame.image != nil && frame.imageOffset != nil)
            // The caller: this test's closure, a Swift function with its mangled name, file and line. (In release
            // builds the closure is inlined; the Runtime module may then name an inlined frame after a
            // neighbouring level, so the name is checked in debug builds only.)
            let caller = trace.traceback.frames.first { ($0.file ?? "").hasSuffix("AttributionTests.swift") }
            #expect(caller?.line == callLine, "\(trace.traceback.format().joined(separator: "\n"))")
            #expect(caller?.mangledName?.hasPrefix("$s") == true)
            #if DEBUG
            #expect(caller?.function?.contains("framesCarryFunctionFileLineAndImage") == true,
                    "\(trace.traceback.format().joined(separator: "\n"))")
            #endif
            // Where the allocation is made (the most recent frame) is the allocator, a system frame.
            #expect(AllocationTracking.Attribution.default.isSystem(trace.traceback.frames[0]) || trace.traceback.frames[0].function == "ats_malloc_attributed")
            #expect(trace.traceback.attributionFrame()?.function == "ats_malloc_attributed")
        }

        @Test func theSystemSetIsConfigurable() throws {
            var line: Int32 = 0
            var block: UnsafeMutableRawPointer?
            let snapshot = try withTracking(.init(unwinder: .libunwind)) { () throws -> Snapshot in
                block = ats_malloc_attributed(9876, &line)
                return try AllocationTracker.takeSnapshot()
            }
            defer { free(block) }
            // Treat the C helper's function as system code: the memory moves to its Swift caller in this file.
            var attribution = AllocationTracking.Attribution.default
            attribution.systemFunctions.append("ats_*")
            let stats = try snapshot.statistics(groupedBy: .line, attribution: attribution)
            let stat = try #require(stats.first { $0.size == 9876 })
            #expect(stat.traceback.frames[0].file?.hasSuffix("AttributionTests.swift") == true, "\(stat)")
        }

        @Test func aSecondSnapshotUsesTheSymbolCache() throws {
            var keep: [UnsafeMutableRawPointer?] = []
            // No watchdog: its refresh warms the symbol cache in the background, which this test counts.
            try withTracking(.init(unwinder: .libunwind, limits: .init(containerFraction: nil, onAllocationFailure: false))) {
                var line: Int32 = 0
                keep.append(ats_malloc_attributed(100, &line))
                let first = try AllocationTracker.takeSnapshot()
                let cached = AllocationTracker._symbolCacheCount
                let second = try AllocationTracker.takeSnapshot()
                #expect(cached > 0)
                // Only addresses the first snapshot had not seen (other tests' threads allocate meanwhile) are new.
                let newAddresses = Set(second.traces.flatMap { $0.traceback.frames.map(\.address) })
                    .subtracting(first.traces.flatMap { $0.traceback.frames.map(\.address) })
                #expect(AllocationTracker._symbolCacheCount <= cached + newAddresses.count)
            }
            keep.forEach { free($0) }
        }

        /// A snapshot carries the loaded images its frames point into, the main executable first, with the build
        /// id the file on disk has (read here from its section headers, independently of the tracker, which reads
        /// the loaded program headers), and every resolved frame lies in one of them.
        @Test(arguments: allUnwinders)
        func snapshotImagesCoverTheFrames(unwinder: AllocationTracker.Configuration.Unwinder) throws {
            var line: Int32 = 0
            var block: UnsafeMutableRawPointer?
            let snapshot = try withTracking(.init(unwinder: unwinder)) { () throws -> Snapshot in
                block = ats_malloc_attributed(2468, &line)
                return try AllocationTracker.takeSnapshot()
            }
            defer { free(block) }
            let executable = try #require(realpath("/proc/self/exe", nil))
            defer { free(executable) }
            let path = String(cString: executable)
            let main = try #require(snapshot.images.first)
            #expect(main.path == path)
            let onDisk = try #require(try gnuBuildID(ofFile: path), "no build id in \(path)")
            #expect(main.buildID == onDisk)
            #expect(main.start < main.end && main.contains(UInt(ats_alloc_text_start())))
            #expect(Set(snapshot.images).count == snapshot.images.count)
            var resolved = 0
            for trace in snapshot.traces {
                for frame in trace.traceback.frames where frame.isSymbolicated && frame.address != 0 {
                    resolved += 1
                    #expect(snapshot.images.contains { $0.contains(frame.address) },
                            "\(frame) in none of \(snapshot.images.map(\.path))")
                }
            }
            #expect(resolved > 0)
            // Only images frames point into (and the executable): libc is there when a frame is in it.
            let images = Set(snapshot.traces.flatMap { $0.traceback.frames.compactMap(\.image) })
            for image in snapshot.images.dropFirst() {
                #expect(snapshot.traces.contains { $0.traceback.frames.contains { image.contains($0.address) } },
                        "\(image.path) holds no frame (images named by frames: \(images))")
            }
        }
    }
}

/// The GNU build id of the ELF file at `path`, in lowercase hex, from its `SHT_NOTE` sections; nil when it has none.
func gnuBuildID(ofFile path: String) throws -> String? {
    let data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
    func integer(_ offset: Int, _ size: Int) -> Int {
        var value = 0
        for i in (0..<size).reversed() { value = value << 8 | Int(data[data.startIndex + offset + i]) }  // little endian
        return value
    }
    guard data.count > 64, data.prefix(4) == Data([0x7F, 0x45, 0x4C, 0x46]), data[data.startIndex + 4] == 2 else {
        return nil  // not a 64-bit ELF file
    }
    let sectionTable = integer(0x28, 8), entrySize = integer(0x3A, 2), sections = integer(0x3C, 2)
    for index in 0..<sections {
        let header = sectionTable + index * entrySize
        guard integer(header + 4, 4) == 7 else { continue }  // SHT_NOTE
        var note = integer(header + 0x18, 8)
        let end = note + integer(header + 0x20, 8)
        while note + 12 <= end {
            let nameSize = integer(note, 4), descriptionSize = integer(note + 4, 4), type = integer(note + 8, 4)
            let name = note + 12, description = name + (nameSize + 3) & ~3
            if type == 3, nameSize == 4, data[(data.startIndex + name)..<(data.startIndex + name + 4)] == Data("GNU\0".utf8) {
                return data[(data.startIndex + description)..<(data.startIndex + description + descriptionSize)]
                    .map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
            }
            note = description + (descriptionSize + 3) & ~3
        }
    }
    return nil
}

import Synchronization
import CAllocationTracking

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Turns captured return addresses into `Frame`s with function, file:line and image. Runs when a snapshot, report
/// or export needs names, for the addresses it shows — never inside malloc, never ahead of time for every new
/// site — with the calling thread's tracking suspended (its allocations are not traced).
///
/// How: the addresses of a batch are grouped by image; each image's file is mapped for the batch (`_ElfFile`),
/// its function symbols (`.symtab`, or `.dynsym` when stripped) are sorted once and searched per address, its
/// `.debug_line` is run ONCE for the whole batch (`_DwarfLineTable`), and the compilation units of `.debug_info`
/// that hold addresses of the batch are walked once for the calls inlined there (`_DwarfInlinedCalls`), which
/// become frames of their own as the `Runtime` module made them. Then the file is unmapped: no symbol data is
/// kept between batches, only the resolved frames, cached per address (a second snapshot of the same program pays
/// only for new addresses; `cachedBytes` is their footprint in `trackerMemoryBreakdown`). The cache is emptied when
/// an image is unloaded (an address could then belong to another image).
///
/// Why not the toolchain's `Runtime` module, used before (`_RuntimeModuleSymbols`): it walks the image's whole
/// line table for EVERY address, which on a service's release binary made a cold lookup cost milliseconds and the
/// former once-a-second warm-up of new sites a core for a minute after each start; and it keeps every image's
/// DWARF in a per-thread cache forever (its inlined-call table too: every unit of `.debug_info` decoded on the
/// first lookup). Measured in `Benchmarks/Sources/SymbolicationCost` (see RESULTS.md).
final class _Symbolicator: Sendable {
    static let shared = _Symbolicator()

    private struct State {
        var cache: [UInt: [Frame]] = [:]
        /// Estimated heap bytes of `cache` (see `footprint`).
        var cachedBytes = 0 { didSet { _Symbolicator.cachedBytesNow.store(cachedBytes, ordering: .relaxed) } }
        /// The part of `cachedBytes` resolved on the tracker's own threads, whose heap is counted apart.
        var cachedBytesInTrackerThreads = 0 {
            didSet { _Symbolicator.cachedBytesInTrackerThreadsNow.store(cachedBytesInTrackerThreads, ordering: .relaxed) }
        }
        /// The loaded images, sorted by code start, and the loader's (loads, unloads) counts when captured.
        var images: [Snapshot.Image] = []
        var loaderCounts: (UInt64, UInt64)? = nil
    }

    private let state = Mutex(State())

    /// Resolved frames for each address (inlined frames first, when there are any); every address of `addresses`
    /// is a key of the result.
    func frames(for addresses: Set<UInt>) -> [UInt: [Frame]] {
        let onTrackerThread = cat_thread_uses_private_heap() != 0  // what it resolves is in the threads' heap
        return state.withLock { state in
            Self.refreshImages(&state)
            var result: [UInt: [Frame]] = [:]
            result.reserveCapacity(addresses.count)
            var byImage: [Int: [UInt]] = [:]
            for address in addresses {
                if let frames = state.cache[address] {
                    result[address] = frames
                } else if let image = Self.image(containing: address, in: state.images) {
                    byImage[image, default: []].append(address)
                } else {
                    result[address] = [Frame(address: address)]  // not cached: an image may appear there later
                }
            }
            for (index, group) in byImage {
                for (address, frames) in Self.resolve(group, in: state.images[index]) {
                    state.cache[address] = frames
                    let footprint = Self.footprint(frames)
                    state.cachedBytes += footprint
                    if onTrackerThread { state.cachedBytesInTrackerThreads += footprint }
                    result[address] = frames
                }
            }
            return result
        }
    }

    /// Recaptures the image list after the dynamic loader loaded or unloaded something; after an unload the
    /// cache starts over.
    private static func refreshImages(_ state: inout State) {
        var loads: UInt64 = 0, unloads: UInt64 = 0
        cat_loader_counts(&loads, &unloads)
        if let previous = state.loaderCounts, previous == (loads, unloads) { return }
        if let previous = state.loaderCounts, previous.1 != unloads {
            state.cache.removeAll()
            state.cachedBytes = 0
            state.cachedBytesInTrackerThreads = 0
        }
        state.images = _LoadedImages.captureAll().sorted { $0.start < $1.start }
        state.loaderCounts = (loads, unloads)
    }

    private static func image(containing address: UInt, in images: [Snapshot.Image]) -> Int? {
        var low = 0, high = images.count
        while low < high {  // the first image starting above `address`
            let middle = (low + high) / 2
            if images[middle].start <= address { low = middle + 1 } else { high = middle }
        }
        return low > 0 && address < images[low - 1].end ? low - 1 : nil
    }

    /// Estimated heap bytes of one cache entry: the dictionary slot, the array, each frame's storage object (a
    /// 16-byte object header and its fields) and out-of-line strings (Swift keeps up to 15 UTF-8 bytes inline).
    /// Frames of one function share their name strings only when they were resolved in the same batch; counted
    /// per frame, so this errs high.
    private static func footprint(_ frames: [Frame]) -> Int {
        func text(_ string: String?) -> Int {
            guard let string else { return 0 }
            let count = string.utf8.count
            return count > 15 ? 32 + count : 0
        }
        var bytes = MemoryLayout<UInt>.stride + MemoryLayout<[Frame]>.stride + 32
        for frame in frames {
            bytes += MemoryLayout<Frame>.stride + 16 + MemoryLayout<_FrameFields>.stride + 8 + text(frame.function) + text(frame.file) + text(frame.image)
                + text(frame.mangledName)
        }
        return bytes
    }

    /// Addresses resolved so far (for tests and benchmarks).
    var cachedAddressCount: Int { state.withLock { $0.cache.count } }

    /// Estimated heap bytes of the resolved frames kept (for `trackerMemoryBreakdown`).
    /// Read without the lock (a mirror of the state's figure): a report's memory line must not wait behind another
    /// caller's batch, which can hold the lock for as long as reading a large image's line table takes.
    var cachedBytes: Int { Self.cachedBytesNow.load(ordering: .relaxed) }
    private static let cachedBytesNow = Atomic<Int>(0)
    var cachedBytesInTrackerThreads: Int { Self.cachedBytesInTrackerThreadsNow.load(ordering: .relaxed) }
    private static let cachedBytesInTrackerThreadsNow = Atomic<Int>(0)

    /// The addresses of `addresses` not resolved yet.
    /// The frames already resolved for `addresses` (the others are not keys), or nil when a batch holds the
    /// lock: for a caller with a deadline (a report), which must not wait behind another caller's batch.
    func cachedFrames(for addresses: Set<UInt>) -> [UInt: [Frame]]? {
        state.withLockIfAvailable { state in
            var found: [UInt: [Frame]] = [:]
            for address in addresses { if let frames = state.cache[address] { found[address] = frames } }
            return found
        }
    }

    func uncached(_ addresses: Set<UInt>) -> [UInt] {
        state.withLock { state in addresses.filter { state.cache[$0] == nil } }
    }

    /// Forgets every resolved address (for benchmarks of the cold path).
    func removeAll() {
        state.withLock {
            $0.cache.removeAll()
            $0.cachedBytes = 0
            $0.cachedBytesInTrackerThreads = 0
        }
    }

    /// The frames of `addresses`, all in `image`: one mapping of its file, one pass over its line table and one
    /// over the units of its `.debug_info` that hold the addresses.
    private static func resolve(_ addresses: [UInt], in image: Snapshot.Image) -> [UInt: [Frame]] {
        let imageName = image.path.split(separator: "/").last.map(String.init) ?? image.path
        var result: [UInt: [Frame]] = [:]
        guard let file = _ElfFile(path: image.path), let text = file.textSegment else {
            for address in addresses { result[address] = [Frame(image: imageName, address: address)] }
            return result
        }
        // The load bias: the executable segment's address in memory minus its address in the file.
        let bias = UInt64(image.start) &- text.vaddr
        let loadAddress = bias &+ (file.lowestAddress == .max ? 0 : file.lowestAddress)
        // Return addresses point after the call: look up the call instruction's last byte.
        let sorted = addresses.sorted()
        let keys = sorted.map { UInt64($0) &- 1 &- bias }
        // A stripped library's symbols and DWARF may be in a separate debug file found by its build id (Debian's
        // -dbg/-dbgsym packages, as gdb and the Runtime module look them up); same addresses as the image.
        let debugFile = image.buildID.flatMap { id in
            id.count > 2 ? _ElfFile(path: "/usr/lib/debug/.build-id/\(id.prefix(2))/\(id.dropFirst(2)).debug") : nil
        }
        var functions = debugFile?.functionSymbols() ?? []
        if functions.isEmpty { functions = file.functionSymbols() }
        var locations: [_DwarfLineTable.Location?] = []
        var inlined: [[_DwarfInlinedCalls.Call]] = []
        for source in [debugFile, file].compactMap({ $0 }) {
            guard let lines = source.section(".debug_line") else { continue }
            let strings = source.section(".debug_str"), lineStrings = source.section(".debug_line_str")
            var directories: [Int: String] = [:]
            if let info = source.section(".debug_info"), let abbreviations = source.section(".debug_abbrev") {
                let calls = _DwarfInlinedCalls(sections: .init(
                    info: info, abbreviations: abbreviations, strings: strings, lineStrings: lineStrings,
                    stringOffsets: source.section(".debug_str_offsets"), addresses: source.section(".debug_addr"),
                    ranges: source.section(".debug_ranges"), rangeLists: source.section(".debug_rnglists"),
                    lines: lines))
                inlined = calls.calls(ofSorted: keys)
                directories = calls.compilationDirectories
            }
            locations = _DwarfLineTable(lines: lines, lineStrings: lineStrings, strings: strings,
                                        compilationDirectories: directories).locations(ofSorted: keys)
            break
        }
        // Names demangled once per batch, and shared by the frames of one function.
        var symbolNames: [UnsafePointer<CChar>: (function: String, mangled: String)] = [:]
        var inlinedNames: [String: String] = [:]
        func demangled(_ raw: String) -> String {
            if let known = inlinedNames[raw] { return known }
            let name = _demangle(raw) ?? raw
            inlinedNames[raw] = name
            return name
        }
        for (i, address) in sorted.enumerated() {
            var function: String? = nil, mangled: String? = nil
            if let symbol = Self.function(containing: keys[i], in: functions) {
                if let known = symbolNames[symbol] {
                    (function, mangled) = known
                } else {
                    let raw = String(cString: symbol)
                    (function, mangled) = (_demangle(raw) ?? raw, raw)
                    symbolNames[symbol] = (function!, raw)
                }
            }
            let imageOffset = address &- UInt(loadAddress)
            // Inlined calls first, innermost first: each shows the line it is at (the line table's for the
            // innermost), and the call site of each is the line of the frame that contains it.
            var frames: [Frame] = []
            let location = i < locations.count ? locations[i] : nil
            var (file, line) = (location?.path, location?.line ?? 0)
            for call in i < inlined.count ? inlined[i] : [] {
                frames.append(Frame(function: call.mangledName.map(demangled), file: file, line: line,
                                    image: imageName, address: address, mangledName: call.mangledName,
                                    imageOffset: imageOffset, isInlined: true))
                (file, line) = (call.file, call.line)
            }
            frames.append(Frame(function: function, file: file, line: line, image: imageName,
                                address: address, mangledName: mangled, imageOffset: imageOffset))
            result[address] = frames
        }
        return result
    }

    /// The name of the function whose range holds `key` (a file address).
    private static func function(containing key: UInt64,
                                 in functions: [(start: UInt64, end: UInt64, name: UnsafePointer<CChar>)])
        -> UnsafePointer<CChar>? {
        var low = 0, high = functions.count
        while low < high {  // the first function starting above `key`
            let middle = (low + high) / 2
            if functions[middle].start <= key { low = middle + 1 } else { high = middle }
        }
        // Nested or overlapping ranges (aliases, local labels): the nearest start whose range still holds the key.
        var i = low - 1
        while i >= 0, i >= low - 4 {
            if key < functions[i].end { return functions[i].name }
            i -= 1
        }
        return nil
    }
}

/// The runtime's demangler for backtraces (`swift_demangle` with the simplified options the Runtime module
/// prints: `Cache.insert(_:for:)`, not the full signature; C++ through `__cxa_demangle`). Exported by
/// libswiftCore for the Runtime module.
@_silgen_name("_swift_backtrace_demangle")
private func _swift_backtrace_demangle(_ mangledName: UnsafePointer<CChar>?, _ mangledNameLength: Int,
                                       _ outputBuffer: UnsafeMutablePointer<CChar>?,
                                       _ outputBufferSize: UnsafeMutablePointer<Int>?) -> UnsafeMutablePointer<CChar>?

/// The demangled form of `name`, or nil when it is not a Swift or C++ mangled name.
func _demangle(_ name: String) -> String? {
    guard name.hasPrefix("$s") || name.hasPrefix("_T") || name.hasPrefix("$S") || name.hasPrefix("_Z")
            || name.hasPrefix("$e") else { return nil }
    guard let simplified = name.withCString({ pointer -> String? in
        guard let output = _swift_backtrace_demangle(pointer, strlen(pointer), nil, nil) else { return nil }
        defer { free(output) }
        return String(cString: output)
    }) else { return nil }
    // A closure in top-level code (main.swift) has the module as its context, which the simplified form leaves
    // out: "closure #5 in ", where the full form says "closure #5 () -> () in ServiceBench". Named after its
    // module, as the full form does.
    if simplified.hasSuffix(" in "), let module = _moduleName(ofMangled: name) { return simplified + module }
    return simplified
}

/// The module of a Swift mangled name: the identifier that follows the prefix (`$s12ServiceBench…` →
/// `ServiceBench`), when it is spelled out (not a substitution such as the standard library's `s`).
func _moduleName(ofMangled name: String) -> String? {
    guard name.hasPrefix("$s") || name.hasPrefix("$S") || name.hasPrefix("$e") else { return nil }
    let utf8 = Array(name.utf8.dropFirst(2))
    var length = 0, index = 0
    while index < utf8.count, let digit = UInt8(exactly: utf8[index]), (48...57).contains(digit) {
        length = length * 10 + Int(digit - 48)
        index += 1
        if length > 1000 { return nil }
    }
    guard index > 0, length > 0, index + length <= utf8.count else { return nil }
    return String(decoding: utf8[index..<index + length], as: UTF8.self)
}

extension AllocationTracker {
    /// The resolved frames of each of `addresses` (inlined frames first), through the symbol cache, or through the
    /// toolchain's `Runtime` module (uncached) for comparison: for the symbolication tests and benchmarks, with
    /// any address in a loaded image, not only captured ones.
    @_spi(Testing) public static func _symbolicate(_ addresses: Set<UInt>, usingRuntimeModule: Bool = false)
        -> [UInt: [Frame]] {
        let previous = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        defer { _ = cat_thread_set_state(previous) }
        return usingRuntimeModule ? _RuntimeModuleSymbols.frames(for: addresses)
                                  : _Symbolicator.shared.frames(for: addresses)
    }
}

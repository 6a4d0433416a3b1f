@_spi(Internal) import Runtime
import Synchronization
import CAllocationTracking

/// Turns captured return addresses into `Frame`s with function, file:line and image. Runs at snapshot and
/// report time only, never inside malloc, and with the calling thread's tracking suspended (its allocations are
/// not traced).
///
/// Why the toolchain's `Runtime` module: it reads the ELF symbol tables and the DWARF line and inline tables of
/// every loaded image (the executable included, whose Swift functions `dladdr` cannot see without
/// `--export-dynamic`), understands the DWARF 5 that the toolchain's clang emits (Debian's libdw 0.188 rejects
/// it), demangles Swift and C++, and expands inlined frames. It ships with the toolchain and its runtime images.
/// Its cost is in the DWARF lookups (about 0.14 ms per address with line information, far less for images
/// without it, such as the system libraries), so results are cached per address: a second snapshot of the same
/// program pays only for new addresses. The cache is emptied when an image is unloaded (an address could then
/// belong to another image).
///
/// `Backtrace(architecture:frames:images:)` (SPI) is how captured addresses are fed to it; the public API only
/// symbolicates backtraces it captured itself.
final class _Symbolicator: Sendable {
    static let shared = _Symbolicator()

    private struct Entry {
        var imageBase: UInt
        var frames: [Frame]
    }

    private struct State {
        var cache: [UInt: Entry] = [:]
        /// Image maps, newest last, and the loader's (loads, unloads) counts when the newest was captured.
        var imageMaps: [ImageMap] = []
        var loaderCounts: (UInt64, UInt64) = (0, 0)
    }

    private let state = Mutex(State())

    /// Resolved frames for each address (inlined frames first); every address of `addresses` is a key of the
    /// result.
    func frames(for addresses: Set<UInt>) -> [UInt: [Frame]] {
        state.withLock { state in
            Self.refreshImageMaps(&state)
            var result: [UInt: [Frame]] = [:]
            result.reserveCapacity(addresses.count)
            var missing: [UInt] = []
            for address in addresses {
                if let entry = state.cache[address] { result[address] = entry.frames } else { missing.append(address) }
            }
            guard !missing.isEmpty else { return result }
            missing.sort()
            // Each address is resolved with the oldest map that knows its image (see refreshImageMaps).
            var byMap = [[UInt]](repeating: [], count: state.imageMaps.count)
            var unknown: [UInt] = []
            for address in missing {
                let a = Backtrace.Address(UInt64(address))
                if let m = state.imageMaps.firstIndex(where: { $0.indexOfImage(at: a) != nil }) {
                    byMap[m].append(address)
                } else {
                    unknown.append(address)
                }
            }
            for (m, group) in byMap.enumerated() where !group.isEmpty {
                for (address, entry) in Self.resolve(group, images: state.imageMaps[m]) {
                    state.cache[address] = entry
                    result[address] = entry.frames
                }
            }
            for address in unknown {
                let entry = Entry(imageBase: 0, frames: [Frame(address: address)])
                result[address] = entry.frames  // not cached: an image may appear there later
            }
            return result
        }
    }

    /// Captures an image map when the dynamic loader has loaded or unloaded something since the last one.
    ///
    /// Why not capture every time: once the Runtime module has read an image's file for its symbols, it keeps
    /// the file mapped, and a later `ImageMap.capture()` no longer recognises that image (the extra mapping of
    /// the same path confuses it): its frames would lose their symbols. So the first map is kept; a new one is
    /// added only after a `dlopen`, and addresses are resolved with the oldest map that knows their image. After
    /// a `dlclose`, an old map may describe an unloaded image, so the maps and the cache start over.
    private static func refreshImageMaps(_ state: inout State) {
        let counts = loaderCounts()
        if state.imageMaps.isEmpty {
            state.imageMaps = [ImageMap.capture()]
        } else if counts.1 != state.loaderCounts.1 {
            state.imageMaps = [ImageMap.capture()]
            state.cache.removeAll()
        } else if counts.0 != state.loaderCounts.0 {
            state.imageMaps.append(ImageMap.capture())
        }
        state.loaderCounts = counts
    }

    /// glibc's running totals of objects loaded and unloaded.
    private static func loaderCounts() -> (UInt64, UInt64) {
        var loads: UInt64 = 0, unloads: UInt64 = 0
        cat_loader_counts(&loads, &unloads)
        return (loads, unloads)
    }

    /// Addresses resolved so far (for tests and benchmarks).
    var cachedAddressCount: Int { state.withLock { $0.cache.count } }

    /// The addresses of `addresses` not resolved yet.
    func uncached(_ addresses: Set<UInt>) -> [UInt] {
        state.withLock { state in addresses.filter { state.cache[$0] == nil } }
    }

    /// Forgets every resolved address (for benchmarks of the cold path).
    func removeAll() { state.withLock { $0.cache.removeAll() } }

    /// The name the Runtime module uses for this machine's architecture.
    private static let architecture: String = (try? Backtrace.capture(limit: 1))?.architecture ?? "x86_64"

    private static func resolve(_ addresses: [UInt], images: ImageMap) -> [UInt: Entry] {
        var result: [UInt: Entry] = [:]
        result.reserveCapacity(addresses.count)
        func imageInfo(_ address: UInt) -> (base: UInt, name: String?) {
            guard let index = images.indexOfImage(at: Backtrace.Address(UInt64(address))) else { return (0, nil) }
            return (UInt(images[index].baseAddress) ?? 0, images[index].name)
        }
        let captured = addresses.map { RichFrame<UInt64>.returnAddress(UInt64($0)) }
        let backtrace = Backtrace(architecture: architecture, frames: captured, images: images)
        if let symbolicated = backtrace.symbolicated(with: images, options: [.showInlineFrames, .showSourceLocations]) {
            for frame in symbolicated.frames {
                let address: UInt
                switch frame.captured {
                case .returnAddress(let a), .programCounter(let a), .asyncResumePoint(let a):
                    guard let value = UInt(a) else { continue }
                    address = value
                default:
                    continue
                }
                let (base, imageName) = imageInfo(address)
                let symbol = frame.symbol
                let location = symbol?.sourceLocation
                let resolved = Frame(
                    function: symbol.map { $0.name.isEmpty ? $0.rawName : $0.name },
                    file: location.map(\.path),
                    line: location?.line ?? 0,
                    image: symbol?.imageName ?? imageName,
                    address: address,
                    mangledName: symbol?.rawName,
                    imageOffset: base == 0 ? nil : address &- base,
                    isInlined: frame.inlined)
                result[address, default: Entry(imageBase: base, frames: [])].frames.append(resolved)
            }
        }
        for address in addresses where result[address] == nil {
            let (base, imageName) = imageInfo(address)
            result[address] = Entry(imageBase: base, frames: [
                Frame(image: imageName, address: address, imageOffset: base == 0 ? nil : address &- base),
            ])
        }
        return result
    }
}

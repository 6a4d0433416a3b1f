@_spi(Internal) import Runtime

/// The toolchain's `Runtime` module as a symbolicator: the resolver this library used before `_Symbolicator`'s
/// own ELF/DWARF reading, kept as the reference the tests compare names and lines with, and as the baseline the
/// `SymbolicationCost` benchmark measures side by side. Not used by snapshots or reports.
///
/// Why it was replaced: for each address it runs the image's line programs from the first one until one covers
/// the address (`ElfImage.sourceLocation(for:)`, "once per frame" as its own comment says), so a cold lookup costs
/// a walk of the whole `.debug_line` — milliseconds per address on a service's release binary; and it keeps every
/// image it opened, with its DWARF inline tables, in a per-thread cache for the life of the thread (memory the
/// process never gets back).
enum _RuntimeModuleSymbols {
    /// Captured once: after the Runtime module has read an image's file it keeps it mapped, and a later
    /// `ImageMap.capture()` no longer recognises that image (its frames would lose their symbols).
    private static let images = ImageMap.capture()

    /// Resolved frames for each address (inlined frames first), uncached; every address is a key.
    static func frames(for addresses: Set<UInt>) -> [UInt: [Frame]] {
        let images = Self.images
        var result: [UInt: [Frame]] = [:]
        func imageInfo(_ address: UInt) -> (base: UInt, name: String?) {
            guard let index = images.indexOfImage(at: Backtrace.Address(UInt64(address))) else { return (0, nil) }
            return (UInt(images[index].baseAddress) ?? 0, images[index].name)
        }
        let sorted = addresses.sorted()
        let captured = sorted.map { RichFrame<UInt64>.returnAddress(UInt64($0)) }
        let architecture = (try? Backtrace.capture(limit: 1))?.architecture ?? "x86_64"
        let backtrace = Backtrace(architecture: architecture, frames: captured, images: images)
        if let symbolicated = backtrace.symbolicated(with: images, options: [.showInlineFrames, .showSourceLocations]) {
            for frame in symbolicated.frames {
                guard case .returnAddress(let a) = frame.captured, let address = UInt(a) else { continue }
                let (base, imageName) = imageInfo(address)
                let symbol = frame.symbol
                let location = symbol?.sourceLocation
                result[address, default: []].append(Frame(
                    function: symbol.map { $0.name.isEmpty ? $0.rawName : $0.name },
                    file: location.map(\.path),
                    line: location?.line ?? 0,
                    image: symbol?.imageName ?? imageName,
                    address: address,
                    mangledName: symbol?.rawName,
                    imageOffset: base == 0 ? nil : address &- base,
                    isInlined: frame.inlined))
            }
        }
        for address in sorted where result[address] == nil { result[address] = [Frame(address: address)] }
        return result
    }
}

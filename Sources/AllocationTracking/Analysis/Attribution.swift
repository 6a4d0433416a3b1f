#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Which frames are "system" frames, to find the line a user cares about.
///
/// The most recent frame of a native allocation is almost always the allocator or the runtime (`malloc` ←
/// `swift_slowAlloc` ← `swift_allocObject` ← `Array` internals). A trace's *attribution frame* is its most
/// recent frame that is not a system frame (or, when every frame is, its most recent frame). Statistics grouped
/// `.line`, `.function` and `.file`, and filters that look at one frame, use the attribution frame.
///
/// A frame is a system frame when its image matches one of `systemImages`, its function (readable or
/// mangled) matches one of `systemFunctions`, or its file matches one of `systemFiles`. Patterns are
/// `fnmatch(3)` globs where `*` also matches `/` and `\` is an ordinary character. A frame in a known file at
/// line 0 is compiler-generated code (an allocating initialiser, a thunk) and counts as system code too.
///
/// ```swift
/// var attribution = Attribution.default
/// attribution.systemImages.append("libMyLogging.so")     // treat a dependency as system code
/// let stats = try snapshot.statistics(groupedBy: .line, attribution: attribution)
/// ```
public struct Attribution: Hashable, Sendable, Codable {
    public var systemImages: [String]
    public var systemFunctions: [String]
    public var systemFiles: [String]

    public init(systemImages: [String] = [], systemFunctions: [String] = [], systemFiles: [String] = []) {
        self.systemImages = systemImages
        self.systemFunctions = systemFunctions
        self.systemFiles = systemFiles
    }

    /// libc and the dynamic loader, the C++ runtime, the Swift runtime and standard library, Concurrency,
    /// Foundation, Dispatch, and this library. Swift standard library code specialised or inlined into your
    /// own image is recognised by its mangled module (`$ss…`, `$sS…` standard types) or its source file.
    public static let `default` = Attribution(
        systemImages: [
            "libc.so*", "libm.so*", "libpthread.so*", "libdl.so*", "librt.so*", "ld-linux*", "ld-musl*",
            "libstdc++.so*", "libc++.so*", "libc++abi.so*", "libgcc_s.so*",
            "libswiftCore.so", "libswift_*.so", "libswiftSwiftOnoneSupport.so", "libswiftSynchronization.so", "libswiftGlibc.so",
            "libswiftDispatch.so", "libswiftRuntime.so", "libswiftObservation.so", "libswiftDistributed.so",
            "libdispatch.so", "libBlocksRuntime.so",
            "libFoundation*.so", "lib_FoundationICU.so", "libXCTest.so", "libTesting.so",
        ],
        systemFunctions: [
            // The Swift runtime (also when linked statically) and malloc itself.
            "swift_*", "_swift_*", "malloc", "calloc", "realloc", "free", "operator new*", "__libc_*",
            // Mangled Swift symbols of the standard library: module `Swift` ($ss) and its standard types
            // ($sSa Array, $sSD Dictionary, $sSS String, ...) — unless an extension in another module ($sSa4AppE).
            "$ss*", "$sS[a-zA-Z]*",
            // Foundation and Concurrency specialised into the caller.
            "$s10Foundation*", "$s20FoundationEssentials*", "$s12_Concurrency*",
            // This library (linked statically into the executable).
            "$s18AllocationTracking*", "cat_*",
        ],
        systemFiles: ["*<compiler-generated>", "*/swift/stdlib/*", "*/swift-foundation/*", "*/swift-corelibs-*"])

    /// Whether `frame` is system code.
    public func isSystem(_ frame: Frame) -> Bool {
        if let image = frame.image, systemImages.contains(where: { _glob($0, image) }) { return true }
        if let mangled = frame.mangledName, !Self.isExtensionInUserModule(mangled),
           systemFunctions.contains(where: { _glob($0, mangled) }) {
            return true
        }
        if let function = frame.function, function != frame.mangledName,
           systemFunctions.contains(where: { _glob($0, function) }) {
            return true
        }
        if let file = frame.file {
            if systemFiles.contains(where: { _glob($0, file) }) { return true }
            // Line 0 in a known file: code the compiler generated (allocating initialisers, thunks,
            // metadata accessors), not a line anybody wrote.
            if frame.line == 0, frame.function != nil { return true }
        }
        return false
    }

    /// The attribution frame of `traceback`: its most recent non-system frame, else its most recent frame.
    public func attributionFrame(of traceback: Traceback) -> Frame? {
        traceback.frames.first { !isSystem($0) } ?? traceback.frames.first
    }

    /// `$sSa4AppE…`: a member of an extension of a standard library type declared in module `App` (user code,
    /// although its mangled name starts like the standard library's).
    static func isExtensionInUserModule(_ mangled: String) -> Bool {
        let bytes = Array(mangled.utf8.prefix(64))
        guard bytes.count > 5, bytes[0] == UInt8(ascii: "$"), bytes[1] == UInt8(ascii: "s"),
              bytes[2] == UInt8(ascii: "S") else { return false }
        var i = 4
        var length = 0
        while i < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[i]) {
            length = length * 10 + Int(bytes[i] - UInt8(ascii: "0"))
            i += 1
        }
        guard length > 0, i + length < bytes.count, bytes[i + length] == UInt8(ascii: "E") else { return false }
        let module = bytes[i..<(i + length)]
        return !module.elementsEqual("Swift".utf8)
    }
}

/// `fnmatch(3)` without FNM_PATHNAME: `*` matches `/` too; and with FNM_NOESCAPE: a backslash is an ordinary
/// character, as in Python's `fnmatch` (tracemalloc's filename patterns).
func _glob(_ pattern: String, _ text: String) -> Bool {
    if pattern == "*" { return true }
    return fnmatch(pattern, text, FNM_NOESCAPE) == 0
}

/// One frame of a call stack.
///
/// The tracker captures raw return addresses inside malloc; `AllocationTracker.takeSnapshot()` resolves them
/// (outside malloc, with a per-address cache) into the function, source file and line, and image. A single
/// captured address can yield several frames when the compiler inlined calls there: the inlined ones come first
/// (most recent first) and have `isInlined == true`, and they share the physical frame's `address`.
///
/// Frames are also built by hand (tools, tests, loaded snapshots):
/// ```swift
/// let frame = Frame(function: "Cache.insert(_:for:)", file: "Sources/App/Cache.swift", line: 42, image: "App")
/// ```
public struct Frame: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The return address in the traced process (for the most recent frame, the address just after the call
    /// to malloc); 0 when unknown (a frame built by hand, or a grouping key).
    public var address: UInt
    /// The readable function name: demangled Swift (`Cache.insert(_:for:)`), C++ (`ns::Widget::make(int)`) or
    /// C (`strdup`). Nil when the address has no symbol.
    public var function: String?
    /// The symbol as it appears in the binary (`$s3App5CacheC6insert_3forySS_SitF`), for tools.
    public var mangledName: String?
    /// The source file, as recorded in the debug information (absolute for Swift, often relative for C).
    public var file: String?
    /// The source line; 0 when unknown (as in tracemalloc).
    public var line: Int
    /// The library or executable file name (`libswiftCore.so`, `MyService`).
    public var image: String?
    /// The address's offset in `image` (what `addr2line -e image` wants); nil when the image is unknown.
    public var imageOffset: UInt?
    /// True for a call the compiler inlined into the physical frame that follows it.
    public var isInlined: Bool

    public init(function: String? = nil, file: String? = nil, line: Int = 0, image: String? = nil,
                address: UInt = 0, mangledName: String? = nil, imageOffset: UInt? = nil, isInlined: Bool = false) {
        self.address = address
        self.function = function
        self.mangledName = mangledName
        self.file = file
        self.line = line
        self.image = image
        self.imageOffset = imageOffset
        self.isInlined = isInlined
    }

    /// An unresolved frame: just the captured address.
    public init(address: UInt) {
        self.init(function: nil, address: address)
    }

    /// True when nothing but the address is known.
    public var isSymbolicated: Bool { function != nil || file != nil || image != nil }

    /// tracemalloc's form where a file is known (`Sources/App/Cache.swift:42`; `file:0` when only the file is
    /// known); otherwise the function and image (`swift_slowAlloc in libswiftCore.so`), or `image+0x1f2e`, or the
    /// bare address.
    public var description: String {
        if let file, function == nil || line > 0 { return "\(file):\(line)" }
        if let function {
            if let file { return "\(function) (\(file))" }
            if let image { return "\(function) in \(image)" }
            return function
        }
        if let image, let imageOffset { return "\(image)+0x" + String(imageOffset, radix: 16) }
        return "0x" + String(address, radix: 16)
    }
}

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
    // The fields live in one shared, immutable object: a frame is one word wherever it is copied. A snapshot refers
    // to the same few thousand frames from every stack (the symbol cache hands out one per address, a loaded file
    // one per entry of its frame table), so this keeps a snapshot's memory proportional to its distinct frames
    // rather than to its frame references (a file referring to one frame a million times used to cost ~100 bytes
    // per reference), and makes copying, hashing and comparing tracebacks cheap (the hash is computed once).
    private var storage: _FrameStorage

    /// The return address in the traced process (for the most recent frame, the address just after the call
    /// to malloc); 0 when unknown (a frame built by hand, or a grouping key).
    public var address: UInt {
        get { storage.address }
        set { storage = storage.with { $0.address = newValue } }
    }
    /// The readable function name: demangled Swift (`Cache.insert(_:for:)`), C++ (`ns::Widget::make(int)`) or
    /// C (`strdup`). Nil when the address has no symbol.
    public var function: String? {
        get { storage.function }
        set { storage = storage.with { $0.function = newValue } }
    }
    /// The symbol as it appears in the binary (`$s3App5CacheC6insert_3forySS_SitF`), for tools.
    public var mangledName: String? {
        get { storage.mangledName }
        set { storage = storage.with { $0.mangledName = newValue } }
    }
    /// The source file, as recorded in the debug information (absolute for Swift, often relative for C).
    public var file: String? {
        get { storage.file }
        set { storage = storage.with { $0.file = newValue } }
    }
    /// The source line; 0 when unknown (as in tracemalloc).
    public var line: Int {
        get { storage.line }
        set { storage = storage.with { $0.line = newValue } }
    }
    /// The library or executable file name (`libswiftCore.so`, `MyService`).
    public var image: String? {
        get { storage.image }
        set { storage = storage.with { $0.image = newValue } }
    }
    /// The address's offset in `image` (what `addr2line -e image` wants); nil when the image is unknown.
    public var imageOffset: UInt? {
        get { storage.imageOffset }
        set { storage = storage.with { $0.imageOffset = newValue } }
    }
    /// True for a call the compiler inlined into the physical frame that follows it.
    public var isInlined: Bool {
        get { storage.isInlined }
        set { storage = storage.with { $0.isInlined = newValue } }
    }

    public init(function: String? = nil, file: String? = nil, line: Int = 0, image: String? = nil,
                address: UInt = 0, mangledName: String? = nil, imageOffset: UInt? = nil, isInlined: Bool = false) {
        storage = _FrameStorage(_FrameFields(address: address, function: function, mangledName: mangledName, file: file,
                                             line: line, image: image, imageOffset: imageOffset, isInlined: isInlined))
    }

    public static func == (a: Frame, b: Frame) -> Bool {
        a.storage === b.storage || (a.storage.hash == b.storage.hash && a.storage.fields == b.storage.fields)
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(storage.hash) }

    private enum CodingKeys: String, CodingKey {
        case address, function, mangledName, file, line, image, imageOffset, isInlined
    }

    // The keys and optionality of the synthesized conformance this replaces (the snapshot file format).
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(function: try c.decodeIfPresent(String.self, forKey: .function),
                  file: try c.decodeIfPresent(String.self, forKey: .file),
                  line: try c.decode(Int.self, forKey: .line),
                  image: try c.decodeIfPresent(String.self, forKey: .image),
                  address: try c.decode(UInt.self, forKey: .address),
                  mangledName: try c.decodeIfPresent(String.self, forKey: .mangledName),
                  imageOffset: try c.decodeIfPresent(UInt.self, forKey: .imageOffset),
                  isInlined: try c.decode(Bool.self, forKey: .isInlined))
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(address, forKey: .address)
        try c.encodeIfPresent(function, forKey: .function)
        try c.encodeIfPresent(mangledName, forKey: .mangledName)
        try c.encodeIfPresent(file, forKey: .file)
        try c.encode(line, forKey: .line)
        try c.encodeIfPresent(image, forKey: .image)
        try c.encodeIfPresent(imageOffset, forKey: .imageOffset)
        try c.encode(isInlined, forKey: .isInlined)
    }

    /// An unresolved frame: just the captured address.
    public init(address: UInt) {
        self.init(function: nil, address: address)
    }

    /// True when nothing but the address is known.
    public var isSymbolicated: Bool { function != nil || file != nil || image != nil }

    /// tracemalloc's form where a file is known (`Sources/App/Cache.swift:42`; `file:0` when only the file is
    /// known); otherwise the function and image (`swift_slowAlloc in libswiftCore.so`), or `image+0x1f2e`, or the
    /// bare address. Text, not data: a file under the current directory is shown relative to it (as reports show
    /// it), and a very long function name (a C++ template instance) shortened — the fields keep them whole.
    public var description: String {
        if let file, function == nil || line > 0 { return "\(_displayPath(file)):\(line)" }
        if let function {
            if let file { return "\(_displayName(function)) (\(_displayPath(file)))" }
            if let image { return "\(_displayName(function)) in \(image)" }
            return _displayName(function)
        }
        if let image, let imageOffset { return "\(image)+0x" + String(imageOffset, radix: 16) }
        return "0x" + String(address, radix: 16)
    }
}

/// A frame's fields, by value.
struct _FrameFields: Hashable, Sendable {
    var address: UInt
    var function: String?
    var mangledName: String?
    var file: String?
    var line: Int
    var image: String?
    var imageOffset: UInt?
    var isInlined: Bool
}

/// A frame's fields, shared by every copy of the frame and never changed (a change makes a new one), with their
/// hash computed once.
final class _FrameStorage: Sendable {
    let fields: _FrameFields
    let hash: Int

    init(_ fields: _FrameFields) {
        self.fields = fields
        hash = fields.hashValue
    }

    func with(_ change: (inout _FrameFields) -> Void) -> _FrameStorage {
        var copy = fields
        change(&copy)
        return _FrameStorage(copy)
    }

    var address: UInt { fields.address }
    var function: String? { fields.function }
    var mangledName: String? { fields.mangledName }
    var file: String? { fields.file }
    var line: Int { fields.line }
    var image: String? { fields.image }
    var imageOffset: UInt? { fields.imageOffset }
    var isInlined: Bool { fields.isInlined }
}

/// How text output shows a source path: relative to the current directory when the file is under it (the same
/// rule for every frame and every kind of text, so that one file reads the same everywhere), else as recorded.
func _displayPath(_ path: String) -> String {
    guard path.hasPrefix("/"), let directory = _currentDirectory(), directory.count > 1 else { return path }
    let prefix = directory.hasSuffix("/") ? directory : directory + "/"
    return path.hasPrefix(prefix) ? String(path.dropFirst(prefix.count)) : path
}

/// The longest function name text output shows whole.
let _displayNameLimit = 160

/// How text output shows a function name: whole up to `_displayNameLimit` characters; longer ones (C++ template
/// instances run to thousands) with their template and generic arguments folded to `<…>`, then their parameter
/// lists to `(…)`, then cut. `Frame.function` keeps the whole name.
func _displayName(_ name: String) -> String {
    guard name.count > _displayNameLimit else { return name }
    var shortened = _folding(name, open: "<", close: ">")
    if shortened.count > _displayNameLimit { shortened = _folding(shortened, open: "(", close: ")") }
    if shortened.count > _displayNameLimit { shortened = String(shortened.prefix(_displayNameLimit - 1)) + "…" }
    return shortened
}

/// `text` with what stands between each outermost `open`/`close` pair replaced by `…` (unbalanced text is
/// returned as it was).
private func _folding(_ text: String, open: Character, close: Character) -> String {
    var out = ""
    var depth = 0
    for character in text {
        if character == open {
            if depth == 0 { out.append(open); out.append("…") }
            depth += 1
        } else if character == close && depth > 0 {
            depth -= 1
            if depth == 0 { out.append(close) }
        } else if depth == 0 {
            out.append(character)
        }
    }
    return depth == 0 ? out : text
}

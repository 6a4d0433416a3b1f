#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

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
    /// The source file. In a snapshot, one style for every frame (whatever the debug information recorded):
    /// under a `.build` directory from there (`.build/checkouts/…`), else relative to the current directory or the
    /// package root when under it, else absolute; a compiler's pseudo-file as its bare name (`<compiler-generated>`).
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
    /// bare address. Text, not data: the path in the one style snapshots store (`_sourcePath`: relative to the
    /// current directory or the package root when under it, else absolute), a compiler's pseudo-file
    /// (`<compiler-generated>`, `<stdin>`) left out for the function and image, and a very long function name (a
    /// C++ template instance) shortened — the fields keep them whole.
    public var description: String {
        // A pseudo-file (`<compiler-generated>`, `<stdin>`) names no place to look: the function and image do.
        let file = file.flatMap { _isPseudoFile($0) && function != nil ? nil : $0 }
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

/// The one style of a source path, for every frame of every snapshot, report and export (so that one file is one
/// key in statistics by file or line, in folded stacks and in pprof): a file under a `.build` directory from
/// there (`.build/checkouts/…`); else relative to the current directory when the file is under it; else relative
/// to the package root when under it; else absolute. `.` and `..` components are
/// folded and a doubled `/` is one.
///
/// Why: the debug information records some paths absolute and some relative to the compilation directory —
/// SwiftPM compiles in the package root, so the same dependency file appears both as
/// `/src/app/.build/checkouts/nio/Sources/NIOCore/ByteBuffer-core.swift` and as
/// `.build/checkouts/nio/Sources/NIOCore/ByteBuffer-core.swift`. A relative path is therefore read as relative to
/// the package root; the package root of an absolute path is the directory holding its `.build` (a dependency's
/// checkout or a generated file), or the one holding the running executable's `.build` (the package's own
/// sources, when the program runs from its build directory). Names in angle brackets (`<compiler-generated>`,
/// `<stdin>`: a unit compiled from standard input) are not files: they are kept as
/// the bare name, without the directory the symbolicator prefixes (`/<compiler-generated>`).
func _sourcePath(_ path: String, currentDirectory: String? = _currentDirectory(),
                 packageRoot: String? = _PackageRoot.ofExecutable) -> String {
    guard !path.isEmpty else { return path }
    // A compiler's pseudo-file: the symbolicator joins it to the compilation directory (`/<compiler-generated>`).
    if let last = path.split(separator: "/").last, _isPseudoFile(last) { return String(last) }
    let absolute = path.hasPrefix("/")
    var parts: [Substring] = []
    for part in path.split(separator: "/", omittingEmptySubsequences: true) {
        if part == "." { continue }
        if part == "..", let last = parts.last, last != ".." { parts.removeLast(); continue }
        if part == "..", absolute { continue }  // above the root is the root
        parts.append(part)
    }
    guard absolute else { return parts.isEmpty ? "." : parts.joined(separator: "/") }
    func relative(to directory: String?) -> String? {
        guard let directory else { return nil }
        let base = directory.split(separator: "/", omittingEmptySubsequences: true)
        guard !base.isEmpty, parts.count > base.count, parts.starts(with: base) else { return nil }
        return parts[base.count...].joined(separator: "/")
    }
    // `.build` first: a checkout's file is `.build/checkouts/…` whether it was recorded relative or absolute, and
    // wherever the program runs.
    if let build = parts.firstIndex(of: ".build"), build + 1 < parts.count { return parts[build...].joined(separator: "/") }
    if let shown = relative(to: currentDirectory) { return shown }
    if let shown = relative(to: packageRoot) { return shown }
    return "/" + parts.joined(separator: "/")
}

/// `<compiler-generated>`, `<stdin>`: a name the compiler records where a unit or a function has no source file.
func _isPseudoFile<S: StringProtocol>(_ name: S) -> Bool { name.hasPrefix("<") && name.hasSuffix(">") }

/// The package root of the running executable: the directory holding the `.build` it runs from (nil when it does
/// not run from one, as a deployed binary does not).
enum _PackageRoot {
    static let ofExecutable: String? = {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        let path = String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        guard let build = parts.firstIndex(of: ".build") else { return nil }
        return "/" + parts[..<build].joined(separator: "/")
    }()
}

/// How text output shows a source path: `_sourcePath`, the style snapshots store (a frame built by hand or loaded
/// from an older file may hold another).
func _displayPath(_ path: String) -> String { _sourcePath(path) }

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

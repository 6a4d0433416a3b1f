/// A protocol buffers encoder for the few shapes pprof's `profile.proto` uses: varint scalars, length-delimited
/// strings and nested messages, packed repeated integers. The schema is fixed and small, so it is written by hand
/// rather than generated (no code generator or runtime in the build).
///
/// Wire format (https://protobuf.dev/programming-guides/encoding/): every field is a key `field << 3 | wire type`
/// as a varint, then the value. `int64` and `uint64` are varints (a negative `int64` takes ten bytes: it is not
/// zigzag-encoded, that is `sint64`); strings, bytes, nested messages and packed repeated fields are
/// length-delimited (wire type 2: the length as a varint, then the bytes). A scalar equal to its default (0,
/// false) may be left out; the writers below leave it out, as proto3 encoders do.
struct _ProtobufWriter {
    private(set) var bytes: [UInt8] = []

    enum WireType: UInt64 {
        case varint = 0
        case lengthDelimited = 2
    }

    init() {}

    mutating func varint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    mutating func key(_ field: Int, _ type: WireType) {
        varint(UInt64(field) << 3 | type.rawValue)
    }

    /// A `uint64` field, left out when 0.
    mutating func uint64(_ field: Int, _ value: UInt64) {
        guard value != 0 else { return }
        key(field, .varint)
        varint(value)
    }

    /// An `int64` field (two's complement varint), left out when 0.
    mutating func int64(_ field: Int, _ value: Int64) {
        guard value != 0 else { return }
        key(field, .varint)
        varint(UInt64(bitPattern: value))
    }

    /// A `bool` field, left out when false.
    mutating func bool(_ field: Int, _ value: Bool) {
        guard value else { return }
        key(field, .varint)
        varint(1)
    }

    /// A `string` or `bytes` field (written even when empty: a repeated string's empty element counts).
    mutating func bytes<C: Collection>(_ field: Int, _ value: C) where C.Element == UInt8 {
        key(field, .lengthDelimited)
        varint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    mutating func string(_ field: Int, _ value: String) {
        bytes(field, value.utf8)
    }

    /// A nested message: `body` writes its fields into a writer of its own, appended with its length.
    mutating func message(_ field: Int, _ body: (inout _ProtobufWriter) -> Void) {
        var nested = _ProtobufWriter()
        body(&nested)
        bytes(field, nested.bytes)
    }

    /// A packed repeated `uint64` field (left out when empty).
    mutating func packedUInt64<S: Sequence>(_ field: Int, _ values: S) where S.Element == UInt64 {
        var payload = _ProtobufWriter()
        for value in values { payload.varint(value) }
        guard !payload.bytes.isEmpty else { return }
        bytes(field, payload.bytes)
    }

    /// A packed repeated `int64` field (left out when empty).
    mutating func packedInt64<S: Sequence>(_ field: Int, _ values: S) where S.Element == Int64 {
        packedUInt64(field, values.lazy.map { UInt64(bitPattern: $0) })
    }

    /// Appends another writer's fields (a message's fields may come in any order and be concatenated).
    mutating func append(_ other: _ProtobufWriter) {
        bytes.append(contentsOf: other.bytes)
    }
}

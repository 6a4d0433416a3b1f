import AllocationTracking
import Foundation
import TrackerTestSupport
import Testing

/// The real tools the export tests run: `go tool pprof` (Debian's golang-go, with graphviz's `dot` for `-png`),
/// Python 3 (an independent protobuf decoder, and the `pyinferno` flame-graph renderer from PyPI). `.ci/run`
/// installs them; on a machine without them the tests that need them are skipped, and say why.
enum PprofTools {
    /// An executable named `name` on PATH.
    static func find(_ name: String) -> URL? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let url = URL(fileURLWithPath: String(directory)).appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        return nil
    }

    static let go = find("go")
    static let dot = find("dot")
    static let python = find("python3")
    static let hasGo = go != nil
    static let hasGoAndGraphviz = go != nil && dot != nil
    static let hasPython = python != nil
    static let hasPyinferno: Bool = {
        guard let python else { return false }
        return (try? run(python, ["-c", "import pyinferno"]))?.status == 0
    }()

    struct Result {
        var status: Int32
        var output: Data
        var error: String
        var text: String { String(decoding: output, as: UTF8.self) }
    }

    /// Runs `executable` with `arguments`, `input` on its standard input (the shared runner: output drained while it runs,
    /// killed at a deadline). go caches builds under $HOME: kept off the user's home and writable.
    static func run(_ executable: URL, _ arguments: [String], input: Data = Data()) throws -> Result {
        let environment = ProcessInfo.processInfo.environment, temporary = FileManager.default.temporaryDirectory
        let result = try runChildProcess(executable, arguments, environment: [
            "GOCACHE": environment["GOCACHE"] ?? temporary.appendingPathComponent("pprof-tests-gocache").path,
            "HOME": environment["HOME"] ?? temporary.path,
        ], input: input)
        return Result(status: result.status, output: result.output, error: result.error)
    }

    /// `go tool pprof <arguments>`; records an issue unless it exits 0 with nothing on standard error (no error, no
    /// warning).
    static func pprof(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> Result {
        let result = try run(go!, ["tool", "pprof"] + arguments)
        #expect(result.status == 0, "go tool pprof \(arguments.joined(separator: " ")) exited \(result.status): \(result.error)",
                sourceLocation: sourceLocation)
        #expect(result.error.isEmpty, "go tool pprof \(arguments.joined(separator: " ")) wrote to stderr: \(result.error)",
                sourceLocation: sourceLocation)
        return result
    }

    /// A fresh directory, removed after `body`.
    static func withTemporaryDirectory<R>(_ body: (URL) throws -> R) throws -> R {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("PprofExport-\(getpid())-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        return try body(directory)
    }

    // MARK: - Reading go tool pprof's output

    /// The samples of `go tool pprof -raw`: each sample's four values and its stack as location addresses, leaf
    /// first (a location printed without an address counts as 0).
    struct RawSample: Hashable, CustomStringConvertible {
        var values: [Int64]
        var addresses: [UInt64]
        var blockSize: Int64?
        var description: String {
            "\(values) \(blockSize.map { "bytes=\($0) " } ?? "")@ " + addresses.map { "0x" + String($0, radix: 16) }.joined(separator: " ")
        }
    }

    struct Raw {
        var header: [String]
        var samples: [RawSample]
        /// Location id -> its printed lines (function, file:line), its first line holding the address.
        var locations: [Int: [String]]
        var mappings: [String]
    }

    /// Parses `-raw` output (google/pprof's `Profile.String`): a header, `Samples:` with a line of sample types,
    /// then `v1 v2 v3 v4: id id …` lines each followed by its labels, then `Locations` and `Mappings`.
    static func parseRaw(_ text: String) -> Raw {
        var raw = Raw(header: [], samples: [], locations: [:], mappings: [])
        enum Section { case header, sampleTypes, samples, locations, mappings }
        var section = Section.header
        var sampleLocations: [[Int]] = []
        var lastLocation: Int?
        for line in text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            switch (section, trimmed) {
            case (_, "Samples:"): section = .sampleTypes; continue
            case (_, "Locations"): section = .locations; continue
            case (_, "Mappings"): section = .mappings; continue
            default: break
            }
            switch section {
            case .header: raw.header.append(line)
            case .sampleTypes: section = .samples
            case .samples:
                if let colon = trimmed.firstIndex(of: ":"), !trimmed.hasPrefix("bytes:") {
                    let values = trimmed[..<colon].split(separator: " ").compactMap { Int64($0) }
                    let ids = trimmed[trimmed.index(after: colon)...].split(separator: " ").compactMap { Int($0) }
                    raw.samples.append(RawSample(values: values, addresses: []))
                    sampleLocations.append(ids)
                } else if trimmed.hasPrefix("bytes:["), let value = Int64(trimmed.dropFirst(7).dropLast()) {
                    raw.samples[raw.samples.count - 1].blockSize = value
                }
            case .locations:
                let fields = trimmed.split(separator: " ", maxSplits: 1)
                if let first = fields.first, first.hasSuffix(":"), let id = Int(first.dropLast()) {
                    raw.locations[id] = [fields.count > 1 ? String(fields[1]) : ""]
                    lastLocation = id
                } else if let id = lastLocation {
                    raw.locations[id]!.append(trimmed)
                }
            case .mappings: raw.mappings.append(trimmed)
            }
        }
        for index in raw.samples.indices {
            raw.samples[index].addresses = sampleLocations[index].map { id in
                guard let first = raw.locations[id]?.first, first.hasPrefix("0x") else { return 0 }
                return UInt64(first.dropFirst(2).prefix { $0.isHexDigit }, radix: 16) ?? 0
            }
        }
        return raw
    }

    /// `-top` output: the total of "Showing nodes accounting for X, P% of TOTAL total" and each row's flat and cum
    /// by name (with `-unit=B` the values end in B; counts have no unit), the inline labels apart.
    struct Top {
        /// `(inline)` or `(partial-inline)` by name: pprof labels a function whose calls into it were all or some
        /// inlined.
        /// "accounting for X": the sum of the values shown (signed, for a delta).
        var shown: Int64
        /// "of TOTAL total": the sum of the absolute values.
        var total: Int64
        var inline: [String: String]
        var flat: [String: Int64]
        var cum: [String: Int64]
        var text: String
    }

    static func parseTop(_ text: String) -> Top {
        var top = Top(shown: -1, total: -1, inline: [:], flat: [:], cum: [:], text: text)
        func value(_ s: Substring) -> Int64? { Int64(s.hasSuffix("B") ? s.dropLast() : s) }
        for line in text.split(separator: "\n") {
            if line.hasPrefix("Showing nodes accounting for"), let of = line.range(of: "% of ") {
                top.total = value(line[of.upperBound...].split(separator: " ")[0]) ?? -1
                let shown = line.dropFirst("Showing nodes accounting for ".count).prefix { $0 != "," }
                top.shown = value(shown) ?? -1
                continue
            }
            // flat flat% sum% cum cum% name
            let columns = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard columns.count == 6, let flat = value(columns[0]), let cum = value(columns[3]) else { continue }
            var name = columns[5].trimmingCharacters(in: .whitespaces)
            for label in [" (inline)", " (partial-inline)"] where name.hasSuffix(label) {
                name = String(name.dropLast(label.count))
                top.inline[name] = String(label.dropFirst())
            }
            // A function name shared by several files is a row per file.
            top.flat[name, default: 0] += flat
            top.cum[name, default: 0] += cum
        }
        return top
    }

    // MARK: - An independent protobuf decoder

    /// Decodes a gzip-compressed profile.proto with Python, written from profile.proto's field numbers and the
    /// protobuf wire format, independently of the Swift writer: unknown fields and wrong wire types are errors.
    /// Prints JSON: the profile's fields by name, repeated messages as arrays.
    static let decoderScript = #"""
        import gzip, json, sys
        data = gzip.decompress(sys.stdin.buffer.read())
        def varint(b, i):
            shift = value = 0
            while True:
                byte = b[i]; i += 1
                value |= (byte & 0x7f) << shift; shift += 7
                if byte < 0x80: return value, i
                if shift > 63: raise ValueError("varint too long")
        def signed(v): return v - (1 << 64) if v >= 1 << 63 else v
        # name, kind: u (uint64), i (int64), b (bool), s (string), m:<Message>; repeated marked with *
        SCHEMA = {
          "Profile": {1: ("sample_type", "*m:ValueType"), 2: ("sample", "*m:Sample"), 3: ("mapping", "*m:Mapping"),
                      4: ("location", "*m:Location"), 5: ("function", "*m:Function"), 6: ("string_table", "*s"),
                      7: ("drop_frames", "i"), 8: ("keep_frames", "i"), 9: ("time_nanos", "i"),
                      10: ("duration_nanos", "i"), 11: ("period_type", "m:ValueType"), 12: ("period", "i"),
                      13: ("comment", "*i"), 14: ("default_sample_type", "i")},
          "ValueType": {1: ("type", "i"), 2: ("unit", "i")},
          "Sample": {1: ("location_id", "*u"), 2: ("value", "*i"), 3: ("label", "*m:Label")},
          "Label": {1: ("key", "i"), 2: ("str", "i"), 3: ("num", "i"), 4: ("num_unit", "i")},
          "Mapping": {1: ("id", "u"), 2: ("memory_start", "u"), 3: ("memory_limit", "u"), 4: ("file_offset", "u"),
                      5: ("filename", "i"), 6: ("build_id", "i"), 7: ("has_functions", "b"), 8: ("has_filenames", "b"),
                      9: ("has_line_numbers", "b"), 10: ("has_inline_frames", "b")},
          "Location": {1: ("id", "u"), 2: ("mapping_id", "u"), 3: ("address", "u"), 4: ("line", "*m:Line"),
                       5: ("is_folded", "b")},
          "Line": {1: ("function_id", "u"), 2: ("line", "i")},
          "Function": {1: ("id", "u"), 2: ("name", "i"), 3: ("system_name", "i"), 4: ("filename", "i"),
                       5: ("start_line", "i")},
        }
        def scalar(kind, v):
            if kind == "i": return signed(v)
            if kind == "b":
                if v not in (0, 1): raise ValueError("bool %d" % v)
                return bool(v)
            return v
        def message(b, name):
            out, i = {}, 0
            while i < len(b):
                key, i = varint(b, i)
                field, wire = key >> 3, key & 7
                if field not in SCHEMA[name]: raise ValueError("%s has no field %d" % (name, field))
                fname, kind = SCHEMA[name][field]
                repeated = kind.startswith("*"); kind = kind.lstrip("*")
                if wire == 0:
                    if kind.startswith("m:") or kind == "s": raise ValueError("%s.%s: varint for %s" % (name, fname, kind))
                    v, i = varint(b, i); values = [scalar(kind, v)]
                elif wire == 2:
                    n, i = varint(b, i); payload = b[i:i + n]; i += n
                    if len(payload) != n: raise ValueError("%s.%s truncated" % (name, fname))
                    if kind.startswith("m:"): values = [message(payload, kind[2:])]
                    elif kind == "s": values = [payload.decode("utf-8")]
                    elif repeated:
                        values, j = [], 0
                        while j < len(payload):
                            v, j = varint(payload, j); values.append(scalar(kind, v))
                    else: raise ValueError("%s.%s: packed scalar not repeated" % (name, fname))
                else: raise ValueError("%s.%s: wire type %d" % (name, fname, wire))
                if repeated: out.setdefault(fname, []).extend(values)
                else: out[fname] = values[0]
            return out
        print(json.dumps(message(data, "Profile")))
        """#

    /// The profile as Python decoded it.
    struct Decoded: Decodable {
        struct ValueType: Decodable { var type: Int?; var unit: Int? }
        struct Label: Decodable { var key: Int?; var str: Int?; var num: Int64?; var num_unit: Int? }
        struct Sample: Decodable { var location_id: [UInt64]?; var value: [Int64]?; var label: [Label]? }
        struct Mapping: Decodable {
            var id: UInt64?; var memory_start: UInt64?; var memory_limit: UInt64?; var file_offset: UInt64?
            var filename: Int?; var build_id: Int?
            var has_functions: Bool?; var has_filenames: Bool?; var has_line_numbers: Bool?; var has_inline_frames: Bool?
        }
        struct Line: Decodable { var function_id: UInt64?; var line: Int64? }
        struct Location: Decodable { var id: UInt64?; var mapping_id: UInt64?; var address: UInt64?; var line: [Line]? }
        struct Function: Decodable { var id: UInt64?; var name: Int?; var system_name: Int?; var filename: Int?; var start_line: Int64? }
        var sample_type: [ValueType]?
        var sample: [Sample]?
        var mapping: [Mapping]?
        var location: [Location]?
        var function: [Function]?
        var string_table: [String]?
        var time_nanos: Int64?
        var duration_nanos: Int64?
        var period_type: ValueType?
        var period: Int64?
        var comment: [Int]?
        var default_sample_type: Int?

        func string(_ index: Int?) -> String { string_table?[index ?? 0] ?? "<no string table>" }
        var strings: [String] { string_table ?? [] }
        var locations: [UInt64: Location] { Dictionary((location ?? []).map { ($0.id ?? 0, $0) }, uniquingKeysWith: { a, _ in a }) }
        var functions: [UInt64: Function] { Dictionary((function ?? []).map { ($0.id ?? 0, $0) }, uniquingKeysWith: { a, _ in a }) }

        /// A sample's stack as "function file:line" strings per location, leaf first; inlined lines joined by " | ".
        func stack(_ sample: Sample) -> [String] {
            let (locations, functions) = (self.locations, self.functions)
            return (sample.location_id ?? []).map { id in
                (locations[id]?.line ?? []).map { line in
                    let function = functions[line.function_id ?? 0]
                    return "\(string(function?.name)) \(string(function?.filename)):\(line.line ?? 0)"
                }.joined(separator: " | ")
            }
        }
    }

    static func decode(_ profile: Data, sourceLocation: SourceLocation = #_sourceLocation) throws -> Decoded? {
        let result = try run(python!, ["-c", decoderScript], input: profile)
        #expect(result.status == 0 && result.error.isEmpty, "the Python decoder failed: \(result.error)",
                sourceLocation: sourceLocation)
        guard result.status == 0 else { return nil }
        return try JSONDecoder().decode(Decoded.self, from: result.output)
    }
}

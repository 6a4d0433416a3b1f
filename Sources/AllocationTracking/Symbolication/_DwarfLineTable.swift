/// The `.debug_line` rows (DWARF 2 to 5) that cover a batch of addresses, found in ONE pass over every line
/// program of an image.
///
/// Why one pass per batch: the toolchain's `Runtime` module runs the line programs from the first one for every
/// address it looks up (`ElfImage.sourceLocation(for:)`), so a lookup costs a walk of the image's whole line table —
/// milliseconds per address on a service's release binary, and a core for a minute when the watchdog warmed every
/// new site. Here the batch's addresses are sorted, and each row range `[row, next row)` of a sequence takes the
/// addresses it covers by binary search: the pass costs the size of the line table plus log(batch) per row, once
/// per batch instead of once per address, and keeps nothing once the batch is resolved.
struct _DwarfLineTable {
    let lines: UnsafeRawBufferPointer
    /// `.debug_line_str` and `.debug_str`, for DWARF 5's `DW_FORM_line_strp` and `DW_FORM_strp` file names.
    let lineStrings: UnsafeRawBufferPointer?
    let strings: UnsafeRawBufferPointer?
    /// Each unit's `DW_AT_comp_dir` by the offset of its line program: before DWARF 5 the line table does not
    /// record the directory its relative names (directory index 0) are relative to; the unit does. Joined as the
    /// `Runtime` module and LLVM's tools join them, so a file's path is absolute whether a row or a call site names it.
    var compilationDirectories: [Int: String] = [:]

    struct Location: Equatable {
        var path: String
        var line: Int
    }

    /// The location of each of `addresses` (file addresses, sorted ascending) that a row covers; nil for the others.
    func locations(ofSorted addresses: [UInt64]) -> [Location?] {
        var result = [Location?](repeating: nil, count: addresses.count)
        guard !addresses.isEmpty else { return result }
        var offset = 0
        while offset < lines.count {
            guard let next = runProgram(at: offset, addresses, &result) else { break }
            offset = next
        }
        return result
    }

    private static func string(in section: UnsafeRawBufferPointer?, at offset: UInt64) -> String? {
        guard let section, offset < UInt64(section.count) else { return nil }
        var reader = _DwarfReader(bytes: section, offset: Int(offset), end: section.count)
        return reader.cString()
    }

    /// One entry of a DWARF 5 directory or file table, read by its format's forms: the path and directory index.
    private func entry(_ reader: inout _DwarfReader, format: [(UInt64, UInt64)], offsetSize: Int)
        -> (path: String?, directory: Int)? {
        var path: String? = nil, directory = 0
        for (content, form) in format {
            var number: UInt64? = nil
            var text: String? = nil
            switch form {
            case 0x08: text = reader.cString()  // DW_FORM_string
            case 0x1f, 0x0e:  // DW_FORM_line_strp, DW_FORM_strp
                let at = reader.word(offsetSize)
                guard let at else { return nil }
                text = Self.string(in: form == 0x1f ? lineStrings : strings, at: at)
            case 0x0f: number = reader.uleb()  // DW_FORM_udata
            case 0x0b: number = reader.u8().map(UInt64.init)  // DW_FORM_data1
            case 0x05: number = reader.fixed(UInt16.self).map(UInt64.init)  // DW_FORM_data2
            case 0x06: number = reader.fixed(UInt32.self).map(UInt64.init)  // DW_FORM_data4
            case 0x07: number = reader.fixed(UInt64.self)  // DW_FORM_data8
            case 0x1e: guard reader.skip(16) else { return nil }  // DW_FORM_data16 (MD5)
            case 0x09:  // DW_FORM_block
                guard let count = reader.uleb(), reader.skip(Int(clamping: count)) else { return nil }
            default: return nil  // a form a line table header does not use (strx needs .debug_info): give up
            }
            if content == 1 { path = text }  // DW_LNCT_path
            if content == 2, let number { directory = Int(clamping: number) }  // DW_LNCT_directory_index
        }
        return (path, directory)
    }

    private static func join(_ directory: String?, _ path: String) -> String {
        guard let directory, !directory.isEmpty, !path.hasPrefix("/") else { return path }
        return directory.hasSuffix("/") ? directory + path : directory + "/" + path
    }

    /// The file table of the line program at `offset` (a compilation unit's `DW_AT_stmt_list`), indexed as
    /// `DW_AT_call_file` and the program's `file` register are: the paths inlined frames' call sites are named by,
    /// joined exactly as the rows' paths so that one file is one string whichever way it was reached.
    func files(ofProgramAt offset: Int) -> [String]? {
        guard offset >= 0, offset < lines.count, let parsed = header(at: offset) else { return nil }
        return parsed.header?.files
    }

    /// What a line program's header says: where its opcodes start and end, how to decode them, and its files.
    private struct Header {
        var programStart: Int
        var addressSize: Int
        var minimumInstructionLength: UInt8
        var lineBase: Int64
        var lineRange: UInt8
        var opcodeBase: UInt8
        var argumentCounts: [UInt8]
        var files: [String]
    }

    /// The header of the line program at `start` and the offset of the next program; nil when even the length is
    /// unreadable (the table is malformed from here on), a nil header when only this program is.
    private func header(at start: Int) -> (next: Int, header: Header?)? {
        var reader = _DwarfReader(bytes: lines, offset: start, end: lines.count)
        guard var unitLength = reader.fixed(UInt32.self).map(UInt64.init) else { return nil }
        var offsetSize = 4
        if unitLength == 0xffff_ffff {
            guard let long = reader.fixed(UInt64.self) else { return nil }
            unitLength = long
            offsetSize = 8
        }
        guard unitLength <= UInt64(lines.count - reader.offset) else { return nil }
        let next = reader.offset + Int(unitLength)
        reader.end = next
        guard let version = reader.fixed(UInt16.self), (2...5).contains(version) else { return (next, nil) }
        var addressSize = 8
        if version >= 5 {
            guard let size = reader.u8(), reader.u8() != nil else { return (next, nil) }
            addressSize = Int(size)
        }
        guard let headerLength = reader.word(offsetSize),
              headerLength <= UInt64(next - reader.offset) else { return (next, nil) }
        let programStart = reader.offset + Int(headerLength)
        guard let minimumInstructionLength = reader.u8() else { return (next, nil) }
        if version >= 4 { guard reader.u8() != nil else { return (next, nil) } }  // maximum_operations_per_instruction
        guard let defaultIsStatement = reader.u8(), let lineBaseByte = reader.u8(), let lineRange = reader.u8(),
              lineRange != 0, let opcodeBase = reader.u8(), opcodeBase >= 1 else { return (next, nil) }
        _ = defaultIsStatement
        let lineBase = Int64(Int8(bitPattern: lineBaseByte))
        var argumentCounts = [UInt8](repeating: 0, count: Int(opcodeBase))
        for i in 1..<Int(opcodeBase) {
            guard let count = reader.u8() else { return (next, nil) }
            argumentCounts[i] = count
        }

        // The file table: names joined with their directory (DWARF 5: 0-based, directory 0 is the compilation
        // directory; before: 1-based, directory 0 is the unit's `DW_AT_comp_dir` when known).
        var files: [String] = []
        if version >= 5 {
            func format() -> [(UInt64, UInt64)]? {
                guard let count = reader.u8() else { return nil }
                var pairs: [(UInt64, UInt64)] = []
                for _ in 0..<count {
                    guard let content = reader.uleb(), let form = reader.uleb() else { return nil }
                    pairs.append((content, form))
                }
                return pairs
            }
            guard let directoryFormat = format(), let directoryCount = reader.uleb() else { return (next, nil) }
            var directories: [String?] = []
            for _ in 0..<directoryCount {
                guard let e = entry(&reader, format: directoryFormat, offsetSize: offsetSize) else { return (next, nil) }
                directories.append(e.path)
            }
            for i in directories.indices.dropFirst() where !(directories[i]?.hasPrefix("/") ?? true) {
                directories[i] = Self.join(directories[0], directories[i]!)
            }
            guard let fileFormat = format(), let fileCount = reader.uleb() else { return (next, nil) }
            for _ in 0..<fileCount {
                guard let e = entry(&reader, format: fileFormat, offsetSize: offsetSize) else { return (next, nil) }
                let directory = e.directory < directories.count ? directories[e.directory] : nil
                files.append(Self.join(directory, e.path ?? "?"))
            }
        } else {
            var directories: [String?] = [compilationDirectories[start]]
            while let directory = reader.cString(), !directory.isEmpty {
                directories.append(Self.join(directories[0], directory))  // relative ones too are to comp_dir
            }
            files.append("?")  // index 0 is not used before DWARF 5
            while let name = reader.cString(), !name.isEmpty {
                guard let d = reader.uleb(), reader.uleb() != nil, reader.uleb() != nil else { return (next, nil) }
                files.append(Self.join(Int(d) < directories.count ? directories[Int(d)] : nil, name))
            }
        }

        return (next, Header(programStart: programStart, addressSize: addressSize,
                             minimumInstructionLength: minimumInstructionLength, lineBase: lineBase,
                             lineRange: lineRange, opcodeBase: opcodeBase, argumentCounts: argumentCounts,
                             files: files))
    }

    /// Runs the line program at `start`, storing the rows that cover `addresses` into `result`; returns the
    /// offset of the next program, or nil when the table is malformed from here on.
    private func runProgram(at start: Int, _ addresses: [UInt64], _ result: inout [Location?]) -> Int? {
        guard let parsed = header(at: start) else { return nil }
        let next = parsed.next
        guard let header = parsed.header else { return next }
        let files = header.files, lineRange = header.lineRange, opcodeBase = header.opcodeBase
        let lineBase = header.lineBase, addressSize = header.addressSize, argumentCounts = header.argumentCounts
        var reader = _DwarfReader(bytes: lines, offset: header.programStart, end: next)
        // The state machine (DWARF 5, 6.2.2). Only address, file and line matter here.
        var address: UInt64 = 0, file: UInt64 = 1, line: Int64 = 1
        var previous: (address: UInt64, file: UInt64, line: Int64)? = nil
        let minimum = UInt64(header.minimumInstructionLength)

        func emitRow() {
            if let p = previous, p.address < address {
                var i = Self.lowerBound(addresses, p.address)
                while i < addresses.count, addresses[i] < address {
                    if result[i] == nil {
                        let path = Int(p.file) < files.count ? files[Int(p.file)] : "?"
                        result[i] = Location(path: path, line: Int(clamping: p.line))
                    }
                    i += 1
                }
            }
            previous = (address, file, line)
        }

        while !reader.atEnd {
            guard let opcode = reader.u8() else { break }
            if opcode >= opcodeBase {
                let adjusted = UInt64(opcode - opcodeBase)
                address &+= (adjusted / UInt64(lineRange)) &* minimum
                line += lineBase + Int64(adjusted % UInt64(lineRange))
                emitRow()
                continue
            }
            switch opcode {
            case 0:  // extended
                guard let length = reader.uleb(), length > 0, let sub = reader.u8() else { return next }
                let after = reader.offset + Int(clamping: length) - 1
                switch sub {
                case 1:  // DW_LNE_end_sequence
                    emitRow()
                    previous = nil
                    address = 0; file = 1; line = 1
                case 2:  // DW_LNE_set_address
                    if addressSize == 8, let a = reader.fixed(UInt64.self) { address = a }
                    else if addressSize == 4, let a = reader.fixed(UInt32.self) { address = UInt64(a) }
                default: break
                }
                guard after <= reader.end else { return next }
                reader.offset = after
            case 1: emitRow()  // DW_LNS_copy
            case 2: guard let n = reader.uleb() else { return next }; address &+= n &* minimum  // advance_pc
            case 3: guard let n = reader.sleb() else { return next }; line += n  // advance_line
            case 4: guard let n = reader.uleb() else { return next }; file = n  // set_file
            case 8: address &+= (UInt64(255 - opcodeBase) / UInt64(lineRange)) &* minimum  // const_add_pc
            case 9: guard let n = reader.fixed(UInt16.self) else { return next }; address &+= UInt64(n)  // fixed_advance_pc
            default:  // operands of the others (set_column, set_isa, …) are ULEB128s, as many as the header says
                for _ in 0..<argumentCounts[Int(opcode)] { guard reader.uleb() != nil else { return next } }
            }
        }
        return next
    }

    /// The first index of `sorted` whose element is at least `value`.
    static func lowerBound(_ sorted: [UInt64], _ value: UInt64) -> Int {
        var low = 0, high = sorted.count
        while low < high {
            let middle = (low + high) / 2
            if sorted[middle] < value { low = middle + 1 } else { high = middle }
        }
        return low
    }
}

/// A bounds-checked little-endian cursor over a DWARF section (`.debug_line`, `.debug_info`, …): every read
/// returns nil rather than trap past `end`, so a malformed file ends a lookup, not the process.
struct _DwarfReader {
    let bytes: UnsafeRawBufferPointer
    var offset: Int
    var end: Int

    var atEnd: Bool { offset >= end }

    mutating func u8() -> UInt8? {
        guard offset < end else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func fixed<T: FixedWidthInteger>(_: T.Type) -> T? {
        guard offset + MemoryLayout<T>.size <= end else { return nil }
        defer { offset += MemoryLayout<T>.size }
        return T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    /// A 4- or 8-byte value: an offset (by the unit's offset size) or an address (by its address size).
    mutating func word(_ size: Int) -> UInt64? {
        size == 8 ? fixed(UInt64.self) : fixed(UInt32.self).map(UInt64.init)
    }

    mutating func uleb() -> UInt64? {
        var value: UInt64 = 0, shift: UInt64 = 0
        while let byte = u8() {
            if shift < 64 { value |= UInt64(byte & 0x7f) << shift }
            shift += 7
            if byte & 0x80 == 0 { return value }
        }
        return nil
    }

    mutating func sleb() -> Int64? {
        var value: Int64 = 0, shift: Int64 = 0
        while let byte = u8() {
            if shift < 64 { value |= Int64(byte & 0x7f) << shift }
            shift += 7
            if byte & 0x80 == 0 {
                if shift < 64, byte & 0x40 != 0 { value |= -1 << shift }
                return value
            }
        }
        return nil
    }

    mutating func cString() -> String? {
        var stop = offset
        while stop < end, bytes[stop] != 0 { stop += 1 }
        guard stop < end else { return nil }
        defer { offset = stop + 1 }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<stop]), as: UTF8.self)
    }

    /// Steps over a NUL-terminated string without making a `String` of it.
    mutating func skipCString() -> Bool {
        var stop = offset
        while stop < end, bytes[stop] != 0 { stop += 1 }
        guard stop < end else { return false }
        offset = stop + 1
        return true
    }

    mutating func skip(_ count: Int) -> Bool {
        guard count >= 0, offset + count <= end else { return false }
        offset += count
        return true
    }
}


/// The calls the compiler inlined at a batch of addresses, read from `.debug_info` (DWARF 2 to 5): for each
/// address, the chain of `DW_TAG_inlined_subroutine` entries whose ranges cover it, innermost first, each with the
/// inlined function's name and its call site (`DW_AT_call_file`:`DW_AT_call_line`).
///
/// Why: in a release build most allocation sites sit in inlined code (`Array.append` into a caller, a closure
/// into `map`). The line table alone gives the innermost line under the name of the function that physically
/// holds the code; attribution by line (`Traceback.attributed…`, statistics by line, pprof's `Line` entries) needs
/// every inlined function with the line that called it, as the `Runtime` module reported them.
///
/// Why one pass over the covering compilation units, for the batch only: the `Runtime` module decodes every
/// entry of every unit of an image on its first lookup and keeps the resulting call-site table with the image for
/// good. `.debug_info` is the largest debug section (tens of megabytes on a service), and a batch touches a few
/// units of it. Here each unit's first entry (its `DW_AT_low_pc`/`DW_AT_high_pc`/`DW_AT_ranges`) decides whether
/// the batch has an address in it — swiftc and clang emit no `.debug_aranges` by default, so the units' own
/// ranges are the index — and only those units are walked, once, with the batch's sorted addresses matched
/// against each inlined entry's ranges by binary search. Abbreviations, file tables and names are kept for the
/// batch only: nothing survives it but the resolved frames.
struct _DwarfInlinedCalls {
    struct Sections {
        var info: UnsafeRawBufferPointer
        var abbreviations: UnsafeRawBufferPointer
        var strings: UnsafeRawBufferPointer?
        var lineStrings: UnsafeRawBufferPointer?
        var stringOffsets: UnsafeRawBufferPointer?
        var addresses: UnsafeRawBufferPointer?
        var ranges: UnsafeRawBufferPointer?
        var rangeLists: UnsafeRawBufferPointer?
        var lines: UnsafeRawBufferPointer?
    }

    /// One inlined call: the callee's linkage (mangled) name and plain name as recorded, and where it was called
    /// from (a file of the unit's line table, and a line).
    struct Call {
        var mangledName: String?
        var name: String?
        var file: String?
        var line: Int
    }

    let sections: Sections
    private let units: [Unit]
    /// Each unit's `DW_AT_comp_dir` by the offset of its line program (see `_DwarfLineTable`).
    let compilationDirectories: [Int: String]

    /// Reads the header and first entry of every unit: what tells which units a batch needs.
    init(sections: Sections) {
        self.sections = sections
        var batch = Batch(sections: sections, addresses: [], units: [], directories: [:])
        batch.readUnits()
        units = batch.units
        var directories: [Int: String] = [:]
        for unit in units {
            if let program = unit.lineProgram, let directory = unit.compilationDirectory { directories[program] = directory }
        }
        compilationDirectories = directories
    }

    /// The inlined calls covering each of `addresses` (file addresses, sorted ascending), innermost first.
    func calls(ofSorted addresses: [UInt64]) -> [[Call]] {
        guard !addresses.isEmpty else { return [] }
        var batch = Batch(sections: sections, addresses: addresses, units: units, directories: compilationDirectories)
        batch.run()
        return batch.found.map { hits in hits.sorted { $0.depth > $1.depth }.map(\.call) }
    }
}

// MARK: - The walk

private struct Abbreviation {
    var tag: UInt64
    var hasChildren: Bool
    /// (attribute, form, the value of a `DW_FORM_implicit_const`).
    var attributes: [(name: UInt64, form: UInt64, implicit: Int64)]
    /// The size of an entry's values when every form has a fixed size (most entries): skipped in one step.
    var fixedSize: Int?
}

/// A unit's abbreviations by code: codes are small and dense (1, 2, 3, …), so an array, which spares the walk a
/// hash per entry.
private struct AbbreviationTable {
    var byCode: [Abbreviation?] = []
    subscript(code: UInt64) -> Abbreviation? { code < UInt64(byCode.count) ? byCode[Int(code)] : nil }
}

/// What a unit's header and first entry say, needed to read any entry of it.
private struct Unit {
    var offset: Int
    var end: Int
    var firstEntry: Int
    var version: UInt16
    var offsetSize: Int
    var addressSize: Int
    var abbreviationOffset: Int
    var lineProgram: Int? = nil
    var compilationDirectory: String? = nil
    var lowPC: UInt64 = 0
    var stringOffsetsBase: UInt64 = 8
    var addressBase: UInt64 = 8
    var rangeListsBase: UInt64 = 12
    var ranges: [(UInt64, UInt64)] = []
}

/// One attribute value, as far as this reader needs to tell values apart.
private enum Value {
    case number(UInt64)
    case address(UInt64)
    case addressIndex(UInt64)
    case reference(Int)  // an offset in .debug_info
    case string(String)
    case stringIndex(UInt64)
    case rangeListIndex(UInt64)
    case sectionOffset(UInt64)
    case other
}

// DWARF constants (DWARF 5, 7.5).
private let tagCompileUnit: UInt64 = 0x11, tagPartialUnit: UInt64 = 0x3c, tagInlinedSubroutine: UInt64 = 0x1d
private let atName: UInt64 = 0x03, atLowPC: UInt64 = 0x11, atHighPC: UInt64 = 0x12, atStmtList: UInt64 = 0x10
private let atRanges: UInt64 = 0x55, atAbstractOrigin: UInt64 = 0x31, atSpecification: UInt64 = 0x47
private let atCallFile: UInt64 = 0x58, atCallLine: UInt64 = 0x59, atLinkageName: UInt64 = 0x6e
private let atMIPSLinkageName: UInt64 = 0x2007, atStringOffsetsBase: UInt64 = 0x72, atAddressBase: UInt64 = 0x73
private let atRangeListsBase: UInt64 = 0x74, atCompilationDirectory: UInt64 = 0x1b

private struct Batch {
    let sections: Sections
    let addresses: [UInt64]
    /// For each address, the inlined entries covering it with their depth in the entry tree.
    var found: [[(depth: Int, call: _DwarfInlinedCalls.Call)]]
    private(set) var units: [Unit]
    /// By abbreviation offset and the unit's (version, offset size, address size), which fix the forms' sizes.
    private var abbreviationTables: [[Int]: AbbreviationTable] = [:]
    private var fileTables: [Int: [String]] = [:]
    private var names: [Int: (mangled: String?, name: String?)] = [:]
    private let lineTable: _DwarfLineTable?

    typealias Sections = _DwarfInlinedCalls.Sections

    init(sections: Sections, addresses: [UInt64], units: [Unit], directories: [Int: String]) {
        self.sections = sections
        self.addresses = addresses
        self.units = units
        found = Array(repeating: [], count: addresses.count)
        lineTable = sections.lines.map {
            _DwarfLineTable(lines: $0, lineStrings: sections.lineStrings, strings: sections.strings,
                            compilationDirectories: directories)
        }
    }

    mutating func run() {
        for index in units.indices where covers(units[index].ranges) {
            walk(units[index])
        }
    }

    /// True when some address of the batch is in one of `ranges`.
    private func covers(_ ranges: [(UInt64, UInt64)]) -> Bool {
        ranges.contains { low, high in
            let i = _DwarfLineTable.lowerBound(addresses, low)
            return i < addresses.count && addresses[i] < high
        }
    }

    /// Every unit's header and first entry (a few dozen bytes each: the cost of skipping a unit).
    mutating func readUnits() {
        var offset = 0
        let info = sections.info
        while offset + 11 <= info.count {
            var reader = _DwarfReader(bytes: info, offset: offset, end: info.count)
            guard var length = reader.fixed(UInt32.self).map(UInt64.init) else { return }
            var offsetSize = 4
            if length == 0xffff_ffff {
                guard let long = reader.fixed(UInt64.self) else { return }
                length = long
                offsetSize = 8
            }
            guard length <= UInt64(info.count - reader.offset) else { return }
            let end = reader.offset + Int(length)
            reader.end = end
            defer { offset = end }
            guard let version = reader.fixed(UInt16.self), (2...5).contains(version) else { continue }
            var unitType: UInt8 = 1  // DW_UT_compile
            var addressSize: UInt8? = nil
            if version >= 5 {
                guard let type = reader.u8(), let size = reader.u8() else { continue }
                unitType = type
                addressSize = size
            }
            guard let abbreviations = reader.word(offsetSize),
                  abbreviations < UInt64(sections.abbreviations.count) else { continue }
            if version < 5 { addressSize = reader.u8() }
            // Type units, skeletons and split units hold no code here (split DWARF's lives in .dwo files).
            guard unitType == 1 || unitType == 3, let addressSize, addressSize == 4 || addressSize == 8 else { continue }
            var unit = Unit(offset: offset, end: end, firstEntry: reader.offset, version: version,
                            offsetSize: offsetSize, addressSize: Int(addressSize),
                            abbreviationOffset: Int(abbreviations))
            readUnitEntry(&unit)
            units.append(unit)
        }
    }

    /// The unit entry's bases (which its other attributes may depend on, in any order), line table and ranges.
    private mutating func readUnitEntry(_ unit: inout Unit) {
        var reader = _DwarfReader(bytes: sections.info, offset: unit.firstEntry, end: unit.end)
        guard let code = reader.uleb(), let abbreviation = abbreviations(of: unit)[code],
              abbreviation.tag == tagCompileUnit || abbreviation.tag == tagPartialUnit else { return }
        var values: [UInt64: Value] = [:]
        for attribute in abbreviation.attributes {
            guard let value = read(attribute.form, attribute.implicit, &reader, unit) else { return }
            values[attribute.name] = value
        }
        if case .number(let base)? = values[atStringOffsetsBase] { unit.stringOffsetsBase = base }
        if case .sectionOffset(let base)? = values[atStringOffsetsBase] { unit.stringOffsetsBase = base }
        if case .number(let base)? = values[atAddressBase] { unit.addressBase = base }
        if case .sectionOffset(let base)? = values[atAddressBase] { unit.addressBase = base }
        if case .number(let base)? = values[atRangeListsBase] { unit.rangeListsBase = base }
        if case .sectionOffset(let base)? = values[atRangeListsBase] { unit.rangeListsBase = base }
        if case .number(let at)? = values[atStmtList] { unit.lineProgram = Int(clamping: at) }
        if case .sectionOffset(let at)? = values[atStmtList] { unit.lineProgram = Int(clamping: at) }
        if let directory = values[atCompilationDirectory] { unit.compilationDirectory = string(directory, unit) }
        unit.lowPC = values[atLowPC].flatMap { address($0, unit) } ?? 0
        unit.ranges = ranges(values, unit)
    }

    /// Walks the entries of `unit`, recording each inlined entry whose ranges cover addresses of the batch.
    private mutating func walk(_ unit: Unit) {
        let table = abbreviations(of: unit)
        var reader = _DwarfReader(bytes: sections.info, offset: unit.firstEntry, end: unit.end)
        var depth = 0
        var values: [UInt64: Value] = [:]
        while !reader.atEnd {
            guard let code = reader.uleb() else { return }
            if code == 0 {  // the end of a list of children
                depth -= 1
                if depth <= 0 { return }
                continue
            }
            guard let abbreviation = table[code] else { return }
            if abbreviation.tag == tagInlinedSubroutine {
                values.removeAll(keepingCapacity: true)
                for attribute in abbreviation.attributes {
                    guard let value = read(attribute.form, attribute.implicit, &reader, unit) else { return }
                    values[attribute.name] = value
                }
                record(values, depth: depth, unit)
            } else if let size = abbreviation.fixedSize {
                guard reader.skip(size) else { return }
            } else {
                for attribute in abbreviation.attributes {
                    guard skip(attribute.form, &reader, unit) else { return }
                }
            }
            if abbreviation.hasChildren { depth += 1 }
        }
    }

    private mutating func record(_ values: [UInt64: Value], depth: Int, _ unit: Unit) {
        var hits: [Int] = []
        for (low, high) in ranges(values, unit) {
            var i = _DwarfLineTable.lowerBound(addresses, low)
            while i < addresses.count, addresses[i] < high {
                if hits.last != i { hits.append(i) }
                i += 1
            }
        }
        guard !hits.isEmpty else { return }
        var (mangled, name): (String?, String?) = (nil, nil)
        if case .reference(let origin)? = values[atAbstractOrigin] { (mangled, name) = self.name(of: origin) }
        var file: String? = nil
        if let index = values[atCallFile].flatMap(number), let program = unit.lineProgram {
            let files = fileTable(at: program)
            file = index < UInt64(files.count) ? files[Int(index)] : nil
        }
        let line = values[atCallLine].flatMap(number).map { Int(clamping: $0) } ?? 0
        let call = _DwarfInlinedCalls.Call(mangledName: mangled ?? name, name: name, file: file, line: line)
        for i in hits { found[i].append((depth, call)) }
    }

    /// The linkage and plain names of the subprogram entry at `offset`, through `DW_AT_specification` and
    /// `DW_AT_abstract_origin` (a definition out of its class, an abstract instance) to where they are recorded.
    private mutating func name(of offset: Int) -> (mangled: String?, name: String?) {
        if let known = names[offset] { return known }
        var mangled: String? = nil, name: String? = nil
        var next: Int? = offset
        var hops = 0
        while let at = next, hops < 8, mangled == nil || name == nil {
            next = nil
            hops += 1
            guard let unit = unit(containing: at) else { break }
            var reader = _DwarfReader(bytes: sections.info, offset: at, end: unit.end)
            guard let code = reader.uleb(), let abbreviation = abbreviations(of: unit)[code] else { break }
            for attribute in abbreviation.attributes {
                guard let value = read(attribute.form, attribute.implicit, &reader, unit) else { break }
                switch (attribute.name, value) {
                case (atLinkageName, _), (atMIPSLinkageName, _): mangled = mangled ?? string(value, unit)
                case (atName, _): name = name ?? string(value, unit)
                case (atSpecification, .reference(let target)), (atAbstractOrigin, .reference(let target)):
                    next = target
                default: break
                }
            }
        }
        names[offset] = (mangled, name)
        return (mangled, name)
    }

    private func unit(containing offset: Int) -> Unit? {
        var low = 0, high = units.count
        while low < high {  // the first unit starting above `offset`
            let middle = (low + high) / 2
            if units[middle].offset <= offset { low = middle + 1 } else { high = middle }
        }
        return low > 0 && offset < units[low - 1].end ? units[low - 1] : nil
    }

    private mutating func fileTable(at offset: Int) -> [String] {
        if let known = fileTables[offset] { return known }
        let files = lineTable?.files(ofProgramAt: offset) ?? []
        fileTables[offset] = files
        return files
    }

    private mutating func abbreviations(of unit: Unit) -> AbbreviationTable {
        let key = [unit.abbreviationOffset, Int(unit.version), unit.offsetSize, unit.addressSize]
        if let known = abbreviationTables[key] { return known }
        var table = AbbreviationTable()
        var reader = _DwarfReader(bytes: sections.abbreviations, offset: unit.abbreviationOffset,
                                  end: sections.abbreviations.count)
        while let code = reader.uleb(), code != 0, code < 1 << 20, let tag = reader.uleb(), let children = reader.u8() {
            var attributes: [(name: UInt64, form: UInt64, implicit: Int64)] = []
            var fixedSize: Int? = 0
            while let name = reader.uleb(), let form = reader.uleb(), name != 0 || form != 0 {
                var implicit: Int64 = 0
                if form == 0x21 { implicit = reader.sleb() ?? 0 }  // DW_FORM_implicit_const
                attributes.append((name, form, implicit))
                fixedSize = fixedSize.flatMap { total in Self.size(of: form, unit).map { total + $0 } }
            }
            if table.byCode.count <= Int(code) { table.byCode += Array(repeating: nil, count: Int(code) + 1 - table.byCode.count) }
            table.byCode[Int(code)] = Abbreviation(tag: tag, hasChildren: children != 0, attributes: attributes,
                                                   fixedSize: fixedSize)
        }
        abbreviationTables[key] = table
        return table
    }

    // MARK: Values

    private func number(_ value: Value) -> UInt64? {
        if case .number(let n) = value { return n }
        return nil
    }

    private func address(_ value: Value, _ unit: Unit) -> UInt64? {
        switch value {
        case .address(let a): return a
        case .addressIndex(let index):
            return Self.entry(index, of: sections.addresses, at: unit.addressBase, size: unit.addressSize)
        default: return nil
        }
    }

    private func string(_ value: Value, _ unit: Unit) -> String? {
        switch value {
        case .string(let s): return s
        case .stringIndex(let index):
            return Self.entry(index, of: sections.stringOffsets, at: unit.stringOffsetsBase, size: unit.offsetSize)
                .flatMap { Self.cString(sections.strings, $0) }
        default: return nil
        }
    }

    /// Entry `index` of a table of `size`-byte values starting at `base` in `section` (`.debug_addr`,
    /// `.debug_str_offsets`, the offsets of `.debug_rnglists`: what the `…x` forms index).
    private static func entry(_ index: UInt64, of section: UnsafeRawBufferPointer?, at base: UInt64, size: Int)
        -> UInt64? {
        guard let section else { return nil }
        let at = base &+ index &* UInt64(size)
        guard at < UInt64(section.count) else { return nil }
        var reader = _DwarfReader(bytes: section, offset: Int(at), end: section.count)
        return reader.word(size)
    }

    private static func cString(_ section: UnsafeRawBufferPointer?, _ offset: UInt64) -> String? {
        guard let section, offset < UInt64(section.count) else { return nil }
        var reader = _DwarfReader(bytes: section, offset: Int(offset), end: section.count)
        return reader.cString()
    }

    /// The address ranges of an entry: `DW_AT_low_pc` with `DW_AT_high_pc` (an address, or a length since
    /// DWARF 4), or `DW_AT_ranges` (`.debug_ranges` before DWARF 5, `.debug_rnglists` since).
    private func ranges(_ values: [UInt64: Value], _ unit: Unit) -> [(UInt64, UInt64)] {
        if let lowValue = values[atLowPC], let low = address(lowValue, unit), let highValue = values[atHighPC] {
            if let high = address(highValue, unit) { return high > low ? [(low, high)] : [] }
            if let length = number(highValue) { return length > 0 ? [(low, low &+ length)] : [] }
            return []
        }
        switch values[atRanges] {
        case .sectionOffset(let offset)?, .number(let offset)?:
            return unit.version >= 5 ? rangeList(at: offset, unit) : oldRanges(at: offset, unit)
        case .rangeListIndex(let index)?:
            return Self.entry(index, of: sections.rangeLists, at: unit.rangeListsBase, size: unit.offsetSize)
                .map { rangeList(at: unit.rangeListsBase &+ $0, unit) } ?? []
        default: return []
        }
    }

    /// A `.debug_ranges` list (DWARF 2 to 4): pairs relative to the unit's base address, until (0, 0).
    private func oldRanges(at offset: UInt64, _ unit: Unit) -> [(UInt64, UInt64)] {
        guard let section = sections.ranges, offset < UInt64(section.count) else { return [] }
        var reader = _DwarfReader(bytes: section, offset: Int(offset), end: section.count)
        let selector: UInt64 = unit.addressSize == 8 ? .max : 0xffff_ffff
        var base = unit.lowPC
        var result: [(UInt64, UInt64)] = []
        while let begin = reader.word(unit.addressSize), let end = reader.word(unit.addressSize) {
            if begin == 0 && end == 0 { break }
            if begin == selector { base = end; continue }
            if end > begin { result.append((base &+ begin, base &+ end)) }
        }
        return result
    }

    /// A `.debug_rnglists` list (DWARF 5, 2.17.3).
    private func rangeList(at offset: UInt64, _ unit: Unit) -> [(UInt64, UInt64)] {
        guard let section = sections.rangeLists, offset < UInt64(section.count) else { return [] }
        var reader = _DwarfReader(bytes: section, offset: Int(offset), end: section.count)
        var base = unit.lowPC
        var result: [(UInt64, UInt64)] = []
        func plain() -> UInt64? { reader.word(unit.addressSize) }
        func indexed() -> UInt64? { reader.uleb().flatMap { address(.addressIndex($0), unit) } }
        func add(_ low: UInt64?, _ high: UInt64?) -> Bool {
            guard let low, let high else { return false }
            if high > low { result.append((low, high)) }
            return true
        }
        while let kind = reader.u8() {
            switch kind {
            case 0: return result  // DW_RLE_end_of_list
            case 1: guard let b = indexed() else { return result }; base = b  // base_addressx
            case 2: guard add(indexed(), indexed()) else { return result }  // startx_endx
            case 3:  // startx_length
                guard let low = indexed(), let length = reader.uleb(), add(low, low &+ length) else { return result }
            case 4:  // offset_pair
                guard let a = reader.uleb(), let b = reader.uleb(), add(base &+ a, base &+ b) else { return result }
            case 5: guard let b = plain() else { return result }; base = b  // base_address
            case 6: guard add(plain(), plain()) else { return result }  // start_end
            case 7:  // start_length
                guard let low = plain(), let length = reader.uleb(), add(low, low &+ length) else { return result }
            default: return result
            }
        }
        return result
    }

    // MARK: Forms

    /// Reads one attribute value of `form`; nil when the entry is malformed or the form unknown (its size, and
    /// so where the next value starts, is then unknown too).
    private func read(_ form: UInt64, _ implicit: Int64, _ reader: inout _DwarfReader, _ unit: Unit) -> Value? {
        func offset() -> UInt64? { reader.word(unit.offsetSize) }
        switch form {
        case 0x01:  // addr
            return reader.word(unit.addressSize).map(Value.address)
        case 0x0b: return reader.u8().map { .number(UInt64($0)) }  // data1
        case 0x05: return reader.fixed(UInt16.self).map { .number(UInt64($0)) }  // data2
        case 0x06: return reader.fixed(UInt32.self).map { .number(UInt64($0)) }  // data4
        case 0x07: return reader.fixed(UInt64.self).map(Value.number)  // data8
        case 0x0f: return reader.uleb().map(Value.number)  // udata
        case 0x0d: return reader.sleb().map { .number(UInt64(bitPattern: $0)) }  // sdata
        case 0x21: return .number(UInt64(bitPattern: implicit))  // implicit_const
        case 0x11: return reader.u8().map { .reference(unit.offset + Int($0)) }  // ref1
        case 0x12: return reader.fixed(UInt16.self).map { .reference(unit.offset + Int($0)) }  // ref2
        case 0x13: return reader.fixed(UInt32.self).map { .reference(unit.offset + Int($0)) }  // ref4
        case 0x14: return reader.fixed(UInt64.self).map { .reference(unit.offset + Int(clamping: $0)) }  // ref8
        case 0x15: return reader.uleb().map { .reference(unit.offset + Int(clamping: $0)) }  // ref_udata
        case 0x10:  // ref_addr: an address-sized offset in DWARF 2, offset-sized since
            let at = reader.word(unit.version == 2 ? unit.addressSize : unit.offsetSize)
            return at.map { .reference(Int(clamping: $0)) }
        case 0x08: return reader.cString().map(Value.string)  // string
        case 0x0e: return offset().map { Self.cString(sections.strings, $0).map(Value.string) ?? .other }  // strp
        case 0x1f: return offset().map { Self.cString(sections.lineStrings, $0).map(Value.string) ?? .other }
        case 0x1a, 0x1f02: return reader.uleb().map(Value.stringIndex)  // strx, GNU_str_index
        case 0x25: return reader.u8().map { .stringIndex(UInt64($0)) }  // strx1
        case 0x26: return reader.fixed(UInt16.self).map { .stringIndex(UInt64($0)) }  // strx2
        case 0x27: return threeBytes(&reader).map(Value.stringIndex)  // strx3
        case 0x28: return reader.fixed(UInt32.self).map { .stringIndex(UInt64($0)) }  // strx4
        case 0x1b, 0x1f01: return reader.uleb().map(Value.addressIndex)  // addrx, GNU_addr_index
        case 0x29: return reader.u8().map { .addressIndex(UInt64($0)) }  // addrx1
        case 0x2a: return reader.fixed(UInt16.self).map { .addressIndex(UInt64($0)) }  // addrx2
        case 0x2b: return threeBytes(&reader).map(Value.addressIndex)  // addrx3
        case 0x2c: return reader.fixed(UInt32.self).map { .addressIndex(UInt64($0)) }  // addrx4
        case 0x17: return offset().map(Value.sectionOffset)  // sec_offset
        case 0x23: return reader.uleb().map(Value.rangeListIndex)  // rnglistx
        case 0x16:  // indirect: the form comes first
            guard let actual = reader.uleb(), actual != 0x16 else { return nil }
            return read(actual, implicit, &reader, unit)
        default:
            return skip(form, &reader, unit) ? .other : nil
        }
    }

    /// Steps over one attribute value of `form` without decoding it: what every entry but an inlined call costs.
    /// The size of a value of `form` when it is fixed (not a LEB128, string or block).
    private static func size(of form: UInt64, _ unit: Unit) -> Int? {
        switch form {
        case 0x19, 0x21: return 0  // flag_present, implicit_const
        case 0x0b, 0x0c, 0x11, 0x25, 0x29: return 1  // data1, flag, ref1, strx1, addrx1
        case 0x05, 0x12, 0x26, 0x2a: return 2  // data2, ref2, strx2, addrx2
        case 0x27, 0x2b: return 3  // strx3, addrx3
        case 0x06, 0x13, 0x28, 0x2c, 0x1c: return 4  // data4, ref4, strx4, addrx4, ref_sup4
        case 0x07, 0x14, 0x20, 0x24: return 8  // data8, ref8, ref_sig8, ref_sup8
        case 0x1e: return 16  // data16
        case 0x01: return unit.addressSize  // addr
        case 0x0e, 0x17, 0x1f, 0x1d, 0x1f20, 0x1f21: return unit.offsetSize  // strp, sec_offset, line_strp, …_sup/alt
        case 0x10: return unit.version == 2 ? unit.addressSize : unit.offsetSize  // ref_addr
        default: return nil
        }
    }

    private func skip(_ form: UInt64, _ reader: inout _DwarfReader, _ unit: Unit) -> Bool {
        if let size = Self.size(of: form, unit) { return reader.skip(size) }
        let size: Int
        switch form {
        case 0x0f, 0x0d, 0x15, 0x1a, 0x1b, 0x22, 0x23, 0x1f01, 0x1f02:  // LEB128s
            return reader.uleb() != nil
        case 0x08: return reader.skipCString()  // string
        case 0x0a: guard let n = reader.u8() else { return false }; size = Int(n)  // block1
        case 0x03: guard let n = reader.fixed(UInt16.self) else { return false }; size = Int(n)  // block2
        case 0x04: guard let n = reader.fixed(UInt32.self) else { return false }; size = Int(n)  // block4
        case 0x09, 0x18: guard let n = reader.uleb() else { return false }; size = Int(clamping: n)  // block, exprloc
        case 0x16:  // indirect
            guard let actual = reader.uleb(), actual != 0x16 else { return false }
            return skip(actual, &reader, unit)
        default: return false
        }
        return reader.skip(size)
    }

    private func threeBytes(_ reader: inout _DwarfReader) -> UInt64? {
        guard let a = reader.u8(), let b = reader.u8(), let c = reader.u8() else { return nil }
        return UInt64(a) | UInt64(b) << 8 | UInt64(c) << 16
    }
}

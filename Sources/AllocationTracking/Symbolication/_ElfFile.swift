import CZlib

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An ELF64 file mapped read-only for the length of one symbolication batch: its program headers and the
/// sections a lookup reads (`.symtab`/`.dynsym` with their strings, `.debug_line` with `.debug_line_str` and
/// `.debug_str`), decompressed when they are `SHF_COMPRESSED` (zlib).
///
/// Why map and drop rather than keep: the symbol and line data of a large binary is tens of megabytes, needed
/// only while a batch of addresses is resolved; the results are cached per address (`_Symbolicator`). Mapped
/// pages are the page cache's, counted in RSS only while mapped; `deinit` unmaps them and frees any
/// decompressed copy, so an idle process keeps no symbol data at all.
final class _ElfFile {
    struct Section {
        var bytes: UnsafeRawBufferPointer
    }

    private let base: UnsafeRawPointer
    private let length: Int
    private var decompressed: [UnsafeMutableRawBufferPointer] = []
    /// Section headers by name (the first of each name).
    private var sections: [String: (offset: Int, size: Int, flags: UInt64, link: Int, type: UInt32)] = [:]
    private var sectionList: [(offset: Int, size: Int, flags: UInt64, link: Int, type: UInt32)] = []
    /// The lowest `p_vaddr` of a loadable segment, and that of the first executable one (with its file offset).
    private(set) var lowestAddress: UInt64 = .max
    private(set) var textSegment: (vaddr: UInt64, offset: UInt64)? = nil

    /// Maps `path`, or nil when it is not a readable little-endian ELF64 file.
    init?(path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_size >= 64 else { return nil }
        length = Int(info.st_size)
        guard let mapped = mmap(nil, length, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else { return nil }
        base = UnsafeRawPointer(mapped)
        guard parseHeaders() else {
            munmap(UnsafeMutableRawPointer(mutating: base), length)
            return nil
        }
    }

    deinit {
        for buffer in decompressed { buffer.deallocate() }
        munmap(UnsafeMutableRawPointer(mutating: base), length)
    }

    private func load<T: FixedWidthInteger>(_ offset: Int, as: T.Type) -> T {
        T(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    private func parseHeaders() -> Bool {
        // e_ident: "\x7fELF", class 2 (64-bit), data 1 (little-endian).
        guard load(0, as: UInt32.self) == 0x464c_457f, load(4, as: UInt8.self) == 2, load(5, as: UInt8.self) == 1
        else { return false }
        let phoff = Int(load(32, as: UInt64.self)), shoff = Int(load(40, as: UInt64.self))
        let phentsize = Int(load(54, as: UInt16.self)), phnum = Int(load(56, as: UInt16.self))
        let shentsize = Int(load(58, as: UInt16.self)), shnum = Int(load(60, as: UInt16.self))
        let shstrndx = Int(load(62, as: UInt16.self))
        guard phoff + phnum * phentsize <= length, shoff + shnum * shentsize <= length,
              phentsize >= 56 || phnum == 0, shentsize >= 64 || shnum == 0 else { return false }
        for i in 0..<phnum {
            let p = phoff + i * phentsize
            guard load(p, as: UInt32.self) == 1 else { continue }  // PT_LOAD
            let vaddr = load(p + 16, as: UInt64.self)
            lowestAddress = min(lowestAddress, vaddr)
            if load(p + 4, as: UInt32.self) & 1 != 0, textSegment == nil {  // PF_X
                textSegment = (vaddr, load(p + 8, as: UInt64.self))
            }
        }
        for i in 0..<shnum {
            let s = shoff + i * shentsize
            let entry = (offset: Int(load(s + 24, as: UInt64.self)), size: Int(load(s + 32, as: UInt64.self)),
                         flags: load(s + 8, as: UInt64.self), link: Int(load(s + 40, as: UInt32.self)),
                         type: load(s + 4, as: UInt32.self))
            sectionList.append(entry)
        }
        guard shstrndx < sectionList.count else { return true }
        let names = sectionList[shstrndx]
        for (i, entry) in sectionList.enumerated() {
            let nameOffset = Int(load(shoff + i * shentsize, as: UInt32.self))
            guard names.offset + nameOffset < length, names.offset + nameOffset < names.offset + names.size else { continue }
            let name = String(cString: (base + names.offset + nameOffset).assumingMemoryBound(to: CChar.self))
            if sections[name] == nil { sections[name] = entry }
        }
        return true
    }

    /// The contents of section `name` (decompressed), or nil when absent, out of bounds or not decompressible.
    func section(_ name: String) -> UnsafeRawBufferPointer? {
        guard let entry = sections[name] else { return nil }
        return contents(entry)
    }

    private func contents(_ entry: (offset: Int, size: Int, flags: UInt64, link: Int, type: UInt32))
        -> UnsafeRawBufferPointer? {
        guard entry.type != 8, entry.offset >= 0, entry.size >= 0, entry.offset + entry.size <= length else {
            return nil  // SHT_NOBITS, or past the end of the file
        }
        let raw = UnsafeRawBufferPointer(start: base + entry.offset, count: entry.size)
        guard entry.flags & 0x800 != 0 else { return raw }  // SHF_COMPRESSED
        // Elf64_Chdr: ch_type (1: zlib), ch_reserved, ch_size, ch_addralign; then the zlib stream.
        guard raw.count >= 24, load(entry.offset, as: UInt32.self) == 1 else { return nil }
        let size = Int(load(entry.offset + 8, as: UInt64.self))
        guard size > 0, size < 1 << 32 else { return nil }
        let output = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
        var outputLength = uLongf(size)
        let status = uncompress(output.baseAddress!.assumingMemoryBound(to: Bytef.self), &outputLength,
                                (base + entry.offset + 24).assumingMemoryBound(to: Bytef.self), uLong(entry.size - 24))
        guard status == Z_OK, Int(outputLength) == size else {
            output.deallocate()
            return nil
        }
        decompressed.append(output)
        return UnsafeRawBufferPointer(output)
    }

    /// The function symbols (`STT_FUNC`, `STT_GNU_IFUNC`) of `.symtab`, or of `.dynsym` when the file is stripped,
    /// sorted by start address: (start, end, name). A symbol of size 0 extends to the next one.
    func functionSymbols() -> [(start: UInt64, end: UInt64, name: UnsafePointer<CChar>)] {
        guard let table = sectionList.first(where: { $0.type == 2 }) ?? sectionList.first(where: { $0.type == 11 }),
              table.link < sectionList.count,
              let symbols = contents(table), let strings = contents(sectionList[table.link]) else { return [] }
        var result: [(start: UInt64, end: UInt64, name: UnsafePointer<CChar>)] = []
        result.reserveCapacity(symbols.count / 24 / 2)
        let stringBase = strings.baseAddress!.assumingMemoryBound(to: CChar.self)
        var offset = 0
        while offset + 24 <= symbols.count {
            let info = symbols.load(fromByteOffset: offset + 4, as: UInt8.self)
            let type = info & 0xf
            let value = UInt64(littleEndian: symbols.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self))
            let section = UInt16(littleEndian: symbols.loadUnaligned(fromByteOffset: offset + 6, as: UInt16.self))
            let nameOffset = Int(UInt32(littleEndian: symbols.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
            if (type == 2 || type == 10), section != 0, value != 0, nameOffset > 0, nameOffset < strings.count {
                let size = UInt64(littleEndian: symbols.loadUnaligned(fromByteOffset: offset + 16, as: UInt64.self))
                result.append((value, size == 0 ? 0 : value &+ size, stringBase + nameOffset))
            }
            offset += 24
        }
        // Aliases (several names at one address): the global one first is not knowable here; keep the first seen.
        result.sort { $0.start < $1.start || ($0.start == $1.start && $0.end > $1.end) }
        for i in result.indices where result[i].end == 0 {
            result[i].end = i + 1 < result.count ? result[i + 1].start : result[i].start &+ 1
        }
        return result
    }
}

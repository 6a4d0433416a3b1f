// A Swift program that does not link swift-allocation-tracking: `alloc-track run` tracks it by LD_PRELOAD
// (Tests/AllocTrackTests). It keeps 64 blocks of 64 KiB from one function until it exits, then prints a line.
@inline(never)
func retainBuffersForTheCache(_ count: Int) -> [UnsafeMutableRawPointer] {
    (0..<count).map { _ in
        let block = UnsafeMutableRawPointer.allocate(byteCount: 65536, alignment: 16)
        block.storeBytes(of: 1, as: UInt8.self)
        return block
    }
}

let kept = retainBuffersForTheCache(64)
print("kept \(kept.count) blocks")

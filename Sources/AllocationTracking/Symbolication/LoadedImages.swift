import CAllocationTracking

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The images (executable and shared objects) loaded in the process, as `Snapshot.Image` values: what a
/// snapshot's frames point into, with the build ids that say which build of each file to symbolicate with.
enum _LoadedImages {
    /// The images whose code holds at least one of the traces' addresses, the main executable first (always
    /// there, as pprof wants its first mapping to be the main binary), then in the loader's order. Outside the
    /// allocation path and outside the API lock (the walk takes the loader's lock).
    static func containing(_ traces: [_RawTrace]) -> [Snapshot.Image] {
        let all = captureAll()
        guard !all.isEmpty else { return [] }
        var used = [Bool](repeating: false, count: all.count)
        used[0] = true
        // Images are few and sorted by nothing useful: find each address's image by a binary search over their
        // code ranges sorted by start.
        let order = all.indices.filter { all[$0].end > all[$0].start }.sorted { all[$0].start < all[$1].start }
        var seen = Set<UInt>()
        for trace in traces {
            for address in trace.addresses where seen.insert(address).inserted {
                var low = 0, high = order.count
                while low < high {  // the first image starting above `address`
                    let middle = (low + high) / 2
                    if all[order[middle]].start <= address { low = middle + 1 } else { high = middle }
                }
                if low > 0, address < all[order[low - 1]].end { used[order[low - 1]] = true }
            }
        }
        return all.indices.filter { used[$0] }.map { all[$0] }
    }

    /// Every loaded image with an executable segment, in the loader's order (the main executable first).
    ///
    /// The loader's lock is held while the visitor runs, so the visitor only copies each image into buffers
    /// allocated before the walk (no allocation, no other loader call); when they are too small the walk stops and
    /// starts over with larger ones.
    static func captureAll() -> [Snapshot.Image] {
        var capacity = 256, pathBytes = 1 << 16
        while true {
            var buffer = _ImageBuffer(capacity: capacity, pathBytes: pathBytes)
            defer { buffer.deallocate() }
            withUnsafeMutablePointer(to: &buffer) { pointer in
                cat_loaded_images_visit({ image, context in
                    context!.assumingMemoryBound(to: _ImageBuffer.self).pointee.append(image)
                }, pointer)
            }
            if !buffer.overflowed { return buffer.images() }
            capacity *= 2
            pathBytes *= 2
        }
    }
}

/// Fixed buffers the loader-lock visitor copies images into.
private struct _ImageBuffer {
    let entries: UnsafeMutablePointer<cat_loaded_image>
    let capacity: Int
    let paths: UnsafeMutablePointer<CChar>
    let pathBytes: Int
    var count = 0
    var pathsUsed = 0
    var overflowed = false

    init(capacity: Int, pathBytes: Int) {
        entries = .allocate(capacity: capacity)
        paths = .allocate(capacity: pathBytes)
        self.capacity = capacity
        self.pathBytes = pathBytes
    }

    func deallocate() {
        entries.deallocate()
        paths.deallocate()
    }

    /// Called with the loader's lock held: plain copies only. Returns nonzero to stop the walk.
    mutating func append(_ image: UnsafePointer<cat_loaded_image>) -> Int32 {
        guard image.pointee.textEnd > image.pointee.textStart else { return 0 }  // no code: no frame points here
        let length = strlen(image.pointee.path) + 1
        guard count < capacity, pathsUsed + length <= pathBytes else {
            overflowed = true
            return 1
        }
        memcpy(paths + pathsUsed, image.pointee.path, length)
        entries[count] = image.pointee
        entries[count].path = UnsafePointer(paths + pathsUsed)
        pathsUsed += length
        count += 1
        return 0
    }

    func images() -> [Snapshot.Image] {
        (0..<count).map { index in
            let image = entries[index]
            let idLength = min(Int(image.buildIDLength), Int(CAT_BUILD_ID_MAX))
            let buildID = withUnsafeBytes(of: image.buildID) { bytes in
                bytes.prefix(idLength).map { byte in
                    let hex = String(byte, radix: 16)
                    return byte < 16 ? "0" + hex : hex
                }.joined()
            }
            return Snapshot.Image(path: String(cString: image.path), start: UInt(image.textStart),
                                  end: UInt(image.textEnd), fileOffset: UInt(image.textFileOffset),
                                  buildID: buildID.isEmpty ? nil : buildID)
        }
    }
}

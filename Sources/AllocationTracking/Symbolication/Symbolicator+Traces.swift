// Raw traces (return addresses and counters, as the tables' read side copies them) into `Trace` values: with
// symbols through the symbol cache, or with bare addresses.

extension _Symbolicator {
    /// Traces with every captured address replaced by its symbolicated frames (inlined frames expanded), resolved
    /// in one batch.
    func traces(for raw: [_RawTrace]) -> [Trace] {
        var addresses = Set<UInt>()
        for trace in raw { addresses.formUnion(trace.addresses) }
        let resolved = frames(for: addresses)
        return raw.map { trace in trace.trace(frames: Self.expand(trace.addresses, resolved)) }
    }

    /// The symbolicated traceback of one captured stack.
    func traceback(for addresses: [UInt], totalFrames: Int) -> Traceback {
        Traceback(frames: Self.expand(addresses, frames(for: Set(addresses))), totalFrames: totalFrames)
    }

    /// The frames of `addresses`, each replaced by its resolved frames (a bare address when it has none).
    static func expand(_ addresses: [UInt], _ resolved: [UInt: [Frame]]) -> [Frame] {
        var frames: [Frame] = []
        frames.reserveCapacity(addresses.count + 4)
        for address in addresses {
            if let expanded = resolved[address] { frames += expanded } else { frames.append(Frame(address: address)) }
        }
        return frames
    }
}

extension _RawTrace {
    /// The trace with bare addresses (`Frame(address:)`), for an unsymbolicated snapshot.
    func unsymbolicatedTrace() -> Trace {
        trace(frames: addresses.map { Frame(address: $0) })
    }

    func trace(frames: [Frame]) -> Trace {
        Trace(traceback: Traceback(frames: frames, totalFrames: totalFrames), size: liveBytes, count: liveBlocks,
              allocatedSize: allocatedBytes, allocatedCount: allocatedBlocks)
    }
}

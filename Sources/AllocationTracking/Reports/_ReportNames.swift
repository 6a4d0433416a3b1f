import CAllocationTracking
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Names for a report's frames, resolved within a time budget.
///
/// A report asked for under load must appear within a second, and the symbolicator may not answer that fast: a
/// cold lookup on a large binary walks DWARF, and its lock may be held by another caller (the allocation-failure
/// names, a snapshot served over HTTP, the metrics' trend) for as long as that caller's batch takes. So the
/// resolving runs on a thread of its own, in chunks, while the report's thread waits until the names are all
/// there or the deadline passes, whichever is first; then the report is written with what is named, and the rest
/// printed as `image+0xoffset (build id …)`. An abandoned resolver stops after its current chunk: names nobody
/// will read are not worth a core.
enum _ReportNames {
    /// Addresses per call to the symbolicator. Large: a call reads the line tables of the images it touches once
    /// for all its addresses (the cost is per call, hardly per address), so small chunks would read them again and
    /// again; an abandoned resolver still stops after its current call.
    static let chunk = 4096

    /// What the resolver shares with the report's thread (guarded by `state`).
    private final class Job: Sendable {
        let addresses: [UInt]
        let state = Mutex(State())

        struct State {
            var names: [UInt: [Frame]] = [:]
            var done = false
            var abandoned = false
        }

        init(_ addresses: [UInt]) { self.addresses = addresses }

        /// Resolves chunk after chunk until done, abandoned or `deadlineNs` (on any thread, suspended).
        func run(until deadlineNs: UInt64 = .max) {
            var index = 0
            while index < addresses.count {
                if state.withLock({ $0.abandoned }) || cat_monotonic_ns() >= deadlineNs { return }
                let end = min(index + _ReportNames.chunk, addresses.count)
                let named = _Symbolicator.shared.frames(for: Set(addresses[index..<end]))
                state.withLock { $0.names.merge(named) { _, new in new } }
                index = end
            }
            state.withLock { $0.done = true }
        }
    }

    /// The names of `addresses` resolved by `deadlineNs` (`cat_monotonic_ns()`): every address named in time is a
    /// key of the result, the others are not. Calling thread suspended.
    static func resolve(_ addresses: Set<UInt>, deadlineNs: UInt64) -> [UInt: [Frame]] {
        guard !addresses.isEmpty else { return [:] }
        // What is cached is taken at once (unless a batch holds the symbolicator), so that one new address whose
        // cold lookup outlasts the budget does not leave its chunk's cached neighbours unnamed.
        let cached = _Symbolicator.shared.cachedFrames(for: addresses) ?? [:]
        guard cached.count < addresses.count else { return cached }
        // Sorted: neighbouring addresses share an image and often a compilation unit, whose tables a chunk then
        // reads once.
        let job = Job(addresses.filter { cached[$0] == nil }.sorted())
        var thread = pthread_t()
        let context = Unmanaged.passRetained(job).toOpaque()
        let created = cat_thread_create(&thread, { context in
            _ = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))  // the symbolicator's allocations are not traced
            _nameTrackerThread("alloc-report")
            Unmanaged<Job>.fromOpaque(context!).takeRetainedValue().run()
            return nil
        }, context)
        if created != 0 {
            // No thread to spare: resolve here, chunk by chunk, as long as the deadline allows.
            Unmanaged<Job>.fromOpaque(context).release()
            job.run(until: deadlineNs)
            return job.state.withLock { $0.names }.merging(cached) { new, _ in new }
        }
        pthread_detach(thread)
        // Polled, not signalled: a report waits at most its budget (under a second), and a millisecond's
        // granularity is below what anyone reading it can tell.
        while !job.state.withLock({ $0.done }), cat_monotonic_ns() < deadlineNs { cat_sleep_ns(1_000_000) }
        return job.state.withLock { state in
            state.abandoned = true
            return state.names
        }.merging(cached) { new, _ in new }
    }

    /// The loader's (loads, unloads) counts at the last `captureImages`.
    private static let capturedAt = Mutex<(UInt64, UInt64)?>(nil)

    /// Records the loaded images for `unnamed` when none are recorded or the loader loaded or unloaded something
    /// since the last time — not on every report: a capture rewrites the list the allocation-failure report
    /// reads, which finds no image while it is rewritten.
    static func captureImages() {
        var loads: UInt64 = 0, unloads: UInt64 = 0
        cat_loader_counts(&loads, &unloads)
        capturedAt.withLock { last in
            if let last, last == (loads, unloads), cat_images_count() > 0 { return }
            cat_images_capture()
            last = (loads, unloads)
        }
    }

    /// The frame printed for an address not named in time: `image+0xoffset` from the loaded images (the list the
    /// allocation-failure report uses), or the bare address.
    static func unnamed(_ address: UInt) -> Frame {
        var entry = cat_image_entry()
        guard cat_images_find(address, &entry) else { return Frame(address: address) }
        let name = withUnsafeBytes(of: entry.name) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
        return Frame(image: name, address: address, imageOffset: address &- entry.bias)
    }
}

import CAllocationTracking
import Synchronization

/// Warms the symbol cache for the call sites that appeared since the last call, a bounded batch at a time.
///
/// The soft-limit and signal reports symbolicate a whole snapshot (statistics by line need every site's
/// file:line) and must be quick when the process is close to its limit; a site is cheap to report once its
/// addresses are cached. So the watchdog, once a second (`_EmergencyNames.refresh()`), queues the addresses of
/// the traces added since the previous call that are not cached yet and resolves at most `addressesPerCall` of
/// them. Each address is resolved once per process, so the warm-up ends once the program's call sites have been
/// seen; when no trace was added and the queue is empty, a call allocates nothing.
enum _SymbolCacheWarmer {
    /// New addresses symbolicated per call (about 0.1–0.2 ms each, cold), and traces looked at per call.
    static let addressesPerCall = 256
    static let tracesPerCall = 4096
    /// Traces are looked at only while fewer addresses than this wait in the queue.
    static let queuedAddressesLimit = 8 * addressesPerCall

    private struct State {
        /// Traces below `warmedTraces` (in `generation`) have had their addresses queued.
        var warmedTraces: UInt64 = 0
        var generation: UInt64 = .max
        /// Queued addresses not resolved yet.
        var queue: [UInt] = []
    }

    private static let state = Mutex(State())

    /// Queues the addresses of the traces added since the last call (not yet resolved), then resolves up to
    /// `addressesPerCall` of the queue (`everything`: the whole queue, for tests that must leave the watchdog
    /// nothing to do). Takes the API lock to read the traces, not while symbolicating. The calling thread must be
    /// suspended (its allocations untracked).
    static func warm(everything: Bool = false) {
        state.withLock { state in
            repeat { warmOnce(&state) } while everything && !state.queue.isEmpty
        }
    }

    private static func warmOnce(_ state: inout State) {
        var addresses = Set<UInt>()
        do {
            cat_api_lock()
            defer { cat_api_unlock() }
            guard AllocationTracker.isTracing else { return }
            // Trace ids are reused after every stop/clearTraces, which bumps the names generation.
            let generation = cat_names_generation()
            if generation != state.generation {
                state.generation = generation
                state.warmedTraces = 0
            }
            guard state.warmedTraces < _UnsafeTraceTable.traceCount || !state.queue.isEmpty else { return }
            // Bounded by the queue too: a burst of new sites is taken in over several calls. (A trace not
            // published yet is skipped; the first snapshot that needs its addresses resolves them.)
            let queued = state.queue.count
            if queued < queuedAddressesLimit {
                state.warmedTraces = _UnsafeTraceTable.forEachTrace(from: state.warmedTraces, limit: tracesPerCall) {
                    addresses.formUnion($0)
                    return queued + addresses.count < queuedAddressesLimit
                }
            }
        }
        if !addresses.isEmpty { state.queue += _Symbolicator.shared.uncached(addresses) }
        guard !state.queue.isEmpty else { return }
        let taken = min(addressesPerCall, state.queue.count)
        let batch = Set(state.queue.suffix(taken))
        state.queue.removeLast(taken)
        _ = _Symbolicator.shared.frames(for: batch)
    }
}

import Synchronization
import CAllocationTracking

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Pre-resolves the names the allocation-failure report prints (see `cat_emergency.h`).
///
/// The report is written inside a failing malloc, where symbolication (DWARF, demangling, dictionaries) is out of
/// the question. So, while memory is plentiful, `refresh()` — called by the watchdog once a second — finds the
/// sites the report would print now (the top `CAT_EMERGENCY_MAX_SITES` by live bytes, with `topSites`, the
/// function the report itself uses), symbolicates the frames of those without a name in one batch
/// (`_Symbolicator`, cached per address), and stores one short line per site with `cat_names_put` into a
/// pre-reserved arena: `renderResponse(for:) at Sources/App/main.swift:21 ← handle(_:cache:) at main.swift:31` —
/// the attribution frame (file as recorded) and the next two non-system frames (file name only).
///
/// Only the sites the report can print are named, not every site: a service with tens of thousands of call
/// sites would otherwise spend a core symbolicating them at start-up, for names nobody reads. A site that
/// entered the top since the last refresh (about a second) is printed as `image+0xoffset (build id …)`, from
/// `cat_images_capture()`.
///
/// Nothing else is resolved ahead of time: snapshots, reports and exports resolve the frames they show when they
/// are made. (The watchdog used to warm the symbol cache for every new site once a second; with the Runtime
/// module's per-address walk of the line table, that was a core for a minute after each start of a service.)
///
/// CPU budget: resolving names costs CPU time `t` (one pass over each image's line table per batch, see
/// `_Symbolicator`); the next resolution waits until `t / cpuFraction` has passed, so the watchdog's naming uses
/// at most `cpuFraction` of a core over time, however often the top changes. When every top site has its name,
/// a refresh allocates nothing.
package enum _EmergencyNames {
    /// Sites named per refresh: the most the report prints.
    static var sitesPerRefresh: Int { Int(CAT_EMERGENCY_MAX_SITES) }
    static let maximumNameBytes = 1000
    /// Stored for a site without frames (a counting-only measurement's), so that it counts as named.
    static let noStack = "(no stack captured: a counting-only measurement)"

    /// Guarded by `refreshing`: the loader counts the image list was last captured at, and the buffer the top
    /// sites are selected into (allocated once, at the first refresh, while memory is plentiful).
    nonisolated(unsafe) static var loaderCounts: (UInt64, UInt64)? = nil
    nonisolated(unsafe) static var topBuffer: UnsafeMutablePointer<UInt64>? = nil

    /// Names the sites the report would print now (the top `sitesPerRefresh` by live bytes) that have no name
    /// yet. Suspends the calling thread's tracking; takes the API lock to find and copy the sites and to store
    /// the names, not while symbolicating.
    /// `ignoringBudget`: name them now even when the CPU budget says wait (tests that must leave the watchdog
    /// nothing to do). Returns whether names were resolved.
    @discardableResult
    package static func refresh(ignoringBudget: Bool = false) -> Bool {
        let previous = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        defer { _ = cat_thread_set_state(previous) }
        // One refresh at a time (the watchdog and an explicit call): a second caller waits, then names what the
        // first left, so a caller returns only once the top sites as of its call are named.
        return refreshing.withLock { budget in
            let now = cat_monotonic_ns()
            guard ignoringBudget || now >= budget.notBefore else { return false }
            let cpuBefore = threadCPUNanoseconds()
            guard nameTopSites() else { return false }
            let spent = threadCPUNanoseconds() &- cpuBefore
            budget.spentNanoseconds &+= spent
            budget.resolutions += 1
            budget.notBefore = now &+ UInt64(Double(spent) / cpuFraction)
            return true
        }
    }

    /// The share of one core the naming may use over time (0.2 %).
    static let cpuFraction = 0.002

    /// The CPU budget's state: when the next resolution may start, and the CPU time resolutions took in all.
    struct Budget {
        var notBefore: UInt64 = 0
        var spentNanoseconds: UInt64 = 0
        var resolutions = 0
    }

    static let refreshing = Mutex(Budget())

    /// CPU time the naming has used since the process started, and how many resolutions (for the budget's tests
    /// and the benchmark).
    package static var spent: (nanoseconds: UInt64, resolutions: Int) {
        refreshing.withLock { ($0.spentNanoseconds, $0.resolutions) }
    }

    private static func threadCPUNanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }

    /// Returns whether there was something to name.
    private static func nameTopSites() -> Bool {
        guard let (work, generation) = copyUnnamedTopSites(), !work.isEmpty else { return false }
        var addresses = Set<UInt>()
        for item in work { addresses.formUnion(item.frames) }
        let resolved = _Symbolicator.shared.frames(for: addresses)
        let names = work.map { item -> (UInt64, String) in
            let name = line(for: _Symbolicator.expand(item.frames, resolved))
            return (item.id, name.isEmpty ? noStack : name)
        }
        cat_api_lock()
        defer { cat_api_unlock() }
        // Stopped or cleared meanwhile: the ids name other stacks now.
        guard AllocationTracker.isTracing, cat_names_generation() == generation else { return true }
        if unstorableGeneration != generation {
            unstorable.removeAll()
            unstorableGeneration = generation
        }
        for (id, name) in names {
            var bytes = Array(name.utf8.prefix(maximumNameBytes))
            let stored = bytes.withUnsafeMutableBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { cat_names_put(id, $0.baseAddress!, $0.count) }
            }
            // Not stored (an id past the names index, or a full arena): not resolved again every second.
            if stored == 0, unstorable.count < maximumUnstorable { unstorable.insert(id) }
            bytes.removeAll()
        }
        return true
    }

    /// Sites whose name could not be stored in this names generation (guarded by `refreshing`), so that a
    /// refresh does not resolve them again; once `maximumUnstorable` are known the arena is taken as full and
    /// refreshes stop until the names are reset.
    nonisolated(unsafe) static var unstorable = Set<UInt64>()
    nonisolated(unsafe) static var unstorableGeneration: UInt64 = 0
    static let maximumUnstorable = 4096

    /// Forgets every name (trace ids are about to be reused). API lock held: call from `stop` / `clearTraces`.
    static func reset() {
        cat_names_reset()
    }

    /// The frames of the top sites that have no name yet, and the names generation they belong to. API lock
    /// taken. Allocates only when there is such a site (and once, for the buffers).
    private static func copyUnnamedTopSites() -> ([(id: UInt64, frames: [UInt])], UInt64)? {
        cat_api_lock()
        defer { cat_api_unlock() }
        guard AllocationTracker.isTracing else { return nil }
        let counts = currentLoaderCounts()
        if loaderCounts == nil || loaderCounts! != counts {
            cat_images_capture()
            loaderCounts = counts
        }
        if unstorableGeneration == cat_names_generation(), unstorable.count >= maximumUnstorable { return nil }
        let capacity = sitesPerRefresh
        if topBuffer == nil { topBuffer = UnsafeMutablePointer<UInt64>.allocate(capacity: 3 * capacity) }
        var work: [(id: UInt64, frames: [UInt])] = []
        // The same top sites the report would print: with the threads' pending deltas folded in, as a snapshot.
        _withGateWriter { cat_deltas_fold_all() }
        _UnsafeTraceTable.forEachTopSite(capacity: capacity, scratch: topBuffer!) { id in
            var text: UnsafePointer<CChar>? = nil
            guard cat_names_get(id, &text) == 0 else { return }
            if unstorableGeneration == cat_names_generation(), unstorable.contains(id) { return }
            if let (addresses, _) = _UnsafeTraceTable.frames(ofTrace: id) { work.append((id, addresses)) }
        }
        return (work, cat_names_generation())
    }

    private static func currentLoaderCounts() -> (UInt64, UInt64) {
        var loads: UInt64 = 0, unloads: UInt64 = 0
        cat_loader_counts(&loads, &unloads)
        return (loads, unloads)
    }

    /// `function at file:line ← function at file:line ← …`: the attribution frame and the next two non-system
    /// frames.
    package static func line(for frames: [Frame], attribution: Attribution = .default) -> String {
        guard !frames.isEmpty else { return "" }
        let first = frames.firstIndex { !attribution.isSystem($0) } ?? 0
        var parts = [describe(frames[first], fullPath: true)]
        for frame in frames[(first + 1)...] where !attribution.isSystem(frame) {
            parts.append(describe(frame, fullPath: false))
            if parts.count == 3 { break }
        }
        return parts.joined(separator: " ← ")
    }

    static func describe(_ frame: Frame, fullPath: Bool) -> String {
        var function = frame.function
        if function == nil, let image = frame.image, let offset = frame.imageOffset {
            function = image + "+0x" + String(offset, radix: 16)
        }
        let name = function ?? "0x" + String(frame.address, radix: 16)
        if let file = frame.file {
            // The attribution frame's file in the one path style of every other output (Frame.swift).
            let shown = fullPath ? _sourcePath(file) : String(file.split(separator: "/").last ?? Substring(file))
            return "\(name) at \(shown):\(frame.line)"
        }
        if let image = frame.image, frame.function != nil { return "\(name) in \(image)" }
        return name
    }
}

extension AllocationTracker {
    /// Configures the allocation-failure report (`cat_emergency.h`): reserves the names arena (for the configured
    /// `maxTraces`), records the loaded images, and sets the directory, whether the report goes to standard error
    /// too, the number of sites, the minimum interval between two reports (seconds) and where the memory cgroup is
    /// found (nil: the defaults) — the settings the other reports read from `Configuration.Report` and
    /// `Configuration.Limits`. Call with the API lock held (as `start` does) or from a single thread; the names
    /// are filled by `_EmergencyNames.refresh()`.
    package static func _configureEmergencyReport(directory: String?, standardError: Bool = true, topSites: Int,
                                                  minimumInterval: Double, procSelfCgroup: String? = nil,
                                                  cgroupRoot: String? = nil, enabled: Bool) {
        let previous = cat_thread_set_state(Int32(CAT_THREAD_SUSPENDED))
        defer { _ = cat_thread_set_state(previous) }
        if enabled {
            let maxTraces = _TrackerSession.configuration?.maxTraces ?? Configuration().maxTraces
            _ = cat_names_reserve(UInt64(maxTraces))
            cat_images_capture()
        }
        let seconds = minimumInterval.isFinite ? max(0, minimumInterval) : 0
        let nanoseconds = seconds >= 1.8e10 ? UInt64.max : UInt64(seconds * 1e9)
        let sites = UInt32(clamping: max(0, topSites))
        // Optional strings as C strings (NULL for nil), alive for the call.
        func withOptionalCString<R>(_ text: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
            guard let text else { return body(nil) }
            return text.withCString { body($0) }
        }
        withOptionalCString(directory) { directory in
            withOptionalCString(procSelfCgroup) { procSelfCgroup in
                withOptionalCString(cgroupRoot) { cgroupRoot in
                    cat_emergency_configure(enabled ? 1 : 0, directory, standardError ? 1 : 0, sites, nanoseconds,
                                            procSelfCgroup, cgroupRoot)
                }
            }
        }
    }
}

@_spi(Testing) import AllocationTracking
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Sampled mode against a workload whose truth is known, in a process where nothing else allocates.
///
/// Four sites keep 64, 16, 4 and 1 MiB live in blocks of 16 B…1 MiB (log-uniform, so every scale is present),
/// and each also allocates and frees half as much again (freed churn); a fifth site only churns; a sixth keeps one
/// 16 MiB block (s = 32 T); a seventh allocates 10 KB in all (< T). Run once per seed, T = 512 KiB.
///
/// The theory the bounds come from: block i of size s_i is sampled with probability p_i = 1 − exp(−s_i/T),
/// independently, and then counts s_i/p_i bytes and 1/p_i blocks. So the estimate of a sum is unbiased, and its
/// variance is Σ s_i²(1 − p_i)/p_i for bytes and Σ (1 − p_i)/p_i for blocks (for s ≪ T that is ≈ Σ s_i·T = L·T:
/// σ ≈ √(L·T), the figure). Checked, for each of the four sites:
/// - live and allocated bytes: every seed's estimate within 4σ of the truth. A sampled block weighs at most
///   T + s ≤ 1.5 MiB, small against σ (4.6 MiB for the 64 MiB site), so the estimate is near normal and 4σ is
///   passed with probability ~6e-5 per check;
/// - live and allocated blocks: every seed's estimate at most 4σ *below* the truth. That side is rigorous: each
///   term's deviation below its mean is at most 1 block, so Bernstein's inequality gives
///   P(X − μ ≤ −4σ) ≤ exp(−16σ²/(2σ² + 8σ/3)) ≈ e^−8 ≈ 3e-4. The side above is heavy-tailed and not checked per
///   seed: a sampled 16 B block counts T/16 = 32768 blocks, 22σ for the 64 MiB site, and such samples happen in
///   about one seed in twenty;
/// - all four quantities: the mean over the 20 seeds within 4σ/√20 of the truth (no bias; over 400 seeds the
///   means lay within 2σ/√400); the churn site's live estimate exactly 0; the large block's estimate within 1% (it is
/// sampled with probability 1 − e^−32 and weighs s/p = s·(1 + 1e-14)); every site whose chance to be missing
/// (exp(−allocated/T)) is below 1e-4 present — the 1 MiB site (e^−3) and the 10 KB one may be missing;
/// and, after every block is freed, `current` and `liveBlocks` exactly 0 (a free subtracts what its allocation
/// added).
enum SamplingAccuracyScenario: Scenario {
    static let name = "sampling-accuracy"
    static let mean = 512 << 10
    static let seeds = 20

    // One call site each (not inlined: the frame above malloc names the site). Each counts its calls in its own
    // slot, so that no two bodies are identical: an optimised build would otherwise merge them into one function
    // with one name.
    nonisolated(unsafe) static var calls = [Int](repeating: 0, count: 7)
    @inline(never) static func site64(_ size: Int) -> UnsafeMutableRawPointer { calls[0] &+= 1; return malloc(size)! }
    @inline(never) static func site16(_ size: Int) -> UnsafeMutableRawPointer { calls[1] &+= 1; return malloc(size)! }
    @inline(never) static func site4(_ size: Int) -> UnsafeMutableRawPointer { calls[2] &+= 1; return malloc(size)! }
    @inline(never) static func site1(_ size: Int) -> UnsafeMutableRawPointer { calls[3] &+= 1; return malloc(size)! }
    @inline(never) static func siteChurn(_ size: Int) -> UnsafeMutableRawPointer { calls[4] &+= 1; return malloc(size)! }
    @inline(never) static func siteLarge(_ size: Int) -> UnsafeMutableRawPointer { calls[5] &+= 1; return malloc(size)! }
    @inline(never) static func siteSmall(_ size: Int) -> UnsafeMutableRawPointer { calls[6] &+= 1; return malloc(size)! }

    struct Site {
        var name: String
        var allocate: (Int) -> UnsafeMutableRawPointer
        var live: [Int] = []    // sizes kept until the snapshot
        var freed: [Int] = []   // sizes allocated and freed before it
    }

    /// The fixed workload (the same for every seed: only the sampling varies).
    static func workload() -> [Site] {
        var state: UInt64 = 0x5EED_0F_7A5C
        func next() -> Double {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Double(state >> 11) * 0x1p-53
        }
        func sizes(_ total: Int) -> [Int] {
            var out: [Int] = [], sum = 0
            while sum < total {
                let s = min(Int(16 * pow(65536, next())), total - sum + 16)
                out.append(s)
                sum += s
            }
            return out
        }
        var sites = [
            Site(name: "site64(", allocate: site64), Site(name: "site16(", allocate: site16),
            Site(name: "site4(", allocate: site4), Site(name: "site1(", allocate: site1),
        ]
        for (i, live) in [64 << 20, 16 << 20, 4 << 20, 1 << 20].enumerated() {
            sites[i].live = sizes(live)
            sites[i].freed = sizes(live / 2)
        }
        sites.append(Site(name: "siteChurn(", allocate: siteChurn, freed: sizes(64 << 20)))
        sites.append(Site(name: "siteLarge(", allocate: siteLarge, live: [16 << 20]))
        sites.append(Site(name: "siteSmall(", allocate: siteSmall, live: Array(repeating: 1000, count: 10)))
        return sites
    }

    struct Moments { var bytes = 0.0, bytesVar = 0.0, blocks = 0.0, blocksVar = 0.0 }

    static func moments(_ sizes: [Int]) -> Moments {
        var m = Moments()
        for s in sizes {
            let p = -expm1(-Double(s) / Double(mean))
            m.bytes += Double(s)
            m.blocks += 1
            m.bytesVar += Double(s) * Double(s) * (1 - p) / p
            m.blocksVar += (1 - p) / p
        }
        return m
    }

    static func run(_ arguments: ArraySlice<String>) {
        var checks = 0
        func check(_ condition: Bool, _ what: @autoclosure () -> String) {
            checks += 1
            if !condition { fail(what()) }
        }
        let sites = workload()
        _ = calls.count  // its storage is made here, before the first seed
        // Estimates per seed: [site][quantity] with quantities live bytes, live blocks, allocated bytes and blocks.
        // Made before the first seed with room for every value: storage allocated during a seed and still held at
        // its end would be a live (possibly sampled) block of the process.
        var estimates = [[[Double]]](repeating: [[Double]](repeating: [], count: 4), count: sites.count)
        for i in estimates.indices { for q in 0..<4 { estimates[i][q].reserveCapacity(seeds) } }
        var worst = 0.0
        var pointers: [UnsafeMutableRawPointer] = []
        pointers.reserveCapacity(20_000)
        // Seed −1 is a warm-up, not counted: the Swift runtime's caches (conformances, metadata) that the first
        // pass fills stay allocated for good, and would be live blocks at the end of a counted seed.
        for seed in -1..<seeds {
            do {
                try AllocationTracker.start(.init(maxFrames: 8, unwinder: .framePointers, limits: quiet,
                                                  sampling: .poisson(meanBytes: mean)))
            } catch { fail("\(error)") }
            check(AllocationTracker.tracedMemory.isEstimate, "tracedMemory.isEstimate is false in sampled mode")
            AllocationTracker._seedSampling(UInt64(seed + 1) &* 0x9E37_79B9 &+ 1)
            pointers.removeAll(keepingCapacity: true)
            // Interleaved: each site's freed blocks come and go among its live ones.
            for site in sites {
                var f = 0
                for (i, size) in site.live.enumerated() {
                    pointers.append(site.allocate(size))
                    if i % 2 == 0, f < site.freed.count { free(site.allocate(site.freed[f])); f += 1 }
                }
                while f < site.freed.count { free(site.allocate(site.freed[f])); f += 1 }
            }
            let snapshot: Snapshot
            do { snapshot = try AllocationTracker.takeSnapshot() } catch { fail("\(error)") }
            check(snapshot.sampling == .poisson(meanBytes: mean), "snapshot.sampling is \(snapshot.sampling)")
            for (index, site) in sites.enumerated() {
                let traces = snapshot.traces.filter { trace in
                    trace.traceback.frames.contains { $0.function?.contains(site.name) == true }
                }
                let values = [traces.reduce(0) { $0 + $1.size }, traces.reduce(0) { $0 + $1.count },
                              traces.reduce(0) { $0 + $1.allocatedSize }, traces.reduce(0) { $0 + $1.allocatedCount }]
                if seed >= 0 { for q in 0..<4 { estimates[index][q].append(Double(values[q])) } }
                // A site is missing with probability Π(1 − p_i) = exp(−Σ s_i / T): e^−3 = 5% for the 1 MiB site
                // (1.5 MiB allocated in all), e^−0.02 for the small one; those may be missing. Every site whose
                // chance of it is below 1e-4 must be there (the 4 MiB site: e^−12 = 6e-6).
                let allocated = Double(site.live.reduce(0, +) + site.freed.reduce(0, +))
                if exp(-allocated / Double(mean)) < 1e-4 {
                    check(!traces.isEmpty, "seed \(seed): \(site.name) missing (it allocated \(site.live.reduce(0, +) + site.freed.reduce(0, +)) B)")
                }
                if site.name == "siteChurn(" {
                    check(values[0] == 0 && values[1] == 0, "seed \(seed): churn site live \(values[0]) B in \(values[1])")
                }
                if site.name == "siteLarge(" {
                    check(abs(Double(values[0]) - Double(16 << 20)) <= 0.01 * Double(16 << 20) && values[1] == 1,
                          "seed \(seed): the 16 MiB block is estimated at \(values[0]) B in \(values[1])")
                }
            }
            for pointer in pointers { free(pointer) }
            let after = AllocationTracker.tracedMemory
            check(seed < 0 || (after.current == 0 && after.liveBlocks == 0),
                  "seed \(seed): after every free, current=\(after.current) liveBlocks=\(after.liveBlocks)")
            AllocationTracker.stop()
        }
        // The four main sites: per seed within 4σ, the mean within 4σ/√20.
        for index in 0..<4 {
            let site = sites[index]
            let live = moments(site.live), all = moments(site.live + site.freed)
            let truths = [(live.bytes, live.bytesVar), (live.blocks, live.blocksVar),
                          (all.bytes, all.bytesVar), (all.blocks, all.blocksVar)]
            let names = ["live bytes", "live blocks", "allocated bytes", "allocated blocks"]
            for q in 0..<4 {
                let (truth, variance) = truths[q]
                let sigma = variance.squareRoot()
                for (seed, estimate) in estimates[index][q].enumerated() {
                    worst = max(worst, abs(estimate - truth) / sigma)
                    // Bytes: both sides. Blocks: the low side (see above: the high side is heavy-tailed).
                    let off = q == 1 || q == 3 ? truth - estimate : abs(estimate - truth)
                    check(off <= 4 * sigma,
                          "\(site.name) \(names[q]) seed \(seed): \(estimate) vs \(truth), σ=\(sigma)")
                }
                let average = estimates[index][q].reduce(0, +) / Double(seeds)
                let bound = 4 * sigma / Double(seeds).squareRoot()
                check(abs(average - truth) <= bound,
                      "\(site.name) \(names[q]) mean of \(seeds): \(average) vs \(truth), bound \(bound)")
                print("\(site.name.dropLast()) \(names[q]): truth=\(Int(truth)) mean=\(Int(average)) sigma=\(Int(sigma)) "
                      + "mean_off_sigmas=\((abs(average - truth) / sigma * Double(seeds).squareRoot() * 100).rounded() / 100)")
            }
        }
        print("worst_seed_off_sigmas=\((worst * 100).rounded() / 100)")
        print("sampling-accuracy ok checks=\(checks)")
    }
}

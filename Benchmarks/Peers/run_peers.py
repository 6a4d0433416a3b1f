#!/usr/bin/env python3
"""Workload M's C twin (mstorm.c) under this project's preload library and its peers, in one interleaved run.

    python3 Benchmarks/Peers/run_peers.py [--rounds 5] [--threads 2] [--preload PATH/libAllocationTrackingPreload.so]

Every variant runs once per round, in the same order, so that a slow phase of the machine hits all of them; the
table gives the median of the rounds' in-program wall and CPU times (the storm itself, start-up and exit
excluded) and the ratio to the variant's own allocator untracked: this library and heaptrack against glibc,
jemalloc's profiler against jemalloc, tcmalloc's sampler against tcmalloc. Debian packages: heaptrack,
libjemalloc2 (built with profiling: `config.prof: true`), libgoogle-perftools4.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

LIB = "/usr/lib/x86_64-linux-gnu"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=2_000_000)
    parser.add_argument("--preload", help="this project's preload library (alloc-track's)")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="peers-")
    binary = os.path.join(work, "mstorm")
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mstorm.c")
    subprocess.run(["cc", "-O2", "-g", "-fno-omit-frame-pointer", "-pthread", source, "-o", binary], check=True)

    variants = [("glibc", None, {}, [])]
    if args.preload:
        for name, setting in [("alloc-track exact, frame pointers", "unwinder=framepointers"),
                              ("alloc-track exact, libunwind", "unwinder=libunwind"),
                              ("alloc-track sampled 64 KiB, libunwind", "sample=64KiB"),
                              ("alloc-track sampled 512 KiB, libunwind", "sample=512KiB"),
                              ("alloc-track sampled 4 MiB, libunwind", "sample=4MiB")]:
            variants.append((name, "glibc", {"LD_PRELOAD": args.preload,
                                             "ALLOCATION_TRACKING": setting + ",announce=off"}, []))
    if shutil.which("heaptrack"):
        variants.append(("heaptrack (exact)", "glibc", {}, ["heaptrack", "-o", os.path.join(work, "heaptrack")]))
    if os.path.exists(f"{LIB}/libjemalloc.so.2"):
        variants.append(("jemalloc", None, {"LD_PRELOAD": f"{LIB}/libjemalloc.so.2"}, []))
        variants.append(("jemalloc prof, lg_prof_sample:19 (512 KiB)", "jemalloc",
                         {"LD_PRELOAD": f"{LIB}/libjemalloc.so.2", "MALLOC_CONF": "prof:true,lg_prof_sample:19"}, []))
    if os.path.exists(f"{LIB}/libtcmalloc.so.4"):
        variants.append(("tcmalloc", None, {"LD_PRELOAD": f"{LIB}/libtcmalloc.so.4"}, []))
        variants.append(("tcmalloc sampled, 512 KiB", "tcmalloc",
                         {"LD_PRELOAD": f"{LIB}/libtcmalloc.so.4", "TCMALLOC_SAMPLE_PARAMETER": "524288"}, []))

    times = {name: [] for name, *_ in variants}
    for round in range(args.rounds):
        for name, _, environment, prefix in variants:
            result = subprocess.run(prefix + [binary, str(args.threads), str(args.iterations)],
                                    env={**os.environ, **environment}, capture_output=True, text=True)
            match = re.search(r"mallocs=(\d+) wall_ms=([\d.]+) cpu_ms=([\d.]+)", result.stdout)
            if result.returncode != 0 or not match:
                sys.exit(f"{name}: exit {result.returncode}: {result.stderr.strip()[-500:]}")
            times[name].append((float(match.group(2)), float(match.group(3))))
        print(f"round {round + 1}/{args.rounds} done", file=sys.stderr)

    median = {name: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
              for name, runs in times.items()}
    print(f"M's C twin, {args.threads} threads × {args.iterations} steps, medians of {args.rounds} interleaved rounds")
    print()
    print("| variant | wall p50 (ms) | CPU p50 (ms) | wall ratio | CPU ratio | against |")
    print("|---|---:|---:|---:|---:|---|")
    for name, baseline, _, _ in variants:
        wall, cpu = median[name]
        if baseline:
            print(f"| {name} | {wall:.0f} | {cpu:.0f} | {wall / median[baseline][0]:.2f}× | "
                  f"{cpu / median[baseline][1]:.2f}× | {baseline} |")
        else:
            print(f"| {name} | {wall:.0f} | {cpu:.0f} | 1.00× | 1.00× | (itself) |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

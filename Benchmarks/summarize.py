#!/usr/bin/env python3
"""Turns the text output of `swift package benchmark` runs into the RESULTS.md tables.

    swift package --disable-sandbox benchmark --no-progress > run1.txt   (repeat for run2.txt, ...)
    python3 summarize.py run1.txt [run2.txt ...]

Per run: wall-clock and CPU p50 of each workload x mode, the ratio to the same workload's "off" benchmark of the
same run, and the cost per tracked allocation ((mode p50 - off p50) / allocations; M: the workload's mallocs,
W: the allocations the tracker traced per iteration). Then the median over runs.
"""
import re
import statistics
import sys

MODES = ["notLinked", "off", "framePointers", "libunwind", "sampled64KiB", "sampled512KiB", "sampled4MiB"]


def parse(path):
    """{benchmark name: {metric label: p50}} for one run."""
    results, current = {}, None
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if re.fullmatch(r"[A-Za-z]+/[A-Za-z]+", line.strip()):
            current = line.strip()
            results[current] = {}
        elif current and line.startswith("│") and not line.startswith("│ Metric"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            label = re.sub(r"\s*\*$", "", cells[0])
            try:
                results[current][label] = float(cells[3])  # p0, p25, p50
            except (ValueError, IndexError):
                pass
    return results


def p50(results, name, label):
    """p50 of the metric whose label starts with `label` (the unit suffix varies: "(ms)", "(#)", "(K)")."""
    for key, value in results.get(name, {}).items():
        if key == label or key.startswith(label + " ("):
            return value * (1000 if key.endswith("(K)") else 1)
    return None


def fmt(value, digits=0):
    if value is None:
        return "–"
    return f"{value:.{digits}f}"


WALL, CPU = "Time (wall clock)", "Time (total CPU)"
runs = [parse(p) for p in sys.argv[1:]]
ratios = {}  # (workload, mode) -> list of (wall ratio, cpu ratio, wall ns/alloc, cpu ns/alloc)

for index, (path, results) in enumerate(zip(sys.argv[1:], runs), 1):
    print(f"\n### Run {index} ({path})\n")
    print("| workload | mode | wall p50 (ms) | CPU p50 (ms) | wall ratio vs off | CPU ratio vs off "
          "| ns per tracked alloc (wall) | ns per tracked alloc (CPU) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for workload in ["M", "W"]:
        off_wall, off_cpu = p50(results, f"{workload}/off", WALL), p50(results, f"{workload}/off", CPU)
        mallocs = p50(results, f"{workload}/off", "workload mallocs")
        for mode in MODES:
            name = f"{workload}/{mode}"
            wall, cpu = p50(results, name, WALL), p50(results, name, CPU)
            if wall is None:
                continue
            wall_ratio = wall / off_wall if off_wall else None
            cpu_ratio = cpu / off_cpu if off_cpu and cpu else None
            ns_wall = ns_cpu = None
            # M: the workload's own malloc count; W: the allocations the tracker traced in exact mode (a sampled
            # mode traces only its samples, but every allocation pays the countdown: the cost is per allocation).
            allocations = mallocs or p50(results, f"{workload}/libunwind", "traced allocations") \
                or p50(results, name, "traced allocations")
            if mode not in ("notLinked", "off") and allocations:
                ns_wall = (wall - off_wall) * 1e6 / allocations
                ns_cpu = (cpu - off_cpu) * 1e6 / allocations
            ratios.setdefault((workload, mode), []).append((wall_ratio, cpu_ratio, ns_wall, ns_cpu, wall, cpu))
            print(f"| {workload} | {mode} | {fmt(wall)} | {fmt(cpu)} | {fmt(wall_ratio, 2)} | {fmt(cpu_ratio, 2)} "
                  f"| {fmt(ns_wall)} | {fmt(ns_cpu)} |")
    counts = [(n, p50(results, n, "Malloc (total)"), p50(results, n, "Free (total)"))
              for n in sorted(results) if n.startswith("MallocCount")]
    if counts:
        print("\n| benchmark | mallocCountTotal p50 | freeCountTotal p50 |\n|---|---:|---:|")
        for n, m, f in counts:
            print(f"| {n} | {fmt(m)} | {fmt(f)} |")

if len(runs) > 1:
    print(f"\n### Median over {len(runs)} runs\n")
    print("| workload | mode | wall p50 (ms) | CPU p50 (ms) | wall ratio vs off | CPU ratio vs off "
          "| ns per tracked alloc (wall) | ns per tracked alloc (CPU) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (workload, mode), rows in ratios.items():
        def med(i):
            values = [r[i] for r in rows if r[i] is not None]
            return statistics.median(values) if values else None
        print(f"| {workload} | {mode} | {fmt(med(4))} | {fmt(med(5))} | {fmt(med(0), 2)} | {fmt(med(1), 2)} "
              f"| {fmt(med(2))} | {fmt(med(3))} |")

#!/usr/bin/env python3
"""The real-service benchmark (issue 13): the release-built Examples ServiceBench (Hummingbird 2) run on loopback
in four modes side by side, driven by wrk (Debian's) and by a plain HTTP client for fixed request counts.

    swift build -c release --package-path Examples --product ServiceBench
    python3 Benchmarks/service_bench.py [--rounds 3] [--duration 10] [--startup 60] [--out results.json]

Modes: untracked (ALLOCATION_TRACKING unset; twice, the second as a control of the noise), exact with frame pointers, exact with libunwind, sampled every
512 KiB (the production setting); every tracked mode has the report signal (signal=SIGUSR2).

Phases, in this order so that memory is compared at equal load:
  1. start-up: all four services start together and get the same light load (a /json and a /leak request every
     200 ms each) for --startup seconds; CPU = utime+stime from /proc/PID/stat at the end; RSS and the tracker's own
     memory (from /tracker/memory) at that point ("idle").
  2. equal load: the same fixed number of /leak, /json and /large requests to each, one after the other; RSS and
     the tracker's own memory after it. The tracker's memory as /proc shows it = RSS(mode) - RSS(untracked).
  3. throughput: wrk --latency on /json and /leak, modes interleaved within each round, --rounds rounds; /large once.
  4. report latency: under wrk load on /json, 20 SIGUSR2 per tracked mode, the time from kill() to the report's
     last line on the service's stderr.
  5. symbolication: /tracker/symbolicate?n=10000 (10,000 distinct addresses of the service binary, cold and warm)
     and /tracker/snapshot (the live sites, cold and warm), per tracked mode.
`uptime`'s load average is recorded with every result: the machine has 2 cores and other work runs on it.
"""
import argparse, http.client, json, os, re, signal, statistics, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "Examples", ".build", "release", "ServiceBench")
MODES = [
    ("untracked", None),
    ("exact-fp", "unwinder=framepointers,signal=SIGUSR2"),
    ("exact-libunwind", "unwinder=libunwind,signal=SIGUSR2"),
    ("sampled-512KiB", "sample=512KiB,signal=SIGUSR2"),
    # A second untracked instance: the noise of every figure (RSS especially: glibc's arenas and trimming differ
    # between two identical processes under the same load).
    ("untracked-control", None),
]
TICKS = os.sysconf("SC_CLK_TCK")


def load():
    return open("/proc/loadavg").read().split()[0:3]


class Service:
    def __init__(self, name, setting, port):
        self.name, self.setting, self.port = name, setting, port
        env = dict(os.environ)
        env.pop("ALLOCATION_TRACKING", None)
        if setting:
            env["ALLOCATION_TRACKING"] = setting
        env["PORT"] = str(port)
        self.lines = []  # (monotonic time, line)
        self.started = time.monotonic()
        self.process = subprocess.Popen([BINARY], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def cpu(self):
        fields = open(f"/proc/{self.process.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15)

    def threads(self):
        """CPU seconds per thread name."""
        result = {}
        for tid in os.listdir(f"/proc/{self.process.pid}/task"):
            try:
                text = open(f"/proc/{self.process.pid}/task/{tid}/stat").read()
            except OSError:
                continue
            name = text[text.index("(") + 1:text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
            result[name] = result.get(name, 0) + (int(fields[11]) + int(fields[12])) / TICKS
        return result

    def rss(self):
        for line in open(f"/proc/{self.process.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def smaps(self):
        """Resident bytes by kind of mapping: the executable's file, other files (libraries), [heap] (brk), other
        anonymous memory (mmap'd tables, glibc's thread arenas, thread stacks), so that what tracking adds to RSS can
        be attributed."""
        kinds, kind = {}, None
        for line in open(f"/proc/{self.process.pid}/smaps"):
            head = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                path = head[5] if len(head) > 5 else ""
                kind = ("executable" if path == BINARY or path.endswith("/ServiceBench") else
                        "heap" if path == "[heap]" else "stack" if path.startswith("[stack") else
                        "files" if path.startswith("/") else "anonymous")
            elif head[0] == "Rss:":
                kinds[kind] = kinds.get(kind, 0) + int(head[1]) * 1024
        return kinds

    def get(self, path, timeout=120):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        connection.request("GET", path)
        body = connection.getresponse().read()
        connection.close()
        return body

    def wait_ready(self):
        for _ in range(200):
            try:
                self.get("/json", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start: {self.lines[-5:]}")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def requests(service, paths, count):
    """`count` requests cycling through `paths` on one keep-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=60)
    for i in range(count):
        connection.request("GET", paths[i % len(paths)])
        connection.getresponse().read()
    connection.close()


def light_load(service, until):
    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
    while time.monotonic() < until:
        for path in ("/json", "/leak"):
            connection.request("GET", path)
            connection.getresponse().read()
        time.sleep(0.2)
    connection.close()


def wrk(port, path, duration, threads=1, connections=16):
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency",
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def ms(text):
        value, unit = re.match(r"([\d.]+)(us|ms|m|s)", text).groups()
        return float(value) * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[unit]
    p99 = ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))
    p50 = ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "load": load()}


def summarize(results):
    """Markdown tables of a results file (`--summarize FILE`)."""
    MiB = 1048576
    med = statistics.median
    out = [f"load average (1/5/15 min) at start {' '.join(results['load_at_start'])}, at end {' '.join(results['load_at_end'])}", ""]
    st = results["startup"]["modes"]
    base = st["untracked"]
    out += [f"Start-up, first {results['args']['startup']} s under light load (load {' '.join(results['startup']['load'])}):", "",
            "| mode | CPU (utime+stime) | minus untracked | busiest non-NIO threads | RSS | minus untracked | tracker memory reported |",
            "| --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for name, m in st.items():
        threads = sorted(((v, k) for k, v in m["threads"].items() if not k.startswith("NIO-ELT") and v > 0), reverse=True)[:3]
        out.append(f"| {name} | {m['cpu_s']:.2f} s | {m['cpu_s'] - base['cpu_s']:+.2f} s | "
                   + ", ".join(f"{k} {v:.2f} s" for v, k in threads)
                   + f" | {m['rss'] / MiB:.1f} MiB | {(m['rss'] - base['rss']) / MiB:+.1f} MiB | {m['tracker_memory']['total'] / MiB:.2f} MiB |")
    eq = results["equal_load"]
    base = eq["untracked"]
    out += ["", f"After equal load ({results['args']['leaks']} /leak, {results['args']['leaks'] // 3} /json, 50 /large per mode):", "",
            "| mode | RSS | minus untracked (what /proc shows it adds) | of which anonymous | tracker memory reported (tables / symbol cache / names / history / threads) | reported ÷ added, ÷ anonymous added | load |",
            "| --- | ---: | ---: | ---: | --- | ---: | --- |"]
    for name, m in eq.items():
        t = m["tracker_memory"]
        added = m["rss"] - base["rss"]
        anonymous = sum(m.get("smaps", {}).get(k, 0) - base.get("smaps", {}).get(k, 0) for k in ("heap", "anonymous", "stack"))
        ratio = (f"{t['total'] / added:.2f}, " + (f"{t['total'] / anonymous:.2f}" if anonymous > 0 else "–")) \
            if name != "untracked" and added > 0 else "–"
        out.append(f"| {name} | {m['rss'] / MiB:.1f} MiB | {added / MiB:+.1f} MiB | {anonymous / MiB:+.1f} MiB | {t['total'] / MiB:.2f} MiB "
                   f"({t['tables'] / MiB:.2f} / {t['symbolCache'] / MiB:.2f} / {t['names'] / 1024:.1f} KiB / {t['history'] / 1024:.0f} KiB / "
                   f"{t.get('threads', 0) / MiB:.2f}) | {ratio} | {' '.join(m['load'])} |")
    if "smaps" in base:
        out += ["", "Resident memory by kind of mapping, minus untracked's (MiB; at idle → after equal load):", "",
                "| mode | executable | libraries | [heap] | other anonymous | stacks |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name in eq:
            cells = []
            for k in ("executable", "files", "heap", "anonymous", "stack"):
                a = (st[name]["smaps"].get(k, 0) - st["untracked"]["smaps"].get(k, 0)) / MiB
                b = (eq[name]["smaps"].get(k, 0) - eq["untracked"]["smaps"].get(k, 0)) / MiB
                cells.append(f"{a:+.1f} → {b:+.1f}")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += ["", "Throughput (wrk -t1 -c16, %d s per run, modes interleaved per round; medians of the rounds; ratio = median of the per-round ratios to untracked):" % results["args"]["duration"], "",
            "| route | mode | rounds | req/s | ratio | p99 | p99 ratio | load (1 min) per run |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for route, modes in results["throughput"].items():
        base = modes["untracked"]
        for name, runs in modes.items():
            ratios = [r["rps"] / b["rps"] for r, b in zip(runs, base)]
            p99s = [r["p99_ms"] / b["p99_ms"] for r, b in zip(runs, base)]
            out.append(f"| {route} | {name} | {len(runs)} | {med([r['rps'] for r in runs]):.0f} | {med(ratios):.2f}× "
                       f"({', '.join(f'{x:.2f}' for x in ratios)}) | {med([r['p99_ms'] for r in runs]):.2f} ms | {med(p99s):.2f}× "
                       f"({', '.join(f'{x:.2f}' for x in p99s)}) | {', '.join(r['load'][0] for r in runs)} |")
    out += ["", "Report by SIGUSR2 under wrk load on /json (20 signals, 0.5 s apart after each report; kill() to the report's last line on stderr):", "",
            "| mode | p50 | p95 | max | no report within 10 s | wrk req/s meanwhile | load |", "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, m in results["reports"].items():
        out.append(f"| {name} | {m['p50_s'] * 1000:.0f} ms | {m['p95_s'] * 1000:.0f} ms | {m['max_s'] * 1000:.0f} ms | {m['missing']} | "
                   f"{m['wrk_during'].get('rps', 0):.0f} | {' '.join(m['load'])} |")
    out += ["", "Symbolication through the routes (10,000 distinct addresses spread over the service's code; the live sites' snapshot):", "",
            "| mode | code | 10,000 addresses cold (2 runs) | warm | named / with file:line | symbol cache | snapshot sites (addresses) | snapshot cold | warm |",
            "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for name, m in results["symbolication"].items():
        a, b, sn = m["addresses"], m["addresses_again"], m["snapshot"]
        out.append(f"| {name} | {a['codeBytes'] / MiB:.1f} MiB | {a['coldMs']:.0f} ms, {b['coldMs']:.0f} ms | {a['warmMs']:.1f} ms, {b['warmMs']:.1f} ms | "
                   f"{a['named']} / {a['withLine']} | {a['symbolCacheBytes'] / MiB:.1f} MiB | {sn['sites']} ({sn['addresses']}) | {sn['coldMs']:.0f} ms | {sn['warmMs']:.1f} ms |")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--startup", type=int, default=60)
    parser.add_argument("--leaks", type=int, default=20000)
    parser.add_argument("--base-port", type=int, default=18180)
    parser.add_argument("--out", default="service-bench.json")
    parser.add_argument("--summarize", metavar="FILE", help="print the tables of a results file and exit")
    args = parser.parse_args()
    if args.summarize:
        print(summarize(json.load(open(args.summarize))))
        return
    results = {"load_at_start": load(), "args": vars(args)}
    log = lambda *a: print(*a, file=sys.stderr, flush=True)

    # 1. Start-up: all modes at once, the same light load.
    services = [Service(name, setting, args.base_port + i) for i, (name, setting) in enumerate(MODES)]
    try:
        for s in services:
            s.wait_ready()
        until = min(s.started for s in services) + args.startup
        loaders = [threading.Thread(target=light_load, args=(s, until)) for s in services]
        for t in loaders:
            t.start()
        for t in loaders:
            t.join()
        startup = {}
        for s in services:
            memory = json.loads(s.get("/tracker/memory"))
            startup[s.name] = {"seconds": round(time.monotonic() - s.started, 1), "cpu_s": s.cpu(), "rss": s.rss(),
                               "smaps": s.smaps(), "tracker_memory": memory, "threads": s.threads()}
        results["startup"] = {"load": load(), "modes": startup}
        log("startup", json.dumps(results["startup"], indent=1))

        # 2. Equal load, one service at a time.
        equal = {}
        for s in services:
            t = time.monotonic()
            requests(s, ["/leak", "/leak", "/leak", "/json"], args.leaks * 4 // 3)
            requests(s, ["/large"], 50)
            time.sleep(1)
            equal[s.name] = {"seconds": round(time.monotonic() - t, 1), "rss": s.rss(), "smaps": s.smaps(),
                             "tracker_memory": json.loads(s.get("/tracker/memory")), "load": load()}
        results["equal_load"] = equal
        log("equal load", json.dumps(equal, indent=1))

        # 3. Throughput, modes interleaved per round.
        throughput = {}
        for r in range(args.rounds):
            for path in ("/json", "/leak"):
                for s in services:
                    throughput.setdefault(path, {}).setdefault(s.name, []).append(wrk(s.port, path, args.duration))
                    log(r, path, s.name, throughput[path][s.name][-1])
        for s in services:
            throughput.setdefault("/large", {}).setdefault(s.name, []).append(wrk(s.port, "/large", args.duration,
                                                                                     connections=4))
            log("/large", s.name, throughput["/large"][s.name][-1])
        results["throughput"] = throughput

        # 4. Report latency by signal under load.
        reports = {}
        for s in [s for s in services if s.setting]:
            box = {}
            loader = threading.Thread(target=lambda: box.update(wrk(s.port, "/json", 40)))
            loader.start()
            time.sleep(2)
            latencies, merged = [], []
            for _ in range(20):
                seen = len(s.lines)
                sent = time.monotonic()
                os.kill(s.process.pid, signal.SIGUSR2)
                end = None
                while time.monotonic() - sent < 10:
                    for when, line in s.lines[seen:]:
                        if line.startswith("==== end"):
                            end = when
                            break
                        if "merged" in line or "coalesced" in line:
                            merged.append(line)
                    if end:
                        break
                    time.sleep(0.005)
                latencies.append(round(end - sent, 4) if end else None)
                time.sleep(0.5)
            loader.join()
            done = sorted(x for x in latencies if x is not None)
            reports[s.name] = {"latencies_s": latencies, "missing": latencies.count(None),
                               "p50_s": done[len(done) // 2] if done else None,
                               "p95_s": done[min(len(done) - 1, int(0.95 * len(done)))] if done else None,
                               "max_s": done[-1] if done else None, "merged_lines": merged[:5],
                               "wrk_during": box, "load": load()}
            log("reports", s.name, json.dumps(reports[s.name]))
        results["reports"] = reports
        results["report_sample"] = [line for _, line in services[3].lines if line][-60:]

        # 5. Symbolication through the routes.
        symbolication = {}
        for s in [s for s in services if s.setting]:
            symbolication[s.name] = {"addresses": json.loads(s.get("/tracker/symbolicate?n=10000")),
                                     "snapshot": json.loads(s.get("/tracker/snapshot")), "load": load()}
            symbolication[s.name]["addresses_again"] = json.loads(s.get("/tracker/symbolicate?n=10000"))
            log("symbolication", s.name, json.dumps(symbolication[s.name]))
        results["symbolication"] = symbolication
        results["final"] = {s.name: {"rss": s.rss(), "cpu_s": s.cpu(), "threads": s.threads(),
                                     "tracker_memory": json.loads(s.get("/tracker/memory"))} for s in services}
    finally:
        for s in services:
            s.stop()
        results["load_at_end"] = load()
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    print(summarize(results))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The real-service benchmark (issue 13): the release-built Examples ServiceBench (Hummingbird 2) run on loopback
in four modes side by side, driven by wrk (Debian's) and by a plain HTTP client for fixed request counts.

    swift build -c release --package-path Examples --product ServiceBench
    python3 Benchmarks/service_bench.py [--rounds 3] [--duration 10] [--startup 60] [--out results.json]

Modes: untracked (ALLOCATION_TRACKING unset), exact with frame pointers, exact with libunwind, sampled every
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--startup", type=int, default=60)
    parser.add_argument("--leaks", type=int, default=20000)
    parser.add_argument("--base-port", type=int, default=18180)
    parser.add_argument("--out", default="service-bench.json")
    args = parser.parse_args()
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
                               "tracker_memory": memory, "threads": s.threads()}
        results["startup"] = {"load": load(), "modes": startup}
        log("startup", json.dumps(results["startup"], indent=1))

        # 2. Equal load, one service at a time.
        equal = {}
        for s in services:
            t = time.monotonic()
            requests(s, ["/leak", "/leak", "/leak", "/json"], args.leaks * 4 // 3)
            requests(s, ["/large"], 50)
            time.sleep(1)
            equal[s.name] = {"seconds": round(time.monotonic() - t, 1), "rss": s.rss(),
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
        for s in services[1:]:
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
        results["report_sample"] = [line for _, line in services[3].lines if line][-40:]

        # 5. Symbolication through the routes.
        symbolication = {}
        for s in services[1:]:
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
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

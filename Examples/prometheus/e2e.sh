#!/usr/bin/env bash
# End to end with a real Prometheus: the leaking PrometheusLeakDemo on a free loopback port, a `prometheus`
# (Debian's package) scraping it every second with alerts.yml evaluated every second, and assertions through
# Prometheus's HTTP API:
#   - the series exist, labelled, and hold what the service itself serves (its leaked-bytes count exactly, the
#     tracker's heap within 1 MiB once the leak has stopped, counters never ahead of the service);
#   - the predictive alert (the library's seconds_to_limit) is pending or firing while the service is still
#     under its tracked soft limit, and resolves once the growth has stopped;
#   - the reports alert fires for the predictive report and for the soft-limit report, and the process's first
#     report is the predictive one, written while under the limit.
# Both processes are stopped on exit, whatever happens. About 40 s of wall time (90 s at most once both run).
#
#     Examples/prometheus/e2e.sh [path/to/PrometheusLeakDemo]   (default: built with `swift build -c release`)
#
# A release build: in a debug build the library's own symbolication (of the reports) is slow enough, with
# SwiftNIO's debug information, to delay the first report past the limit on a loaded machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

demo=${1:-}
if [ -z "$demo" ]; then
    swift build -c release --package-path "$here/.." --product PrometheusLeakDemo 2>&1 | tail -1
    demo="$(swift build -c release --package-path "$here/.." --show-bin-path)/PrometheusLeakDemo"
fi
command -v prometheus >/dev/null || { echo "e2e: prometheus is not installed (apt-get install prometheus)" >&2; exit 1; }

soft_limit_mib=96      # the tracked soft limit (limits.trackedBytes): ~24 s away, leaving prometheus time to start
rate_mib=4             # leaked per second: the predictive report (predict=15s) comes ~10 s before the limit
until_mib=104          # where the leak stops: past the limit, so that its report is written, then flat
soft_limit=$((soft_limit_mib << 20))

work=$(mktemp -d)
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "$status" -ne 0 ]; then
        echo "--- demo stderr (last lines)"; tail -20 "$work/demo.err" 2>/dev/null || true
        echo "--- prometheus log (last lines)"; tail -20 "$work/prometheus.log" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
start=$SECONDS
fail() { echo "e2e FAILED after $((SECONDS - start)) s: $*" >&2; exit 1; }

# Prometheus's API and the service's own /metrics, read with Python's standard library (no jq needed).
py() {
    python3 - "$@" <<'PY'
import json, sys, urllib.parse, urllib.request
command, base, *rest = sys.argv[1:]
def get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()
def labels_match(labels, wanted):
    return all(labels.get(k) == v for k, v in (w.split("=", 1) for w in wanted))
if command == "query":           # the value of an instant query's only series, or nothing
    result = json.loads(get(base + "/api/v1/query?" + urllib.parse.urlencode({"query": rest[0]})))["data"]["result"]
    if len(result) > 1: sys.exit(f"{rest[0]}: {len(result)} series")
    if result: print(result[0]["value"][1])
elif command == "alert":         # state and activeAt of the alert with these labels, or nothing
    for alert in json.loads(get(base + "/api/v1/alerts"))["data"]["alerts"]:
        if labels_match(alert["labels"], [f"alertname={rest[0]}"] + rest[1:]):
            print(alert["state"], alert["activeAt"], alert["value"]); break
elif command == "scrape":        # a sample of the service's /metrics text: name, then label=value pairs
    for line in get(base + "/metrics").splitlines():
        if line.startswith("#") or not line.startswith(rest[0]): continue
        name, _, value = line.rpartition(" ")
        metric, _, labels = name.partition("{")
        pairs = dict(p.split("=", 1) for p in labels.rstrip("}").split(",") if p)
        if metric == rest[0] and labels_match({k: v.strip('"') for k, v in pairs.items()}, rest[1:]):
            print(value); break
PY
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Polls `$@` until it succeeds or `deadline` (seconds since start) passes.
wait_for() {
    local deadline=$1 what=$2; shift 2
    until "$@"; do
        [ $((SECONDS - start)) -lt "$deadline" ] || fail "timed out waiting for $what"
        sleep 0.5
    done
}

# 1. Prometheus first (its start takes seconds, up to 20 on a loaded machine, which the leak must not wait
# for): its own config and data directory, 1 s scrapes and rule evaluations, no target yet. The port is picked
# free and then bound by prometheus: retried once if another process took it meanwhile.
write_config() {
    cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $here/alerts.yml
EOF
    [ -z "${1:-}" ] || cat >>"$work/prometheus.yml" <<EOF
scrape_configs:
  - job_name: leak-demo
    static_configs:
      - targets: ['$1']
EOF
}
write_config
for attempt in 1 2; do
    prom_port=$(free_port)
    prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
        --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
    prom_pid=$!
    prom="http://127.0.0.1:$prom_port"
    ready() { python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$prom/-/ready" 2>/dev/null; }
    alive() { kill -0 "$prom_pid" 2>/dev/null; }
    until ready || ! alive || [ $((SECONDS - start)) -ge 45 ]; do sleep 0.3; done
    if ready; then pids+=("$prom_pid"); break; fi
    kill "$prom_pid" 2>/dev/null || true; wait "$prom_pid" 2>/dev/null || true
    [ "$attempt" = 2 ] && fail "prometheus did not start"
done
echo "prometheus: $prom ($((SECONDS - start)) s)"

# 2. The service, on a port the kernel picks (printed on its first line: no race for a free port). It leaks from
# then on (the predictive trigger fits the last 15 s of history, and a flat start would delay it); prometheus
# reloads its config (SIGHUP) with the service as its target. The deadlines below count from here.
start=$SECONDS
"$demo" --port=0 --soft-limit-mib=$soft_limit_mib --leak-mib-per-second=$rate_mib --leak-until-mib=$until_mib \
    >"$work/demo.out" 2>"$work/demo.err" &
pids+=($!)
wait_for 40 "the demo to listen" grep -qs '^listening on' "$work/demo.out"
service=$(sed -n 's|^listening on \(http://127.0.0.1:[0-9]*\)/metrics|\1|p' "$work/demo.out")
echo "service: $service/metrics"
write_config "${service#http://}"
kill -HUP "$prom_pid"

# 3. The series exist, with the service's labels.
has() { [ -n "$(py query "$prom" "$1")" ]; }
wait_for 40 "the first scrape" has 'up{job="leak-demo"} == 1'
for series in allocation_tracking_heap_bytes allocation_tracking_heap_peak_bytes allocation_tracking_heap_blocks \
    allocation_tracking_allocations_total allocation_tracking_allocated_bytes_total \
    allocation_tracking_dropped_allocations_total allocation_tracking_tracker_memory_bytes \
    allocation_tracking_rss_bytes 'allocation_tracking_growth_bytes_per_second{series="heap"}' \
    'allocation_tracking_growth_fit_ratio{series="heap"}' \
    'allocation_tracking_reports_total{trigger="predicted_exhaustion"}' leak_demo_leaked_bytes; do
    selector=$series
    case $selector in *'}') selector="${selector%\}},service=\"leak-demo\"}" ;; *) selector="$selector{service=\"leak-demo\"}" ;; esac
    wait_for 45 "$selector" has "$selector"
done
echo "series present ($((SECONDS - start)) s)"

# 4. The predictive alert, pending or firing while the service is still under its soft limit.
predicted() { [ -n "$(py alert "$prom" AllocationTrackingLimitPredicted limit=heap service=leak-demo)" ]; }
wait_for 60 "AllocationTrackingLimitPredicted{limit=heap}" predicted
heap_now=$(py scrape "$service" allocation_tracking_heap_bytes)
leaked_now=$(py scrape "$service" leak_demo_leaked_bytes)
echo "predictive alert: $(py alert "$prom" AllocationTrackingLimitPredicted limit=heap) at heap=$heap_now, leaked=$leaked_now, limit=$soft_limit ($((SECONDS - start)) s)"
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$leaked_now" "$soft_limit" ||
    fail "the alert came only once the service had leaked $leaked_now bytes, over its limit $soft_limit"
limit_reports=$(py scrape "$service" allocation_tracking_reports_total trigger=tracked_memory_limit)
[ "${limit_reports:-0}" = 0 ] || fail "the soft-limit report ($limit_reports) was written before the alert"

# 5. The reports alert: for the predictive report, and for the soft-limit report once the leak crosses it.
report_alert() { [ -n "$(py alert "$prom" AllocationTrackingReportWritten "trigger=$1")" ]; }
wait_for 70 "AllocationTrackingReportWritten{trigger=predicted_exhaustion}" report_alert predicted_exhaustion
wait_for 75 "AllocationTrackingReportWritten{trigger=tracked_memory_limit}" report_alert tracked_memory_limit
# The order of the two reports is checked in the process's output, not in Prometheus: the counters move when a
# report is complete, and a report being written holds up the publisher, so both can appear in one scrape, or
# the other way round (seen here).
predicted_at=$(py alert "$prom" AllocationTrackingReportWritten trigger=predicted_exhaustion | cut -d' ' -f2)
limit_at=$(py alert "$prom" AllocationTrackingReportWritten trigger=tracked_memory_limit | cut -d' ' -f2)
first_report=$(grep -o 'swift-allocation-tracking report: [a-z ]*[a-z]' "$work/demo.err" | head -1)
[ "$first_report" = "swift-allocation-tracking report: predicted exhaustion" ] || fail "first report: $first_report"
# … written while the tracked memory was still under the limit ("reason: tracked live memory 38.1 MiB, growing …").
predicted_mib=$(sed -n 's/^reason: tracked live memory \([0-9.]*\) MiB, growing.*/\1/p' "$work/demo.err" | head -1)
python3 -c "import sys; sys.exit(0 if 0 < float(sys.argv[1]) < float(sys.argv[2]) else 1)" "${predicted_mib:-0}" "$soft_limit_mib" ||
    fail "the predictive report was written at ${predicted_mib:-?} MiB, not under the $soft_limit_mib MiB limit"
echo "predictive report at $predicted_mib MiB; reports alerts: predicted exhaustion at $predicted_at, tracked memory limit at $limit_at ($((SECONDS - start)) s)"

# 6. Once the leak has stopped (flat for two scrapes), Prometheus holds what the service serves, and the
# projection disappears (flat memory is silent), which resolves the predictive alert.
flat() {
    python3 -c "import sys; sys.exit(0 if float(sys.argv[1] or 'nan') == float(sys.argv[2] or 'nan') == float(sys.argv[3] or 'nan') else 1)" \
        "$(py scrape "$service" leak_demo_leaked_bytes)" "$(py query "$prom" 'leak_demo_leaked_bytes offset 2s')" \
        "$(py query "$prom" leak_demo_leaked_bytes)" &&
    [ "$(py query "$prom" 'changes(leak_demo_leaked_bytes[3s])')" = 0 ]
}
wait_for 80 "the leak to stop" flat
leaked_service=$(py scrape "$service" leak_demo_leaked_bytes)
leaked_prom=$(py query "$prom" leak_demo_leaked_bytes)
heap_service=$(py scrape "$service" allocation_tracking_heap_bytes)
heap_prom=$(py query "$prom" allocation_tracking_heap_bytes)
allocations_prom=$(py query "$prom" allocation_tracking_allocations_total)
allocations_service=$(py scrape "$service" allocation_tracking_allocations_total)
limit_reports_prom=$(py query "$prom" 'allocation_tracking_reports_total{trigger="tracked_memory_limit"}')
echo "leaked: service $leaked_service, prometheus $leaked_prom; heap: service $heap_service, prometheus $heap_prom;" \
     "allocations: service $allocations_service, prometheus $allocations_prom"
python3 - "$leaked_service" "$leaked_prom" "$heap_service" "$heap_prom" "$allocations_service" "$allocations_prom" \
    "$limit_reports_prom" "$until_mib" <<'PY' || fail "values differ"
import sys
leaked_s, leaked_p, heap_s, heap_p, alloc_s, alloc_p, reports, until = map(float, sys.argv[1:])
checks = {
    "the leak stopped at its target": until * 2**20 <= leaked_s < until * 2**20 + 2**20,
    "Prometheus holds the service's leaked bytes exactly": leaked_p == leaked_s,
    "the tracked heap holds the leak (and little else)": leaked_p <= heap_p <= leaked_p + 16 * 2**20,
    "Prometheus's heap is the service's, within 1 MiB of churn": abs(heap_p - heap_s) <= 2**20,
    "the allocation counter is never ahead of the service": 0 < alloc_p <= alloc_s,
    "one soft-limit report": reports == 1,
}
for name, ok in checks.items():
    print(("ok:     " if ok else "FAILED: ") + name)
sys.exit(0 if all(checks.values()) else 1)
PY
resolved() { [ -z "$(py alert "$prom" AllocationTrackingLimitPredicted limit=heap)" ] && ! has 'allocation_tracking_seconds_to_limit{limit="heap"}'; }
wait_for 90 "the predictive alert to resolve once flat" resolved
echo "e2e passed in $((SECONDS - start)) s"

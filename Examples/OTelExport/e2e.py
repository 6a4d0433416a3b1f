#!/usr/bin/env python3
"""End-to-end check of the OTLP export: OTelLeakDemo sends its metrics to a receiver on loopback.

The receiver is a plain HTTP server that decodes each POST to /v1/metrics with the OpenTelemetry project's own
protobuf definitions (PyPI's opentelemetry-proto), as an OpenTelemetry Collector's OTLP/HTTP receiver does, and
answers 200 with an empty ExportMetricsServiceResponse. It checks what a backend would store: the resource's
service.name, the metric names, kinds and attributes, that the tracked heap follows the leak, that counters are
cumulative and monotonic, and that the time-to-limit gauge appears while the heap grows toward its limit.

    python3 Examples/OTelExport/e2e.py "$(swift build --package-path Examples/OTelExport --show-bin-path)/OTelLeakDemo"
"""
import http.server
import subprocess
import sys
import threading
import time

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

SERVICE = "otel-leak-demo"
SECONDS = 12
LEAK_MIB_PER_SECOND = 4

requests = []          # (content type, decoded ExportMetricsServiceRequest)
bad = []               # what could not be decoded, with why
lock = threading.Lock()


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        content_type = self.headers.get("Content-Type", "")
        try:
            if self.path != "/v1/metrics":
                raise ValueError(f"POST to {self.path}, not /v1/metrics")
            request = metrics_service_pb2.ExportMetricsServiceRequest()
            request.ParseFromString(body)
            with lock:
                requests.append((content_type, time.monotonic(), request))
        except Exception as error:  # noqa: BLE001 - any failure to decode is a failed check
            with lock:
                bad.append(f"{self.path}: {error}")
            self.send_response(400)
            self.end_headers()
            return
        response = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(response)))
        self.end_headers()
        self.wfile.write(response)

    def log_message(self, *args):
        pass


def attributes(point):
    return {a.key: a.value.string_value for a in point.attributes}


def fail(message):
    print(f"otel e2e: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 2:
        fail("usage: e2e.py PATH-TO-OTelLeakDemo")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    started = time.monotonic()
    demo = subprocess.run(
        [sys.argv[1], f"--seconds={SECONDS}", f"--leak-mib-per-second={LEAK_MIB_PER_SECOND}", "--soft-limit-mib=512"],
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=SECONDS + 60)
    server.shutdown()
    if demo.returncode != 0:
        fail(f"the demo exited with {demo.returncode}: {demo.stderr.strip()[-2000:]}")
    if bad:
        fail(f"undecodable requests: {bad[:3]}")
    if len(requests) < SECONDS // 2:
        fail(f"{len(requests)} export requests in {SECONDS} s, expected about one a second")

    # series: (metric name, frozen attributes) -> [(receive time, value, kind, start time, is_monotonic)]
    series = {}
    for content_type, received, request in requests:
        if content_type != "application/x-protobuf":
            fail(f"content type {content_type!r}, expected application/x-protobuf")
        for resource_metrics in request.resource_metrics:
            resource = {a.key: a.value.string_value for a in resource_metrics.resource.attributes}
            if resource.get("service.name") != SERVICE:
                fail(f"resource service.name {resource.get('service.name')!r}, expected {SERVICE!r}")
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    points = metric.gauge.data_points if kind == "gauge" else metric.sum.data_points if kind == "sum" else []
                    for point in points:
                        value = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
                        key = (metric.name, tuple(sorted(attributes(point).items())))
                        monotonic = metric.sum.is_monotonic if kind == "sum" else None
                        series.setdefault(key, []).append((received, value, kind, point.start_time_unix_nano, monotonic))

    def one(name, **labels):
        wanted = tuple(sorted({"service": SERVICE, **labels}.items()))
        if (name, wanted) not in series:
            names = sorted({n for n, _ in series})
            fail(f"no series {name}{dict(wanted)}; metric names received: {names}")
        return series[(name, wanted)]

    for name in ["allocation_tracking_heap_bytes", "allocation_tracking_heap_peak_bytes",
                 "allocation_tracking_heap_blocks", "allocation_tracking_tracker_memory_bytes",
                 "allocation_tracking_rss_bytes"]:
        if any(kind != "gauge" for _, _, kind, _, _ in one(name)):
            fail(f"{name} is not exported as a gauge")
    for name in ["allocation_tracking_allocations_total", "allocation_tracking_allocated_bytes_total"]:
        points = one(name)
        if any(kind != "sum" or not monotonic for _, _, kind, _, monotonic in points):
            fail(f"{name} is not a monotonic sum")
        values = [value for _, value, _, _, _ in points]
        if values != sorted(values) or values[-1] <= values[0]:
            fail(f"{name} is not cumulative and rising: {values}")

    # The heap follows the leak: it ends above what the leak holds at the last export before the end, and rises.
    heap = [value for _, value, _, _, _ in one("allocation_tracking_heap_bytes")]
    leaked = SECONDS * LEAK_MIB_PER_SECOND << 20
    if not heap[-1] >= 0.8 * leaked:
        fail(f"last heap gauge {heap[-1]:.0f} B, the leak holds {leaked} B by the end")
    if not heap[-1] > heap[0]:
        fail(f"the heap gauge did not rise: {heap}")
    growth = [value for _, value, _, _, _ in one("allocation_tracking_growth_bytes_per_second", series="heap")]
    rate = LEAK_MIB_PER_SECOND << 20
    if not any(0.5 * rate <= g <= 1.5 * rate for g in growth):
        fail(f"heap growth never within 50 % of the leak's {rate} B/s: {growth}")
    if not one("allocation_tracking_seconds_to_limit", limit="heap"):
        fail("no seconds_to_limit{limit=heap} while the heap grows toward its limit")

    print(f"otel e2e: OK: {len(requests)} OTLP/HTTP requests in {time.monotonic() - started:.1f} s, "
          f"{len(series)} series; heap {heap[0] / 2**20:.1f} → {heap[-1] / 2**20:.1f} MiB "
          f"(leak {leaked / 2**20:.0f} MiB), growth up to {max(growth) / 2**20:.2f} MiB/s")


if __name__ == "__main__":
    main()

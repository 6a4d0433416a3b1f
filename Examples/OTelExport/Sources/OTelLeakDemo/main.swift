// A small leaking program whose memory figures go out as OTLP/HTTP (protobuf) through swift-otel, every second,
// to the endpoint in OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318, an OpenTelemetry Collector's
// OTLP/HTTP receiver; the exporter appends /v1/metrics):
//
//     OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 swift run --package-path Examples/OTelExport OTelLeakDemo
//
// Options (`--name=value`): `seconds` (how long it runs, default 20), `leak-mib-per-second` (default 2),
// `soft-limit-mib` (the tracked limit the leak grows toward, default 256). It stops on SIGINT/SIGTERM, after one
// last export. Examples/OTelExport/e2e.py receives what it sends and checks it.
import AllocationTracking
import AllocationTrackingMetrics
import Logging
import OTel
import ServiceLifecycle
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

func option(_ name: String, default value: Int) -> Int {
    for argument in CommandLine.arguments.dropFirst() where argument.hasPrefix("--\(name)=") {
        guard let number = Int(argument.dropFirst(name.count + 3)), number > 0 else {
            let message = "OTelLeakDemo: --\(name) takes a positive integer, not \(argument)\n"
            _ = message.withCString { write(2, $0, strlen($0)) }
            exit(2)
        }
        return number
    }
    return value
}

let seconds = option("seconds", default: 20)
let leakPerSecond = option("leak-mib-per-second", default: 2) << 20
let softLimit = option("soft-limit-mib", default: 256) << 20

var tracking = AllocationTracker.Configuration()
tracking.trend.interval = .milliseconds(250)  // short, for a demo: a growth rate within seconds
tracking.limits.trackedBytes = softLimit
tracking.limits.onAllocationFailure = false
try AllocationTracker.start(tracking)

// swift-otel's metrics backend alone (no traces, no logs), exporting every second. Environment variables
// (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, …) override these settings, as the OTel specification says.
var otel = OTel.Configuration.default
otel.serviceName = "otel-leak-demo"
otel.metrics.exportInterval = .seconds(1)
otel.traces.enabled = false
otel.logs.enabled = false
let backend = try OTel.makeMetricsBackend(configuration: otel)
let publisher = AllocationTrackingMetrics.startPublishing(every: .seconds(1), window: .seconds(10),
                                                         dimensions: [("service", "otel-leak-demo")],
                                                         factory: backend.factory)

/// Keeps every body it is given: the leak.
final class Archive: Sendable {
    private let bodies = Mutex<[[UInt8]]>([])

    @inline(never)
    func retain(bytes: Int) {
        let body = [UInt8](repeating: 0x2a, count: bytes)
        bodies.withLock { $0.append(body) }
    }
}

/// Leaks `leakPerSecond` in ten steps a second for `seconds`, then ends the service group (the exporter
/// flushes on shutdown).
struct LeakService: Service {
    let archive = Archive()

    func run() async throws {
        for _ in 0..<(seconds * 10) {
            archive.retain(bytes: leakPerSecond / 10)
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}

let group = ServiceGroup(
    configuration: .init(
        services: [
            .init(service: backend.service),
            // The program ends when the leak has run its course: the OTel service then gets a graceful shutdown.
            .init(service: LeakService(), successTerminationBehavior: .gracefullyShutdownGroup),
        ],
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: Logger(label: "otel-leak-demo")))
try await group.run()
publisher.stop()
AllocationTracker.stop()

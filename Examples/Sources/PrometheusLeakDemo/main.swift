// A small leaking service whose memory figures Prometheus scrapes: the tracker keeps a short history (a sample
// every 250 ms) and writes a predictive report when the tracked soft limit is 15 s away at the current rate;
// AllocationTrackingMetrics publishes the figures every second into swift-prometheus's registry, served as
// text on http://127.0.0.1:<port>/metrics by a plain SwiftNIO HTTP/1 server (loopback only).
//
//     swift run --package-path Examples PrometheusLeakDemo --port=9464
//     curl -s http://127.0.0.1:9464/metrics | grep allocation_tracking_seconds_to_limit
//
// Options (`--name=value`): `port` (0, the default: any free port, printed on the first line), `soft-limit-mib`
// (the tracked limit the leak grows toward, default 64), `leak-mib-per-second` (default 2), `leak-until-mib`
// (the leak stops there, default: never; the soft-limit report is then written when it is crossed).
// Examples/prometheus/e2e.sh runs it under a real Prometheus with Examples/prometheus/alerts.yml.
import AllocationTracking
import AllocationTrackingMetrics
import CoreMetrics
import Foundation  // Thread, FileHandle
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

func option(_ name: String, default value: Int) -> Int {
    for argument in CommandLine.arguments.dropFirst() where argument.hasPrefix("--\(name)=") {
        guard let number = Int(argument.dropFirst(name.count + 3)), number >= 0 else {
            let message = "PrometheusLeakDemo: --\(name) takes a non-negative integer, not \(argument)\n"
            FileHandle.standardError.write(Data(message.utf8))
            exit(2)
        }
        return number
    }
    return value
}

let port = option("port", default: 0)
let softLimit = option("soft-limit-mib", default: 64) << 20
let leakPerSecond = option("leak-mib-per-second", default: 2) << 20
let leakUntil = CommandLine.arguments.contains { $0.hasPrefix("--leak-until-mib=") }
    ? option("leak-until-mib", default: 0) << 20 : Int.max

var configuration = AllocationTracker.Configuration()
configuration.trend.interval = .milliseconds(250)     // short, for a demo: a projection within seconds
configuration.trend.length = .seconds(300)
configuration.limits.trackedBytes = softLimit          // the soft limit the leak grows toward
// predict=15s: a report when the limit is 15 s away. The line is fitted over the last 15 s of history and must
// rise in each third of it, so the report needs about that much steady growth first.
configuration.limits.predictedExhaustion = .seconds(15)
configuration.report.topSites = 5
// No allocation-failure report: to have it ready, the watchdog names every new call stack once a second, and
// in a debug build with SwiftNIO's debug information that takes seconds per burst of new stacks, during which it
// takes no trend samples (the projection would lag the scrapes by as much).
configuration.limits.onAllocationFailure = false
try AllocationTracker.start(configuration)

let registry = PrometheusCollectorRegistry()
let factory = PrometheusMetricsFactory(registry: registry)
let publisher = AllocationTrackingMetrics.startPublishing(every: .seconds(1), window: .seconds(10),
                                                         dimensions: [("service", "leak-demo")], factory: factory)
// What the leak holds, from the service's own count: the e2e compares the tracker's heap gauge with it.
let leakedGauge = Gauge(label: "leak_demo_leaked_bytes", dimensions: [("service", "leak-demo")], factory: factory)

/// Keeps every request body: the leak, a named line for the report's suspects.
final class RequestArchive: Sendable {
    private let bodies = Mutex<[[UInt8]]>([])
    private let total = Atomic<Int>(0)

    var leakedBytes: Int { total.load(ordering: .relaxed) }

    @inline(never)
    func retain(bytes: Int) {
        let body = [UInt8](repeating: 0x2a, count: bytes)  // written, so resident too
        bodies.withLock { $0.append(body) }
        total.add(bytes, ordering: .relaxed)
    }
}

let archive = RequestArchive()
let warmedUp = Atomic<Bool>(false)
let leakThread = Thread {
    archive.retain(bytes: 1)                            // its call stack, for the warm-up below
    let step = 50                                       // ms between two leaked bodies
    while true {
        if warmedUp.load(ordering: .acquiring) && archive.leakedBytes < leakUntil {
            archive.retain(bytes: leakPerSecond * step / 1000)
        }
        leakedGauge.record(archive.leakedBytes)
        usleep(UInt32(step * 1000))
    }
}

/// GET /metrics: the registry in Prometheus's text format; anything else 404.
final class MetricsHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let registry: PrometheusCollectorRegistry
    init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let request) = unwrapInboundIn(data) else { return }
        let found = request.method == .GET && request.uri.split(separator: "?").first == "/metrics"
        var body = context.channel.allocator.buffer(capacity: found ? 16384 : 16)
        if found { body.writeBytes(registry.emitToBuffer()) } else { body.writeString("not found\n") }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: found ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain")
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        let head = HTTPResponseHead(version: request.version, status: found ? .ok : .notFound, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)  // keep-alive, as Prometheus scrapes
    }
}

leakThread.start()
while archive.leakedBytes == 0 { usleep(10_000) }

let server = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelInitializer { channel in
        channel.pipeline.configureHTTPServerPipeline().flatMapThrowing {
            try channel.pipeline.syncOperations.addHandler(MetricsHandler(registry: registry))
        }
    }
    .bind(host: "127.0.0.1", port: port)   // loopback only: the figures name the service's code
    .wait()
// Symbolicate every call stack once before serving and leaking: the first symbolication of a library reads its
// symbols and line tables (seconds on a loaded machine, far more in a debug build), which would otherwise delay
// the first report and, while it is written, the published figures.
_ = try AllocationTracker.takeSnapshot().statistics(groupedBy: .line)
warmedUp.store(true, ordering: .releasing)
print("listening on http://127.0.0.1:\(server.localAddress?.port ?? port)/metrics")
fflush(nil)
try server.closeFuture.wait()
publisher.stop()

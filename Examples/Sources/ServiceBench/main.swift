// The real-service benchmark's service (issue 13): a Hummingbird 2 app with JSON routes, a route that grows a
// store (a leak) and a large response, tracked only when ALLOCATION_TRACKING is set (the library starts itself from
// it at process start; this code never calls `AllocationTracker.start()`). Driven by Benchmarks/service_bench.py.
// It lives in Examples/ rather than Benchmarks/ because this package already depends on Hummingbird (as an
// application would) and Benchmarks/ stays free of server dependencies; it is not an example to copy.
//
//   PORT=8080 ALLOCATION_TRACKING=sample=512KiB,signal=SIGUSR2 .build/release/ServiceBench
//
// Routes: /json (a small encoded object), /leak (appends one record to a store that is never emptied and answers
// its count), /large (a ~1 MiB JSON array, built per request), /tracker/memory (`trackerMemoryBreakdown` and
// /proc/self/statm, as JSON), /tracker/symbolicate?n=N (cold and warm symbolication of N distinct addresses of
// this binary), /tracker/snapshot (a cold and a warm symbolicated snapshot of the live sites).
@_spi(Testing) import AllocationTracking
import Foundation
import Hummingbird
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

struct Greeting: Codable, ResponseEncodable {
    var message: String
    var id: Int
    var tags: [String]
}

/// One leaked record: about 500 B of payload, as a request log that is never trimmed.
struct Record {
    var id: Int
    var path: String
    var body: [UInt8]
}

/// The growing store: every /leak request adds a record, nothing removes them.
final class Store: Sendable {
    private let records = Mutex<[Record]>([])

    @inline(never)
    func append(_ id: Int) -> Int {
        let record = Record(id: id, path: "/leak/\(id)", body: [UInt8](repeating: UInt8(truncatingIfNeeded: id), count: 480))
        return records.withLock { records in
            records.append(record)
            return records.count
        }
    }
}

struct Item: Codable {
    var id: Int
    var name: String
    var score: Double
}

func seconds(_ clock: clockid_t = CLOCK_MONOTONIC) -> Double {
    var t = timespec()
    clock_gettime(clock, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

/// Resident bytes from /proc/self/statm.
func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
}

func json(_ object: [String: Any]) -> Response {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
    return Response(status: .ok, headers: [.contentType: "application/json"],
                    body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

func milliseconds(_ s: Double) -> Double { (s * 1e6).rounded() / 1e3 }

let environment = ProcessInfo.processInfo.environment
let port = environment["PORT"].flatMap(Int.init) ?? 8080
let store = Store()
let counter = Atomic<Int>(0)

let router = Router()
router.get("/json") { _, _ -> Greeting in
    let id = counter.add(1, ordering: .relaxed).newValue
    return Greeting(message: "Hello, World!", id: id, tags: ["a", "b", "c"])
}
router.get("/leak") { _, _ -> Response in
    let id = counter.add(1, ordering: .relaxed).newValue
    return json(["count": store.append(id)])
}
router.get("/large") { _, _ -> Response in
    // About 1 MiB: 16,384 items of ~64 B, encoded per request.
    let items = (0..<16_384).map { Item(id: $0, name: "item-\($0)", score: Double($0) / 7) }
    let data = try JSONEncoder().encode(items)
    return Response(status: .ok, headers: [.contentType: "application/json"],
                    body: .init(byteBuffer: ByteBuffer(bytes: data)))
}
router.get("/tracker/memory") { _, _ -> Response in
    let m = AllocationTracker.trackerMemoryBreakdown
    return json(["tracking": AllocationTracker.isTracing, "total": m.total, "tables": m.tables,
                 "symbolCache": m.symbolCache, "names": m.names, "history": m.history, "threads": m.threads,
                 "rss": residentBytes()])
}
router.get("/tracker/symbolicate") { request, _ -> Response in
    // N distinct addresses spread evenly over this executable's code: a cold batch (symbol cache emptied first)
    // and the same batch warm.
    guard AllocationTracker.isTracing else { return json(["error": "tracking is off"]) }
    let count = request.uri.queryParameters.get("n", as: Int.self) ?? 10_000
    let image = try AllocationTracker.takeSnapshot(symbolicate: false).images[0]
    let step = (image.end - image.start) / UInt(count + 1)
    let addresses = Set((1...UInt(count)).map { image.start + $0 * step })
    AllocationTracker._removeCachedSymbols()
    let rss0 = residentBytes()
    var t = seconds(), c = seconds(CLOCK_PROCESS_CPUTIME_ID)
    let frames = AllocationTracker._symbolicate(addresses)
    let coldWall = seconds() - t, coldCPU = seconds(CLOCK_PROCESS_CPUTIME_ID) - c
    let rss1 = residentBytes()
    t = seconds()
    _ = AllocationTracker._symbolicate(addresses)
    let warmWall = seconds() - t
    return json(["addresses": count, "codeBytes": Int(image.end - image.start),
                 "named": frames.values.filter { $0.last?.function != nil }.count,
                 "withLine": frames.values.filter { $0.last?.file != nil }.count,
                 "coldMs": milliseconds(coldWall), "coldCpuMs": milliseconds(coldCPU), "warmMs": milliseconds(warmWall),
                 "rssAddedBytes": rss1 - rss0, "symbolCacheBytes": AllocationTracker.trackerMemoryBreakdown.symbolCache])
}
router.get("/tracker/snapshot") { _, _ -> Response in
    // The live sites symbolicated from an empty symbol cache, then again warm.
    guard AllocationTracker.isTracing else { return json(["error": "tracking is off"]) }
    AllocationTracker._removeCachedSymbols()
    var t = seconds()
    let snapshot = try AllocationTracker.takeSnapshot()
    let coldWall = seconds() - t
    t = seconds()
    _ = try AllocationTracker.takeSnapshot()
    let warmWall = seconds() - t
    return json(["sites": snapshot.traces.count, "addresses": AllocationTracker._symbolCacheCount,
                 "coldMs": milliseconds(coldWall), "warmMs": milliseconds(warmWall)])
}

let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)))
try await app.runService()

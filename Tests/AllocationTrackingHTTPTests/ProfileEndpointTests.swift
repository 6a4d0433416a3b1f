import AllocationTracking
import AllocationTrackingHTTP
import Dispatch
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import Testing
import TrackerTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The endpoint over real HTTP on loopback (port 0), read by a raw socket client, curl and `go tool pprof`.
@Suite(.serialized, .trackerExclusive) struct ProfileEndpointTests {
    static let gzipMagic: [UInt8] = [0x1f, 0x8b]

    @Test func indexUnknownPathsAndMethods() async throws {
        try await withServer { port in
            for target in ["/debug/pprof/", "/debug/pprof"] {
                let index = try await WireClient.get(target, port: port)
                #expect(index.status == 200)
                #expect(index.header("Content-Type") == "text/html; charset=utf-8")
                #expect(index.header("X-Content-Type-Options") == "nosniff")
                for route in ["/debug/pprof/heap", "/debug/pprof/allocs", "/debug/allocation-tracking/report",
                              "/debug/allocation-tracking/snapshot.json"] {
                    #expect(index.text.contains("href=\"\(route)\""), "\(route) missing from the index")
                }
            }
            expectOneLineError(try await WireClient.get("/debug/pprof/goroutine", port: port), 404, containing: "no route")
            expectOneLineError(try await WireClient.get("/", port: port), 404, containing: "no route")
            let post = try await WireClient.get("/debug/pprof/heap", port: port, method: "POST")
            expectOneLineError(post, 405, containing: "not allowed")
            #expect(post.header("Allow") == "GET, HEAD")
        }
    }

    @Test func trackingOffIsA503NotAnEmptyProfile() async throws {
        #expect(!AllocationTracker.isTracing)
        try await withServer { port in
            for target in ["/debug/pprof/heap", "/debug/pprof/allocs", "/debug/pprof/heap?debug=1",
                           "/debug/pprof/heap?moment=peak", "/debug/allocation-tracking/report",
                           "/debug/allocation-tracking/snapshot.json"] {
                expectOneLineError(try await WireClient.get(target, port: port), 503, containing: "allocation tracking is off")
            }
            // A bad query is still a 400 (the request is wrong whatever the tracker does), and the index answers.
            expectOneLineError(try await WireClient.get("/debug/pprof/heap?seconds=x", port: port), 400, containing: "seconds")
            #expect(try await WireClient.get("/debug/pprof/", port: port).status == 200)
        }
    }

    @Test func heapAndAllocsProfilesWithGosHeaders() async throws {
        try await withTrackingAndLeak {
            try await withServer { port in
                try await Tools.withTemporaryDirectory { directory in
                    for (name, type) in [("heap", "inuse_space"), ("allocs", "alloc_space")] {
                        let response = try await WireClient.get("/debug/pprof/\(name)?gc=1", port: port)
                        #expect(response.status == 200)
                        #expect(response.header("Content-Type") == "application/octet-stream")
                        #expect(response.header("Content-Disposition") == "attachment; filename=\"\(name)\"")
                        #expect(response.header("X-Content-Type-Options") == "nosniff")
                        #expect(Array(response.body.prefix(2)) == Self.gzipMagic)
                        let head = try await WireClient.get("/debug/pprof/\(name)", port: port, method: "HEAD")
                        #expect(head.status == 200 && head.body.isEmpty)
                        #expect(Int(head.header("Content-Length") ?? "") ?? 0 > 0)
                        guard Tools.hasGo else { continue }
                        let raw = try await Tools.decodes(response.body, in: directory)
                        #expect(raw.status == 0 && raw.error.isEmpty, "\(raw.error)")
                        // Every node: the test process's other suites allocate meanwhile, and pprof's default
                        // node fraction drops the small leak from `-top` when they have allocated enough.
                        let top = try await Tools.pprof(["-top", "-nodefraction=0"], response.body, in: directory)
                        #expect(top.status == 0 && top.error.isEmpty, "\(top.error)")
                        #expect(top.text.contains("Type: \(type)"), "\(top.text)")
                        #expect(top.text.contains("endpointTestLeak"), "\(top.text)")
                    }
                }
                if !Tools.hasGo { Issue.record("go tool pprof not installed: the profiles were not decoded (.ci/run installs golang-go)") }
            }
        }
    }

    @Test func textReportJSONAndDebug1() async throws {
        try await withTrackingAndLeak {
            try await withServer { port in
                for target in ["/debug/pprof/heap?debug=1", "/debug/pprof/allocs?debug=1", "/debug/allocation-tracking/report",
                               "/debug/allocation-tracking/report?top=3"] {
                    let response = try await WireClient.get(target, port: port)
                    #expect(response.status == 200)
                    #expect(response.header("Content-Type") == "text/plain; charset=utf-8")
                    #expect(response.header("Content-Disposition") == nil)
                    #expect(response.text.contains(target.hasSuffix("top=3") ? "[ Top 3 ]" : "[ Top "), "\(response.text)")
                    #expect(response.text.contains("endpointTestLeak"), "\(target): \(response.text)")
                }
                let json = try await WireClient.get("/debug/allocation-tracking/snapshot.json", port: port)
                #expect(json.status == 200)
                #expect(json.header("Content-Type") == "application/json")
                let snapshot = try Snapshot(jsonData: json.body)
                let leak = snapshot.traces.filter {
                    $0.traceback.frames.contains { $0.function?.contains("endpointTestLeak") == true }
                }
                #expect(leak.reduce(0) { $0 + $1.size } == 64 * 4096)
                #expect(leak.reduce(0) { $0 + $1.count } == 64)
            }
        }
    }

    @Test func peakProfileHoldsTheFreedBurst() async throws {
        try await withTrackingAndLeak {
            let burst = pointerBuffer(16)
            defer { burst.deallocate() }
            AllocationTracker.resetPeak()
            endpointTestBurst(into: burst, size: 1 << 20)
            try await withServer { port in
                let peak = try await WireClient.get("/debug/pprof/heap?moment=peak", port: port)
                #expect(peak.status == 200)
                #expect(peak.header("Content-Disposition") == "attachment; filename=\"heap-peak\"")
                let peakReport = try await WireClient.get("/debug/allocation-tracking/report?moment=peak", port: port)
                #expect(peakReport.text.contains("at the peak") && peakReport.text.contains("endpointTestBurst"), "\(peakReport.text)")
                let now = try await WireClient.get("/debug/allocation-tracking/report", port: port)
                #expect(!now.text.contains("endpointTestBurst"), "\(now.text)")
                guard Tools.hasGo else {
                    Issue.record("go tool pprof not installed: the peak profile was not read (.ci/run installs golang-go)")
                    return
                }
                try await Tools.withTemporaryDirectory { directory in
                    let top = try await Tools.pprof(["-unit=B", "-top"], peak.body, in: directory)
                    #expect(top.status == 0 && top.error.isEmpty, "\(top.error)")
                    let burst = top.text.split(separator: "\n").first { $0.contains("endpointTestBurst") }
                    // All 16 MiB of the burst were live at the peak (its flat column, in bytes).
                    #expect(burst.flatMap { Int64($0.split(separator: " ")[0].dropLast()) } == 16 << 20, "\(top.text)")
                }
            }
        }
    }

    @Test func deltaProfileOverSeconds() async throws {
        try await withTrackingAndLeak {
            try await withServer { port in
                // Two seconds, the growth allocated one second in: well inside the interval however the machine is
                // loaded (the first snapshot is taken as the request arrives, in milliseconds).
                let growth = pointerBuffer(10)
                defer { freeAll(growth) }
                async let delta = WireClient.get("/debug/pprof/heap?seconds=2", port: port)
                try await Task.sleep(for: .seconds(1))
                endpointTestGrowth(into: growth, size: 10000)
                let response = try await delta
                #expect(response.status == 200)
                #expect(response.header("Content-Disposition") == "attachment; filename=\"heap-delta\"")
                #expect(Array(response.body.prefix(2)) == Self.gzipMagic)
                guard Tools.hasGo else {
                    Issue.record("go tool pprof not installed: the delta profile was not read (.ci/run installs golang-go)")
                    return
                }
                try await Tools.withTemporaryDirectory { directory in
                    let top = try await Tools.pprof(["-unit=B", "-top"], response.body, in: directory)
                    #expect(top.status == 0 && top.error.isEmpty, "\(top.error)")
                    let row = top.text.split(separator: "\n").first { $0.contains("endpointTestGrowth") }
                    #expect(row.flatMap { Int64($0.split(separator: " ")[0].dropLast()) } == 100_000, "\(top.text)")
                    // The leak held before and after did not change: a delta leaves it out.
                    #expect(!top.text.contains("endpointTestLeak"), "\(top.text)")
                }
            }
        }
    }

    @Test func badQueriesAreOneLine400s() async throws {
        try await withTrackingAndLeak {
            try await withServer { port in
                let cases = [
                    ("/debug/pprof/heap?seconds=abc", "invalid value for \"seconds\""),
                    ("/debug/pprof/heap?seconds=-1", "invalid value for \"seconds\""),
                    ("/debug/pprof/heap?seconds=0", "invalid value for \"seconds\""),
                    ("/debug/pprof/heap?seconds=1.5", "invalid value for \"seconds\""),
                    ("/debug/pprof/allocs?seconds=301", "more than the 300 allowed"),
                    ("/debug/pprof/heap?seconds=99999999999999999999999", "invalid value for \"seconds\""),
                    ("/debug/pprof/heap?moment=yesterday", "unknown moment \"yesterday\""),
                    ("/debug/pprof/heap?moment=peak&seconds=5", "cannot be combined"),
                    ("/debug/pprof/heap?debug=x", "invalid value for \"debug\""),
                    ("/debug/allocation-tracking/report?top=0", "invalid value for \"top\""),
                    ("/debug/pprof/heap?seconds=%zz", "percent-encoding"),
                    ("/debug/pprof/heap?seconds=1%0A2", "invalid value for \"seconds\""),
                    ("/debug/pprof/heap?x=" + String(repeating: "a", count: 3000), "longer than the 2048 allowed"),
                ]
                for (target, message) in cases {
                    expectOneLineError(try await WireClient.get(target, port: port), 400, containing: message)
                }
                // Still serving after all that.
                #expect(try await WireClient.get("/debug/pprof/heap", port: port).status == 200)
            }
        }
    }

    @Test func tooManyWaitingRequestsGet429() async throws {
        try await withTrackingAndLeak {
            try await withServer(AllocationProfileResponder(limits: .init(maximumPendingRequests: 1))) { port in
                async let delta = WireClient.get("/debug/pprof/heap?seconds=2", port: port)
                try await Task.sleep(for: .milliseconds(500))
                let refused = try await WireClient.get("/debug/pprof/heap", port: port)
                expectOneLineError(refused, 429, containing: "too many profile requests")
                #expect(refused.header("Retry-After") == "1")
                #expect(try await delta.status == 200)
                #expect(try await WireClient.get("/debug/pprof/heap", port: port).status == 200)
            }
        }
    }

    @Test func oversizedBodyIs413() async throws {
        try await withServer { port in
            let body = String(repeating: "x", count: 20_000)
            let response = try await WireClient.send(
                "GET /debug/pprof/ HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n" + body, port: port)
            expectOneLineError(response, 413, containing: "request body larger than")
        }
    }

    @Test func goToolPprofFetchesOverHTTP() async throws {
        try #require(Tools.hasGo, "go tool pprof not installed (.ci/run installs golang-go)")
        try await withTrackingAndLeak {
            try await withServer { port in
                try await Tools.withTemporaryDirectory { directory in
                    let url = "http://127.0.0.1:\(port)/debug/pprof/heap"
                    let result = try await Tools.run(Tools.go!, ["tool", "pprof", "-top", "-nodefraction=0", url], in: directory)
                    #expect(result.status == 0, "\(result.error)")
                    #expect(result.text.contains("endpointTestLeak"), "\(result.text)")
                    // pprof tells where it fetched from and saved to; nothing else: no symbolization attempt (it
                    // would POST to /debug/pprof/symbol), no warning.
                    #expect(!result.error.lowercased().contains("symboliz"), "\(result.error)")
                    let lines = result.error.split(separator: "\n")
                    #expect(lines.allSatisfy { $0.hasPrefix("Fetching profile over HTTP from \(url)") || $0.hasPrefix("Saved profile in ") },
                            "\(result.error)")
                }
            }
        }
    }

    @Test func curlThenPngAsUsersDo() async throws {
        try #require(Tools.hasGoCurlAndGraphviz, "curl, go tool pprof or graphviz not installed (.ci/run installs curl, golang-go, graphviz)")
        try await withTrackingAndLeak {
            try await withServer { port in
                try await Tools.withTemporaryDirectory { directory in
                    let script = "curl -sS http://localhost:\(port)/debug/pprof/heap > heap.out && go tool pprof -png heap.out > heap.png"
                    let result = try await Tools.run("/bin/sh", ["-c", script], in: directory)
                    #expect(result.status == 0 && result.error.isEmpty, "\(result.error)")
                    let png = try Data(contentsOf: directory.appendingPathComponent("heap.png"))
                    #expect(png.starts(with: [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))
                    #expect(png.count > 24 && String(decoding: png[12..<16], as: UTF8.self) == "IHDR")
                    if png.count > 24 {
                        let width = png[16..<20].reduce(0) { $0 << 8 | Int($1) }
                        let height = png[20..<24].reduce(0) { $0 << 8 | Int($1) }
                        #expect(width > 100 && height > 100, "\(width)x\(height)")
                    }
                    let dot = try await Tools.run(Tools.go!, ["tool", "pprof", "-dot", "heap.out"], in: directory)
                    #expect(dot.status == 0 && dot.error.isEmpty, "\(dot.error)")
                    #expect(dot.text.contains("endpointTestLeak"), "\(dot.text)")
                }
            }
        }
    }

    @Test func eightClientsWhileTwoThreadsAllocate() async throws {
        try await withTrackingAndLeak {
            let stop = Atomic<Bool>(false)
            let allocators = (0..<2).map { seed in
                let thread = Thread {
                    var rng = UInt64(seed + 1) &* 0x9E37_79B9_7F4A_7C15
                    var held: [UnsafeMutableRawPointer?] = Array(repeating: nil, count: 256)
                    while !stop.load(ordering: .relaxed) {
                        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17
                        let slot = Int(rng % 256)
                        free(held[slot])
                        held[slot] = malloc(Int(rng >> 40) % 8192 + 1)
                    }
                    held.forEach { free($0) }
                }
                thread.start()
                return thread
            }
            defer { stop.store(true, ordering: .relaxed) }
            // The first profiles symbolicate every new call site (SwiftNIO's among them: seconds to minutes in a
            // debug build on a loaded machine), one build at a time; this test is about crashes and decoding, so
            // the clients wait as long as that takes, after one warm-up request.
            let responder = AllocationProfileResponder(limits: .init(maximumWait: .seconds(900)))
            try await withServer(responder) { port in
                #expect(try await WireClient.get("/debug/pprof/heap", port: port).status == 200)
                let profiles = try await withThrowingTaskGroup(of: [WireResponse].self) { group in
                    for client in 0..<8 {
                        group.addTask {
                            var responses: [WireResponse] = []
                            for round in 0..<3 {
                                let target = (client + round) % 2 == 0 ? "/debug/pprof/heap" : "/debug/pprof/allocs"
                                responses.append(try await WireClient.get(target, port: port))
                            }
                            return responses
                        }
                    }
                    return try await group.reduce(into: []) { $0 += $1 }
                }
                stop.store(true, ordering: .relaxed)
                #expect(profiles.count == 24)
                #expect(profiles.allSatisfy { $0.status == 200 }, "\(profiles.filter { $0.status != 200 }.map { "\($0.status) \($0.text)" })")
                guard Tools.hasGo else {
                    Issue.record("go tool pprof not installed: the profiles were not decoded (.ci/run installs golang-go)")
                    return
                }
                try await Tools.withTemporaryDirectory { directory in
                    for profile in profiles where profile.status == 200 {
                        let raw = try await Tools.decodes(profile.body, in: directory)
                        #expect(raw.status == 0 && raw.error.isEmpty, "\(raw.error)")
                    }
                }
            }
            _ = allocators
        }
    }

    @Test func unixDomainSocketOwnerOnly() async throws {
        try #require(Tools.hasCurl, "curl not installed (.ci/run installs it)")
        try await withTrackingAndLeak {
            try await Tools.withTemporaryDirectory { directory in
                let path = directory.appendingPathComponent("profiles.sock").path
                let server = AllocationProfileServer(unixDomainSocketPath: path)
                let running = Task { try await server.run() }
                defer { running.cancel() }
                _ = try await server.boundAddress()
                var info = stat()
                #expect(lstat(path, &info) == 0)
                #expect(info.st_mode & 0o777 == 0o600)
                let result = try await Tools.run(Tools.curl!, ["-sS", "-o", "heap.out", "-w", "%{http_code}", "--unix-socket", path,
                                                               "http://localhost/debug/pprof/heap"], in: directory)
                #expect(result.text == "200", "\(result.text) \(result.error)")
                #expect(try Data(contentsOf: directory.appendingPathComponent("heap.out")).prefix(2) == Data(Self.gzipMagic))
                running.cancel()
                _ = await running.result
                #expect(access(path, F_OK) != 0, "the socket is left behind")
            }
        }
    }

    @Test func loopbackOnlyUnlessAllowedWithAWarning() async throws {
        let refused = AllocationProfileServer(host: "0.0.0.0", port: 0)
        await #expect(throws: AllocationTrackingError.self) { try await refused.run() }
        do {
            try await refused.run()
        } catch let error as AllocationTrackingError {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("allowNonLoopback"))
        }
        for host in ["127.0.0.1", "localhost", "::1", "127.1.2.3"] {
            let server = AllocationProfileServer(host: host, port: 0)
            let running = Task { try await server.run() }
            #expect(try await server.boundAddress().port != 0, "\(host)")
            running.cancel()
            _ = await running.result
        }
        let messages = LogCollector()
        var logger = Logger(label: "test") { _ in messages }
        logger.logLevel = .debug
        let allowed = AllocationProfileServer(host: "0.0.0.0", port: 0, allowNonLoopback: true, logger: logger)
        let running = Task { try await allowed.run() }
        _ = try await allowed.boundAddress()
        running.cancel()
        _ = await running.result
        #expect(messages.lines.contains { $0.hasPrefix("warning: ") && $0.contains("non-loopback") }, "\(messages.lines)")
    }

    @Test func gracefulShutdownAnswersWaitingRequests() async throws {
        try await withTrackingAndLeak {
            let server = AllocationProfileServer(host: "127.0.0.1", port: 0)
            let group = ServiceGroup(services: [server], logger: Logger(label: "test"))
            let running = Task { try await group.run() }
            let port = try await server.boundAddress().port!
            async let waiting = WireClient.get("/debug/pprof/heap?seconds=240", port: port)
            try await Task.sleep(for: .seconds(1))
            let start = ContinuousClock.now
            await group.triggerGracefulShutdown()
            expectOneLineError(try await waiting, 503, containing: "shutting down")
            try await running.value
            // Not the 240 s of the delta's interval (the first snapshot may still be symbolicating new call sites
            // when the shutdown comes: seconds on a loaded machine).
            #expect(ContinuousClock.now - start < .seconds(120))
            await #expect(throws: (any Error).self) { try await WireClient.get("/debug/pprof/", port: port) }
        }
    }
}

/// Keeps what is logged, as "level: message".
final class LogCollector: LogHandler, @unchecked Sendable {
    private let storage = Mutex<[String]>([])
    var lines: [String] { storage.withLock { $0 } }
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        storage.withLock { $0.append("\(event.level): \(event.message)") }
    }
}

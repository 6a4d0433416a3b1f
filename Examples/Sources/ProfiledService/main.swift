// A service with a leak, its heap served at http://127.0.0.1:6060/debug/pprof/heap (PORT=0 picks a free port and
// prints it). Try, while it runs:
//
//   curl -s http://127.0.0.1:6060/debug/pprof/heap > heap.out && go tool pprof -top heap.out
//   go tool pprof -top http://127.0.0.1:6060/debug/pprof/heap
//   curl -s 'http://127.0.0.1:6060/debug/pprof/heap?seconds=10' > growth.out     # what grew in 10 s
//
// SIGTERM or SIGINT stops it gracefully; so does RUN_SECONDS=N after N seconds.
import AllocationTracking
import AllocationTrackingHTTP
import Foundation
import Logging
import ServiceLifecycle

/// Renders a page for `id`: a few kilobytes that the cache below keeps for ever.
@inline(never)
func renderPage(_ id: Int) -> [UInt8] {
    [UInt8](repeating: UInt8(truncatingIfNeeded: id), count: 2048 + id % 1024)
}

/// The application: "serves" a request every 10 ms and caches every page it renders, with no eviction.
struct LeakyPageCache: Service {
    func run() async throws {
        var cache: [Int: [UInt8]] = [:]
        var id = 0
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            cache[id] = renderPage(id)
            id += 1
            try? await Task.sleep(for: .milliseconds(10))
        }
        print("served \(id) pages, \(cache.count) still cached")
    }
}

/// Prints the address the profile server listens on, then stops the group after RUN_SECONDS (for CI).
struct Announcer: Service {
    let server: AllocationProfileServer
    let group: @Sendable () async -> Void
    let runSeconds: Int?

    func run() async throws {
        let address = try await server.boundAddress()
        // Written at once (print buffers when stdout is a file): a line a script can wait for.
        FileHandle.standardOutput.write(Data("profiles at http://127.0.0.1:\(address.port ?? 0)/debug/pprof/heap\n".utf8))
        guard let runSeconds else { return }
        try? await Task.sleep(for: .seconds(runSeconds))
        await group()
    }
}

let environment = ProcessInfo.processInfo.environment
let port = environment["PORT"].flatMap(Int.init) ?? 6060
let logger = Logger(label: "ProfiledService")
let app = LeakyPageCache()

try AllocationTracker.start()                                          // or ALLOCATION_TRACKING=1
let server = AllocationProfileServer(host: "127.0.0.1", port: port)    // loopback only
let group = ServiceGroup(services: [app, server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)

let announcer = Announcer(server: server, group: { await group.triggerGracefulShutdown() },
                          runSeconds: environment["RUN_SECONDS"].flatMap(Int.init))
let announcing = Task { try await announcer.run() }
try await group.run()
announcing.cancel()

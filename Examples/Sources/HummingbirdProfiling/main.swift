// The profile routes mounted on a Hummingbird app's own router, through the framework-neutral
// AllocationProfileResponder: the app's port serves /debug/pprof/heap beside its own routes (keep that port
// private: the profiles name every function of the process). PORT (default 8080); RUN_SECONDS=N stops it after N s.
//
//   curl -s http://127.0.0.1:8080/debug/pprof/heap > heap.out && go tool pprof -top heap.out
import AllocationTracking
import AllocationTrackingHTTP
import Foundation
import HTTPTypes
import Hummingbird

/// Keeps every greeting it makes: the leak the profile shows.
actor GreetingLog {
    private var greetings: [String] = []

    @inline(never)
    func greet(_ name: String) -> String {
        let greeting = "Hello, \(name)! " + String(repeating: "*", count: 1000)
        greetings.append(greeting)
        return greeting
    }
}

/// A Hummingbird response from the responder's.
func hummingbirdResponse(_ response: AllocationProfileResponder.Response) -> Response {
    var headers = HTTPFields()
    for field in response.headers {
        if let name = HTTPField.Name(field.name) { headers.append(HTTPField(name: name, value: field.value)) }
    }
    return Response(status: .init(code: response.status), headers: headers,
                    body: .init(byteBuffer: ByteBuffer(bytes: response.body)))
}

let environment = ProcessInfo.processInfo.environment
let port = environment["PORT"].flatMap(Int.init) ?? 8080
let log = GreetingLog()

try AllocationTracker.start()
let router = Router()
router.get("/hello/:name") { _, context -> String in
    await log.greet(context.parameters.get("name") ?? "you")
}
let profiles = AllocationProfileResponder()
router.get("/debug/**") { request, _ -> Response in
    hummingbirdResponse(await profiles.respond(path: request.uri.path, query: request.uri.query))
}
let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)))

if let seconds = environment["RUN_SECONDS"].flatMap(Int.init) {
    // For CI: serve for a while, then stop.
    let running = Task { try await app.runService(gracefulShutdownSignals: []) }
    try await Task.sleep(for: .seconds(seconds))
    running.cancel()
    _ = await running.result
} else {
    try await app.runService()
}

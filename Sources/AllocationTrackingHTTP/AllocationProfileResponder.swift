import AllocationTracking
import Foundation

/// Go's `net/http/pprof` heap routes, and this library's own, as a function from a request to a response, with no
/// HTTP framework in it: `AllocationProfileServer` serves it on SwiftNIO, and a Hummingbird or Vapor app mounts the
/// same routes on its own router (see `Examples/Sources/HummingbirdProfiling`).
///
/// | path | answer |
/// | --- | --- |
/// | `/debug/pprof/` | an index of the routes (HTML) |
/// | `/debug/pprof/heap` | a gzip-compressed pprof heap profile, laid out as Go's (tools show `inuse_space`) |
/// | `/debug/pprof/allocs` | the same profile with `alloc_space` as its default sample type |
/// | `/debug/allocation-tracking/report` | the text report (`Snapshot.report(top:)`) |
/// | `/debug/allocation-tracking/snapshot.json` | the snapshot as JSON (`Snapshot.jsonData()`) |
///
/// Query parameters, as Go's: `debug=1` (heap, allocs) answers with the text report instead of the profile;
/// `seconds=N` (heap, allocs) waits N seconds and answers with what changed meanwhile
/// (`newer.pprof(comparedTo: older)`, with `debug=1` `newer.report(comparedTo: older)`); `gc=N` is accepted and
/// ignored (there is no collector to run). This library's own: `moment=peak` (heap, allocs, report, snapshot.json)
/// answers for the blocks live at the peak of traced memory (`takeSnapshot(at: .peak)`), and `top=N` (the text
/// reports) the number of entries. Unknown parameters are ignored, as Go does.
///
/// Bounds, so that a bad or hostile request cannot hurt the process it profiles: a request target longer than
/// `Limits.maximumTargetLength` or a bad parameter value gets a one-line 400; `seconds` is at most
/// `Limits.maximumSeconds`; one snapshot is taken and encoded at a time, up to `Limits.maximumPendingRequests`
/// requests wait for it (429 beyond), each at most `Limits.maximumWait` (503 after). A request while tracking is
/// off gets a 503 saying so, never an empty profile.
public struct AllocationProfileResponder: Sendable {
    /// What a request may ask for and how long it may wait.
    public struct Limits: Hashable, Sendable {
        /// The longest `seconds` a delta profile may wait: 300 (five minutes) by default.
        public var maximumSeconds: Int
        /// The longest request target (path and query) in bytes: 2048 by default.
        public var maximumTargetLength: Int
        /// Requests that may wait for a profile, or its delta's interval, at once (the one being built included):
        /// 16 by default; more get 429 Too Many Requests.
        public var maximumPendingRequests: Int
        /// How long a request waits for the profile being built before it gets 503: 30 seconds by default.
        public var maximumWait: Duration

        public init(maximumSeconds: Int = 300, maximumTargetLength: Int = 2048, maximumPendingRequests: Int = 16,
                    maximumWait: Duration = .seconds(30)) {
            self.maximumSeconds = maximumSeconds
            self.maximumTargetLength = maximumTargetLength
            self.maximumPendingRequests = maximumPendingRequests
            self.maximumWait = maximumWait
        }
    }

    /// An HTTP response: a status, header fields in order, a body.
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(name: String, value: String)]
        public var body: Data

        public init(status: Int, headers: [(name: String, value: String)], body: Data) {
            self.status = status
            self.headers = headers
            self.body = body
        }

        /// The value of the first header field named `name` (case-insensitive), or nil.
        public func header(_ name: String) -> String? {
            headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
        }

        /// The status's reason phrase (`OK`, `Bad Request`).
        public var reason: String { Self.reasons[status] ?? "Unknown" }

        static let reasons = [200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                              413: "Content Too Large", 429: "Too Many Requests", 500: "Internal Server Error",
                              503: "Service Unavailable"]
    }

    /// The routes, as the index lists them.
    public static let routes = ["/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/allocs",
                                "/debug/allocation-tracking/report", "/debug/allocation-tracking/snapshot.json"]

    public let limits: Limits
    private let gate: _ProfileGate

    public init(limits: Limits = Limits()) {
        self.limits = limits
        self.gate = _ProfileGate(maximumPending: max(1, limits.maximumPendingRequests))
    }

    /// The response to `method` on `target` (`/debug/pprof/heap?seconds=30`: the path and the query as they come
    /// in the request line). Only GET and HEAD are answered (405 otherwise); HEAD gets GET's header fields, with
    /// GET's `Content-Length`, and no body.
    public func respond(method: String = "GET", target: String) async -> Response {
        guard target.utf8.count <= limits.maximumTargetLength else {
            return Self.error(400, "request target of \(target.utf8.count) bytes is longer than the \(limits.maximumTargetLength) allowed")
        }
        let path: Substring, query: Substring?
        if let mark = target.firstIndex(of: "?") {
            (path, query) = (target[..<mark], target[target.index(after: mark)...])
        } else {
            (path, query) = (target[...], nil)
        }
        return await respond(method: method, path: String(path), query: query.map(String.init))
    }

    /// The response to `method` on `path` with `query` (without the `?`), for a framework that has split them.
    public func respond(method: String = "GET", path: String, query: String?) async -> Response {
        let length = path.utf8.count + (query.map { $0.utf8.count + 1 } ?? 0)
        guard length <= limits.maximumTargetLength else {
            return Self.error(400, "request target of \(length) bytes is longer than the \(limits.maximumTargetLength) allowed")
        }
        guard method == "GET" || method == "HEAD" else {
            var response = Self.error(405, "method \(Self.printable(method)) not allowed: use GET")
            response.headers.append((name: "Allow", value: "GET, HEAD"))
            return response
        }
        var response = await respondToGet(path: path, query: query ?? "")
        if method == "HEAD" {
            response.headers.append((name: "Content-Length", value: "\(response.body.count)"))
            response.body = Data()
        }
        return response
    }

    // MARK: - Routes

    private enum Route {
        case index, heap, allocs, report, snapshotJSON
    }

    private static func route(_ path: String) -> Route? {
        switch path {
        case "/debug/pprof", "/debug/pprof/": .index
        case "/debug/pprof/heap": .heap
        case "/debug/pprof/allocs": .allocs
        case "/debug/allocation-tracking/report": .report
        case "/debug/allocation-tracking/snapshot.json": .snapshotJSON
        default: nil
        }
    }

    private func respondToGet(path: String, query: String) async -> Response {
        guard let route = Self.route(path) else {
            return Self.error(404, "no route \(Self.printable(path)): see /debug/pprof/")
        }
        if route == .index { return Self.index }
        let request: _ProfileRequest
        do {
            request = try _ProfileRequest(query: query, limits: limits)
        } catch {
            return Self.error(400, error.message)
        }
        if let response = Self.unavailableResponse() { return response }
        guard gate.enter() else {
            var response = Self.error(429, "too many profile requests at once (at most \(limits.maximumPendingRequests)): try again")
            response.headers.append((name: "Retry-After", value: "1"))
            return response
        }
        defer { gate.leave() }
        do {
            return try await build(route, request)
        } catch let error as _GateError {
            var response = Self.error(503, error.message)
            response.headers.append((name: "Retry-After", value: "1"))
            return response
        } catch let error as AllocationTrackingError where error.code == .notTracing {
            return Self.unavailableResponse() ?? Self.error(503, "allocation tracking is off: \(error.message)")
        } catch is CancellationError {
            return Self.error(503, "the server is shutting down")
        } catch {
            return Self.error(500, "could not build the profile: \(error)")
        }
    }

    private func build(_ route: Route, _ request: _ProfileRequest) async throws -> Response {
        let moment: Snapshot.Moment = request.peak ? .peak : .now
        switch route {
        case .index:
            return Self.index
        case .heap, .allocs:
            let name = route == .heap ? "heap" : "allocs"
            let options = Snapshot.PprofOptions(defaultSampleType: route == .heap ? nil : .allocSpace)
            if let seconds = request.seconds {
                let older = try await gate.exclusively(within: limits.maximumWait) {
                    try AllocationTracker.takeSnapshot()
                }
                try await Task.sleep(for: .seconds(seconds))
                return try await gate.exclusively(within: limits.maximumWait) {
                    let newer = try AllocationTracker.takeSnapshot()
                    if request.debug > 0 {
                        return Self.text(try newer.report(comparedTo: older, top: request.top ?? 50))
                    }
                    return Self.profile(try newer.pprof(comparedTo: older, options), filename: "\(name)-delta")
                }
            }
            return try await gate.exclusively(within: limits.maximumWait) {
                let snapshot = try AllocationTracker.takeSnapshot(at: moment)
                if request.debug > 0 { return Self.text(try snapshot.report(top: request.top ?? 50)) }
                return Self.profile(try snapshot.pprof(options), filename: request.peak ? "\(name)-peak" : name)
            }
        case .report:
            return try await gate.exclusively(within: limits.maximumWait) {
                Self.text(try AllocationTracker.takeSnapshot(at: moment).report(top: request.top ?? 10))
            }
        case .snapshotJSON:
            return try await gate.exclusively(within: limits.maximumWait) {
                Response(status: 200, headers: [(name: "Content-Type", value: "application/json"),
                                                (name: "X-Content-Type-Options", value: "nosniff")],
                         body: try AllocationTracker.takeSnapshot(at: moment).jsonData())
            }
        }
    }

    // MARK: - Responses

    /// A binary profile with Go's header fields.
    private static func profile(_ data: Data, filename: String) -> Response {
        Response(status: 200, headers: [(name: "Content-Type", value: "application/octet-stream"),
                                        (name: "Content-Disposition", value: "attachment; filename=\"\(filename)\""),
                                        (name: "X-Content-Type-Options", value: "nosniff")],
                 body: data)
    }

    private static func text(_ text: String) -> Response {
        Response(status: 200, headers: [(name: "Content-Type", value: "text/plain; charset=utf-8"),
                                        (name: "X-Content-Type-Options", value: "nosniff")],
                 body: Data(text.utf8))
    }

    /// A one-line error, as Go's pprof handler answers one (`text/plain`, the message, no profile).
    static func error(_ status: Int, _ message: String) -> Response {
        let line = message.replacingOccurrences(of: "\n", with: " ")
        return Response(status: status, headers: [(name: "Content-Type", value: "text/plain; charset=utf-8"),
                                                  (name: "X-Content-Type-Options", value: "nosniff")],
                        body: Data((line + "\n").utf8))
    }

    /// 503 when there is nothing to profile: tracking is off, or this build cannot track.
    private static func unavailableResponse() -> Response? {
        if !AllocationTracker.isAvailable {
            return error(503, "allocation tracking is unavailable in this process (a sanitizer owns malloc, or the interposer is not loaded): no profile")
        }
        if !AllocationTracker.isTracing {
            return error(503, "allocation tracking is off: start it (AllocationTracker.start() or ALLOCATION_TRACKING=1) to get a profile")
        }
        return nil
    }

    /// Up to 200 characters of a client's string, for an error line (control characters replaced).
    private static func printable(_ string: String) -> String {
        let cut = string.unicodeScalars.prefix(200).map { $0.properties.generalCategory == .control ? "?" : Character($0) }
        return "\"" + String(cut) + (string.unicodeScalars.count > 200 ? "…" : "") + "\""
    }

    private static let index: Response = {
        let rows = [
            ("heap", "/debug/pprof/heap", "live memory by call stack (pprof; ?debug=1 text, ?seconds=N growth over N s, ?moment=peak at the peak)"),
            ("allocs", "/debug/pprof/allocs", "everything allocated by call stack (pprof, alloc_space first; same parameters)"),
            ("report", "/debug/allocation-tracking/report", "the text report (?top=N, ?moment=peak)"),
            ("snapshot.json", "/debug/allocation-tracking/snapshot.json", "the snapshot as JSON (?moment=peak)"),
        ]
        let items = rows.map { "<li><a href=\"\($0.1)\">\($0.0)</a>: \($0.2)</li>" }.joined(separator: "\n")
        let html = """
            <!DOCTYPE html>
            <html><head><title>/debug/pprof/</title></head><body>
            <h1>/debug/pprof/</h1>
            <p>Allocation profiles from swift-allocation-tracking. <code>go tool pprof -top http://HOST:PORT/debug/pprof/heap</code></p>
            <ul>
            \(items)
            </ul>
            </body></html>

            """
        return Response(status: 200, headers: [(name: "Content-Type", value: "text/html; charset=utf-8"),
                                               (name: "X-Content-Type-Options", value: "nosniff")],
                        body: Data(html.utf8))
    }()
}

/// A request's parameters, checked.
struct _ProfileRequest: Sendable {
    var debug = 0
    var seconds: Int?
    var peak = false
    var top: Int?

    struct Invalid: Error { var message: String }

    init(query: String, limits: AllocationProfileResponder.Limits) throws(Invalid) {
        var seen: Set<String> = []
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = Self.decode(parts[0]) else { throw Invalid(message: "malformed percent-encoding in the query") }
            guard let value = Self.decode(parts.count > 1 ? parts[1] : "") else {
                throw Invalid(message: "malformed percent-encoding in \(name)")
            }
            // The first value of a repeated parameter counts, as Go's FormValue takes it.
            guard seen.insert(name).inserted else { continue }
            switch name {
            case "debug":
                guard let n = Int(value), n >= 0 else { throw Invalid(message: "invalid value for \"debug\": \(Self.quoted(value)) (use 0 for a profile, 1 for text)") }
                debug = n
            case "seconds":
                guard let n = Int(value), n > 0 else {
                    throw Invalid(message: "invalid value for \"seconds\": \(Self.quoted(value)) (a whole number of seconds, 1 to \(limits.maximumSeconds))")
                }
                guard n <= limits.maximumSeconds else {
                    throw Invalid(message: "\"seconds\" is \(n), more than the \(limits.maximumSeconds) allowed")
                }
                seconds = n
            case "moment":
                switch value {
                case "now": peak = false
                case "peak": peak = true
                default: throw Invalid(message: "unknown moment \(Self.quoted(value)): use now or peak")
                }
            case "top":
                guard let n = Int(value), (1...10_000).contains(n) else {
                    throw Invalid(message: "invalid value for \"top\": \(Self.quoted(value)) (1 to 10000)")
                }
                top = n
            default:
                break  // gc=N (there is no collector to run) and parameters of other tools, as Go ignores them
            }
        }
        if peak, seconds != nil {
            throw Invalid(message: "moment=peak and seconds cannot be combined: a delta is between two moments now")
        }
    }

    /// Percent-decoding, `+` as a space (a form query); nil for a malformed escape or bytes that are not UTF-8.
    static func decode(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "+"): bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
                bytes.append(high << 4 | low)
            default: bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    private static func quoted(_ value: String) -> String {
        let cut = value.unicodeScalars.prefix(40).map { $0.properties.generalCategory == .control ? "?" : Character($0) }
        return "\"" + String(cut) + (value.unicodeScalars.count > 40 ? "…" : "") + "\""
    }
}

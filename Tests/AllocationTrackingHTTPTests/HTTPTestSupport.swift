import AllocationTracking
import AllocationTrackingHTTP
import Dispatch
import Foundation
import Testing
import TrackerTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A leak from a function with a name of its own, which the profiles must show (the attribution frame). Into a
/// buffer the caller allocated, so that the function's only allocations are the blocks.
@inline(never)
func endpointTestLeak(into blocks: UnsafeMutableBufferPointer<UnsafeMutableRawPointer?>, size: Int) {
    // Each of these helpers has a body of its own shape (here: one byte stored; the growth helper fills its blocks):
    // release builds merge functions whose bodies differ only in constants into one symbol (LLVM's merge-functions
    // pass, as Swift runs it), and the profiles would then name one helper for the other's blocks.
    for index in blocks.indices {
        blocks[index] = malloc(size)
        blocks[index]?.storeBytes(of: 0x4C, as: UInt8.self)
    }
}

/// Allocated between a delta profile's two snapshots.
@inline(never)
func endpointTestGrowth(into blocks: UnsafeMutableBufferPointer<UnsafeMutableRawPointer?>, size: Int) {
    for index in blocks.indices {
        let block = malloc(size)
        if let block { memset(block, 0x47, size) }
        blocks[index] = block
    }
}

/// A burst allocated and freed again: only the peak profile holds it.
@inline(never)
func endpointTestBurst(into blocks: UnsafeMutableBufferPointer<UnsafeMutableRawPointer?>, size: Int) {
    for index in blocks.indices { blocks[index] = malloc(size) }
    for index in blocks.indices { free(blocks[index]) }
}

/// `count` pointers, allocated before tracking matters and freed (with the blocks they hold) by `free`.
func pointerBuffer(_ count: Int) -> UnsafeMutableBufferPointer<UnsafeMutableRawPointer?> {
    let buffer = UnsafeMutableBufferPointer<UnsafeMutableRawPointer?>.allocate(capacity: count)
    buffer.initialize(repeating: nil)
    return buffer
}

func freeAll(_ buffer: UnsafeMutableBufferPointer<UnsafeMutableRawPointer?>) {
    buffer.forEach { free($0) }
    buffer.deallocate()
}

/// A response as it came over the wire.
struct WireResponse: Sendable {
    var status: Int
    var headers: [(name: String, value: String)]
    var body: Data
    var text: String { String(decoding: body, as: UTF8.self) }
    func header(_ name: String) -> String? {
        headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }
}

enum WireClient {
    /// Sends `request` (raw bytes) to 127.0.0.1:`port` and reads the response until the server closes, off the
    /// Swift concurrency pool (the server answers on it: blocking it with 8 clients would starve the server).
    static func send(_ request: String, port: Int) async throws -> WireResponse {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try sendBlocking(request, port: port) })
            }
        }
    }

    /// `GET target` with `Connection: close`.
    static func get(_ target: String, port: Int, method: String = "GET") async throws -> WireResponse {
        try await send("\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n\r\n", port: port)
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    static func sendBlocking(_ request: String, port: Int) throws -> WireResponse {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(errno)") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 900, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw Failure(description: "connect to port \(port): errno \(errno)") }
        let bytes = Array(request.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure(description: "send: errno \(errno)") }
            sent += n
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { break }
            guard n > 0 else { throw Failure(description: "recv: errno \(errno) after \(received.count) bytes") }
            received += buffer[..<n]
        }
        return try parse(received, isHead: request.hasPrefix("HEAD "))
    }

    static func parse(_ bytes: [UInt8], isHead: Bool) throws -> WireResponse {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let end = (0...max(0, bytes.count - 4)).first(where: { Array(bytes[$0..<min($0 + 4, bytes.count)]) == separator }) else {
            throw Failure(description: "no end of the response head in \(bytes.count) bytes")
        }
        let head = String(decoding: bytes[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let statusFields = head[0].split(separator: " ")
        guard statusFields.count >= 2, statusFields[0] == "HTTP/1.1", let status = Int(statusFields[1]) else {
            throw Failure(description: "bad status line \(head[0])")
        }
        let headers = head.dropFirst().map { line -> (name: String, value: String) in
            let colon = line.firstIndex(of: ":")!
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        let body = Data(bytes[(end + 4)...])
        let response = WireResponse(status: status, headers: headers, body: body)
        if !isHead, let length = response.header("Content-Length").flatMap(Int.init) {
            guard length == body.count else { throw Failure(description: "Content-Length \(length), body \(body.count) bytes") }
        }
        return response
    }
}

/// The real tools: curl, `go tool pprof` (with graphviz's `dot` for -png). `.ci/run` installs them; without them
/// the tests that need them are skipped, and say why.
enum Tools {
    static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static let go = find("go")
    static let curl = find("curl")
    static let dot = find("dot")
    static let hasGo = go != nil
    static let hasGoCurlAndGraphviz = go != nil && curl != nil && dot != nil
    static let hasCurl = curl != nil

    struct Output: Sendable {
        var status: Int32
        var output: Data
        var error: String
        var text: String { String(decoding: output, as: UTF8.self) }
    }

    /// Runs `executable` in `directory` (output and errors drained while it runs, so no pipe fills up), off the Swift
    /// concurrency pool.
    static func run(_ executable: String, _ arguments: [String], in directory: URL, input: Data = Data()) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result<Output, Error> {
                    try runBlocking(executable, arguments, in: directory, input: input)
                })
            }
        }
    }

    /// The shared runner (output drained while it runs, killed at a deadline) in `directory`. go caches builds under $HOME
    /// and pprof saves fetched profiles in $HOME/pprof: both kept off the home.
    static func runBlocking(_ executable: String, _ arguments: [String], in directory: URL, input: Data) throws -> Output {
        let environment = ProcessInfo.processInfo.environment, temporary = FileManager.default.temporaryDirectory
        let result = try runChildProcess(URL(fileURLWithPath: executable), arguments, environment: [
            "GOCACHE": environment["GOCACHE"] ?? temporary.appendingPathComponent("pprof-tests-gocache").path,
            "PPROF_TMPDIR": directory.path,
            "HOME": environment["HOME"] ?? temporary.path,
        ], directory: directory, input: input)
        return Output(status: result.status, output: result.output, error: result.error)
    }

    /// `go tool pprof -raw` of `profile`: exits 0 and writes nothing on stderr when the profile decodes.
    static func decodes(_ profile: Data, in directory: URL) async throws -> Output {
        let file = directory.appendingPathComponent("profile-\(UUID().uuidString).pb.gz")
        try profile.write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        return try await run(go!, ["tool", "pprof", "-raw", file.path], in: directory)
    }

    /// `go tool pprof <arguments>` on `profile` saved in `directory`.
    static func pprof(_ arguments: [String], _ profile: Data, in directory: URL) async throws -> Output {
        let file = directory.appendingPathComponent("profile-\(UUID().uuidString).pb.gz")
        try profile.write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        return try await run(go!, ["tool", "pprof"] + arguments + [file.path], in: directory)
    }

    /// A fresh directory, removed after `body`.
    static func withTemporaryDirectory<R>(_ body: (URL) async throws -> R) async throws -> R {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("ProfileEndpoint-\(getpid())-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        return try await body(directory)
    }
}

/// Runs `body` with a server on 127.0.0.1, port 0, and its port; stops the server afterwards.
func withServer<R>(_ responder: AllocationProfileResponder = AllocationProfileResponder(),
                   _ body: (Int) async throws -> R) async throws -> R {
    let server = AllocationProfileServer(host: "127.0.0.1", port: 0, responder: responder)
    let running = Task { try await server.run() }
    defer { running.cancel() }
    let port = try await server.boundAddress().port!
    #expect(port != 0)
    let result = try await body(port)
    running.cancel()
    _ = await running.result
    return result
}

/// Runs `body` with tracking on (64 blocks of 4096 bytes from `endpointTestLeak` held throughout), and stops
/// afterwards.
///
/// Two snapshots first: the first time a process is profiled, its stacks' addresses are symbolicated (seconds in
/// a debug build, and the symbolication's own allocations are new stacks for the next snapshot); the tests time
/// what the endpoint does, not that.
func withTrackingAndLeak<R>(_ body: () async throws -> R) async throws -> R {
    let leak = pointerBuffer(64)
    defer { freeAll(leak) }
    try AllocationTracker.start()
    defer { AllocationTracker.stop() }
    endpointTestLeak(into: leak, size: 4096)
    for _ in 0..<2 { _ = try AllocationTracker.takeSnapshot() }
    return try await body()
}

/// A one-line plain-text error: exactly one line, ending in a newline.
func expectOneLineError(_ response: WireResponse, _ status: Int, containing: String,
                        sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(response.status == status, "\(response.status): \(response.text)", sourceLocation: sourceLocation)
    #expect(response.header("Content-Type") == "text/plain; charset=utf-8", sourceLocation: sourceLocation)
    #expect(response.text.hasSuffix("\n") && response.text.filter { $0 == "\n" }.count == 1,
            "not one line: \(response.text)", sourceLocation: sourceLocation)
    #expect(response.text.contains(containing), "\(response.text)", sourceLocation: sourceLocation)
}

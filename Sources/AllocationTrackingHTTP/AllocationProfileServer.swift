import AllocationTracking
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An HTTP server for `AllocationProfileResponder`'s routes (Go's `/debug/pprof/heap` and this library's own), on
/// SwiftNIO, as a swift-service-lifecycle `Service`:
///
/// ```swift
/// let server = AllocationProfileServer(host: "127.0.0.1", port: 6060)
/// try await server.run()    // or: ServiceGroup(services: [app, server], …).run()
/// ```
///
/// Secure by default: it listens on a loopback address only (127.0.0.0/8, ::1, localhost), so that the profiles —
/// which name every function and file of the process — reach no other host. Reach it from outside a pod with
/// `kubectl port-forward`. Listening on another address takes `allowNonLoopback: true`, and logs a warning;
/// a Unix domain socket (`init(unixDomainSocketPath:)`, mode 0600) restricts it to the user instead.
///
/// Requests: GET and HEAD on the responder's routes; the request target is bounded by the responder's limits, a
/// request body (none is expected) by 16 KiB (413 and the connection closed beyond), the request head by
/// SwiftNIO's HTTP parser (80 KiB). Port 0 picks a free port: `boundAddress()` tells which.
///
/// On graceful shutdown it stops accepting connections, answers the requests in progress (a delta profile still
/// waiting gets a 503) and closes every connection; cancelling `run()` closes everything at once.
public final class AllocationProfileServer: Service, Sendable {
    /// Where the server listens.
    public enum Address: Hashable, Sendable, CustomStringConvertible {
        case host(String, port: Int)
        case unixDomainSocket(path: String)

        public var description: String {
            switch self {
            case .host(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case .unixDomainSocket(let path): "unix:\(path)"
            }
        }
    }

    public let address: Address
    public let responder: AllocationProfileResponder
    /// true lets `run()` listen on an address other than loopback.
    public let allowsNonLoopback: Bool
    private let logger: Logger
    private let bound = Mutex<BindState>(.notYet)

    private enum BindState {
        case notYet
        case listening(SocketAddress)
        case ended(String)
    }

    /// The largest request body read (a GET has none).
    static let maximumBodySize = 16 * 1024

    /// A server on `host`:`port` (port 0: any free port, see `boundAddress()`).
    ///
    /// - Parameters:
    ///   - host: an address or name; `run()` refuses one that is not loopback unless `allowNonLoopback` is true.
    ///   - allowNonLoopback: listen on another address too (say `0.0.0.0` in a container whose port is not
    ///     exposed), with a warning in the log: anyone who reaches the port reads the profiles.
    public init(host: String = "127.0.0.1", port: Int = 6060, allowNonLoopback: Bool = false,
                responder: AllocationProfileResponder = AllocationProfileResponder(),
                logger: Logger = Logger(label: "AllocationTrackingHTTP")) {
        self.address = .host(host, port: port)
        self.allowsNonLoopback = allowNonLoopback
        self.responder = responder
        self.logger = logger
    }

    /// A server on a Unix domain socket at `path`, created with mode 0600 (only this user connects) and removed
    /// when the server stops (`curl --unix-socket PATH http://localhost/debug/pprof/heap`). A stale socket left at
    /// `path` is replaced; any other file there makes `run()` throw.
    public init(unixDomainSocketPath path: String,
                responder: AllocationProfileResponder = AllocationProfileResponder(),
                logger: Logger = Logger(label: "AllocationTrackingHTTP")) {
        self.address = .unixDomainSocket(path: path)
        self.allowsNonLoopback = false
        self.responder = responder
        self.logger = logger
    }

    /// The address the running server listens on, with the port it was given for port 0; waits until `run()` has
    /// bound it.
    ///
    /// - Throws: `AllocationTrackingError(.invalidArgument)` when `run()` failed to bind or has ended.
    public func boundAddress() async throws -> SocketAddress {
        while true {
            switch bound.withLock({ $0 }) {
            case .listening(let address): return address
            case .ended(let reason):
                throw AllocationTrackingError(.invalidArgument, "the profile server is not listening: \(reason)")
            case .notYet: try await Task.sleep(for: .milliseconds(5))
            }
        }
    }

    /// Listens and serves until a graceful shutdown (in a `ServiceGroup`) or cancellation.
    ///
    /// - Throws: `AllocationTrackingError(.invalidArgument)` for a non-loopback host without `allowNonLoopback`;
    ///   SwiftNIO's error when the address cannot be bound (in use, no permission).
    public func run() async throws {
        do {
            try await serve()
            bound.withLock { $0 = .ended("it has stopped") }
        } catch {
            bound.withLock { $0 = .ended("\(error)") }
            throw error
        }
    }

    private func serve() async throws {
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        let initializer: @Sendable (Channel) -> EventLoopFuture<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>> = { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                return try NIOAsyncChannel(wrappingChannelSynchronously: channel)
            }
        }
        let server: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
        var socketPath: String?
        switch address {
        case .host(let host, let port):
            let socketAddress = try SocketAddress.makeAddressResolvingHost(host, port: port)
            if !Self.isLoopback(socketAddress) {
                guard allowsNonLoopback else {
                    throw AllocationTrackingError(.invalidArgument, "the profile server listens on loopback only and \(host) (\(socketAddress.ipAddress ?? "?")) is not: pass allowNonLoopback: true to listen there")
                }
                logger.warning("allocation profiles served on a non-loopback address: anyone who reaches it reads every function and file name of this process",
                               metadata: ["address": "\(address)"])
            }
            server = try await bootstrap.bind(to: socketAddress, childChannelInitializer: initializer)
        case .unixDomainSocket(let path):
            server = try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true,
                                              childChannelInitializer: initializer)
            socketPath = path
            guard chmod(path, 0o600) == 0 else {
                let reason = String(cString: strerror(errno))
                try? await server.channel.close()
                unlink(path)
                throw AllocationTrackingError(.invalidArgument, "cannot restrict the profile server's socket \(path) to its owner: \(reason)")
            }
        }
        defer { if let socketPath { unlink(socketPath) } }
        if let local = server.channel.localAddress {
            bound.withLock { $0 = .listening(local) }
            logger.debug("allocation profiles served", metadata: ["address": "\(local)"])
        }
        let responder = self.responder
        let logger = self.logger
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { connections in
                    for try await connection in connections {
                        group.addTask {
                            await Self.serve(connection, responder: responder, logger: logger)
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
        }
    }

    /// Answers the requests of one connection in order until it closes, asks to, or a graceful shutdown.
    private static func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>,
                              responder: AllocationProfileResponder, logger: Logger) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                var bodySize = 0
                for try await part in inbound.cancelOnGracefulShutdown() {
                    switch part {
                    case .head(let requestHead):
                        head = requestHead
                        bodySize = 0
                    case .body(let buffer):
                        bodySize += buffer.readableBytes
                        if bodySize > maximumBodySize, let requestHead = head {
                            let response = AllocationProfileResponder.error(413, "request body larger than \(maximumBodySize) bytes: profile requests have none")
                            try await write(response, for: requestHead, keepAlive: false, to: outbound)
                            return
                        }
                    case .end:
                        guard let requestHead = head else { continue }
                        head = nil
                        let method = requestHead.method.rawValue, target = requestHead.uri
                        let response = await cancelWhenGracefulShutdown {
                            await responder.respond(method: method, target: target)
                        }
                        let keepAlive = requestHead.isKeepAlive && !Task.isShuttingDownGracefully
                        try await write(response, for: requestHead, keepAlive: keepAlive, to: outbound)
                        if !keepAlive { return }
                    }
                }
            }
        } catch {
            // A client that went away mid-response: nothing to answer.
            logger.debug("profile connection closed", metadata: ["error": "\(error)"])
        }
    }

    private static func write(_ response: AllocationProfileResponder.Response, for request: HTTPRequestHead,
                              keepAlive: Bool, to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) async throws {
        var headers = HTTPHeaders(response.headers.map { ($0.name, $0.value) })
        // A HEAD response already has GET's length, and no body.
        if !headers.contains(name: "Content-Length") {
            headers.add(name: "Content-Length", value: "\(response.body.count)")
        }
        headers.replaceOrAdd(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        let head = HTTPResponseHead(version: request.version,
                                    status: HTTPResponseStatus(statusCode: response.status, reasonPhrase: response.reason),
                                    headers: headers)
        try await outbound.write(.head(head))
        if !response.body.isEmpty {
            try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: response.body))))
        }
        try await outbound.write(.end(nil))
    }

    /// 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104.
    static func isLoopback(_ address: SocketAddress) -> Bool {
        switch address {
        case .v4(let v4):
            return UInt32(bigEndian: v4.address.sin_addr.s_addr) >> 24 == 127
        case .v6(let v6):
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            if bytes == [UInt8](repeating: 0, count: 15) + [1] { return true }
            return bytes.prefix(10).allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff && bytes[12] == 127
        case .unixDomainSocket:
            return true
        }
    }
}

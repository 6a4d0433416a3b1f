import Foundation

/// Workload W, service-like Swift code: builds nested Codable values with string interpolation, encodes them
/// with JSONEncoder, decodes them with JSONDecoder, aggregates into dictionaries and arrays and formats log
/// lines — the allocation mix of a typical request handler. Deterministic for a given `requests`.
public enum ServiceWorkload {
    public static let defaultThreads = 2
    public static let defaultRequests = 800  // per thread

    public struct Address: Codable, Hashable, Sendable {
        public var street: String
        public var city: String
        public var postalCode: String
        public var country: String
    }

    public struct Customer: Codable, Hashable, Sendable {
        public var id: Int
        public var name: String
        public var email: String
        public var address: Address
        public var tags: [String]
    }

    public struct LineItem: Codable, Hashable, Sendable {
        public var sku: String
        public var title: String
        public var quantity: Int
        public var unitPriceCents: Int
        public var attributes: [String: String]
    }

    public struct Order: Codable, Hashable, Sendable {
        public var id: String
        public var customer: Customer
        public var items: [LineItem]
        public var notes: String?
        public var metadata: [String: String]
        public var createdAt: Double
    }

    public struct Summary: Codable, Sendable {
        public var orderID: String
        public var totalCents: Int
        public var itemCount: Int
        public var byCategory: [String: Int]
        public var logLine: String
    }

    /// Runs `requests` simulated requests on each of `threads` threads. Returns a checksum (to keep the work
    /// observable).
    @discardableResult
    public static func run(threads: Int = defaultThreads, requests: Int = defaultRequests) -> Int {
        runOnThreads(threads) { index in
            worker(thread: index, requests: requests)
        }.reduce(0, &+)
    }

    @inline(never)
    static func worker(thread: Int, requests: Int) -> Int {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let decoder = JSONDecoder()
        var checksum = 0
        var recent: [Summary] = []
        for request in 0..<requests {
            let order = makeOrder(thread: thread, request: request)
            guard let body = try? encoder.encode(order),
                  let decoded = try? decoder.decode(Order.self, from: body) else { fatalError("JSON round trip failed") }
            let summary = summarize(decoded)
            guard let response = try? encoder.encode(summary) else { fatalError("JSON encode failed") }
            checksum &+= response.count &+ summary.totalCents &+ summary.logLine.utf8.count
            recent.append(summary)
            if recent.count > 32 { recent.removeFirst(16) }  // a small bounded cache, as services keep
        }
        return checksum &+ recent.count
    }

    static func makeOrder(thread: Int, request: Int) -> Order {
        let n = thread &* 1_000_003 &+ request
        let address = Address(street: "\(n % 997) Main Street, apt \(n % 31)", city: "City-\(n % 53)",
                              postalCode: String(format: "%05d", n % 100_000), country: n % 3 == 0 ? "SE" : "US")
        let customer = Customer(id: n, name: "Customer \(n)", email: "customer.\(n)@example.com", address: address,
                                tags: (0..<(n % 4 + 1)).map { "tag-\($0)-\(n % 7)" })
        let items = (0..<(n % 6 + 2)).map { i in
            LineItem(sku: "SKU-\(n % 1000)-\(i)", title: "Product number \(i) for order \(n)", quantity: i + 1,
                     unitPriceCents: 199 + (n &* 31 &+ i &* 17) % 9_800,
                     attributes: ["color": ["red", "green", "blue"][i % 3], "size": "\(i % 5 + 36)",
                                  "category": "cat-\((n + i) % 5)"])
        }
        return Order(id: "order-\(thread)-\(request)", customer: customer, items: items,
                     notes: n % 2 == 0 ? "Leave at the door; call \(n % 10_000) on arrival" : nil,
                     metadata: ["source": "web", "trace": "\(String(n, radix: 16))-\(request)", "attempt": "1"],
                     createdAt: 1_700_000_000 + Double(n))
    }

    static func summarize(_ order: Order) -> Summary {
        var byCategory: [String: Int] = [:]
        var total = 0
        for item in order.items {
            let cents = item.quantity * item.unitPriceCents
            total += cents
            byCategory[item.attributes["category"] ?? "none", default: 0] += cents
        }
        let categories = byCategory.keys.sorted().map { "\($0)=\(byCategory[$0]!)" }.joined(separator: ",")
        let logLine = "order=\(order.id) customer=\(order.customer.email) items=\(order.items.count) "
            + "total=\(String(format: "%.2f", Double(total) / 100)) categories=[\(categories)] city=\(order.customer.address.city)"
        return Summary(orderID: order.id, totalCents: total, itemCount: order.items.count, byCategory: byCategory,
                       logLine: logLine)
    }
}

// swift-tools-version: 6.2
import PackageDescription

// The tracker's metrics exported as OTLP (what the OpenTelemetry Collector, SigNoz, Grafana Alloy and most
// vendors ingest) through swift-otel. A package of its own, not part of Examples/Package.swift: swift-otel and
// its HTTP client take minutes to build, and the other examples do not need them.
let package = Package(
    name: "otel-export-example",
    dependencies: [
        .package(name: "swift-allocation-tracking", path: "../.."),
        // OTLP/HTTP only (protobuf over HTTP, the OTLP default): the gRPC exporter's dependencies are not built.
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPHTTP"]),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        .executableTarget(
            name: "OTelLeakDemo",
            dependencies: [
                .product(name: "AllocationTracking", package: "swift-allocation-tracking"),
                .product(name: "AllocationTrackingMetrics", package: "swift-allocation-tracking"),
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ]
)

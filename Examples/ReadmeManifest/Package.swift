// swift-tools-version: 6.1
// The README's Package.swift, verbatim: ReadmeTests evaluates it with `swift package dump-package` (nothing is
// built or fetched here).
import PackageDescription

let package = Package(
    name: "MyService",
    dependencies: [
        // No release is tagged yet: depend on the main branch (or pin a commit with `revision:`) until 0.1.0
        // is, then use `from: "0.1.0"` (see CHANGELOG.md).
        .package(url: "https://github.com/<owner>/swift-allocation-tracking", branch: "main"),
    ],
    targets: [
        .executableTarget(name: "MyService", dependencies: [
            .product(name: "AllocationTracking", package: "swift-allocation-tracking"),
        ]),
        .testTarget(name: "MyServiceTests", dependencies: [
            "MyService",
            .product(name: "AllocationTrackingTesting", package: "swift-allocation-tracking"),
        ], exclude: ["allocation-budgets.json"]),  // read by path in the budget tests, not a resource
    ]
)

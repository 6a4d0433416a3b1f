import Foundation

/// An executable or library built next to the test bundle (the same build directory): TrackerScenarios,
/// alloc-track, the preload library. One copy for every test target.
public func productURL(_ name: String) -> URL {
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(name)
}

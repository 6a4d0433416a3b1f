import AllocationTracking
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `Snapshot.write(to:)`: the caller's explicit path is replaced by design — atomically, 0600, fsync'd — but never
/// through a symlink and never with a temporary file left behind (Foundation's atomic write left a `.dat.nosync…`
/// file, mode 0644). The full-disk case runs in a child under RLIMIT_FSIZE and on a full tmpfs
/// (`fileSizeLimitLeavesNoEmptyOrPartialFiles`, `fullFilesystemLeavesNoEmptyFiles`). Does not start the tracker.
@Suite struct SnapshotWrite {
    static func withDirectory<R>(_ body: (String) throws -> R) throws -> R {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("SnapshotWrite-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        return try body(directory)
    }

    static let snapshot = Snapshot(traces: [Trace(traceback: Traceback(frames: [Frame(address: 0x1234)]), size: 64, count: 1)],
                                   tracebackLimit: 1, timestamp: 0, processID: 1)

    static func mode(_ path: String) -> mode_t {
        var status = stat()
        lstat(path, &status)
        return status.st_mode
    }

    @Test func createsAndReplacesWithMode0600AndNothingElse() throws {
        try Self.withDirectory { directory in
            let path = directory + "/snapshot.json"
            try Self.snapshot.write(to: URL(fileURLWithPath: path))
            #expect(Self.mode(path) & 0o777 == 0o600)
            #expect(try Snapshot(contentsOf: URL(fileURLWithPath: path)).traces == Self.snapshot.traces)
            // An existing file (0644, other content) is replaced by the new one.
            try FileManager.default.removeItem(atPath: path)
            try "old".write(toFile: path, atomically: false, encoding: .utf8)
            chmod(path, 0o644)
            try Self.snapshot.write(to: URL(fileURLWithPath: path))
            #expect(try Snapshot(contentsOf: URL(fileURLWithPath: path)).traces == Self.snapshot.traces)
            #expect(Self.mode(path) & 0o777 == 0o600)
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["snapshot.json"])
        }
    }

    /// A symlink at the path is refused (an error naming it): neither its target nor the link changes.
    @Test func neverWritesThroughASymlink() throws {
        try Self.withDirectory { directory in
            let target = directory + "/precious", link = directory + "/snapshot.json", dangling = directory + "/dangling.json"
            try "precious\n".write(toFile: target, atomically: false, encoding: .utf8)
            #expect(symlink(target, link) == 0)
            #expect(symlink(directory + "/missing", dangling) == 0)
            for path in [link, dangling] {
                let error = #expect(throws: AllocationTrackingError.self) {
                    try Self.snapshot.write(to: URL(fileURLWithPath: path))
                }
                #expect(error?.code == .cannotWriteFile)
                #expect(error?.message.contains("is a symbolic link") == true, "\(String(describing: error))")
                #expect(Self.mode(path) & S_IFMT == S_IFLNK)
            }
            #expect(try String(contentsOfFile: target, encoding: .utf8) == "precious\n")
            #expect(!FileManager.default.fileExists(atPath: directory + "/missing"))
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
                == ["dangling.json", "precious", "snapshot.json"])
        }
    }

    /// A directory, or a missing parent: an error, nothing created.
    @Test func unwritablePathsThrowAndLeaveNothing() throws {
        try Self.withDirectory { directory throws in
            let error = #expect(throws: AllocationTrackingError.self) {
                try Self.snapshot.write(to: URL(fileURLWithPath: directory))
            }
            #expect(error?.code == .cannotWriteFile)
            let missing = #expect(throws: AllocationTrackingError.self) {
                try Self.snapshot.write(to: URL(fileURLWithPath: directory + "/missing/snapshot.json"))
            }
            #expect(missing?.message.contains("No such file or directory") == true, "\(String(describing: missing))")
            let entries = try FileManager.default.contentsOfDirectory(atPath: directory)
            #expect(entries.isEmpty, "\(entries)")
        }
    }
}

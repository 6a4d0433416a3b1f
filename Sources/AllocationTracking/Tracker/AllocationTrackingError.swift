/// An error from the allocation tracker. Matching is by `code`; `message` says what happened and what to do.
public struct AllocationTrackingError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        /// A configuration value is out of range or malformed (the message names it).
        public static let invalidConfiguration = Code(name: "invalidConfiguration")
        /// This build cannot track allocations (an AddressSanitizer/ThreadSanitizer build owns malloc).
        public static let unavailable = Code(name: "unavailable")
        /// The configured unwinder cannot run (libunwind is not installed).
        public static let unwinderUnavailable = Code(name: "unwinderUnavailable")
        /// The operation needs tracking to be on (`takeSnapshot` while stopped).
        public static let notTracing = Code(name: "notTracing")
        /// An argument is not valid for the call (cumulative statistics by traceback, say).
        public static let invalidArgument = Code(name: "invalidArgument")
        /// A saved snapshot cannot be read: truncated, corrupt, too large, or of an unknown format version.
        public static let invalidSnapshotFile = Code(name: "invalidSnapshotFile")
        /// A file could not be written (a full disk, a symlink at the path): the message says what was left.
        public static let cannotWriteFile = Code(name: "cannotWriteFile")
        public var description: String { name }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "AllocationTrackingError.\(code): \(message)" }
}

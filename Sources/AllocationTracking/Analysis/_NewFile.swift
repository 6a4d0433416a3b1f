import CAllocationTracking
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Files the library writes at a caller's path: created as the report files are (`cat_report_open_file`), never
/// replacing anything.
enum _NewFile {
    /// Creates `path` with `open(O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)` — an existing name (a
    /// file, a directory, a symlink, dangling or not) is refused, never followed or clobbered, and the file is
    /// readable by its owner only, whatever the umask — writes `bytes`, then fsyncs and closes it (`cat_fsync_close`). A file that could
    /// not be written whole is removed: no partial profile is left behind.
    ///
    /// - Throws: `.invalidArgument` naming the path and the reason (`File exists`, `No such file or directory`,
    ///   `No space left on device`, …).
    static func write(_ bytes: Data, to path: String, what: String) throws {
        func failure(_ why: Int32) -> AllocationTrackingError {
            let reason = String(cString: strerror(why))
            let hint = why == EEXIST ? " (an existing file is never replaced: choose a new name)" : ""
            return AllocationTrackingError(.invalidArgument, "cannot write the \(what) to \(path): \(reason)\(hint)")
        }
        guard !path.isEmpty else { throw failure(ENOENT) }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw failure(errno) }
        let error: Int32? = bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 && errno == EINTR { continue }
                if n < 0 { return errno }
                if n == 0 { return EIO }
                offset += n
            }
            return nil
        }
        cat_fsync_close(fd)
        if let error {
            unlink(path)
            throw failure(error)
        }
    }
}

import CAllocationTracking
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The files the library writes, in one place: created 0600 with `O_CREAT|O_EXCL|O_NOFOLLOW` (never clobbering a
/// file or following a planted symlink), written with `write(2)`, fsync'd, and never left behind empty, half
/// written or under a temporary name when writing fails. (Foundation's atomic `Data.write` leaves a
/// `.dat.nosync…` file, mode 0644, when it fails midway, and replaces a symlink at its name.)
enum _ReportFile {
    /// What writing a file came to.
    struct Outcome {
        var path: String
        /// 0: every byte reached the file and fsync succeeded; else the errno.
        var error: Int32 = 0
        var written = 0
        var total = 0
        /// The file could not be written completely and was removed.
        var removed = false

        var succeeded: Bool { error == 0 }

        /// `could not write <what> <path>: No space left on device (errno 28) after 0 of 1234 bytes; removed`.
        func problem(_ what: String, removedBecause: String = "") -> String {
            "could not write \(what) \(path): \(_ReportFile.describe(error)) after \(written) of \(total) bytes; "
                + (removed ? "the file is removed" + removedBecause : "the incomplete file is kept: it is the only copy")
        }
    }

    /// `No space left on device (errno 28)`.
    static func describe(_ error: Int32) -> String {
        let text = cat_errno_text(error).map { String(cString: $0) } ?? String(cString: strerror(error))
        return "\(text) (errno \(error))"
    }

    /// Writes every byte to `fd` (EINTR retried); returns the bytes written and 0, or the errno that stopped it.
    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> (written: Int, error: Int32) {
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n > 0 {
                offset += n
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                return (offset, n < 0 ? errno : EIO)
            }
        }
        return (offset, 0)
    }

    /// Writes `text` to standard error; whether all of it got there.
    @discardableResult
    static func writeStandardError(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { writeAll(2, UnsafeRawBufferPointer($0)).error == 0 }
    }

    /// Writes `bytes` to the new file `fd` (from `cat_report_open_file` / `cat_report_open_companion`) named
    /// `path`, fsyncs and closes it. A file that did not take everything is removed — unless `keepPartial` and it
    /// holds part of it (a text report whose only copy it is).
    static func finish(_ fd: Int32, path: String, bytes: UnsafeRawBufferPointer, keepPartial: Bool) -> Outcome {
        var outcome = Outcome(path: path, total: bytes.count)
        (outcome.written, outcome.error) = writeAll(fd, bytes)
        let closed = cat_report_close_file(fd)
        if outcome.error == 0 && closed < 0 { outcome.error = -closed }
        if outcome.error != 0 && !(keepPartial && outcome.written > 0) {
            unlink(path)
            outcome.removed = true
        }
        return outcome
    }

    /// The path `cat_report_open_*` wrote into `buffer`.
    static func path(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Writes `bytes` as the JSON companion of the report file `textPath` (`<stem>.json`, or the next free name):
    /// created like the text file, removed when it cannot be written completely (a partial JSON file does not
    /// load). Returns the outcome; its `path` is "" when no file could be created (then `error` says why).
    static func writeCompanion(of textPath: String, _ bytes: UnsafeRawBufferPointer) -> Outcome {
        var buffer = [CChar](repeating: 0, count: 4200)
        let fd = cat_report_open_companion(textPath, ".json", &buffer, buffer.count)
        guard fd >= 0 else { return Outcome(path: path(buffer), error: -fd, total: bytes.count) }
        return finish(fd, path: path(buffer), bytes: bytes, keepPartial: false)
    }

    /// Replaces (or creates) the file at the caller's explicit `path` with `bytes`, atomically: the bytes go to an
    /// unnamed file in the same directory (`O_TMPFILE`), fsync'd, which is then linked under a temporary name and
    /// renamed over `path` — so a reader sees the old file or the new one, and a process killed midway leaves
    /// nothing (at worst, between the link and the rename, one `.<name>.tmp-…` file). Where `O_TMPFILE` is not
    /// supported the temporary name is created at once (`O_CREAT|O_EXCL|O_NOFOLLOW`) and removed on any failure.
    /// The new file is 0600. Never writes through a symlink: a symlink at `path` is refused (an error), and a
    /// rename replaces a name, never a link's target.
    static func replace(atPath path: String, with bytes: UnsafeRawBufferPointer) throws {
        func failure(_ why: String) -> AllocationTrackingError {
            AllocationTrackingError(.cannotWriteFile, "cannot write \(path): \(why)")
        }
        var status = stat()
        if lstat(path, &status) == 0 {
            switch status.st_mode & S_IFMT {
            case S_IFLNK: throw failure("it is a symbolic link; not written through it (write to its target's path)")
            case S_IFDIR: throw failure("it is a directory")
            default: break
            }
        } else if errno != ENOENT {
            throw failure(describe(errno))
        }
        let slash = path.utf8.lastIndex(of: UInt8(ascii: "/"))
        let directory = slash.map { $0 == path.utf8.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.utf8.index(after: $0)...]) } ?? path
        var attempt = 0
        func temporaryName() -> String {
            attempt += 1
            return (directory == "/" ? "" : directory) + "/.\(name).tmp-\(getpid())-\(attempt)-\(UInt32.random(in: 0...UInt32.max))"
        }

        // An unnamed file first: nothing to clean up if the process dies while writing.
        var temporary: String?
        let unnamed = cat_open_unnamed_file(directory)
        if unnamed >= 0 {
            let (written, error) = writeAll(unnamed, bytes)
            if error != 0 {
                close(unnamed)
                throw failure("\(describe(error)) after \(written) of \(bytes.count) bytes; the file is unchanged")
            }
            if fsync(unnamed) != 0 && errno != EINVAL && errno != EROFS {
                let error = errno
                close(unnamed)
                throw failure("\(describe(error)) (fsync); the file is unchanged")
            }
            for _ in 0..<10 {
                let candidate = temporaryName()
                let linked = cat_link_unnamed_file(unnamed, candidate)
                if linked == 0 { temporary = candidate; break }
                if linked != -EEXIST { break }  // no /proc: a named temporary file below
            }
            close(unnamed)
        } else if unnamed != -EOPNOTSUPP && unnamed != -EISDIR && unnamed != -EINVAL {
            throw failure(describe(-unnamed))
        }
        if temporary == nil {
            var fd: Int32 = -1
            var candidate = ""
            for _ in 0..<10 {
                candidate = temporaryName()
                fd = open(candidate, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                if fd >= 0 || errno != EEXIST { break }
            }
            guard fd >= 0 else { throw failure(describe(errno)) }
            let outcome = finish(fd, path: candidate, bytes: bytes, keepPartial: false)
            guard outcome.succeeded else {
                throw failure("\(describe(outcome.error)) after \(outcome.written) of \(bytes.count) bytes; "
                              + "the file is unchanged")
            }
            temporary = candidate
        }
        guard rename(temporary!, path) == 0 else {
            let error = errno
            unlink(temporary!)
            throw failure("\(describe(error)) (rename); the file is unchanged")
        }
        // The rename itself durable, as the data is.
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            fsync(directoryFD)
            close(directoryFD)
        }
    }
}

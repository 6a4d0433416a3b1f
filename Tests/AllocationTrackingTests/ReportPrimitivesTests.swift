import CAllocationTracking
import Foundation
import Testing

extension TrackerTests {
    /// The allocation-free C primitives behind the top-allocators report (cat_report.h): number formatting, the
    /// two-fd text writer, the report file's creation, cgroup detection on fake trees, and the limit trigger.
    /// None of these tests starts the tracker.
    @Suite struct ReportPrimitives {
        // MARK: - Formatting

        /// The text a buffer-only writer (no fds) holds after `body`.
        static func formatted(_ body: (UnsafeMutablePointer<cat_text_writer>) -> Void) -> String {
            let writer = UnsafeMutablePointer<cat_text_writer>.allocate(capacity: 1)
            defer { writer.deallocate() }
            cat_tw_init(writer, -1, -1)
            body(writer)
            let offset = MemoryLayout<cat_text_writer>.offset(of: \.buffer)!
            let bytes = UnsafeRawBufferPointer(start: UnsafeRawPointer(writer) + offset, count: writer.pointee.used)
            return String(decoding: bytes, as: UTF8.self)
        }

        /// Values from CPython's tracemalloc `_format_size(size, sign)` (exact ties round to even:
        /// 10496 B = 10.25 KiB -> "10.2 KiB"; 102912 B = 100.5 KiB -> "100 KiB").
        static let sizeTable: [(Int64, Bool, String)] = [
            (0, false, "0 B"), (0, true, "+0 B"), (1023, false, "1023 B"), (1536, false, "1536 B"),
            (1536, true, "+1536 B"), (-1536, true, "-1536 B"), (5000, true, "+5000 B"), (10239, false, "10239 B"),
            (10240, false, "10.0 KiB"), (10240, true, "+10.0 KiB"), (-10240, true, "-10.0 KiB"),
            (-10240, false, "-10.0 KiB"), (10496, false, "10.2 KiB"), (10547, false, "10.3 KiB"),
            (102399, false, "100.0 KiB"), (102400, false, "100 KiB"), (102912, false, "100 KiB"),
            (103424, false, "101 KiB"), (10_485_759, false, "10240 KiB"), (12_345_678, true, "+11.8 MiB"),
            (-12_345_678, true, "-11.8 MiB"), (104_857_600, false, "100 MiB"), (10_737_418_240, false, "10.0 GiB"),
            (109_951_162_777_600, false, "100 TiB"), (Int64.max, false, "8388608 TiB"),
            (Int64.min, true, "-8388608 TiB"),
        ]

        @Test func sizesMatchTracemalloc() {
            for (bytes, sign, expected) in Self.sizeTable {
                let text = Self.formatted { cat_tw_size($0, bytes, sign) }
                #expect(text == expected, "cat_tw_size(\(bytes), sign: \(sign))")
            }
        }

        @Test func decimalHexAndPercent() {
            #expect(Self.formatted { cat_tw_u64($0, 0) } == "0")
            #expect(Self.formatted { cat_tw_u64($0, .max) } == "18446744073709551615")
            #expect(Self.formatted { cat_tw_i64($0, 0, true) } == "+0")
            #expect(Self.formatted { cat_tw_i64($0, 0, false) } == "0")
            #expect(Self.formatted { cat_tw_i64($0, 42, true) } == "+42")
            #expect(Self.formatted { cat_tw_i64($0, -42, true) } == "-42")
            #expect(Self.formatted { cat_tw_i64($0, .min, false) } == "-9223372036854775808")
            #expect(Self.formatted { cat_tw_hex($0, 255, 4) } == "0x00ff")
            #expect(Self.formatted { cat_tw_hex($0, 0, 0) } == "0x0")
            #expect(Self.formatted { cat_tw_hex($0, 0x7f12_3456_78ab, 1) } == "0x7f12345678ab")
            #expect(Self.formatted { cat_tw_hex($0, .max, 99) } == "0xffffffffffffffff")
            #expect(Self.formatted { cat_tw_percent($0, 123, 1000) } == "12.3%")
            #expect(Self.formatted { cat_tw_percent($0, 1, 3) } == "33.3%")
            #expect(Self.formatted { cat_tw_percent($0, 2, 3) } == "66.7%")
            #expect(Self.formatted { cat_tw_percent($0, 7, 7) } == "100.0%")
            #expect(Self.formatted { cat_tw_percent($0, 3, 2000) } == "0.2%")  // 0.15: tie to even
            #expect(Self.formatted { cat_tw_percent($0, 5, 0) } == "0.0%")
            #expect(Self.formatted { cat_tw_str($0, "a"); cat_tw_char($0, 0x62); cat_tw_str($0, nil) } == "ab(null)")
        }

        // MARK: - UTC dates

        /// `cat_format_utc(seconds, compact)` as a String.
        static func utc(_ seconds: Int64, compact: Bool = false) -> String {
            var buffer = [CChar](repeating: 0x7F, count: Int(CAT_UTC_TEXT_SIZE))
            let length = cat_format_utc(seconds, compact, &buffer)
            #expect(length < buffer.count && buffer[length] == 0, "NUL-terminated inside the buffer: \(seconds)")
            return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }

        /// The one date formatter of the reports, on instants checked with `date -u -d @N` and, for the int64
        /// extremes, with Python's proleptic ordinals shifted by 400-year cycles.
        @Test func utcDatesOnKnownInstants() {
            let table: [(Int64, String)] = [
                (0, "1970-01-01T00:00:00Z"),
                (951_782_400, "2000-02-29T00:00:00Z"),       // leap day of a century divisible by 400
                (1_709_209_496, "2024-02-29T12:24:56Z"),
                (2_147_483_647, "2038-01-19T03:14:07Z"),     // the last second of a signed 32-bit time_t
                (2_147_483_648, "2038-01-19T03:14:08Z"),
                (4_107_542_399, "2100-02-28T23:59:59Z"),     // 2100 is no leap year: March follows
                (4_107_542_400, "2100-03-01T00:00:00Z"),
                (253_402_300_800, "10000-01-01T00:00:00Z"),
                (-1, "1969-12-31T23:59:59Z"),                // floor division before 1970
                (-86_400, "1969-12-31T00:00:00Z"),
                (-62_135_596_800, "0001-01-01T00:00:00Z"),
                (-62_135_596_801, "0000-12-31T23:59:59Z"),   // year 0 (1 BC), zero-padded
                (-62_167_219_201, "-0001-12-31T23:59:59Z"),
                (.max, "292277026596-12-04T15:30:07Z"),
                (.min, "-292277022657-01-27T08:29:52Z"),
            ]
            for (seconds, expected) in table {
                #expect(Self.utc(seconds) == expected, "cat_format_utc(\(seconds))")
            }
            #expect(Self.utc(1_709_251_199, compact: true) == "20240229T235959Z")
            #expect(Self.utc(-1, compact: true) == "19691231T235959Z")
            #expect(Self.utc(.min, compact: true) == "-2922770226570127T082952Z")
        }

        /// Against glibc's gmtime_r over the range its `int` year can hold (about ±31 million years here).
        @Test func utcDatesMatchGmtime() {
            var generator = SystemRandomNumberGenerator()
            for _ in 0..<20_000 {
                let seconds = Int64.random(in: -1_000_000_000_000_000...1_000_000_000_000_000, using: &generator)
                var time = time_t(seconds)
                var parts = tm()
                guard gmtime_r(&time, &parts) != nil else { continue }
                let year = Int(parts.tm_year) + 1900
                func pad(_ value: Int, _ width: Int) -> String {
                    let digits = String(value.magnitude)
                    return (value < 0 ? "-" : "") + String(repeating: "0", count: max(0, width - digits.count)) + digits
                }
                let expected = "\(pad(year, 4))-\(pad(Int(parts.tm_mon) + 1, 2))-\(pad(Int(parts.tm_mday), 2))T"
                    + "\(pad(Int(parts.tm_hour), 2)):\(pad(Int(parts.tm_min), 2)):\(pad(Int(parts.tm_sec), 2))Z"
                #expect(Self.utc(seconds) == expected, "cat_format_utc(\(seconds))")
                if Self.utc(seconds) != expected { break }
            }
        }

        // MARK: - Writer and report file

        /// A fresh directory under the temporary directory, removed by the caller.
        static func makeDirectory() throws -> String {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("cat-report-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
            return path
        }

        /// More than a buffer's worth of text reaches both fds in order; an fd that fails is remembered and skipped
        /// while the other keeps receiving everything.
        @Test func writerWritesToBothFds() throws {
            let directory = try Self.makeDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let first = directory + "/a", second = directory + "/b"
            let fd0 = open(first, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600), fd1 = open(second, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
            #expect(fd0 >= 0 && fd1 >= 0)
            let writer = UnsafeMutablePointer<cat_text_writer>.allocate(capacity: 1)
            defer { writer.deallocate() }
            cat_tw_init(writer, fd0, fd1)
            #expect(writer.pointee.fdCount == 2)
            var expected = ""
            for i in 0..<3000 {
                cat_tw_u64(writer, UInt64(i))
                cat_tw_char(writer, 0x0A)
                expected += "\(i)\n"
            }
            #expect(expected.utf8.count > 4096)
            #expect(cat_tw_flush(writer) == 0)
            close(fd0)
            close(fd1)
            #expect(try String(contentsOfFile: first, encoding: .utf8) == expected)
            #expect(try String(contentsOfFile: second, encoding: .utf8) == expected)

            let readOnly = open("/dev/null", O_RDONLY | O_CLOEXEC)  // write(2) fails with EBADF
            let good = open(first, O_WRONLY | O_TRUNC | O_CLOEXEC)
            defer { close(readOnly); close(good) }
            cat_tw_init(writer, readOnly, good)
            cat_tw_str(writer, "hello")
            #expect(cat_tw_flush(writer) == -1)
            #expect(writer.pointee.failed.0 == 1 && writer.pointee.failed.1 == 0)
            cat_tw_str(writer, " world")
            #expect(cat_tw_flush(writer) == -1)
            #expect(try String(contentsOfFile: first, encoding: .utf8) == "hello world")
        }

        static func openReport(_ directory: String, pid: Int32, seconds: Int64, pathSize: Int = 1024) -> (Int32, String) {
            var path = [CChar](repeating: 0, count: pathSize)
            let fd = cat_report_open_file(directory, pid, seconds, &path, path.count)
            let bytes = path.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
            return (fd, String(decoding: bytes, as: UTF8.self))
        }

        /// The name carries the pid and the UTC time (computed by hand, leap day and pre-1970 included); the file
        /// is 0600 and close-on-exec; an existing name is bumped to -1, -2, ….
        @Test func reportFileNameModeAndBumping() throws {
            let directory = try Self.makeDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let (fd, path) = Self.openReport(directory, pid: 1234, seconds: 1_709_251_199)
            #expect(fd >= 0)
            #expect(path == directory + "/alloc-report-1234-20240229T235959Z.txt")
            var status = stat()
            #expect(fstat(fd, &status) == 0)
            #expect(status.st_mode & 0o777 == 0o600)
            #expect(fcntl(fd, F_GETFD) & FD_CLOEXEC != 0)
            cat_fsync_close(fd)

            let (second, secondPath) = Self.openReport(directory + "/", pid: 1234, seconds: 1_709_251_199)
            #expect(second >= 0)
            #expect(secondPath == directory + "/alloc-report-1234-20240229T235959Z-1.txt")
            cat_fsync_close(second)

            for (seconds, stamp) in [(Int64(0), "19700101T000000Z"), (-1, "19691231T235959Z"),
                                     (951_782_400, "20000229T000000Z"), (4_102_444_800, "21000101T000000Z")] {
                let (fd, path) = Self.openReport(directory, pid: 5, seconds: seconds)
                #expect(path == directory + "/alloc-report-5-\(stamp).txt")
                cat_fsync_close(fd)
            }

            // 101 names (the base and -1 … -100), then EEXIST.
            for _ in 0...100 {
                let (fd, _) = Self.openReport(directory, pid: 9, seconds: 0)
                #expect(fd >= 0)
                close(fd)
            }
            #expect(Self.openReport(directory, pid: 9, seconds: 0).0 == -EEXIST)
        }

        /// A symlink planted at the report's name (pointing at a file, or dangling) is neither followed nor
        /// replaced: the next name is used and the symlink's target is untouched or not created.
        @Test func plantedSymlinkIsNotFollowed() throws {
            let directory = try Self.makeDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let target = directory + "/target", missing = directory + "/missing"
            try "keep".write(toFile: target, atomically: false, encoding: .utf8)
            let base = directory + "/alloc-report-7-20240229T235959Z"
            #expect(symlink(target, base + ".txt") == 0)
            #expect(symlink(missing, base + "-1.txt") == 0)

            let (fd, path) = Self.openReport(directory, pid: 7, seconds: 1_709_251_199)
            #expect(fd >= 0)
            #expect(path == base + "-2.txt")
            #expect(write(fd, "report", 6) == 6)
            cat_fsync_close(fd)

            #expect(try String(contentsOfFile: target, encoding: .utf8) == "keep")
            #expect(!FileManager.default.fileExists(atPath: missing))
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: base + ".txt") == target)
            #expect(try String(contentsOfFile: path, encoding: .utf8) == "report")
        }

        @Test func reportFileErrorsAreNegativeErrno() throws {
            let directory = try Self.makeDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            #expect(Self.openReport(directory + "/does-not-exist", pid: 1, seconds: 0).0 == -ENOENT)
            try "x".write(toFile: directory + "/file", atomically: false, encoding: .utf8)
            #expect(Self.openReport(directory + "/file", pid: 1, seconds: 0).0 == -ENOTDIR)
            #expect(Self.openReport("", pid: 1, seconds: 0).0 == -EINVAL)
            #expect(Self.openReport(directory, pid: 1, seconds: 0, pathSize: 16).0 == -ENAMETOOLONG)
            // Root ignores directory permissions.
            if geteuid() != 0 {
                try FileManager.default.createDirectory(atPath: directory + "/readonly", withIntermediateDirectories: false,
                                                        attributes: [.posixPermissions: 0o500])
                #expect(Self.openReport(directory + "/readonly", pid: 1, seconds: 0).0 == -EACCES)
            }
        }

        // MARK: - Process memory and cgroups

        @Test func processMemoryOnThisMachine() {
            cat_process_memory_init()
            #expect(cat_process_rss_bytes() > 1 << 20)
            var score: Int32 = -1, adjustment: Int32 = -1
            #expect(cat_read_oom_score(&score, &adjustment) == 0)
            #expect(score >= 0 && (-1000...1000).contains(adjustment))
            // Whatever this machine has, a detected cgroup can be read.
            var cgroup = cat_cgroup()
            if cat_cgroup_detect(nil, nil, &cgroup) == 0 {
                var usage: UInt64 = 0, limit: UInt64 = 0
                #expect(cat_cgroup_read(&cgroup, &usage, &limit) == 0)
                #expect(usage > 0)
            }
        }

        /// A fake /proc/self/cgroup and cgroup mount under a temporary directory.
        struct FakeCgroup {
            let root: String
            var proc: String { root + "/proc-self-cgroup" }
            var mount: String { root + "/sys" }

            init() throws { root = try ReportPrimitives.makeDirectory() }

            func file(_ path: String, _ text: String) throws {
                let url = URL(fileURLWithPath: root + path)
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try text.write(to: url, atomically: false, encoding: .utf8)
            }

            func detect() -> (Int32, cat_cgroup) {
                var cgroup = cat_cgroup()
                let result = cat_cgroup_detect(proc, mount, &cgroup)
                return (result, cgroup)
            }

            func remove() { try? FileManager.default.removeItem(atPath: root) }
        }

        static func usagePath(_ cgroup: cat_cgroup) -> String {
            withUnsafeBytes(of: cgroup.usagePath) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        }

        static func limitPath(_ cgroup: cat_cgroup) -> String {
            withUnsafeBytes(of: cgroup.limitPath) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        }

        struct Reading: Equatable {
            var result: Int32
            var usage: UInt64 = 0
            var limit: UInt64 = 0
        }

        static func read(_ cgroup: cat_cgroup) -> Reading {
            var cgroup = cgroup, usage: UInt64 = 0, limit: UInt64 = 0
            let result = cat_cgroup_read(&cgroup, &usage, &limit)
            return Reading(result: result, usage: usage, limit: limit)
        }

        @Test func cgroupV2() throws {
            let fake = try FakeCgroup()
            defer { fake.remove() }
            try fake.file("/proc-self-cgroup", "0::/kubepods/pod1\n")
            try fake.file("/sys/kubepods/pod1/memory.current", "12345\n")
            try fake.file("/sys/kubepods/pod1/memory.max", "max\n")
            var (result, cgroup) = fake.detect()
            #expect(result == 0 && cgroup.version == 2)
            #expect(Self.usagePath(cgroup) == fake.mount + "/kubepods/pod1/memory.current")
            #expect(Self.limitPath(cgroup) == fake.mount + "/kubepods/pod1/memory.max")
            #expect(Self.read(cgroup) == Reading(result: 0, usage: 12345, limit: 0))  // "max": no limit

            try fake.file("/sys/kubepods/pod1/memory.max", "268435456\n")
            #expect(Self.read(cgroup) == Reading(result: 0, usage: 12345, limit: 268_435_456))
            try fake.file("/sys/kubepods/pod1/memory.max", "garbage\n")
            #expect(Self.read(cgroup).result == -1)

            // Inside a cgroup namespace the path in /proc/self/cgroup is not under the mount: the mount's root.
            try fake.file("/proc-self-cgroup", "0::/not/visible/here\n")
            try fake.file("/sys/memory.current", "99\n")
            try fake.file("/sys/memory.max", "1000\n")
            (result, cgroup) = fake.detect()
            #expect(result == 0 && cgroup.version == 2)
            #expect(Self.usagePath(cgroup) == fake.mount + "/memory.current")
            #expect(Self.read(cgroup) == Reading(result: 0, usage: 99, limit: 1000))
        }

        /// A limit set on a parent group (a pod, a systemd slice) applies to the parent's usage: the group
        /// closest to its limit gives the reading.
        @Test func cgroupAncestorLimits() throws {
            let fake = try FakeCgroup()
            defer { fake.remove() }
            try fake.file("/proc-self-cgroup", "0::/kubepods/pod1/ctr\n")
            try fake.file("/sys/kubepods/pod1/ctr/memory.current", "100\n")
            try fake.file("/sys/kubepods/pod1/ctr/memory.max", "max\n")
            try fake.file("/sys/kubepods/pod1/memory.current", "900\n")
            try fake.file("/sys/kubepods/pod1/memory.max", "1000\n")
            try fake.file("/sys/kubepods/memory.current", "5000\n")
            try fake.file("/sys/kubepods/memory.max", "max\n")
            let (result, cgroup) = fake.detect()
            #expect(result == 0 && cgroup.version == 2)
            #expect(Self.usagePath(cgroup) == fake.mount + "/kubepods/pod1/ctr/memory.current")
            #expect(Self.read(cgroup) == Reading(result: 0, usage: 900, limit: 1000))  // only the pod has a limit
            try fake.file("/sys/kubepods/pod1/ctr/memory.max", "200\n")
            #expect(Self.read(cgroup) == Reading(result: 0, usage: 900, limit: 1000))  // 90 % beats 50 %
            try fake.file("/sys/kubepods/pod1/ctr/memory.current", "190\n")
            #expect(Self.read(cgroup) == Reading(result: 0, usage: 190, limit: 200))   // 95 % beats 90 %
            try fake.file("/sys/kubepods/memory.max", "5100\n")
            #expect(Self.read(cgroup) == Reading(result: 0, usage: 5000, limit: 5100))  // 98 % two levels up
            try fake.file("/sys/kubepods/memory.max", "garbage\n")                    // unreadable: skipped
            #expect(Self.read(cgroup) == Reading(result: 0, usage: 190, limit: 200))

            // v1: the same walk over memory.limit_in_bytes (LONG_MAX rounded to a page: no limit).
            try fake.file("/proc-self-cgroup", "4:memory:/docker/abc\n")
            try fake.file("/sys/memory/docker/abc/memory.usage_in_bytes", "10\n")
            try fake.file("/sys/memory/docker/abc/memory.limit_in_bytes", "9223372036854771712\n")
            try fake.file("/sys/memory/docker/memory.usage_in_bytes", "700\n")
            try fake.file("/sys/memory/docker/memory.limit_in_bytes", "1000\n")
            try fake.file("/sys/memory/memory.usage_in_bytes", "9000\n")
            try fake.file("/sys/memory/memory.limit_in_bytes", "9223372036854771712\n")
            let (resultV1, cgroupV1) = fake.detect()
            #expect(resultV1 == 0 && cgroupV1.version == 1)
            #expect(Self.read(cgroupV1) == Reading(result: 0, usage: 700, limit: 1000))
        }

        @Test func cgroupV1() throws {
            let fake = try FakeCgroup()
            defer { fake.remove() }
            // The memory controller co-mounted in a list; the v2 line of a hybrid host has no memory files.
            try fake.file("/proc-self-cgroup", "12:cpu,cpuacct:/x\n4:blkio,memory,pids:/docker/abc\n0::/\n")
            try fake.file("/sys/memory/docker/abc/memory.usage_in_bytes", "777\n")
            try fake.file("/sys/memory/docker/abc/memory.limit_in_bytes", "9223372036854771712\n")
            var (result, cgroup) = fake.detect()
            #expect(result == 0 && cgroup.version == 1)
            #expect(Self.usagePath(cgroup) == fake.mount + "/memory/docker/abc/memory.usage_in_bytes")
            #expect(Self.limitPath(cgroup) == fake.mount + "/memory/docker/abc/memory.limit_in_bytes")
            #expect(Self.read(cgroup) == Reading(result: 0, usage: 777, limit: 0))  // page-rounded LONG_MAX: no limit

            try fake.file("/sys/memory/docker/abc/memory.limit_in_bytes", "67108864\n")
            #expect(Self.read(cgroup) == Reading(result: 0, usage: 777, limit: 67_108_864))

            // The cgroup's directory is not under the mount (a container): the mount's root.
            try fake.file("/proc-self-cgroup", "4:memory:/docker/gone\n")
            try fake.file("/sys/memory/memory.usage_in_bytes", "5\n")
            try fake.file("/sys/memory/memory.limit_in_bytes", "4096\n")
            (result, cgroup) = fake.detect()
            #expect(result == 0 && cgroup.version == 1)
            #expect(Self.usagePath(cgroup) == fake.mount + "/memory/memory.usage_in_bytes")
            #expect(Self.read(cgroup) == Reading(result: 0, usage: 5, limit: 4096))

            // "memoryx" is not "memory".
            try fake.file("/proc-self-cgroup", "4:memoryx:/a\n3:xmemory:/a\n")
            (result, cgroup) = fake.detect()
            #expect(result == -1 && cgroup.version == 0)
        }

        @Test func cgroupPrefersV2WhenItsFilesExist() throws {
            let fake = try FakeCgroup()
            defer { fake.remove() }
            try fake.file("/proc-self-cgroup", "4:memory:/a\n0::/a\n")
            try fake.file("/sys/memory/a/memory.usage_in_bytes", "1\n")
            try fake.file("/sys/memory/a/memory.limit_in_bytes", "2\n")
            var (result, cgroup) = fake.detect()
            #expect(result == 0 && cgroup.version == 1)
            try fake.file("/sys/a/memory.current", "3\n")
            try fake.file("/sys/a/memory.max", "max\n")
            (result, cgroup) = fake.detect()
            #expect(result == 0 && cgroup.version == 2)
            #expect(Self.read(cgroup) == Reading(result: 0, usage: 3, limit: 0))
        }

        @Test func cgroupNothingFound() throws {
            let fake = try FakeCgroup()
            defer { fake.remove() }
            try fake.file("/proc-self-cgroup", "0::/\n")
            try fake.file("/sys/unrelated", "")
            let (result, cgroup) = fake.detect()
            #expect(result == -1 && cgroup.version == 0)
            #expect(Self.read(cgroup).result == -1)
        }

        // MARK: - Limit trigger

        @Test func triggerFiresOncePerCrossing() {
            var trigger = cat_limit_trigger()
            cat_trigger_init(&trigger, 1000, 100, 0)  // re-arms below 900
            #expect(!cat_trigger_check(&trigger, 999, 0))
            #expect(cat_trigger_check(&trigger, 1000, 1))
            #expect(!cat_trigger_check(&trigger, 5000, 2))  // still above: no refire
            #expect(!cat_trigger_check(&trigger, 950, 3))   // inside the hysteresis band: stays disarmed
            #expect(!cat_trigger_check(&trigger, 1000, 4))
            #expect(!cat_trigger_check(&trigger, 899, 5))   // re-arms
            #expect(cat_trigger_check(&trigger, 1001, 6))
            #expect(trigger.fireCount == 2 && trigger.lastFiredNs == 6)

            cat_trigger_init(&trigger, 0, 0, 0)  // inactive
            #expect(!cat_trigger_check(&trigger, .max, 0))
            cat_trigger_init(&trigger, 100, 0, 0)  // no hysteresis: re-arms just below the limit
            #expect(cat_trigger_check(&trigger, 100, 0))
            #expect(!cat_trigger_check(&trigger, 99, 1))
            #expect(cat_trigger_check(&trigger, 100, 2))
            cat_trigger_init(&trigger, 100, 100, 0)  // hysteresis >= limit: never re-arms
            #expect(cat_trigger_check(&trigger, 100, 0))
            #expect(!cat_trigger_check(&trigger, 0, 1))
            #expect(!cat_trigger_check(&trigger, 100, 2))
        }

        /// A crossing within minIntervalNs of the last fire is skipped (not deferred): the trigger stays disarmed
        /// until usage falls below rearmBelow again.
        @Test func triggerRespectsMinimumInterval() {
            var trigger = cat_limit_trigger()
            cat_trigger_init(&trigger, 1000, 100, 50)
            #expect(trigger.lastFiredNs == UInt64.max)  // CAT_TRIGGER_NEVER
            #expect(cat_trigger_check(&trigger, 1000, 10))
            #expect(!cat_trigger_check(&trigger, 0, 20))
            #expect(!cat_trigger_check(&trigger, 1000, 30))  // 20 ns after the fire: skipped, disarmed
            #expect(!cat_trigger_check(&trigger, 1000, 100))  // interval over, but no new crossing
            #expect(!cat_trigger_check(&trigger, 0, 101))
            #expect(cat_trigger_check(&trigger, 1000, 102))
            #expect(!cat_trigger_check(&trigger, 0, 103))
            #expect(!cat_trigger_check(&trigger, 1000, 5))  // a clock reading older than the last fire
            #expect(trigger.fireCount == 2)
        }

        final class SharedTrigger: @unchecked Sendable {
            let trigger = UnsafeMutablePointer<cat_limit_trigger>.allocate(capacity: 1)
            let counters = UnsafeMutablePointer<UInt64>.allocate(capacity: 2)  // [ready, wins]
            init() { counters.initialize(repeating: 0, count: 2) }
            deinit {
                trigger.deallocate()
                counters.deallocate()
            }
        }

        /// 8 threads released together check the same crossing 100 000 times each: exactly one gets true.
        @Test func oneWinnerAmongEightThreads() {
            for round in 0..<20 {
                let shared = SharedTrigger()
                cat_trigger_init(shared.trigger, 1 << 30, 1 << 20, 0)
                onThreads(8) { _ in
                    cat_add_relaxed(shared.counters, 1)
                    while cat_load_acquire(shared.counters) < 8 { cat_cpu_relax() }
                    for i in 0..<100_000 where cat_trigger_check(shared.trigger, 1 << 31, UInt64(i)) {
                        cat_add_relaxed(shared.counters + 1, 1)
                    }
                }
                #expect(shared.counters[1] == 1, "round \(round)")
                #expect(shared.trigger.pointee.fireCount == 1)
            }
        }

        @Test func clocks() {
            let first = cat_monotonic_ns(), second = cat_monotonic_ns()
            #expect(first > 0 && second >= first)
            #expect(abs(cat_unix_seconds() - Int64(Date().timeIntervalSince1970)) <= 2)
        }
    }
}

// cat_report.h: the allocation-free primitives behind the top-allocators report ("dump a report before the
// process dies").
//
// The report is written when malloc has just failed or a memory limit is about to kill the process, so nothing
// here may allocate, take a lock, or use stdio: every function below uses only open/read/write/close/fsync/
// clock_gettime/poll and plain C on caller-provided or stack memory. Each function states its contract:
// - async-signal-safe: callable from a signal handler, from inside malloc, and after fork() in the child;
// - thread-safety: whether concurrent calls on the same object are allowed.
//
// - report_writer.c: a fixed-buffer text writer to up to two fds (stderr and the report file), hand-written
//   number formatting (decimal, hex, tracemalloc-style sizes, percentages), the one UTC date formatter (every
//   report, C or Swift, prints its time with it) and the report file's creation.
// - process_memory.c: process RSS, OOM score, and the container's cgroup (v1 or v2) memory usage and limit.
// - limit_trigger.c: the once-per-crossing decision for a soft limit (lock-free), and the clocks.
#ifndef CAT_REPORT_H
#define CAT_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#pragma clang assume_nonnull begin

// MARK: - Text writer (report_writer.c)
//
// Text accumulates in `buffer`; when it is full (and on cat_tw_flush) it is written to every fd, in order. An fd
// whose write fails (any error but EINTR; EAGAIN after waiting for it in poll) is marked in `failed`, with the
// error in `error`, and skipped afterwards, so a closed stderr does not stop the file copy. `written` counts the
// bytes each fd took (a short write that then fails, as on a full disk, counts what it took), `total` the bytes
// flushed: a destination holds everything exactly when `written == total`. A writer with no fds only fills the
// buffer (and discards it when full): the tests read the formatted text from `buffer[0..<used]`.
//
// Not thread-safe: one writer per report, on the caller's stack or in static memory. Every function is
// async-signal-safe and never allocates. Writing to a pipe whose reader is gone raises SIGPIPE as write(2)
// does; the caller decides whether that signal is ignored.
enum { CAT_TW_BUFFER_SIZE = 4096 };

typedef struct {
    char buffer[CAT_TW_BUFFER_SIZE];
    size_t used;
    int fds[2];     // fds[0..<fdCount] are the destinations, in order
    int fdCount;
    int failed[2];  // 1 once the fd at the same index failed
    int error[2];   // the errno of that failure (0: none)
    uint64_t written[2];  // bytes the fd at the same index took
    uint64_t total;       // bytes flushed so far (taken by every destination that did not fail)
} cat_text_writer;

/// Prepares `w` to write to `fd0` and `fd1`; a negative fd means "none" (both negative: buffer only).
void cat_tw_init(cat_text_writer *w, int fd0, int fd1);
/// Appends `length` bytes (any length: the buffer is flushed as it fills).
void cat_tw_bytes(cat_text_writer *w, const char *bytes, size_t length);
/// Appends a NUL-terminated string; NULL appends "(null)".
void cat_tw_str(cat_text_writer *w, const char *_Nullable text);
void cat_tw_char(cat_text_writer *w, char c);
/// Decimal: "0", "18446744073709551615".
void cat_tw_u64(cat_text_writer *w, uint64_t value);
/// Signed decimal; with `plusSign`, zero and positive values get a '+' ("+0", "+12", "-12").
void cat_tw_i64(cat_text_writer *w, int64_t value, bool plusSign);
/// "0x" then lowercase hex digits, zero-padded to at least `minDigits` (capped at 16): (255, 4) -> "0x00ff".
void cat_tw_hex(cat_text_writer *w, uint64_t value, int minDigits);
/// A byte count exactly as CPython's tracemalloc `_format_size(size, sign)` prints it: units B, KiB, MiB, GiB,
/// TiB; below 100 of a unit other than B one decimal, below 10 * 1024 of a unit (or in TiB) no decimals,
/// otherwise the next unit. Rounding is Python's (correctly rounded, exact ties to even: 100.5 KiB ->
/// "100 KiB"), computed exactly with integers. With `sign`, zero and positive values get a '+'.
/// Examples: 0 -> "0 B", 1023 -> "1023 B", 10239 -> "10239 B", 10240 -> "10.0 KiB", 102400 -> "100 KiB",
/// 104857600 -> "100 MiB", (5000, sign) -> "+5000 B", (-10240, sign) -> "-10.0 KiB".
void cat_tw_size(cat_text_writer *w, int64_t bytes, bool sign);
/// 100 * part / whole with one decimal and a '%' ("12.3%"), rounded exactly (ties to even, as
/// printf("%.1f%%") would for an exact value); whole == 0 prints "0.0%".
void cat_tw_percent(cat_text_writer *w, uint64_t part, uint64_t whole);
/// Writes the buffered text to every fd that has not failed, retrying partial writes and EINTR, and empties the
/// buffer. Returns 0 when every destination (if any) has taken everything written so far, -1 when one failed
/// (now or before).
int cat_tw_flush(cat_text_writer *w);

// MARK: - UTC time (report_writer.c)

/// Room for any text cat_format_utc writes, NUL included (the longest, for INT64_MIN, is 29 characters).
enum { CAT_UTC_TEXT_SIZE = 32 };

/// Writes `unixSeconds` as a UTC time into `out` (at least CAT_UTC_TEXT_SIZE bytes), NUL-terminated, and
/// returns its length without the NUL. `compact == false`: ISO 8601 extended, `2026-11-21T19:40:00Z` (the
/// reports' time lines); `compact == true`: basic, `20261121T194000Z` (the report files' names). Proleptic
/// Gregorian calendar with a year 0 (Howard Hinnant's civil_from_days): the year has at least four digits, a
/// '-' before it when negative (-1 is 1 BC: `-0001-12-31T23:59:59Z`), and any int64_t is valid (floor division:
/// -1 is `1969-12-31T23:59:59Z`). No allocation, no lock (gmtime_r takes the timezone lock), no locale, only the
/// caller's fixed buffer: async-signal-safe, thread-safe, callable inside malloc.
size_t cat_format_utc(int64_t unixSeconds, bool compact, char *out);

// MARK: - Report file (report_writer.c)

/// Creates `<directory>/alloc-report-<pid>-<YYYYMMDDTHHMMSSZ>.txt` (UTC, from `unixSeconds`) with
/// open(O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600). When the name exists (a file, a directory
/// or a symlink, dangling or not: O_EXCL never follows one), tries `...Z-1.txt`, `...Z-2.txt`, … up to
/// `...Z-100.txt`: an existing file is never clobbered and a planted symlink never followed.
/// Returns the fd and writes the path (NUL-terminated) into `pathOut`; or returns -errno (-EEXIST when all 101
/// names exist, -ENAMETOOLONG when the path does not fit in `pathOut` or PATH_MAX, -EINVAL for an empty
/// directory) with `pathOut` holding the last name tried ("" if none). Async-signal-safe, never allocates.
int cat_report_open_file(const char *directory, int pid, int64_t unixSeconds, char *pathOut, size_t pathOutSize);
/// Creates the companion of the report file `textPath` (its JSON snapshot): `textPath` without its `.txt`, then
/// `extension` (".json"), with the same flags and mode as cat_report_open_file; when that name exists (a file, a
/// planted symlink…), `<stem>-1<extension>` … `<stem>-100<extension>`. Returns the fd and the path in `pathOut`,
/// or -errno as cat_report_open_file does. Async-signal-safe, never allocates.
int cat_report_open_companion(const char *textPath, const char *extension, char *pathOut, size_t pathOutSize);
/// fsync(fd) then close(fd), ignoring errors (close is not retried: Linux releases the fd even on EINTR).
/// Negative fds are ignored. Async-signal-safe.
void cat_fsync_close(int fd);
/// fsync(fd) then close(fd), saying whether the data reached the file: 0, or -errno of the fsync (a filesystem
/// that reports a full disk or a quota only at fsync: NFS, some FUSE mounts) or of the close. EINVAL and EROFS
/// from fsync (a file that cannot be synced) are not failures. A negative fd returns 0. Async-signal-safe.
int cat_report_close_file(int fd);
/// Opens a new unnamed regular file in `directory` (O_TMPFILE | O_WRONLY | O_CLOEXEC, mode 0600): it has no name,
/// so nothing is left behind if the process dies before cat_link_unnamed_file. Returns the fd or -errno
/// (-EOPNOTSUPP, -EISDIR or -EINVAL where the filesystem or kernel lacks O_TMPFILE). Outside malloc.
int cat_open_unnamed_file(const char *directory);
/// Names the unnamed file `fd` `path` (which must not exist: never replaces anything), through
/// /proc/self/fd/<fd> (linkat with AT_SYMLINK_FOLLOW, which needs no privilege). Returns 0 or -errno. Outside
/// malloc.
int cat_link_unnamed_file(int fd, const char *path);
/// A short English description of the errno values a report file's creation or writing meets ("No space left on
/// device" for ENOSPC…), as strerror would give it, without its locale lock; NULL for any other value (print the
/// number). Async-signal-safe, never allocates.
const char *_Nullable cat_errno_text(int error);

// MARK: - Process memory (process_memory.c)
//
// Every function reads small /proc or cgroup files with open/read/close into stack buffers and parses them by
// hand: async-signal-safe, never allocates, thread-safe (no shared state but the cached page size).

/// Caches the page size (sysconf(_SC_PAGESIZE)). Optional: cat_process_rss_bytes falls back to getpagesize()
/// (which reads a loader variable) until it is called. Call outside signal handlers, e.g. at start.
void cat_process_memory_init(void);
/// Resident set size: the second field of /proc/self/statm times the page size; 0 when it cannot be read.
uint64_t cat_process_rss_bytes(void);
/// /proc/self/oom_score and /proc/self/oom_score_adj (-1000…1000). Returns 0, or -1 when either cannot be read
/// (the outputs are then unspecified).
int cat_read_oom_score(int *score, int *scoreAdj);

/// The files holding the memory usage and limit of the cgroup this process is charged to.
/// version: 0 none found, 1 cgroup v1 (memory.usage_in_bytes / memory.limit_in_bytes), 2 cgroup v2
/// (memory.current / memory.max). `limitPath` is "" when the cgroup has no limit file (the v2 root).
typedef struct {
    int version;
    char usagePath[512];
    char limitPath[512];
    char directory[512];     // the group's directory; its ancestors up to the mount's root are read too
    uint32_t directoryLength;
    uint32_t mountLength;    // length of the mount's root (<root> or <root>/memory) within `directory`
} cat_cgroup;

/// Finds the process's memory cgroup. `procSelfCgroupPath` (NULL: "/proc/self/cgroup") and `cgroupRoot` (NULL:
/// "/sys/fs/cgroup") are parameters so the tests can use fake trees. Candidates, first existing usage file wins:
///   v2 (a "0::<path>" line): <root><path>/memory.current, <root>/memory.current (a cgroup namespace whose
///      /proc/self/cgroup path is not visible under the mount), <root>/unified<path>/memory.current (the
///      systemd "hybrid" layout);
///   v1 (a "N:<controllers>:<path>" line whose comma-separated controllers include "memory"):
///      <root>/memory<path>/memory.usage_in_bytes, then <root>/memory/memory.usage_in_bytes.
/// v2 is preferred when both lines exist and v2's files do (on a hybrid host the v2 line exists but its
/// hierarchy has no memory controller: v1 is used). An unreadable `procSelfCgroupPath` is treated as "/" for
/// both versions. Returns 0 with `out` filled, or -1 with out->version == 0. Async-signal-safe, never
/// allocates (each candidate is probed with open/close).
int cat_cgroup_detect(const char *_Nullable procSelfCgroupPath, const char *_Nullable cgroupRoot, cat_cgroup *out);
/// Reads the cgroup's usage and limit in bytes. `*limit` is 0 for "no limit": v2 "max", a missing limit file,
/// or any value >= 1 << 62 (v1 prints LONG_MAX rounded down to a page, 9223372036854771712). The ancestors up to
/// the mount's root are read too (a limit on a pod's or a slice's group applies to that group's usage): the
/// group closest to its limit (the highest usage/limit) gives both values; with no limit anywhere, the group's
/// own usage and 0. Returns 0, or -1 when the group's own files cannot be read or parsed (unreadable ancestors
/// are skipped). Async-signal-safe, never allocates.
int cat_cgroup_read(const cat_cgroup *cgroup, uint64_t *usage, uint64_t *limit);
/// cat_cgroup_read, and the working set of the group those values come from: its usage minus its inactive file
/// cache (memory.stat: v2 "inactive_file", v1 "total_inactive_file", the hierarchy's, as usage_in_bytes is),
/// 0 when the cache exceeds the usage. It is what the kubelet and cAdvisor call the working set
/// (container_memory_working_set_bytes) and evict on: clean file pages are reclaimed before the OOM killer acts,
/// so usage overstates the pressure by the reclaimable cache. *workingSet is UINT64_MAX when memory.stat cannot
/// be read or lacks the line (then usage is all there is). Returns what cat_cgroup_read returns. Async-signal-safe,
/// never allocates (memory.stat is scanned through a stack buffer).
int cat_cgroup_read_working_set(const cat_cgroup *cgroup, uint64_t *usage, uint64_t *limit, uint64_t *workingSet);

// MARK: - Limit trigger (limit_trigger.c)
//
// Decides when a soft limit (tracked bytes, RSS, cgroup usage) should produce a report: once per crossing.
// Fields are accessed only with atomics, so any number of threads (allocating threads and a watchdog) may call
// cat_trigger_check on the same trigger concurrently. Read them with cat_load_relaxed for statistics.

/// lastFiredNs before the first fire.
#define CAT_TRIGGER_NEVER UINT64_MAX

typedef struct {
    uint64_t limit;          // 0: inactive
    uint64_t rearmBelow;     // limit - hysteresis (0 when the hysteresis is >= limit: never re-arms)
    uint64_t minIntervalNs;  // minimum time between two fires
    uint64_t armed;          // 1 while a crossing would fire
    uint64_t lastFiredNs;    // nowNs of the last fire, CAT_TRIGGER_NEVER before the first
    uint64_t fireCount;
} cat_limit_trigger;

/// Initialises the trigger, armed (limit 0: inactive, never fires). Not thread-safe: call before sharing it.
void cat_trigger_init(cat_limit_trigger *trigger, uint64_t limit, uint64_t hysteresisBytes, uint64_t minIntervalNs);
/// Returns true exactly once per crossing: when `usage >= limit` while armed. The trigger disarms whether or not
/// it fires; it fires only if at least `minIntervalNs` passed since the last fire (a crossing inside the interval
/// is skipped, not deferred) and re-arms when a later check sees `usage < rearmBelow`. Among threads checking the
/// same crossing concurrently exactly one gets true (compare-and-swap). `nowNs` is cat_monotonic_ns() or a test
/// clock; a `nowNs` older than the last fire counts as inside the interval. Lock-free, async-signal-safe.
bool cat_trigger_check(cat_limit_trigger *trigger, uint64_t usage, uint64_t nowNs);

/// clock_gettime(CLOCK_MONOTONIC) in nanoseconds. Async-signal-safe (vDSO), never allocates.
uint64_t cat_monotonic_ns(void);
/// clock_gettime(CLOCK_REALTIME) seconds since the Unix epoch. Async-signal-safe, never allocates.
int64_t cat_unix_seconds(void);

#pragma clang assume_nonnull end

#ifdef __cplusplus
}
#endif

#endif

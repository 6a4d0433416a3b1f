// cat_emergency.h: the report written when an allocation FAILS (emergency_report.c), without allocating, and
// the pre-resolved names it prints (names_arena.c).
//
// When the real allocator returns NULL for a valid request (malloc/calloc/realloc/reallocarray with a size > 0,
// posix_memalign returning ENOMEM, aligned_alloc/memalign/valloc/pvalloc returning NULL with errno ENOMEM — not
// for invalid arguments such as a bad alignment or an overflowing calloc), the interposer calls
// cat_emergency_report() before returning the NULL with errno unchanged. The report goes to stderr (unless
// configured off) and then to a new file `<directory>/alloc-report-<pid>-<UTC time>.txt` (cat_report_open_file:
// 0600, O_CREAT|O_EXCL|O_NOFOLLOW, fsync'd) — stderr first, complete, so that the copy in the container's log
// survives a fast OOM kill — and holds: the trigger (function and size), time, pid, tracked current/peak bytes,
// dropped allocations, RSS, the usage and limit of the configured cgroup, oom_score/oom_score_adj, and the top N
// sites by live bytes with count, size, share and a short traceback. A file that cannot be written completely (a
// full disk) is removed unless it is the only (partial) copy, and one stderr line says what was written.
//
// A request larger than the machine could ever satisfy — more than its physical memory plus swap (computed by
// cat_emergency_configure), or than RLIMIT_AS / RLIMIT_DATA as they are at the failure (read then: they can
// change at any time) — is a program error, not memory pressure: no report, no rate limit taken, no pause for
// the watchdog; it is counted (cat_emergency_impossible_requests) and named in one stderr line, at most one such
// line per minimum interval (at least 1 s).
//
// Nothing on that path may call malloc (the heap is exhausted, and we are inside malloc):
// - the text goes through a static cat_text_writer (a fixed 4 KiB buffer) with hand-formatted numbers, write(2);
// - the top sites are selected by a `@_noLocks` Swift function (`cat_recorder.topSites`) into static arrays (the
//   emergency reserve), under the gate's reader side (never the writer side: other threads may hold it);
// - names come from a pre-resolved arena: a background thread (the watchdog, `_EmergencyNames.refresh()`, once
//   a second) symbolicates the sites the report would print (the top CAT_EMERGENCY_MAX_SITES by live bytes)
//   while memory is plentiful and stores one short line per trace id with cat_names_put. A site that entered
//   the top since the last refresh is printed as `image+0xoffset (build id …)` from the image list recorded by
//   cat_images_capture() (cat_images.h) — no dladdr, no DWARF;
// - the calling thread is CAT_THREAD_INTERNAL (and inside the hook) while writing, so anything unexpected passes
//   straight through untracked; such a call would be counted by cat_debug_internal_allocations() (the tests
//   assert it stays 0).
// One report at a time (another thread failing meanwhile skips, counted), and at most one per minimum interval
// (default 10 s; failures inside it are counted as skipped). Every failure is timed (cat_emergency_memory_short):
// the watchdog stays off the heap for its pause after a failure (`Limits.pauseAfterAllocationFailure`), then
// writes the JSON companion and calls onReport.
#ifndef CAT_EMERGENCY_H
#define CAT_EMERGENCY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#pragma clang assume_nonnull begin

/// The most sites the report lists (`topSites` is clamped to it).
enum { CAT_EMERGENCY_MAX_SITES = 64 };

/// Configures the allocation-failure report from the tracker's configuration, as the other reports read it.
/// Call outside malloc (API lock held). `enabled == 0` turns the report off.
/// - `directory`: copied into static storage (NULL, "" or a path of 4096 bytes or more: no file).
/// - `standardError`: nonzero writes the report to stderr too (`Report.standardError`). Off, with no file, the
///   report is written nowhere (still counted, and followed up); a file that cannot be created is reported in
///   one stderr line either way.
/// - `topSites`: 0 means the default (20); clamped to CAT_EMERGENCY_MAX_SITES.
/// - `minIntervalNs`: the minimum time between two reports.
/// - `procSelfCgroup`, `cgroupRoot`: where the memory cgroup is found (`Limits.procSelfCgroup`/`cgroupRoot`;
///   NULL: the defaults), as cat_cgroup_detect takes them. Detected once here and cached: the report only reads
///   the group's files.
/// Caches the page size and the machine's memory plus swap too (the machine part of an impossible size). Not
/// async-signal-safe.
void cat_emergency_configure(int enabled, const char *_Nullable directory, int standardError, uint32_t topSites,
                             uint64_t minIntervalNs, const char *_Nullable procSelfCgroup,
                             const char *_Nullable cgroupRoot);

/// Writes the report for a failed `function(size)` (see above). Allocation-free and lock-free (it waits only
/// where every allocation may: the gate's reader side while a writer holds it). Preserves errno. Returns at once
/// when disabled, when a report is in progress on another thread, or inside the minimum interval (both counted
/// in `skipped`), or when the calling thread is the tracker's own (CAT_THREAD_INTERNAL / inside the hook). An
/// impossible size (see above) writes at most its one line and is counted in cat_emergency_impossible_requests.
void cat_emergency_report(const char *function, size_t size);

/// Statistics for the tests: reports written, failures skipped (rate limit or a report in progress).
void cat_emergency_stats(uint64_t *written, uint64_t *skipped);
/// Failed requests larger than the machine could ever satisfy (see above): not reported, not rate-limited.
uint64_t cat_emergency_impossible_requests(void);
/// The machine's physical memory plus swap as cat_emergency_configure computed it (UINT64_MAX before, or when
/// unknown): the machine part of "impossible".
uint64_t cat_emergency_machine_bytes(void);
/// True while a report is being written, or when an allocation failed less than `quietNs` before `nowNs` (the
/// watchdog passes `Limits.pauseAfterAllocationFailure`; only requests the machine could satisfy count: a failed
/// malloc(SIZE_MAX) is no sign of pressure — the same definition as the report's, above).
/// The tracker's own thread (the watchdog's name refresh) does not allocate then: in Swift an allocation that
/// fails traps, and the heap is exhausted — the process's own error path must get the memory that is left.
bool cat_emergency_memory_short(uint64_t nowNs, uint64_t quietNs);
/// A counter bumped (by 2) each time a report is written; what the watchdog compares to know a follow-up is due.
uint64_t cat_emergency_followup_sequence(void);
/// What became of the last report's file.
typedef struct {
    int32_t error;    // 0: written completely (or no file); else the errno of the creation, a write, fsync or close
    int32_t removed;  // 1: the file could not be written completely and was removed (see cat_emergency_report)
    uint64_t written; // bytes the file took
    uint64_t total;   // bytes of the report
} cat_emergency_file_outcome;

/// The last written report's file path ("" when no file could be created: stderr only), copied consistently into
/// `path` (`capacity` bytes, NUL-terminated) with what became of the file, and the sequence value they belong to.
/// Outside malloc; never blocks a report.
uint64_t cat_emergency_followup(char *path, size_t capacity, cat_emergency_file_outcome *outcome);

// MARK: - Pre-resolved names (names_arena.c: written outside malloc, read by the emergency path)

/// Maps (once; idempotent) an index of `maxTraces` per-trace offsets and an 8 MiB string arena, MAP_NORESERVE:
/// pages are touched only as names are stored. Returns 0, or -1 when the memory cannot be mapped.
int cat_names_reserve(uint64_t maxTraces);
/// Stores the name line of `traceID` (`length` bytes, cut at 1024). Single writer (API lock held), outside
/// malloc. A reader sees no name or a complete one (published with a release store). Returns 1 when stored, 0
/// when not: `length` 0, an id past the index (a later start with a larger maxTraces), or a full arena.
int cat_names_put(uint64_t traceID, const char *text, size_t length);
/// Forgets every name (after clearTraces/stop: trace ids are reused). API lock held. A report running
/// concurrently may print a site without its name (never a torn read outside the arena).
void cat_names_reset(void);
/// Incremented by every cat_names_reset: a refresh that symbolicated outside the API lock stores its names only
/// if no reset happened meanwhile.
uint64_t cat_names_generation(void);
/// Bytes of the names the process has touched: the index words up to the highest trace id named, and the arena
/// bytes used (the reservation itself is MAP_NORESERVE). Racy reads, for the tracker's memory breakdown.
uint64_t cat_names_bytes(void);
/// The stored name of `traceID`: its length, with `*text` pointing into the arena; 0 when none.
/// Async-signal-safe, allocation-free.
size_t cat_names_get(uint64_t traceID, const char *_Nullable *_Nonnull text);

#pragma clang assume_nonnull end

#ifdef __cplusplus
}
#endif

#endif

// The report written when an allocation fails, without allocating (contract: include/cat_emergency.h): its
// configuration and rate limit, the follow-up sequence lock the watchdog reads, and the report's text.
//
// Everything the report needs is prepared while memory is plentiful: the configuration and the cgroup files
// (cat_emergency_configure), the names of the sites (names_arena.c, filled by the watchdog's
// `_EmergencyNames.refresh()`), the loaded images and their build ids (loaded_images.c, cat_images_capture).
// The report itself uses static buffers only (the "emergency reserve": the text writer, the sampled values and
// top-site arrays, the path), formats numbers by hand and writes with write(2).
//
// Order of the copies: the values are sampled once, then the report is rendered twice from that sample —
// completely to stderr first, then to the file. A fast OOM kill (SIGKILL) can land at any point; the copy most
// likely to survive it is the one in the container's log, so it is the one finished first (the file is created
// before, so that the stderr copy can name it; a kill before the file is written leaves it empty).
#define _GNU_SOURCE
#include "cat_internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

// MARK: - Configuration

enum { CAT_EMERGENCY_DEFAULT_SITES = 20, CAT_EMERGENCY_PATH_MAX = 4096 };

static uint64_t g_cat_em_enabled;
static uint64_t g_cat_em_top_sites = CAT_EMERGENCY_DEFAULT_SITES;
static uint64_t g_cat_em_min_interval_ns = 10ull * 1000 * 1000 * 1000;
static int g_cat_em_standard_error = 1;
static char g_cat_em_directory[CAT_EMERGENCY_PATH_MAX];
static cat_cgroup g_cat_em_cgroup;

static uint64_t g_cat_em_busy;
static uint64_t g_cat_em_last_ns = CAT_TRIGGER_NEVER;
static uint64_t g_cat_em_written;
static uint64_t g_cat_em_skipped;
// Monotonic time of the last allocation failure seen (reported or not; CAT_TRIGGER_NEVER: none yet), counting
// only requests the machine could hold (cat_em_impossible_bound): a failed malloc(SIZE_MAX) says nothing about
// pressure.
static uint64_t g_cat_em_last_failure_ns = CAT_TRIGGER_NEVER;
// The machine's physical memory plus swap, computed by cat_emergency_configure (UINT64_MAX until then).
static uint64_t g_cat_em_machine_bytes = UINT64_MAX;
// Failed requests larger than the machine could ever satisfy (cat_em_impossible_bound), and the monotonic time of
// the last line printed about one (its own rate limit: such a request never takes the report's).
static uint64_t g_cat_em_impossible;
static uint64_t g_cat_em_impossible_line_ns = CAT_TRIGGER_NEVER;
// The last written report, for the watchdog's follow-up (cat_emergency_followup): a sequence lock. The writer
// (inside the busy flag, so one at a time) makes the sequence odd, copies the path and the file's outcome, makes
// it even again.
static uint64_t g_cat_em_followup_sequence;
static char g_cat_em_followup_path[CAT_EMERGENCY_PATH_MAX + 64];
static uint64_t g_cat_em_followup_outcome[4];  // error, removed, written, total (cat_emergency_file_outcome)
static char g_cat_em_last_path[CAT_EMERGENCY_PATH_MAX + 64];

void cat_emergency_configure(int enabled, const char *directory, int standardError, uint32_t topSites,
                             uint64_t minIntervalNs, const char *procSelfCgroup, const char *cgroupRoot) {
    cat_store_seq_cst(&g_cat_em_enabled, 0);  // no report reads the settings while they change
    while (cat_load_acquire(&g_cat_em_busy) != 0) cat_yield();
    size_t length = directory ? strlen(directory) : 0;
    if (length >= sizeof(g_cat_em_directory)) length = 0;  // does not fit: stderr only
    if (length) memcpy(g_cat_em_directory, directory, length);
    g_cat_em_directory[length] = 0;
    uint32_t sites = topSites == 0 ? CAT_EMERGENCY_DEFAULT_SITES : topSites;
    g_cat_em_top_sites = sites > CAT_EMERGENCY_MAX_SITES ? CAT_EMERGENCY_MAX_SITES : sites;
    g_cat_em_min_interval_ns = minIntervalNs;
    g_cat_em_standard_error = standardError != 0;
    // The machine part of "a request the machine could never satisfy", computed here, outside malloc (sysconf
    // and sysinfo). The address-space limits are not cached: a process (or prlimit from outside) can change them
    // at any time, so the failure path reads them (cat_em_impossible_bound).
    long pages = sysconf(_SC_PHYS_PAGES), pageSize = sysconf(_SC_PAGESIZE);
    uint64_t machine = UINT64_MAX;
    if (pages > 0 && pageSize > 0 && !__builtin_mul_overflow((uint64_t)pages, (uint64_t)pageSize, &machine)) {
        struct sysinfo info;
        uint64_t swap = 0;
        if (sysinfo(&info) == 0 && !__builtin_mul_overflow((uint64_t)info.totalswap, (uint64_t)info.mem_unit, &swap) &&
            __builtin_add_overflow(machine, swap, &machine))
            machine = UINT64_MAX;
    } else {
        machine = UINT64_MAX;
    }
    cat_store_relaxed(&g_cat_em_machine_bytes, machine);
    cat_process_memory_init();
    cat_cgroup_detect(procSelfCgroup, cgroupRoot, &g_cat_em_cgroup);  // the group the watchdog watches
    cat_store_seq_cst(&g_cat_em_enabled, enabled ? 1 : 0);
}

// After fork(), in the child: a report another thread was writing does not exist there.
void cat_emergency_reset_in_child(void) { cat_store_relaxed(&g_cat_em_busy, 0); }

void cat_emergency_stats(uint64_t *written, uint64_t *skipped) {
    *written = cat_load_relaxed(&g_cat_em_written);
    *skipped = cat_load_relaxed(&g_cat_em_skipped);
}

uint64_t cat_emergency_impossible_requests(void) { return cat_load_relaxed(&g_cat_em_impossible); }

uint64_t cat_emergency_machine_bytes(void) { return cat_load_relaxed(&g_cat_em_machine_bytes); }

// MARK: - Impossible requests

enum { CAT_EM_POSSIBLE = 0, CAT_EM_OVER_MACHINE, CAT_EM_OVER_ADDRESS_SPACE, CAT_EM_OVER_DATA };

// The one definition of a request no amount of freeing could satisfy, for both the report and the watchdog's
// pause: larger than the machine's memory plus swap (what the kernel's overcommit heuristic refuses in one
// piece), or than the address-space limit (RLIMIT_AS) or the data limit (RLIMIT_DATA, which covers private
// mappings since Linux 4.7) as they are now. Returns CAT_EM_POSSIBLE, or which bound `size` exceeds (the smallest
// one) with that bound in `*bound`. On the failure path only: getrlimit is one system call (prlimit64), no lock,
// no allocation.
static int cat_em_impossible_bound(uint64_t size, uint64_t *bound) {
    int kind = CAT_EM_OVER_MACHINE;
    uint64_t smallest = cat_load_relaxed(&g_cat_em_machine_bytes);
    struct rlimit limit;
    if (getrlimit(RLIMIT_AS, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && (uint64_t)limit.rlim_cur < smallest) {
        smallest = (uint64_t)limit.rlim_cur;
        kind = CAT_EM_OVER_ADDRESS_SPACE;
    }
    if (getrlimit(RLIMIT_DATA, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && (uint64_t)limit.rlim_cur < smallest) {
        smallest = (uint64_t)limit.rlim_cur;
        kind = CAT_EM_OVER_DATA;
    }
    *bound = smallest;
    return size > smallest ? kind : CAT_EM_POSSIBLE;
}

// A closed stderr pipe must not kill the process from inside malloc: SIGPIPE is blocked while writing and the one
// our writes raised is discarded (the standard pattern; all async-signal-safe, no allocation).
typedef struct {
    sigset_t pipeSet, previousMask, pendingBefore;
} cat_em_pipe_guard;

static void cat_em_block_sigpipe(cat_em_pipe_guard *guard) {
    sigemptyset(&guard->pipeSet);
    sigaddset(&guard->pipeSet, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &guard->pipeSet, &guard->previousMask);
    sigpending(&guard->pendingBefore);
}

static void cat_em_unblock_sigpipe(cat_em_pipe_guard *guard) {
    if (!sigismember(&guard->pendingBefore, SIGPIPE)) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&guard->pipeSet, NULL, &zero) == SIGPIPE) {}
    }
    pthread_sigmask(SIG_SETMASK, &guard->previousMask, NULL);
}

// The one line about an impossible request (its own writer: a report may be in progress on another thread).
static cat_text_writer g_cat_em_line_writer;
static uint64_t g_cat_em_line_busy;

// At most one line per minimum interval (at least a second), on stderr whatever `standardError` says (it is a
// warning about the program, like the line about a report file that cannot be created): a loop of such
// requests cannot flood the log, and the count says how many there were.
static void cat_em_impossible_line(const char *function, uint64_t size, int kind, uint64_t bound, uint64_t count) {
    uint64_t now = cat_monotonic_ns();
    uint64_t interval = g_cat_em_min_interval_ns < 1000000000ull ? 1000000000ull : g_cat_em_min_interval_ns;
    uint64_t last = cat_load_relaxed(&g_cat_em_impossible_line_ns);
    if (last != CAT_TRIGGER_NEVER && (now < last || now - last < interval)) return;
    if (!cat_cas_acq_rel(&g_cat_em_impossible_line_ns, &last, now)) return;  // another thread prints it
    uint64_t idle = 0;
    if (!cat_cas_acq_rel(&g_cat_em_line_busy, &idle, 1)) return;
    cat_text_writer *w = &g_cat_em_line_writer;
    cat_tw_init(w, 2, -1);
    cat_tw_str(w, "swift-allocation-tracking: ");
    cat_tw_str(w, function);
    cat_tw_char(w, '(');
    cat_tw_u64(w, size);
    cat_tw_str(w, ") returned NULL for a request larger than ");
    cat_tw_str(w, kind == CAT_EM_OVER_ADDRESS_SPACE ? "the address-space limit RLIMIT_AS ("
                  : kind == CAT_EM_OVER_DATA        ? "the data limit RLIMIT_DATA ("
                                                    : "this machine's memory and swap (");
    cat_tw_size(w, (int64_t)(bound > INT64_MAX ? INT64_MAX : bound), false);
    cat_tw_str(w, "): a program error, not memory pressure; no allocation-failure report (");
    cat_tw_u64(w, count);
    cat_tw_str(w, count == 1 ? " such request" : " such requests");
    cat_tw_str(w, " so far; this line at most once per ");
    cat_tw_u64(w, interval / 1000000000ull);
    cat_tw_str(w, " s)\n");
    cat_em_pipe_guard guard;
    cat_em_block_sigpipe(&guard);
    cat_tw_flush(w);
    cat_em_unblock_sigpipe(&guard);
    cat_store_release(&g_cat_em_line_busy, 0);
}

bool cat_emergency_memory_short(uint64_t nowNs, uint64_t quietNs) {
    if (cat_load_relaxed(&g_cat_em_busy) != 0) return true;
    uint64_t last = cat_load_relaxed(&g_cat_em_last_failure_ns);
    // A failure timed after `nowNs` was read (another thread, meanwhile) counts as recent.
    return last != CAT_TRIGGER_NEVER && (nowNs < last || nowNs - last < quietNs);
}

uint64_t cat_emergency_followup_sequence(void) { return cat_load_acquire(&g_cat_em_followup_sequence); }

uint64_t cat_emergency_followup(char *path, size_t capacity, cat_emergency_file_outcome *outcome) {
    for (;;) {
        uint64_t before = cat_load_acquire(&g_cat_em_followup_sequence);
        if (before & 1) { cat_yield(); continue; }  // being written
        size_t i = 0;
        for (; i + 1 < capacity && i < sizeof(g_cat_em_followup_path); i++) {
            char c = __atomic_load_n(&g_cat_em_followup_path[i], __ATOMIC_RELAXED);
            path[i] = c;
            if (c == 0) break;
        }
        if (capacity > 0) path[i < capacity ? i : capacity - 1] = 0;
        outcome->error = (int32_t)cat_load_relaxed(&g_cat_em_followup_outcome[0]);
        outcome->removed = (int32_t)cat_load_relaxed(&g_cat_em_followup_outcome[1]);
        outcome->written = cat_load_relaxed(&g_cat_em_followup_outcome[2]);
        outcome->total = cat_load_relaxed(&g_cat_em_followup_outcome[3]);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (cat_load_relaxed(&g_cat_em_followup_sequence) == before) return before;
    }
}

// MARK: - The report

enum { CAT_EMERGENCY_FRAMES = 6 };

// The emergency reserve: static, so the report needs no stack beyond a few hundred bytes and no heap.
static cat_text_writer g_cat_em_writer;
static uint64_t g_cat_em_ids[CAT_EMERGENCY_MAX_SITES];
static uint64_t g_cat_em_bytes[CAT_EMERGENCY_MAX_SITES];
static uint64_t g_cat_em_blocks[CAT_EMERGENCY_MAX_SITES];
static uintptr_t g_cat_em_frames[CAT_EMERGENCY_MAX_SITES][CAT_EMERGENCY_FRAMES];
static uint32_t g_cat_em_frame_counts[CAT_EMERGENCY_MAX_SITES];

// `2026-11-21T19:22:08Z (unix 1795288928)`.
static void cat_tw_time(cat_text_writer *w, int64_t seconds) {
    char text[CAT_UTC_TEXT_SIZE];
    cat_tw_bytes(w, text, cat_format_utc(seconds, false, text));
    cat_tw_str(w, " (unix ");
    cat_tw_i64(w, seconds, false);
    cat_tw_char(w, ')');
}

static void cat_tw_bytes_exact(cat_text_writer *w, uint64_t bytes) {
    cat_tw_size(w, (int64_t)bytes, false);
    cat_tw_str(w, " (");
    cat_tw_u64(w, bytes);
    cat_tw_str(w, " B)");
}

// Selects the top sites and copies their first frames, under the gate's reader side. Returns the site count.
static uint32_t cat_em_collect(uint32_t capacity) {
    const cat_recorder *recorder = cat_current_recorder();
    if (!recorder || !recorder->topSites) return 0;
    uint64_t *words = cat_state_words();
    uint32_t shard = cat_thread_shard_inline();
    cat_gate_enter(shard);
    uint32_t count = (uint32_t)recorder->topSites(words, g_cat_em_ids, g_cat_em_bytes, g_cat_em_blocks, capacity);
    if (count > capacity) count = capacity;
    for (uint32_t i = 0; i < count; i++) {
        g_cat_em_frame_counts[i] = 0;
        // The trace entry: chunk id / CAT_TRACE_ENTRIES_PER_CHUNK of the trace table, slot id % that.
        uint64_t id = g_cat_em_ids[i];
        uint64_t chunk = id / CAT_TRACE_ENTRIES_PER_CHUNK;
        if (chunk >= CAT_TRACE_CHUNK_LIMIT) continue;
        uint64_t *base = (uint64_t *)(uintptr_t)cat_load_acquire(words + CAT_W_TRACE_CHUNKS + chunk);
        if (!base) continue;
        const uint64_t *entry = base + (id % CAT_TRACE_ENTRIES_PER_CHUNK) * CAT_TRACE_ENTRY_WORDS;
        const uint64_t *frames = (const uint64_t *)(uintptr_t)entry[CAT_E_FRAMES];
        uint32_t n = (uint32_t)(entry[CAT_E_SHAPE] & 0xFFFFFFFFu);  // the stored frame count (low half)
        if (!frames) continue;
        if (n > CAT_EMERGENCY_FRAMES) n = CAT_EMERGENCY_FRAMES;
        for (uint32_t f = 0; f < n; f++) g_cat_em_frames[i][f] = (uintptr_t)frames[f];
        g_cat_em_frame_counts[i] = n;
    }
    cat_gate_exit(shard);
    return count;
}

// `image+0xoffset`, with ` (build id …)` unless the previous frame of the site was in the same image
// (`*previousBias`).
static void cat_em_write_frame(cat_text_writer *w, uintptr_t address, uintptr_t *previousBias) {
    cat_image_entry image;
    if (cat_images_find(address, &image)) {
        cat_tw_str(w, image.name);
        cat_tw_char(w, '+');
        cat_tw_hex(w, address - image.bias, 1);
        int repeated = image.bias == *previousBias;
        *previousBias = image.bias;
        if (image.buildIDLength && !repeated) {
            static const char hex[] = "0123456789abcdef";
            cat_tw_str(w, " (build id ");
            for (uint32_t i = 0; i < image.buildIDLength; i++) {
                cat_tw_char(w, hex[image.buildID[i] >> 4]);
                cat_tw_char(w, hex[image.buildID[i] & 15]);
            }
            cat_tw_char(w, ')');
        }
    } else {
        cat_tw_hex(w, address, 1);
        *previousBias = UINTPTR_MAX;
    }
}

// The values the report prints, sampled once so that the stderr copy and the file copy are the same text.
typedef struct {
    const char *function;
    uint64_t size;
    int64_t unixSeconds;
    int64_t pid;
    uint64_t current, peak, dropped, liveBlocks, rss, sampleMean;
    int hasCgroup;
    uint64_t cgroupUsage, cgroupLimit;
    int hasOomScore, oomScore, oomScoreAdj;
    uint64_t skipped, impossible;
    uint32_t count;
} cat_em_sample;

static cat_em_sample g_cat_em_sample;
static const char *g_cat_em_names[CAT_EMERGENCY_MAX_SITES];
static size_t g_cat_em_name_lengths[CAT_EMERGENCY_MAX_SITES];

static void cat_em_take_sample(const char *function, size_t size) {
    cat_em_sample *s = &g_cat_em_sample;
    uint64_t *words = cat_state_words();
    s->function = function;
    s->size = size;
    s->unixSeconds = cat_unix_seconds();
    s->pid = getpid();
    // This thread's pending counter deltas go into the shared counters first (its own: the only ones reachable
    // from inside malloc), so a single-threaded program's report is exact; another thread's pending deltas are
    // less than 64 KiB of `current`, and per site 64 blocks and 64 KiB (design: _UnsafeThreadDeltas in Swift).
    const cat_recorder *recorder = cat_current_recorder();
    if (t_cat_delta_slot > 0 && recorder->foldDeltas) {
        uint32_t shard = cat_thread_shard_inline();
        cat_gate_enter(shard);
        if (cat_load_acquire(words + CAT_W_READY)) recorder->foldDeltas(words, cat_my_deltas());
        cat_gate_exit(shard);
    }
    uint64_t current = cat_load_relaxed(words + CAT_W_CURRENT);
    s->current = (int64_t)current < 0 ? 0 : current;  // the shared word alone dips below 0 while frees are pending
    s->peak = cat_load_relaxed(words + CAT_W_PEAK);
    if (s->peak < s->current) s->peak = s->current;  // the fold above does not move the peak: it is at least now
    s->dropped = 0;
    s->liveBlocks = 0;
    for (int shard = 0; shard < CAT_SHARDS; shard++) {
        s->dropped += cat_load_relaxed(words + shard * CAT_SHARD_WORDS + CAT_S_DROPPED);
        s->liveBlocks += cat_load_relaxed(words + shard * CAT_SHARD_WORDS + CAT_S_LIVE_BLOCKS);
    }
    // Sampled mode: estimates, with block counts in 2^-16 units (CAT_SAMPLE_BLOCK_SHIFT); the sites' counts
    // come converted from topSites.
    s->sampleMean = cat_load_relaxed(words + CAT_W_SAMPLE_MEAN);
    if (s->sampleMean) s->liveBlocks = (s->liveBlocks + (1ull << (CAT_SAMPLE_BLOCK_SHIFT - 1))) >> CAT_SAMPLE_BLOCK_SHIFT;
    s->rss = cat_process_rss_bytes();
    s->hasCgroup = g_cat_em_cgroup.version != 0 &&
                   cat_cgroup_read(&g_cat_em_cgroup, &s->cgroupUsage, &s->cgroupLimit) == 0;
    s->hasOomScore = cat_read_oom_score(&s->oomScore, &s->oomScoreAdj) == 0;
    s->skipped = cat_load_relaxed(&g_cat_em_skipped);
    s->impossible = cat_load_relaxed(&g_cat_em_impossible);
    s->count = cat_em_collect((uint32_t)g_cat_em_top_sites);
    for (uint32_t i = 0; i < s->count; i++) {
        const char *name = NULL;
        g_cat_em_name_lengths[i] = cat_names_get(g_cat_em_ids[i], &name);
        g_cat_em_names[i] = name;
    }
}

// The report's text from the sample, to the writer's fds; `path` (or NULL) is named in the end line.
static void cat_em_render(cat_text_writer *w, const char *path) {
    const cat_em_sample *s = &g_cat_em_sample;
    cat_tw_str(w, "==== swift-allocation-tracking report: allocation failure ====\n");
    cat_tw_str(w, "trigger: allocation failure: ");
    cat_tw_str(w, s->function);
    cat_tw_char(w, '(');
    cat_tw_u64(w, s->size);
    cat_tw_str(w, ") returned NULL (ENOMEM)\n");
    cat_tw_str(w, "time: ");
    cat_tw_time(w, s->unixSeconds);
    cat_tw_str(w, "\npid: ");
    cat_tw_i64(w, s->pid, false);
    if (s->sampleMean) {
        // The failing request above is exact (it is the one that failed); the tracked values are not.
        cat_tw_str(w, "\ntracked values: estimated from samples every ");
        cat_tw_size(w, (int64_t)s->sampleMean, false);
        cat_tw_str(w, " on average");
    }
    cat_tw_str(w, "\ntracked current: ");
    cat_tw_bytes_exact(w, s->current);
    cat_tw_str(w, " in ");
    cat_tw_u64(w, s->liveBlocks);
    cat_tw_str(w, " blocks\ntracked peak: ");
    cat_tw_bytes_exact(w, s->peak);
    cat_tw_str(w, "\ndropped allocations: ");
    cat_tw_u64(w, s->dropped);
    cat_tw_str(w, "\nrss: ");
    cat_tw_bytes_exact(w, s->rss);
    cat_tw_char(w, '\n');
    if (s->hasCgroup) {
        cat_tw_str(w, "cgroup v");
        cat_tw_u64(w, (uint64_t)g_cat_em_cgroup.version);
        cat_tw_str(w, " usage: ");
        cat_tw_bytes_exact(w, s->cgroupUsage);
        cat_tw_str(w, ", limit: ");
        if (s->cgroupLimit) cat_tw_bytes_exact(w, s->cgroupLimit); else cat_tw_str(w, "none");
        cat_tw_char(w, '\n');
    } else {
        cat_tw_str(w, "cgroup: none\n");
    }
    if (s->hasOomScore) {
        cat_tw_str(w, "oom_score: ");
        cat_tw_i64(w, s->oomScore, false);
        cat_tw_str(w, ", oom_score_adj: ");
        cat_tw_i64(w, s->oomScoreAdj, false);
        cat_tw_char(w, '\n');
    } else {
        cat_tw_str(w, "oom_score: unknown\n");
    }
    cat_tw_str(w, "allocation failures not reported (rate limit or concurrent): ");
    cat_tw_u64(w, s->skipped);
    cat_tw_char(w, '\n');
    if (s->impossible) {
        cat_tw_str(w, "requests larger than the machine or the address-space limit (not reported): ");
        cat_tw_u64(w, s->impossible);
        cat_tw_char(w, '\n');
    }

    cat_tw_str(w, "top ");
    cat_tw_u64(w, s->count);
    cat_tw_str(w, " sites by live bytes:\n");
    for (uint32_t i = 0; i < s->count; i++) {
        cat_tw_char(w, '#');
        cat_tw_u64(w, i + 1);
        cat_tw_str(w, ": ");
        cat_tw_size(w, (int64_t)g_cat_em_bytes[i], false);
        cat_tw_str(w, " in ");
        cat_tw_u64(w, g_cat_em_blocks[i]);
        cat_tw_str(w, g_cat_em_blocks[i] == 1 ? " block (" : " blocks (");
        cat_tw_percent(w, g_cat_em_bytes[i], s->current);
        cat_tw_str(w, ")\n");
        if (g_cat_em_name_lengths[i] && g_cat_em_names[i]) {
            cat_tw_str(w, "    ");
            cat_tw_bytes(w, g_cat_em_names[i], g_cat_em_name_lengths[i]);
            cat_tw_char(w, '\n');
        } else {
            uintptr_t previousBias = UINTPTR_MAX;
            for (uint32_t f = 0; f < g_cat_em_frame_counts[i]; f++) {
                cat_tw_str(w, "    ");
                cat_em_write_frame(w, g_cat_em_frames[i][f], &previousBias);
                cat_tw_char(w, '\n');
            }
            if (g_cat_em_frame_counts[i] == 0) cat_tw_str(w, "    (no frames)\n");
        }
    }
    cat_tw_str(w, "==== end of report");
    if (path && *path) {
        cat_tw_str(w, " (");
        cat_tw_str(w, path);
        cat_tw_char(w, ')');
    }
    cat_tw_str(w, " ====\n");
    cat_tw_flush(w);
}

// `<error text> (errno N)` or `errno N`.
static void cat_tw_errno(cat_text_writer *w, int error) {
    const char *text = cat_errno_text(error);
    if (text) {
        cat_tw_str(w, text);
        cat_tw_str(w, " (errno ");
    } else {
        cat_tw_str(w, "(errno ");
    }
    cat_tw_i64(w, error, false);
    cat_tw_char(w, ')');
}

// Writes the report (stderr first, then the file: see the top of this file). A file that could not be written
// completely is removed when it holds nothing or when the stderr copy is complete (a truncated report reads as a
// complete one in part, and on a full disk its space is better left to the program); a partial file that is the
// only copy (stderr off or failed) is kept. Either way one line on stderr says what was and was not written, and
// `*outcome` records it for the follow-up.
static void cat_em_write(const char *function, size_t size, int fd, const char *path,
                         cat_emergency_file_outcome *outcome) {
    cat_text_writer *w = &g_cat_em_writer;
    cat_em_take_sample(function, size);
    bool stderrComplete = false;
    if (g_cat_em_standard_error) {
        cat_tw_init(w, 2, -1);
        cat_em_render(w, fd >= 0 ? path : NULL);
        stderrComplete = !w->failed[0];
    }
    if (fd < 0) return;
    cat_tw_init(w, fd, -1);
    cat_em_render(w, path);
    outcome->written = w->written[0];
    outcome->total = w->total;
    int error = w->failed[0] ? w->error[0] : 0;
    int closed = cat_report_close_file(fd);
    if (error == 0 && closed < 0) error = -closed;
    if (error == 0) return;
    outcome->error = error;
    bool keep = outcome->written > 0 && !stderrComplete;
    if (!keep) {
        (void)unlink(path);
        outcome->removed = 1;
    }
    cat_tw_init(w, 2, -1);
    cat_tw_str(w, "swift-allocation-tracking: could not write the allocation-failure report file ");
    cat_tw_str(w, path);
    cat_tw_str(w, ": ");
    cat_tw_errno(w, error);
    cat_tw_str(w, " after ");
    cat_tw_u64(w, outcome->written);
    cat_tw_str(w, " of ");
    cat_tw_u64(w, outcome->total);
    cat_tw_str(w, " bytes; ");
    if (keep)
        cat_tw_str(w, "the incomplete file is kept: it is the only copy\n");
    else if (stderrComplete)
        cat_tw_str(w, "the file is removed: the report above is the only copy\n");
    else
        cat_tw_str(w, "the file is removed: the report is lost (nothing reached stderr or the file)\n");
    cat_tw_flush(w);
}

void cat_emergency_report(const char *function, size_t size) {
    if (cat_load_relaxed(&g_cat_em_enabled) == 0) return;
    int savedErrno = errno;
    uint64_t bound = 0;
    int impossible = cat_em_impossible_bound((uint64_t)size, &bound);
    // Every failure of a request the machine could hold, reported or not, tells the tracker's own thread to stop
    // allocating for a while.
    if (impossible == CAT_EM_POSSIBLE) cat_store_relaxed(&g_cat_em_last_failure_ns, cat_monotonic_ns());
    if (!cat_enter_emergency()) {  // the tracker's own thread: nothing to report from here
        errno = savedErrno;
        return;
    }
    int previousState = cat_thread_set_state(CAT_THREAD_INTERNAL);
    uint64_t expected = 0;
    if (impossible != CAT_EM_POSSIBLE) {
        // A program error (malloc(SIZE_MAX), a negative size cast to size_t), not memory pressure: the report and
        // its rate limit are kept for the real exhaustion that may follow.
        uint64_t count = cat_add_relaxed(&g_cat_em_impossible, 1) + 1;
        cat_em_impossible_line(function, size, impossible, bound, count);
    } else if (!cat_cas_acq_rel(&g_cat_em_busy, &expected, 1)) {
        cat_add_relaxed(&g_cat_em_skipped, 1);  // another thread is writing the report
    } else {
        uint64_t now = cat_monotonic_ns();
        uint64_t last = cat_load_relaxed(&g_cat_em_last_ns);
        if (cat_load_relaxed(&g_cat_em_enabled) == 0) {
            // turned off meanwhile
        } else if (last != CAT_TRIGGER_NEVER && (now < last || now - last < g_cat_em_min_interval_ns)) {
            cat_add_relaxed(&g_cat_em_skipped, 1);
        } else {
            cat_store_relaxed(&g_cat_em_last_ns, now);
            cat_em_pipe_guard guard;
            cat_em_block_sigpipe(&guard);
            int fd = -1;
            cat_emergency_file_outcome outcome = {0, 0, 0, 0};
            g_cat_em_last_path[0] = 0;
            if (g_cat_em_directory[0]) {
                fd = cat_report_open_file(g_cat_em_directory, getpid(), cat_unix_seconds(), g_cat_em_last_path,
                                          sizeof(g_cat_em_last_path));
                if (fd < 0) {
                    // One line saying why, on stderr even when the report does not go there (as the other
                    // reports do).
                    static const char toStderr[] =
                        "swift-allocation-tracking: cannot create the allocation-failure report file in the "
                        "configured directory; writing the report to stderr only\n";
                    static const char lost[] =
                        "swift-allocation-tracking: cannot create the allocation-failure report file in the "
                        "configured directory; the report is not written (stderr=off)\n";
                    if (g_cat_em_standard_error)
                        cat_write_stderr(toStderr, sizeof(toStderr) - 1);
                    else
                        cat_write_stderr(lost, sizeof(lost) - 1);
                    outcome.error = -fd;
                    g_cat_em_last_path[0] = 0;
                }
            }
            cat_em_write(function, size, fd, fd >= 0 ? g_cat_em_last_path : NULL, &outcome);
            cat_em_unblock_sigpipe(&guard);
            cat_add_relaxed(&g_cat_em_written, 1);
            // Publish the report for the watchdog's follow-up (JSON companion, onReport, problems): the path of
            // the file tried ("" when none could be created) and what became of it.
            cat_store_relaxed(&g_cat_em_followup_sequence, cat_load_relaxed(&g_cat_em_followup_sequence) + 1);
            __atomic_thread_fence(__ATOMIC_RELEASE);
            for (size_t i = 0; i < sizeof(g_cat_em_followup_path); i++) {
                char c = fd >= 0 ? g_cat_em_last_path[i] : 0;
                __atomic_store_n(&g_cat_em_followup_path[i], c, __ATOMIC_RELAXED);
                if (c == 0) break;
            }
            cat_store_relaxed(&g_cat_em_followup_outcome[0], (uint64_t)(uint32_t)outcome.error);
            cat_store_relaxed(&g_cat_em_followup_outcome[1], (uint64_t)outcome.removed);
            cat_store_relaxed(&g_cat_em_followup_outcome[2], outcome.written);
            cat_store_relaxed(&g_cat_em_followup_outcome[3], outcome.total);
            cat_store_release(&g_cat_em_followup_sequence, cat_load_relaxed(&g_cat_em_followup_sequence) + 1);
        }
        cat_store_release(&g_cat_em_busy, 0);
    }
    cat_thread_set_state(previousState);
    cat_leave_emergency();
    errno = savedErrno;
}

// The report written when an allocation fails, without allocating (contract: include/cat_emergency.h): its
// configuration and rate limit, the follow-up sequence lock the watchdog reads, and the report's text.
//
// Everything the report needs is prepared while memory is plentiful: the configuration and the cgroup files
// (cat_emergency_configure), the names of the sites (names_arena.c, filled by the watchdog's
// `_EmergencyNames.refresh()`), the loaded images and their build ids (loaded_images.c, cat_images_capture).
// The report itself uses static buffers only (the "emergency reserve": the text writer, the top-site arrays,
// the path), formats numbers by hand and writes with write(2).
#define _GNU_SOURCE
#include "cat_internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
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
// only requests smaller than the machine's memory: a failed malloc(SIZE_MAX) says nothing about pressure.
static uint64_t g_cat_em_last_failure_ns = CAT_TRIGGER_NEVER;
static uint64_t g_cat_em_pressure_size_limit = UINT64_MAX;
// The last written report, for the watchdog's follow-up (cat_emergency_followup): a sequence lock. The writer
// (inside the busy flag, so one at a time) makes the sequence odd, copies the path, makes it even again.
static uint64_t g_cat_em_followup_sequence;
static char g_cat_em_followup_path[CAT_EMERGENCY_PATH_MAX + 64];
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
    long pages = sysconf(_SC_PHYS_PAGES), pageSize = sysconf(_SC_PAGESIZE);
    g_cat_em_pressure_size_limit = pages > 0 && pageSize > 0 ? (uint64_t)pages * (uint64_t)pageSize : UINT64_MAX;
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

bool cat_emergency_memory_short(uint64_t nowNs, uint64_t quietNs) {
    if (cat_load_relaxed(&g_cat_em_busy) != 0) return true;
    uint64_t last = cat_load_relaxed(&g_cat_em_last_failure_ns);
    // A failure timed after `nowNs` was read (another thread, meanwhile) counts as recent.
    return last != CAT_TRIGGER_NEVER && (nowNs < last || nowNs - last < quietNs);
}

uint64_t cat_emergency_followup_sequence(void) { return cat_load_acquire(&g_cat_em_followup_sequence); }

uint64_t cat_emergency_followup(char *path, size_t capacity) {
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

static void cat_em_write(const char *function, size_t size, int fd, const char *path) {
    cat_text_writer *w = &g_cat_em_writer;
    cat_tw_init(w, g_cat_em_standard_error ? 2 : -1, fd);
    uint64_t *words = cat_state_words();
    uint64_t current = cat_load_relaxed(words + CAT_W_CURRENT);
    uint64_t peak = cat_load_relaxed(words + CAT_W_PEAK);
    uint64_t dropped = 0, liveBlocks = 0;
    for (int s = 0; s < CAT_SHARDS; s++) {
        dropped += cat_load_relaxed(words + s * CAT_SHARD_WORDS + CAT_S_DROPPED);
        liveBlocks += cat_load_relaxed(words + s * CAT_SHARD_WORDS + CAT_S_LIVE_BLOCKS);
    }

    cat_tw_str(w, "==== swift-allocation-tracking report: allocation failure ====\n");
    cat_tw_str(w, "trigger: allocation failure: ");
    cat_tw_str(w, function);
    cat_tw_char(w, '(');
    cat_tw_u64(w, size);
    cat_tw_str(w, ") returned NULL (ENOMEM)\n");
    cat_tw_str(w, "time: ");
    cat_tw_time(w, cat_unix_seconds());
    cat_tw_str(w, "\npid: ");
    cat_tw_i64(w, getpid(), false);
    cat_tw_str(w, "\ntracked current: ");
    cat_tw_bytes_exact(w, current);
    cat_tw_str(w, " in ");
    cat_tw_u64(w, liveBlocks);
    cat_tw_str(w, " blocks\ntracked peak: ");
    cat_tw_bytes_exact(w, peak);
    cat_tw_str(w, "\ndropped allocations: ");
    cat_tw_u64(w, dropped);
    cat_tw_str(w, "\nrss: ");
    cat_tw_bytes_exact(w, cat_process_rss_bytes());
    cat_tw_char(w, '\n');
    uint64_t usage = 0, limit = 0;
    if (g_cat_em_cgroup.version != 0 && cat_cgroup_read(&g_cat_em_cgroup, &usage, &limit) == 0) {
        cat_tw_str(w, "cgroup v");
        cat_tw_u64(w, (uint64_t)g_cat_em_cgroup.version);
        cat_tw_str(w, " usage: ");
        cat_tw_bytes_exact(w, usage);
        cat_tw_str(w, ", limit: ");
        if (limit) cat_tw_bytes_exact(w, limit); else cat_tw_str(w, "none");
        cat_tw_char(w, '\n');
    } else {
        cat_tw_str(w, "cgroup: none\n");
    }
    int score = 0, scoreAdj = 0;
    if (cat_read_oom_score(&score, &scoreAdj) == 0) {
        cat_tw_str(w, "oom_score: ");
        cat_tw_i64(w, score, false);
        cat_tw_str(w, ", oom_score_adj: ");
        cat_tw_i64(w, scoreAdj, false);
        cat_tw_char(w, '\n');
    } else {
        cat_tw_str(w, "oom_score: unknown\n");
    }
    cat_tw_str(w, "allocation failures not reported (rate limit or concurrent): ");
    cat_tw_u64(w, cat_load_relaxed(&g_cat_em_skipped));
    cat_tw_char(w, '\n');

    uint32_t capacity = (uint32_t)g_cat_em_top_sites;
    uint32_t count = cat_em_collect(capacity);
    cat_tw_str(w, "top ");
    cat_tw_u64(w, count);
    cat_tw_str(w, " sites by live bytes:\n");
    for (uint32_t i = 0; i < count; i++) {
        cat_tw_char(w, '#');
        cat_tw_u64(w, i + 1);
        cat_tw_str(w, ": ");
        cat_tw_size(w, (int64_t)g_cat_em_bytes[i], false);
        cat_tw_str(w, " in ");
        cat_tw_u64(w, g_cat_em_blocks[i]);
        cat_tw_str(w, g_cat_em_blocks[i] == 1 ? " block (" : " blocks (");
        cat_tw_percent(w, g_cat_em_bytes[i], current);
        cat_tw_str(w, ")\n");
        const char *name = NULL;
        size_t length = cat_names_get(g_cat_em_ids[i], &name);
        if (length && name) {
            cat_tw_str(w, "    ");
            cat_tw_bytes(w, name, length);
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

void cat_emergency_report(const char *function, size_t size) {
    if (cat_load_relaxed(&g_cat_em_enabled) == 0) return;
    int savedErrno = errno;
    // Every failure of a request the machine could hold, reported or not, tells the tracker's own thread to stop
    // allocating for a while.
    if ((uint64_t)size < g_cat_em_pressure_size_limit) cat_store_relaxed(&g_cat_em_last_failure_ns, cat_monotonic_ns());
    if (!cat_enter_emergency()) {  // the tracker's own thread: nothing to report from here
        errno = savedErrno;
        return;
    }
    int previousState = cat_thread_set_state(CAT_THREAD_INTERNAL);
    uint64_t expected = 0;
    if (!cat_cas_acq_rel(&g_cat_em_busy, &expected, 1)) {
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
            int fd = -1;
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
                    g_cat_em_last_path[0] = 0;
                }
            }
            // A closed stderr pipe must not kill the process from inside malloc: block SIGPIPE while writing and
            // discard the one our writes raised (the standard pattern; all async-signal-safe, no allocation).
            sigset_t pipeSet, previousMask, pendingBefore;
            sigemptyset(&pipeSet);
            sigaddset(&pipeSet, SIGPIPE);
            pthread_sigmask(SIG_BLOCK, &pipeSet, &previousMask);
            sigpending(&pendingBefore);
            cat_em_write(function, size, fd, fd >= 0 ? g_cat_em_last_path : NULL);
            if (!sigismember(&pendingBefore, SIGPIPE)) {
                struct timespec zero = {0, 0};
                while (sigtimedwait(&pipeSet, NULL, &zero) == SIGPIPE) {}
            }
            pthread_sigmask(SIG_SETMASK, &previousMask, NULL);
            cat_fsync_close(fd);
            cat_add_relaxed(&g_cat_em_written, 1);
            // Publish the report for the watchdog's follow-up (JSON companion, onReport).
            cat_store_relaxed(&g_cat_em_followup_sequence, cat_load_relaxed(&g_cat_em_followup_sequence) + 1);
            __atomic_thread_fence(__ATOMIC_RELEASE);
            for (size_t i = 0; i < sizeof(g_cat_em_followup_path); i++) {
                char c = fd >= 0 ? g_cat_em_last_path[i] : 0;
                __atomic_store_n(&g_cat_em_followup_path[i], c, __ATOMIC_RELAXED);
                if (c == 0) break;
            }
            cat_store_release(&g_cat_em_followup_sequence, cat_load_relaxed(&g_cat_em_followup_sequence) + 1);
        }
        cat_store_release(&g_cat_em_busy, 0);
    }
    cat_thread_set_state(previousState);
    cat_leave_emergency();
    errno = savedErrno;
}

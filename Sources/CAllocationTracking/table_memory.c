// The memory under the Swift tables and the gate that lets them be resized, cleared and copied.
//
// The Swift table logic is proven (`@_noLocks`) to make no call it cannot see, so every system call the tables
// need lives here: mmap/munmap for table memory, sched_yield for the gate's rare waits, the API mutex and raw
// stderr writes (as swift-nio keeps its syscalls in one file). The Swift side asks for memory by setting bits in
// CAT_W_REQUESTS; cat_service_requests() answers outside the gate.
#define _GNU_SOURCE
#include "cat_internal.h"

#include <pthread.h>
#include <sched.h>
#include <link.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static _Alignas(64) uint64_t g_cat_state_words[CAT_STATE_WORDS];
static cat_recorder g_cat_recorder;
// Static, never unmapped: the free path reads it outside the gate (cat_internal.h; why: interposer.c).
_Alignas(64) uint64_t g_cat_sample_filter[CAT_SAMPLE_FILTER_BUCKETS];

#define W(index) (&g_cat_state_words[(index)])
#define SHARD(shard, counter) (&g_cat_state_words[(size_t)(shard) * CAT_SHARD_WORDS + (counter)])

uint64_t *cat_state_words(void) { return g_cat_state_words; }

const cat_recorder *cat_current_recorder(void) { return &g_cat_recorder; }

void cat_install_recorder_ops(const cat_recorder *recorder) { g_cat_recorder = *recorder; }

// MARK: - System calls

static void *cat_map(size_t size) {
    if (size == 0) return NULL;
    void *pages = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (pages == MAP_FAILED) return NULL;
    cat_add_relaxed(W(CAT_W_MAPPED_BYTES), size);
    return pages;
}

static void cat_unmap(void *pages, size_t size) {
    if (!pages || !size) return;
    munmap(pages, size);
    cat_sub_relaxed(W(CAT_W_MAPPED_BYTES), size);
}

void cat_yield(void) { sched_yield(); }

static pthread_mutex_t g_cat_api_mutex = PTHREAD_MUTEX_INITIALIZER;

void cat_api_lock(void) { pthread_mutex_lock(&g_cat_api_mutex); }
void cat_api_unlock(void) { pthread_mutex_unlock(&g_cat_api_mutex); }

// The child of fork() has one thread: the one that forked, which held the mutex through the prepare handler.
void cat_api_reinit_in_child(void) {
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    g_cat_api_mutex = fresh;
}

void cat_write_stderr(const char *text, size_t length) {
    while (length > 0) {
        ssize_t n = write(2, text, length);
        if (n <= 0) return;
        text += n;
        length -= (size_t)n;
    }
}

// MARK: - The quiescence gate
//
// Readers (table operations inside malloc) increment their shard's counter and then check the writer flag; a
// writer sets the flag and then waits for every shard's counter to drain. Both sides are sequentially
// consistent (Dekker): a reader either sees the writer and backs off, or the writer sees the reader and waits.
// Readers never wait for readers. This is the one place the allocation path can wait, and only while a writer
// holds the gate: a table rebuild, clear/stop, a snapshot copy, or fork().

void cat_gate_enter(uint32_t shard) {
    uint64_t *readers = SHARD(shard, CAT_S_READERS);
    for (;;) {
        cat_add_seq_cst(readers, 1);
        if (cat_load_seq_cst(W(CAT_W_GATE_WRITER)) == 0) return;
        cat_sub_release(readers, 1);
        while (cat_load_acquire(W(CAT_W_GATE_WRITER)) != 0) sched_yield();
    }
}

void cat_gate_exit(uint32_t shard) { cat_sub_release(SHARD(shard, CAT_S_READERS), 1); }

void cat_gate_lock_writer(void) {
    uint64_t expected = 0;
    while (!cat_cas_seq_cst(W(CAT_W_GATE_WRITER), &expected, 1)) {
        expected = 0;
        sched_yield();
    }
    for (uint32_t shard = 0; shard < CAT_SHARDS; shard++)
        while (cat_load_seq_cst(SHARD(shard, CAT_S_READERS)) != 0) sched_yield();
}

void cat_gate_unlock_writer(void) { cat_store_seq_cst(W(CAT_W_GATE_WRITER), 0); }

// For a reader that must not wait (the watchdog, before its reports): gives up when another writer holds the gate
// or the readers have not drained after `maxYields` yields. Readers that arrive meanwhile wait as for any writer,
// for at most that long.
int cat_gate_try_lock_writer(uint32_t maxYields) {
    uint64_t expected = 0;
    if (!cat_cas_seq_cst(W(CAT_W_GATE_WRITER), &expected, 1)) return 0;
    uint32_t yields = 0;
    for (uint32_t shard = 0; shard < CAT_SHARDS; shard++) {
        while (cat_load_seq_cst(SHARD(shard, CAT_S_READERS)) != 0) {
            if (yields++ == maxYields) {
                cat_gate_unlock_writer();
                return 0;
            }
            sched_yield();
        }
    }
    return 1;
}

// Fork child: the other threads are gone; whatever they were doing at the gate is void.
void cat_gate_reset_in_child(void) {
    for (uint32_t shard = 0; shard < CAT_SHARDS; shard++) cat_store_relaxed(SHARD(shard, CAT_S_READERS), 0);
    cat_gate_unlock_writer();
}

// MARK: - Table memory

// Installs a chunk into `slot` unless one is there (the loser of a race unmaps its own).
static int cat_install_chunk(uint64_t *slot, size_t bytes) {
    if (cat_load_acquire(slot) != 0) return 0;
    void *pages = cat_map(bytes);
    if (!pages) return -1;
    uint64_t expected = 0;
    if (!cat_cas_acq_rel(slot, &expected, (uint64_t)(uintptr_t)pages)) cat_unmap(pages, bytes);
    return 0;
}

// The chunk the next trace / frame will land in, and the one after it once the current one is half used, so
// the Swift side rarely finds a chunk missing (it then drops the allocation and counts it) and a small program
// maps one chunk of each.
static void cat_install_next_chunks(void) {
    uint64_t traces = cat_load_relaxed(W(CAT_W_TRACE_COUNT));
    uint64_t maxTraces = cat_load_relaxed(W(CAT_W_MAX_TRACES));
    uint64_t chunk = traces / CAT_TRACE_ENTRIES_PER_CHUNK;
    uint64_t lastTrace = (traces % CAT_TRACE_ENTRIES_PER_CHUNK) >= CAT_TRACE_ENTRIES_PER_CHUNK / 2 ? chunk + 1 : chunk;
    for (uint64_t c = chunk; c <= lastTrace && c < CAT_TRACE_CHUNK_LIMIT; c++) {
        if (c * CAT_TRACE_ENTRIES_PER_CHUNK >= maxTraces) break;
        cat_install_chunk(W(CAT_W_TRACE_CHUNKS + c), CAT_TRACE_CHUNK_BYTES);
    }
    uint64_t cursor = cat_load_relaxed(W(CAT_W_ARENA_CURSOR));
    uint64_t arena = cursor >> 32;
    uint64_t lastArena = (cursor & 0xFFFFFFFFu) >= CAT_ARENA_CHUNK_WORDS / 2 ? arena + 1 : arena;
    for (uint64_t c = arena; c <= lastArena && c < CAT_ARENA_CHUNK_LIMIT; c++)
        cat_install_chunk(W(CAT_W_ARENA_CHUNKS + c), (size_t)CAT_ARENA_CHUNK_WORDS * 8);
}

// Writer side held.
static int cat_rebuild_pointer_table(void) {
    uint64_t capacity = g_cat_recorder.pointerCapacityNeeded(g_cat_state_words);
    void *slots = cat_map((size_t)capacity * 16);
    if (!slots) return -1;
    void *old = (void *)(uintptr_t)cat_load_relaxed(W(CAT_W_POINTER_BASE));
    uint64_t oldCapacity = cat_load_relaxed(W(CAT_W_POINTER_CAPACITY));
    g_cat_recorder.rebuildPointerTable(g_cat_state_words, slots, capacity);
    cat_unmap(old, (size_t)oldCapacity * 16);
    return 0;
}

// Writer side held.
static int cat_rebuild_index(void) {
    uint64_t capacity = g_cat_recorder.indexCapacityNeeded(g_cat_state_words);
    if (capacity == 0) return 0;
    void *cells = cat_map((size_t)capacity * 4);
    if (!cells) return -1;
    void *old = (void *)(uintptr_t)cat_load_relaxed(W(CAT_W_INDEX_BASE));
    uint64_t oldCapacity = cat_load_relaxed(W(CAT_W_INDEX_CAPACITY));
    g_cat_recorder.rebuildIndex(g_cat_state_words, cells, capacity);
    cat_unmap(old, (size_t)oldCapacity * 4);
    return 0;
}

int cat_tables_create(uint64_t maxTraces) {
    cat_store_relaxed(W(CAT_W_MAX_TRACES), maxTraces);
    cat_install_next_chunks();
    if (cat_rebuild_pointer_table() != 0 || cat_rebuild_index() != 0) {
        cat_tables_release();
        return -1;
    }
    cat_store_release(W(CAT_W_READY), 1);
    return 0;
}

void cat_tables_release(void) {
    cat_store_release(W(CAT_W_READY), 0);
    cat_unmap((void *)(uintptr_t)cat_load_relaxed(W(CAT_W_POINTER_BASE)),
              (size_t)cat_load_relaxed(W(CAT_W_POINTER_CAPACITY)) * 16);
    cat_unmap((void *)(uintptr_t)cat_load_relaxed(W(CAT_W_INDEX_BASE)),
              (size_t)cat_load_relaxed(W(CAT_W_INDEX_CAPACITY)) * 4);
    for (int c = 0; c < CAT_TRACE_CHUNK_LIMIT; c++) {
        cat_unmap((void *)(uintptr_t)cat_load_relaxed(W(CAT_W_TRACE_CHUNKS + c)), CAT_TRACE_CHUNK_BYTES);
    }
    for (int c = 0; c < CAT_ARENA_CHUNK_LIMIT; c++) {
        cat_unmap((void *)(uintptr_t)cat_load_relaxed(W(CAT_W_ARENA_CHUNKS + c)), (size_t)CAT_ARENA_CHUNK_WORDS * 8);
    }
    uint64_t mapped = cat_load_relaxed(W(CAT_W_MAPPED_BYTES));
    // Everything but the gate, the sampling mode and the measurement scopes is zeroed: counters, roots, chunk
    // pointers; and the free path's filter, whose entries were the pointer table's (writer side held: no
    // allocation or free is between the table and the filter).
    for (size_t i = 0; i < CAT_W_SCOPES; i++) {
        if (i == CAT_W_GATE_WRITER || i == CAT_W_SAMPLE_MEAN || i == CAT_W_SAMPLE_FILTER ||
            (i < CAT_SHARDS * CAT_SHARD_WORDS && i % CAT_SHARD_WORDS == CAT_S_READERS)) continue;
        cat_store_relaxed(&g_cat_state_words[i], 0);
    }
    cat_store_relaxed(W(CAT_W_MAPPED_BYTES), mapped);
    for (size_t i = 0; i < CAT_SAMPLE_FILTER_BUCKETS; i++) cat_store_relaxed(&g_cat_sample_filter[i], 0);
    // The threads' deltas name trace ids of the tables just released: discarded with them.
    for (int i = 0; i < CAT_D_THREADS; i++) {
        uint64_t *deltas = (uint64_t *)(uintptr_t)cat_load_acquire(&g_cat_delta_threads[i]);
        if (deltas) memset(deltas, 0, CAT_D_WORDS * sizeof(uint64_t));
    }
}

void cat_deltas_fold_all(void) {
    if (!cat_load_acquire(W(CAT_W_READY))) return;
    for (int i = 0; i < CAT_D_THREADS; i++) {
        uint64_t *deltas = (uint64_t *)(uintptr_t)cat_load_acquire(&g_cat_delta_threads[i]);
        if (deltas) g_cat_recorder.foldDeltas(g_cat_state_words, deltas);
    }
    // Every thread's share is in `current` now: if it is above the peak (threads' pending deltas hid it), the
    // peak is now, and the sites' values at it are their live values (a new epoch).
    uint64_t current = cat_load_relaxed(W(CAT_W_CURRENT));
    if ((int64_t)current > (int64_t)cat_load_relaxed(W(CAT_W_PEAK))) {
        cat_store_relaxed(W(CAT_W_PEAK), current);
        cat_add_relaxed(W(CAT_W_PEAK_EPOCH), 1);
    }
}

int cat_deltas_try_fold_all(uint32_t maxYields) {
    if (!cat_gate_try_lock_writer(maxYields)) return 0;
    cat_deltas_fold_all();
    cat_gate_unlock_writer();
    return 1;
}

void cat_service_requests(void) {
    uint64_t requests = cat_load_acquire(W(CAT_W_REQUESTS));
    if (requests == 0) return;
    if (requests & (CAT_NEED_TRACE_CHUNK | CAT_NEED_ARENA_CHUNK)) {
        __atomic_fetch_and(W(CAT_W_REQUESTS), ~(uint64_t)(CAT_NEED_TRACE_CHUNK | CAT_NEED_ARENA_CHUNK), __ATOMIC_ACQ_REL);
        if (cat_load_acquire(W(CAT_W_READY))) cat_install_next_chunks();
    }
    if (requests & (CAT_NEED_POINTER_REBUILD | CAT_NEED_INDEX_REBUILD)) {
        cat_gate_lock_writer();
        uint64_t taken = __atomic_fetch_and(W(CAT_W_REQUESTS),
                                            ~(uint64_t)(CAT_NEED_POINTER_REBUILD | CAT_NEED_INDEX_REBUILD),
                                            __ATOMIC_ACQ_REL);
        if (cat_load_relaxed(W(CAT_W_READY))) {
            if (taken & CAT_NEED_POINTER_REBUILD) cat_rebuild_pointer_table();
            if (taken & CAT_NEED_INDEX_REBUILD) cat_rebuild_index();
        }
        cat_gate_unlock_writer();
    }
}

// MARK: - Loader

static int cat_count_loads(struct dl_phdr_info *info, size_t size, void *context) {
    uint64_t *counts = context;
    if (size < offsetof(struct dl_phdr_info, dlpi_subs) + sizeof(info->dlpi_subs)) return 1;
    counts[0] = info->dlpi_adds;
    counts[1] = info->dlpi_subs;
    return 1;  // the totals are the same in every entry
}

void cat_loader_counts(uint64_t *loads, uint64_t *unloads) {
    uint64_t counts[2] = {0, 0};
    dl_iterate_phdr(cat_count_loads, counts);
    *loads = counts[0];
    *unloads = counts[1];
}

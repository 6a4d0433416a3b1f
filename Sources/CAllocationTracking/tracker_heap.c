// tracker_heap.c: the private heap of the tracker's own threads.
//
// Why: the tracker's threads (the watchdog, the names thread, a report's names thread) allocate with Swift —
// symbolication, report text, the trend's suspects — and glibc gives each new thread an arena of its own, whose
// freed memory it keeps. That memory was the tracker's, but nothing could count it: the real-service benchmark saw
// /proc add several MiB more than the tracker reported (README "A real service"). Here those threads allocate
// from one mapping of their own, named "[anon:alloc-tracking heap]" in /proc/PID/smaps, whose resident pages the
// tracker reports (mincore) as part of its memory.
//
// Design:
// - One reserved mapping (MAP_NORESERVE, CAT_HEAP_RESERVE bytes of address space; pages exist once touched). A
//   block has a 16-byte header before it: its usable size, and its size class (small) or its page count (large).
// - Small blocks (up to CAT_HEAP_LARGEST_SMALL bytes) come in power-of-two classes, carved from 64 KiB runs of one
//   class each and reused through the run's free list; a run none of whose blocks is live gives its pages back
//   (madvise DONTNEED) and serves any class next. (Kept for reuse per class instead, a names refresh's burst of
//   small blocks stayed resident: 18 MiB on the real-service benchmark.) Larger blocks
//   are whole pages; a freed one gives all its pages back (madvise DONTNEED) and its span is reused first-fit
//   (by a request of half its size or more), from a fixed table beside the heap.
// - Only the tracker's threads allocate here, under a spin lock (they are three, and they block asynchronous
//   signals: nothing re-enters on them). Any thread may free a block (a name made by the names thread is freed by
//   a snapshot on the program's thread): free pushes the block onto a lock-free stack and never waits; the next
//   allocation drains that stack under the lock, so a free costs one compare-and-swap.
// - Aligned requests above 16 bytes over-allocate and put an alias header before the aligned address.
// - When the mapping cannot be made, or is used up, the tracker's threads use the real allocator as before; free
//   and realloc tell the blocks apart by address.
//
// RUNS INSIDE MALLOC (cat_heap_malloc/free/usable_size, from the interposer, for the tracker's threads and for
// any thread's free of a heap block): no allocation, no lock outside the documented spin lock the tracker's own
// threads take, no lazily initialised global (the mapping's address is published before any thread uses it).
#include "cat_internal.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif

enum {
    CAT_HEAP_HEADER = 16,
    CAT_HEAP_CLASSES = 9,  // 16 B … 4 KiB
    CAT_HEAP_PAGE = 4096,
    CAT_HEAP_SPANS = 4096,
    CAT_HEAP_RUN = 65536,  // small blocks of one class come from a run of this size, aligned to it from the base
};
#define CAT_HEAP_RUNS ((uint32_t)(CAT_HEAP_RESERVE / CAT_HEAP_RUN))
#define CAT_HEAP_LARGEST_SMALL ((size_t)16 << (CAT_HEAP_CLASSES - 1))
#define CAT_HEAP_ALIAS ((uint64_t)1 << 63)
#define CAT_HEAP_LARGE_CLASS 0xffffffffu

uint64_t g_cat_heap_base;   // 0: no heap
static uint64_t g_cat_heap_limit;  // base + reserve
static uint64_t g_cat_heap_state;  // 0 none, 1 creating, 2 created, 3 failed
static uint64_t g_cat_heap_lock;
static uint64_t g_cat_heap_bump;   // next unused byte (lock held)
static uint64_t g_cat_heap_remote; // lock-free stack of freed blocks (their headers), drained under the lock
// Runs (lock held), indexed by (address - base) / CAT_HEAP_RUN: a run serves one class; its freed blocks go on its
// own free list, and when none is live its pages go back and the run is free for any class. A class keeps the runs
// it can allocate from (a free block, or room not yet carved) on a doubly linked list.
static uint32_t g_cat_run_live[CAT_HEAP_RUNS];
static uint32_t g_cat_run_carved[CAT_HEAP_RUNS];   // bytes carved from the run's start
static uint64_t g_cat_run_free[CAT_HEAP_RUNS];     // the run's free blocks (their headers), linked
static int32_t g_cat_run_next[CAT_HEAP_RUNS], g_cat_run_prev[CAT_HEAP_RUNS];
static uint8_t g_cat_run_listed[CAT_HEAP_RUNS];
_Static_assert(CAT_HEAP_CLASSES == 9, "one -1 per class below");
static int32_t g_cat_class_runs[CAT_HEAP_CLASSES] = {-1, -1, -1, -1, -1, -1, -1, -1, -1};
static int32_t g_cat_empty_runs[CAT_HEAP_RUNS];    // runs whose pages were given back, reusable by any class
static uint32_t g_cat_empty_run_count;
// Freed large blocks, their pages given back: [header address, pages], reused first-fit (lock held).
static uint64_t g_cat_heap_spans[CAT_HEAP_SPANS][2];
static uint32_t g_cat_heap_span_count;
static uint64_t g_cat_heap_live;   // usable bytes of live blocks (relaxed)
static uint64_t g_cat_heap_blocks; // live blocks (relaxed)

// A block's header: [0] usable size (or CAT_HEAP_ALIAS | distance back to the real header), [1] class or pages.
static inline uint64_t *cat_heap_header(void *ptr) { return (uint64_t *)((unsigned char *)ptr - CAT_HEAP_HEADER); }

int cat_heap_create(void) {
    uint64_t expected = 0;
    if (!cat_cas_acq_rel(&g_cat_heap_state, &expected, 1)) {
        while (cat_load_acquire(&g_cat_heap_state) == 1) sched_yield();
        return cat_load_acquire(&g_cat_heap_state) == 2 ? 0 : -1;
    }
    // Between two inaccessible guard pages, so that the kernel never merges the heap's mapping with a neighbour:
    // it stays one line of /proc/PID/smaps, where its resident size can be checked against what is reported.
    unsigned char *reserved = mmap(NULL, CAT_HEAP_RESERVE + 2 * CAT_HEAP_PAGE, PROT_NONE,
                                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (reserved == MAP_FAILED || mprotect(reserved + CAT_HEAP_PAGE, CAT_HEAP_RESERVE, PROT_READ | PROT_WRITE) != 0) {
        if (reserved != MAP_FAILED) munmap(reserved, CAT_HEAP_RESERVE + 2 * CAT_HEAP_PAGE);
        cat_store_release(&g_cat_heap_state, 3);
        return -1;
    }
    void *pages = reserved + CAT_HEAP_PAGE;
    // A name in /proc/PID/maps and smaps (Linux 5.17+ with CONFIG_ANON_VMA_NAME; harmless where unsupported).
    prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)pages, CAT_HEAP_RESERVE, "alloc-tracking heap");
    g_cat_heap_bump = (uint64_t)(uintptr_t)pages;
    cat_store_relaxed(&g_cat_heap_limit, (uint64_t)(uintptr_t)pages + CAT_HEAP_RESERVE);
    cat_store_release(&g_cat_heap_base, (uint64_t)(uintptr_t)pages);
    cat_store_release(&g_cat_heap_state, 2);
    return 0;
}

static void cat_heap_lock(void) {
    uint64_t expected = 0;
    while (!cat_cas_acq_rel(&g_cat_heap_lock, &expected, 1)) {
        expected = 0;
        sched_yield();
    }
}

static void cat_heap_unlock(void) { cat_store_release(&g_cat_heap_lock, 0); }

static inline uint32_t cat_heap_run_of(uint64_t header) {
    return (uint32_t)((header - g_cat_heap_base) / CAT_HEAP_RUN);
}

static void cat_heap_list_run(uint32_t cls, int32_t run) {
    if (g_cat_run_listed[run]) return;
    g_cat_run_listed[run] = 1;
    g_cat_run_prev[run] = -1;
    g_cat_run_next[run] = g_cat_class_runs[cls];
    if (g_cat_class_runs[cls] >= 0) g_cat_run_prev[g_cat_class_runs[cls]] = run;
    g_cat_class_runs[cls] = run;
}

static void cat_heap_unlist_run(uint32_t cls, int32_t run) {
    if (!g_cat_run_listed[run]) return;
    g_cat_run_listed[run] = 0;
    if (g_cat_run_prev[run] >= 0) g_cat_run_next[g_cat_run_prev[run]] = g_cat_run_next[run];
    else g_cat_class_runs[cls] = g_cat_run_next[run];
    if (g_cat_run_next[run] >= 0) g_cat_run_prev[g_cat_run_next[run]] = g_cat_run_prev[run];
}

static inline uint32_t cat_heap_class(size_t size) {
    uint32_t cls = 0;
    while (((size_t)16 << cls) < size) cls++;
    return cls;
}

// Lock held: files the blocks freed since the last drain.
static void cat_heap_drain(void) {
    uint64_t head = __atomic_exchange_n(&g_cat_heap_remote, 0, __ATOMIC_ACQUIRE);
    while (head) {
        uint64_t *header = (uint64_t *)(uintptr_t)head;
        uint64_t next = header[2];  // the link, in the block's first word
        uint64_t cls = header[1];
        if (cls >> 32 == CAT_HEAP_LARGE_CLASS) {
            // All its pages go back; the span is remembered here (when the table is full, only its address
            // space is lost).
            uint64_t pages = cls & 0xffffffffu;
            madvise(header, pages * CAT_HEAP_PAGE, MADV_DONTNEED);
            if (g_cat_heap_span_count < CAT_HEAP_SPANS) {
                g_cat_heap_spans[g_cat_heap_span_count][0] = head;
                g_cat_heap_spans[g_cat_heap_span_count][1] = pages;
                g_cat_heap_span_count++;
            }
        } else {
            uint32_t run = cat_heap_run_of(head);
            header[2] = g_cat_run_free[run];
            g_cat_run_free[run] = head;
            if (--g_cat_run_live[run] == 0) {
                // Nothing live: the run's pages go back, and any class may take it.
                cat_heap_unlist_run((uint32_t)cls, (int32_t)run);
                madvise((void *)(uintptr_t)(g_cat_heap_base + (uint64_t)run * CAT_HEAP_RUN), CAT_HEAP_RUN, MADV_DONTNEED);
                g_cat_run_free[run] = 0;
                g_cat_run_carved[run] = 0;
                g_cat_empty_runs[g_cat_empty_run_count++] = (int32_t)run;
            } else {
                cat_heap_list_run((uint32_t)cls, (int32_t)run);
            }
        }
        head = next;
    }
}

// Lock held: `bytes` from the bump pointer aligned to `alignment`, or 0 when the mapping is used up.
static uint64_t cat_heap_bump(uint64_t bytes, uint64_t alignment) {
    uint64_t offset = ((g_cat_heap_bump - g_cat_heap_base) + alignment - 1) & ~(alignment - 1);  // from the base
    uint64_t start = g_cat_heap_base + offset;
    if (start + bytes > g_cat_heap_limit || start + bytes < start) return 0;
    g_cat_heap_bump = start + bytes;
    return start;
}

// Lock held: a block of class `cls` (`stride` bytes with its header) from one of the class's runs, or from a new
// run; 0 when the mapping is used up.
static uint64_t cat_heap_small(uint32_t cls, uint64_t stride) {
    int32_t run = g_cat_class_runs[cls];
    while (run >= 0) {
        if (g_cat_run_free[run] || g_cat_run_carved[run] + stride <= CAT_HEAP_RUN) break;
        cat_heap_unlist_run(cls, run);  // full
        run = g_cat_class_runs[cls];
    }
    if (run < 0) {
        if (g_cat_empty_run_count > 0) {
            run = g_cat_empty_runs[--g_cat_empty_run_count];
        } else {
            uint64_t start = cat_heap_bump(CAT_HEAP_RUN, CAT_HEAP_RUN);
            if (!start) return 0;
            run = (int32_t)cat_heap_run_of(start);
        }
        cat_heap_list_run(cls, run);
    }
    uint64_t header = g_cat_run_free[run];
    if (header) {
        g_cat_run_free[run] = ((uint64_t *)(uintptr_t)header)[2];
    } else {
        header = g_cat_heap_base + (uint64_t)run * CAT_HEAP_RUN + g_cat_run_carved[run];
        g_cat_run_carved[run] += (uint32_t)stride;
    }
    g_cat_run_live[run]++;
    return header;
}

void *_Nullable cat_heap_malloc(size_t size) {
    if (size == 0) size = 1;
    if (size > CAT_HEAP_RESERVE / 2) return NULL;
    uint64_t header = 0, usable;
    cat_heap_lock();
    cat_heap_drain();
    if (size <= CAT_HEAP_LARGEST_SMALL) {
        uint32_t cls = cat_heap_class(size);
        usable = (uint64_t)16 << cls;
        header = cat_heap_small(cls, CAT_HEAP_HEADER + usable);
        if (header) ((uint64_t *)(uintptr_t)header)[1] = cls;
    } else {
        uint64_t pages = (CAT_HEAP_HEADER + size + CAT_HEAP_PAGE - 1) / CAT_HEAP_PAGE;
        for (uint32_t i = 0; i < g_cat_heap_span_count; i++) {
            uint64_t candidatePages = g_cat_heap_spans[i][1];
            if (candidatePages >= pages && candidatePages <= 2 * pages) {
                header = g_cat_heap_spans[i][0];
                pages = candidatePages;
                g_cat_heap_span_count--;
                g_cat_heap_spans[i][0] = g_cat_heap_spans[g_cat_heap_span_count][0];
                g_cat_heap_spans[i][1] = g_cat_heap_spans[g_cat_heap_span_count][1];
                break;
            }
        }
        if (!header) header = cat_heap_bump(pages * CAT_HEAP_PAGE, CAT_HEAP_PAGE);
        usable = pages * CAT_HEAP_PAGE - CAT_HEAP_HEADER;
        if (header) ((uint64_t *)(uintptr_t)header)[1] = ((uint64_t)CAT_HEAP_LARGE_CLASS << 32) | pages;
    }
    cat_heap_unlock();
    if (!header) return NULL;
    ((uint64_t *)(uintptr_t)header)[0] = usable;
    __atomic_add_fetch(&g_cat_heap_live, usable, __ATOMIC_RELAXED);
    __atomic_add_fetch(&g_cat_heap_blocks, 1, __ATOMIC_RELAXED);
    return (unsigned char *)(uintptr_t)header + CAT_HEAP_HEADER;
}

void *_Nullable cat_heap_aligned(size_t alignment, size_t size) {
    if (alignment <= 16) return cat_heap_malloc(size);
    if (size > CAT_HEAP_RESERVE / 4 || alignment > CAT_HEAP_RESERVE / 4) return NULL;
    unsigned char *raw = cat_heap_malloc(size + alignment + CAT_HEAP_HEADER);
    if (!raw) return NULL;
    uintptr_t aligned = ((uintptr_t)raw + CAT_HEAP_HEADER + alignment - 1) & ~(uintptr_t)(alignment - 1);
    uint64_t *alias = cat_heap_header((void *)aligned);
    alias[0] = CAT_HEAP_ALIAS | (uint64_t)(aligned - (uintptr_t)raw);
    alias[1] = 0;
    return (void *)aligned;
}

// The block's real header (through an alias).
static inline uint64_t *cat_heap_real_header(void *ptr) {
    uint64_t *header = cat_heap_header(ptr);
    if (header[0] & CAT_HEAP_ALIAS) header = cat_heap_header((unsigned char *)ptr - (header[0] & ~CAT_HEAP_ALIAS));
    return header;
}

size_t cat_heap_usable_size(void *ptr) {
    uint64_t *header = cat_heap_header(ptr);
    if (header[0] & CAT_HEAP_ALIAS) {
        uint64_t distance = header[0] & ~CAT_HEAP_ALIAS;
        return (size_t)(cat_heap_header((unsigned char *)ptr - distance)[0] - distance);
    }
    return (size_t)header[0];
}

void cat_heap_free(void *ptr) {
    uint64_t *header = cat_heap_real_header(ptr);
    __atomic_sub_fetch(&g_cat_heap_live, header[0], __ATOMIC_RELAXED);
    __atomic_sub_fetch(&g_cat_heap_blocks, 1, __ATOMIC_RELAXED);
    uint64_t head = __atomic_load_n(&g_cat_heap_remote, __ATOMIC_RELAXED);
    do {
        header[2] = head;
    } while (!__atomic_compare_exchange_n(&g_cat_heap_remote, &head, (uint64_t)(uintptr_t)header, true,
                                          __ATOMIC_RELEASE, __ATOMIC_RELAXED));
}

void cat_heap_trim(void) {
    if (!cat_load_acquire(&g_cat_heap_base) || !__atomic_load_n(&g_cat_heap_remote, __ATOMIC_RELAXED)) return;
    cat_heap_lock();
    cat_heap_drain();
    cat_heap_unlock();
}

void cat_heap_statistics(uint64_t *resident, uint64_t *live, uint64_t *blocks) {
    cat_heap_trim();  // what was freed since the last allocation is given back first
    *live = __atomic_load_n(&g_cat_heap_live, __ATOMIC_RELAXED);
    *blocks = __atomic_load_n(&g_cat_heap_blocks, __ATOMIC_RELAXED);
    *resident = 0;
    uint64_t base = cat_load_acquire(&g_cat_heap_base);
    if (!base) return;
    cat_heap_lock();
    uint64_t end = g_cat_heap_bump;
    cat_heap_unlock();
    *resident = cat_resident_bytes((void *)(uintptr_t)base, (size_t)(end - base));
}

uint64_t cat_resident_bytes(void *start, size_t length) {
    uintptr_t first = (uintptr_t)start & ~(uintptr_t)(CAT_HEAP_PAGE - 1);
    uintptr_t end = ((uintptr_t)start + length + CAT_HEAP_PAGE - 1) & ~(uintptr_t)(CAT_HEAP_PAGE - 1);
    unsigned char vector[1024];
    uint64_t resident = 0;
    for (uintptr_t at = first; at < end;) {
        uintptr_t pages = (end - at) / CAT_HEAP_PAGE;
        if (pages > sizeof vector) pages = sizeof vector;
        if (mincore((void *)at, pages * CAT_HEAP_PAGE, vector) != 0) return resident;
        for (uintptr_t i = 0; i < pages; i++) resident += (vector[i] & 1) ? CAT_HEAP_PAGE : 0;
        at += pages * CAT_HEAP_PAGE;
    }
    return resident;
}

void cat_tracker_heap_range(uint64_t *base, uint64_t *limit) {
    *base = cat_load_acquire(&g_cat_heap_base);
    *limit = *base ? cat_load_relaxed(&g_cat_heap_limit) : 0;
}

// Whether the prepare handler took the lock: the heap may be created between prepare and parent (by a thread
// other than the forking one), and only a lock this thread took may be released.
static int g_cat_heap_fork_locked;

void cat_heap_fork_prepare(void) {
    g_cat_heap_fork_locked = cat_load_acquire(&g_cat_heap_base) != 0;
    if (g_cat_heap_fork_locked) cat_heap_lock();
}

void cat_heap_fork_parent(void) {
    if (g_cat_heap_fork_locked) cat_heap_unlock();
}

void cat_heap_fork_child(void) {
    if (g_cat_heap_fork_locked) cat_heap_unlock();
    // A creation under way in a thread that the child does not have: the child creates its own when it needs one
    // (the half-made mapping, if any, is only address space).
    uint64_t creating = 1;
    cat_cas_acq_rel(&g_cat_heap_state, &creating, 0);
}

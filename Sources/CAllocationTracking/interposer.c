// The interposed malloc family, and the hook that records each call (contracts: CAllocationTracking.h; the
// per-thread guard it checks is thread_state.c's, see cat_internal.h).
//
// Every replacement forwards to the *next* definition of the same function (dlsym(RTLD_NEXT)), not to
// __libc_malloc: a process that preloads jemalloc/tcmalloc keeps its allocator, and another interposer (such as
// ordo-one's malloc-interposer, a shared library) keeps seeing every call. Block layout is never changed: the
// tracker never reads or writes memory outside what it allocated itself.
//
// Hot-path contract (tracking off): one relaxed load and one predictable branch, then a tail call through the
// resolved function pointer. free() adds one unsigned compare for the bootstrap buffer.
//
// Sampled mode (tracking on, Configuration.sampling = .poisson): an allocation that is not sampled adds one
// relaxed load, one thread-local subtract and one branch (cat_sample_skip), and its free one thread-local load,
// one relaxed load and one load from the 128 KiB filter (cat_maybe_tracked) — neither enters the hook. Exact mode
// pays two relaxed loads more than before sampling existed, next to a stack capture.
//
// Code that runs inside malloc (everything below that is reached with g_cat_active set) must not allocate,
// lock, or touch lazily initialised globals. Thread-locals are initial-exec (CAT_TLS) so reading them never
// calls __tls_get_addr (which may allocate).
#define _GNU_SOURCE
#include "cat_internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define CAT_SANITIZER 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CAT_SANITIZER 1
#endif

// MARK: - Recorder (installed by Swift)

static uint64_t g_cat_active;  // 0/1, relaxed: the single branch of the disarmed hot path
static uint32_t g_cat_max_frames = 32;
static int g_cat_unwinder = CAT_UNWINDER_FRAME_POINTERS;

#ifndef CAT_SANITIZER
static void cat_deltas_create_key(void);
#endif

void cat_install_recorder(const cat_recorder *recorder, uint32_t maxFrames, int unwinder) {
    cat_install_recorder_ops(recorder);
#ifndef CAT_SANITIZER
    cat_deltas_create_key();
#endif
    g_cat_max_frames = maxFrames < 1 ? 1 : (maxFrames > CAT_MAX_FRAMES ? CAT_MAX_FRAMES : maxFrames);
    g_cat_unwinder = unwinder;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void cat_set_active(int active) {
#ifdef CAT_SANITIZER
    (void)active;
#else
    cat_store_seq_cst(&g_cat_active, active ? 1 : 0);
#endif
}

int cat_is_active(void) { return (int)cat_load_relaxed(&g_cat_active); }

void cat_set_sampling(uint64_t meanBytes, uint64_t seed) {
    uint64_t *words = cat_state_words();
    cat_store_relaxed(&g_cat_sample_mean, meanBytes);
    cat_store_relaxed(words + CAT_W_SAMPLE_FILTER, meanBytes ? (uint64_t)(uintptr_t)g_cat_sample_filter : 0);
    cat_store_relaxed(words + CAT_W_SAMPLE_MEAN, meanBytes);
    cat_sampling_set_seed(seed);
    cat_sampling_refresh();
}

void cat_sampling_refresh(void) {
    uint64_t process = cat_load_relaxed(cat_state_words() + CAT_W_SCOPE_PROCESS);
    cat_store_seq_cst(&g_cat_sample_skip, cat_load_relaxed(&g_cat_sample_mean) != 0 && process == 0);
}

int cat_interposer_available(void) {
#ifdef CAT_SANITIZER
    return 0;
#else
    return 1;
#endif
}

#ifndef CAT_SANITIZER

// MARK: - Resolving the next allocator

typedef struct {
    void *(*malloc)(size_t);
    void (*free)(void *);
    void *(*calloc)(size_t, size_t);
    void *(*realloc)(void *, size_t);
    int (*posix_memalign)(void **, size_t, size_t);
    void *(*aligned_alloc)(size_t, size_t);
    void *(*memalign)(size_t, size_t);
    void *(*valloc)(size_t);
    void *(*pvalloc)(size_t);
    size_t (*malloc_usable_size)(void *);
} cat_allocator;

// Bootstrap allocator: serves the allocations dlsym itself makes while we resolve the next allocator (and any
// other thread's, should one race the very first call). Blocks carry a 16-byte header holding their size; they
// are never freed (the buffer is static).
static _Alignas(16) unsigned char g_cat_bootstrap[64 * 1024];
static uint64_t g_cat_bootstrap_used;

static inline int cat_is_bootstrap(const void *p) {
    return CAT_UNLIKELY((uintptr_t)p - (uintptr_t)g_cat_bootstrap < sizeof(g_cat_bootstrap));
}

static void *cat_bootstrap_alloc(size_t size, size_t alignment) {
    if (alignment < 16) alignment = 16;
    if (size > sizeof(g_cat_bootstrap)) { errno = ENOMEM; return NULL; }
    for (;;) {
        uint64_t used = cat_load_relaxed(&g_cat_bootstrap_used);
        uint64_t start = (used + 16 + alignment - 1) & ~(uint64_t)(alignment - 1);
        uint64_t end = start + ((size + 15) & ~(size_t)15);
        if (end > sizeof(g_cat_bootstrap)) { errno = ENOMEM; return NULL; }
        if (cat_cas_acq_rel(&g_cat_bootstrap_used, &used, end)) {
            memcpy(g_cat_bootstrap + start - 16, &size, sizeof(size));
            return g_cat_bootstrap + start;  // static storage: already zeroed
        }
    }
}

static size_t cat_bootstrap_size(const void *p) {
    size_t size;
    memcpy(&size, (const unsigned char *)p - 16, sizeof(size));
    return size;
}

static void cat_resolve(void);

static void *cat_boot_malloc(size_t n) { cat_resolve(); return malloc(n); }
static void cat_boot_free(void *p) { cat_resolve(); free(p); }
static void *cat_boot_calloc(size_t n, size_t m) { cat_resolve(); return calloc(n, m); }
static void *cat_boot_realloc(void *p, size_t n) { cat_resolve(); return realloc(p, n); }
static int cat_boot_posix_memalign(void **p, size_t a, size_t n) { cat_resolve(); return posix_memalign(p, a, n); }
static void *cat_boot_aligned_alloc(size_t a, size_t n) { cat_resolve(); return aligned_alloc(a, n); }
static void *cat_boot_memalign(size_t a, size_t n) { cat_resolve(); return memalign(a, n); }
static void *cat_boot_valloc(size_t n) { cat_resolve(); return valloc(n); }
static void *cat_boot_pvalloc(size_t n) { cat_resolve(); return pvalloc(n); }
static size_t cat_boot_malloc_usable_size(void *p) { cat_resolve(); return malloc_usable_size(p); }

static cat_allocator g_cat_next = {
    cat_boot_malloc, cat_boot_free, cat_boot_calloc, cat_boot_realloc,
    cat_boot_posix_memalign, cat_boot_aligned_alloc, cat_boot_memalign, cat_boot_valloc, cat_boot_pvalloc,
    cat_boot_malloc_usable_size,
};

static uint64_t g_cat_resolve_state;  // 0 unresolved, 1 resolving, 2 resolved

// While resolving, this thread's allocations come from the bootstrap buffer.
static void *cat_resolving_malloc(size_t n) { return cat_bootstrap_alloc(n, 16); }

#define CAT_NEXT(name) ((__typeof__(g_cat_next.name))dlsym(RTLD_NEXT, #name))

static void cat_resolve(void) {
    uint64_t expected = 0;
    if (cat_load_acquire(&g_cat_resolve_state) == 2) return;
    if (t_cat_special == CAT_SPECIAL_RESOLVING) return;  // re-entered from dlsym: callers below use the bootstrap buffer
    if (!cat_cas_acq_rel(&g_cat_resolve_state, &expected, 1)) {
        while (cat_load_acquire(&g_cat_resolve_state) != 2) cat_cpu_relax();
        return;
    }
    t_cat_special = CAT_SPECIAL_RESOLVING;
    cat_allocator next;
    next.malloc = CAT_NEXT(malloc);
    next.free = CAT_NEXT(free);
    next.calloc = CAT_NEXT(calloc);
    next.realloc = CAT_NEXT(realloc);
    next.posix_memalign = CAT_NEXT(posix_memalign);
    next.aligned_alloc = CAT_NEXT(aligned_alloc);
    next.memalign = CAT_NEXT(memalign);
    next.valloc = CAT_NEXT(valloc);
    next.pvalloc = CAT_NEXT(pvalloc);
    next.malloc_usable_size = CAT_NEXT(malloc_usable_size);
    t_cat_special = 0;
    if (!next.malloc || !next.free || !next.calloc || !next.realloc || !next.posix_memalign || !next.memalign ||
        !next.malloc_usable_size) {
        static const char message[] = "swift-allocation-tracking: cannot resolve the next malloc with dlsym(RTLD_NEXT)\n";
        write(2, message, sizeof(message) - 1);
        abort();
    }
    g_cat_next = next;
    cat_store_release(&g_cat_resolve_state, 2);
}

// One TLS test at the top of every member of the malloc family sends two kinds of thread elsewhere: the thread
// resolving the real allocator (dlsym allocating: the bootstrap buffer), and the tracker's own threads (their
// private heap, tracker_heap.c).
#define CAT_SPECIAL() CAT_UNLIKELY(t_cat_special)

// A tracker thread's allocation: its private heap, or the real allocator when the heap has no room (or none could
// be mapped). Never recorded: the tracker's threads are suspended (CAT_THREAD_SUSPENDED).
static __attribute__((noinline)) void *cat_special_aligned(size_t alignment, size_t size) {
    if (t_cat_special == CAT_SPECIAL_RESOLVING) return cat_bootstrap_alloc(size, alignment < 16 ? 16 : alignment);
    void *ptr = cat_heap_aligned(alignment, size);
    if (ptr) return ptr;
    if (alignment <= 16) return g_cat_next.malloc(size);
    void *fallback = NULL;
    return g_cat_next.posix_memalign(&fallback, alignment, size) == 0 ? fallback : NULL;
}

static inline void *cat_special_malloc(size_t size) { return cat_special_aligned(16, size); }

static __attribute__((noinline)) void *cat_special_calloc(size_t count, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) { errno = ENOMEM; return NULL; }
    if (t_cat_special == CAT_SPECIAL_RESOLVING) return cat_bootstrap_alloc(total, 16);
    void *ptr = cat_heap_malloc(total);
    if (!ptr) return g_cat_next.calloc(count, size);
    memset(ptr, 0, total);
    return ptr;
}

// MARK: - The hook (runs inside malloc)

// Test support: events signal handlers made inside the hook (queued, recorded at its exit) and those the full
// queue could not take (counted as dropped as well). Relaxed counters.
static uint64_t g_cat_deferred_frees;
static uint64_t g_cat_deferred_allocations;
static uint64_t g_cat_deferred_overflows;

void cat_debug_deferred_events(uint64_t *frees, uint64_t *allocations, uint64_t *overflows) {
    *frees = cat_load_relaxed(&g_cat_deferred_frees);
    *allocations = cat_load_relaxed(&g_cat_deferred_allocations);
    *overflows = cat_load_relaxed(&g_cat_deferred_overflows);
}

// The measurement scope an allocation of this thread belongs to now, and whether that scope wants stacks
// (scope records are static memory, never freed; CAT_SCOPE_FLAGS says whether the scope wants stacks; a
// counting-only scope skips the capture and its allocations intern into one frameless trace per scope). Plain
// loads only: allocation-free, and safe in a signal handler.
static inline uint64_t cat_current_scope(uint64_t *words, int *capture) {
    uint64_t scope = t_cat_scope;
    if (scope == 0) scope = cat_load_relaxed(words + CAT_W_SCOPE_PROCESS);
    *capture = 1;
    if (scope != 0) {
        uint64_t index = (scope & 0xFFFF) - 1;
        *capture = index < CAT_SCOPES &&
                   (cat_load_relaxed(words + CAT_W_SCOPES + index * CAT_SCOPE_WORDS + CAT_SCOPE_FLAGS) &
                    CAT_SCOPE_CAPTURE_STACKS) != 0;
    }
    return scope;
}

// MARK: - Per-thread counter deltas (design: _UnsafeThreadDeltas in Swift)
//
// A thread's deltas live in a slot of a static array (g_cat_delta_slots; its index in the thread's initial-exec
// TLS), claimed in a registry that a holder of the gate's writer side walks to fold them (a read, fork) or
// discard them (stop, clearTraces). A thread's exit folds them and releases the slot: a pthread key destructor
// does, inside the reader side. Allocations made by destructors that run after ours go straight to the shared
// counters (t_cat_delta_slot -1). A thread whose first allocation comes after the key destructors have run (in
// the last round of glibc's destructors, or in the thread's final clean-up) keeps its slot after it exits: the
// slot is static memory, so folds keep folding it safely (its last deltas included), and the registry has one
// slot fewer. Only allocations register a thread (a free alone uses the shared counters), so threads that only
// free at exit take none. The static slots were TLS at first, and the release suite crashed in a fold that read
// a dead thread's TLS.

static pthread_key_t g_cat_delta_key;
static uint64_t g_cat_delta_key_state;  // 0 none, 1 creating, 2 created, 3 failed

static void cat_deltas_at_thread_exit(void *value);

// Outside malloc (cat_install_recorder), once.
static void cat_deltas_create_key(void) {
    uint64_t expected = 0;
    if (!cat_cas_acq_rel(&g_cat_delta_key_state, &expected, 1)) return;
    cat_store_release(&g_cat_delta_key_state, pthread_key_create(&g_cat_delta_key, cat_deltas_at_thread_exit) == 0 ? 2 : 3);
}

// Inside the hook, outside the gate: the thread's first recorded event. Claims a registry slot and sets the key
// whose destructor folds the deltas at exit; pthread_setspecific may allocate (glibc's second-level array for keys
// past the first 32), so it runs as a rare path. Without a slot or a key the thread updates the shared counters.
static __attribute__((noinline)) uint64_t *_Nullable cat_deltas_register(void) {
    if (cat_load_acquire(&g_cat_delta_key_state) != 2) {
        t_cat_delta_slot = -1;
        return NULL;
    }
    int slot = cat_deltas_claim_slot();
    if (slot < 0) {
        t_cat_delta_slot = -1;
        return NULL;
    }
    cat_enter_rare_path();
    int failed = pthread_setspecific(g_cat_delta_key, (void *)1);
    cat_leave_rare_path();
    if (failed) {
        cat_store_release(&g_cat_delta_threads[slot - 1], 0);
        t_cat_delta_slot = -1;
        return NULL;
    }
    t_cat_delta_slot = slot;
    return cat_my_deltas();
}

// The deltas the table logic should use for this thread's event (NULL: the shared counters). One TLS load.
// `mayRegister`: an allocation registers the thread on its first event; a free does not (see above).
static inline uint64_t *_Nullable cat_hook_deltas(bool mayRegister) {
    int slot = t_cat_delta_slot;
    if (CAT_LIKELY(slot > 0)) return g_cat_delta_slots[slot - 1];
    return slot == 0 && mayRegister ? cat_deltas_register() : NULL;
}

// Inside the hook (flag set): hands a captured allocation to the table logic, with the gate's reader side held.
static void cat_record_captured(uint64_t *words, void *ptr, size_t size, const uintptr_t *frames, uint32_t count,
                                uint32_t total, uint64_t scope) {
    const cat_recorder *recorder = cat_current_recorder();
    uint32_t shard = cat_thread_shard_inline();
    uint64_t *deltas = cat_hook_deltas(true);
    for (uint32_t attempt = 0; attempt < 2; attempt++) {
        cat_gate_enter(shard);
        uint32_t result = recorder->recordAllocation(words, deltas, shard, ptr, size, frames, count, total, attempt == 1,
                                                     scope);
        cat_gate_exit(shard);
        cat_service_requests();  // rare: table memory and rebuilds, outside the gate
        if (result != CAT_RECORD_RETRY) break;
    }
}

// Inside the hook (flag set): removes a block's entry. Returns the removed table value (0 if untracked).
static uint64_t cat_record_removal(void *ptr) {
    uint32_t shard = cat_thread_shard_inline();
    uint64_t *deltas = cat_hook_deltas(false);
    cat_gate_enter(shard);
    uint64_t removed = cat_current_recorder()->recordFree(cat_state_words(), deltas, shard, ptr);
    cat_gate_exit(shard);
    return removed;
}

// An event a signal handler made inside the hook that the full queue could not take: counted with the dropped
// allocations (TracedMemory.droppedAllocations), while tables exist. Plain atomic adds: safe in a handler.
static void cat_count_overflow(void) {
    cat_add_relaxed(&g_cat_deferred_overflows, 1);
    uint64_t *words = cat_state_words();
    if (cat_load_relaxed(words + CAT_W_READY))
        cat_add_relaxed(words + (size_t)cat_thread_shard_inline() * CAT_SHARD_WORDS + CAT_S_DROPPED, 1);
}

// In a signal handler that interrupted the hook: queues the free of `ptr` (design: thread_state.c). Returns true
// when queued (the caller must NOT free: the drain does, after recording it), false when the queue is full (the
// caller frees now; the loss is counted).
static __attribute__((noinline)) bool cat_defer_free(void *ptr) {
    int slot = cat_deferred_claim_event();
    if (slot < 0) {
        cat_count_overflow();
        return false;
    }
    cat_deferred_event *event = &t_cat_deferred[slot];
    event->pointer = (uintptr_t)ptr;
    event->size = 0;
    event->scope = 0;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    __atomic_store_n(&event->shape, CAT_DEFERRED_READY, __ATOMIC_RELAXED);
    cat_add_relaxed(&g_cat_deferred_frees, 1);
    return true;
}

// In a signal handler that interrupted the hook: queues the allocation `ptr` (already made by the real
// allocator), with a frame-pointer stack when the thread's stack bounds are known (cat_capture_stack_nested).
static __attribute__((noinline)) void cat_defer_allocation(void *ptr, size_t size, void *frameAddress,
                                                           void *returnAddress) {
    int capture;
    uint64_t scope = cat_current_scope(cat_state_words(), &capture);
    uintptr_t frames[CAT_DEFERRED_MAX_FRAMES];
    uint32_t total = 0, count = 0;
    if (capture) {
        uint32_t limit = g_cat_max_frames < CAT_DEFERRED_MAX_FRAMES ? g_cat_max_frames : CAT_DEFERRED_MAX_FRAMES;
        count = cat_capture_stack_nested(frameAddress, returnAddress, frames, limit, &total);
    }
    int slot = cat_deferred_claim_event();
    if (slot < 0) {
        cat_count_overflow();
        return;
    }
    int first = count ? cat_deferred_claim_frames(count) : 0;
    if (first < 0) {
        first = 0;
        count = 0;  // the pool is full: recorded without frames (the true depth is kept)
    }
    for (uint32_t i = 0; i < count; i++) t_cat_deferred_frames[first + (int)i] = frames[i];
    cat_deferred_event *event = &t_cat_deferred[slot];
    event->pointer = (uintptr_t)ptr;
    event->size = size;
    event->scope = scope;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    __atomic_store_n(&event->shape,
                     CAT_DEFERRED_READY | CAT_DEFERRED_ALLOCATION | (uint64_t)count << 48 | (uint64_t)first << 32 | total,
                     __ATOMIC_RELAXED);
    cat_add_relaxed(&g_cat_deferred_allocations, 1);
}

// The outermost hook's exit, flag still set: records the queued events in order, and does each queued free's
// real free after its record; then leaves. A handler that runs meanwhile sees the flag and queues: the loop
// takes its events too, and the leave (one CAS) succeeds only once none is waiting. errno is the caller's to
// keep (every caller saves and restores it).
static __attribute__((noinline)) void cat_drain_and_leave(void) {
    uint64_t *words = cat_state_words();
    uint64_t head = 0;  // the queue starts empty at the outermost entry: events 0…claimed-1 are this exit's
    for (;;) {
        uint64_t claimed = (__atomic_load_n(&t_cat_hook, __ATOMIC_RELAXED) >> CAT_HOOK_EVENT_SHIFT) & CAT_HOOK_EVENT_MASK;
        for (; head < claimed; head++) {
            if (head >= CAT_DEFERRED_EVENTS) continue;  // claims past a full queue hold nothing
            __atomic_signal_fence(__ATOMIC_SEQ_CST);
            cat_deferred_event *event = &t_cat_deferred[head];
            uint64_t shape = __atomic_load_n(&event->shape, __ATOMIC_RELAXED);
            if (!(shape & CAT_DEFERRED_READY)) continue;  // abandoned by a handler that jumped out
            __atomic_store_n(&event->shape, 0, __ATOMIC_RELAXED);
            void *ptr = (void *)event->pointer;
            if (shape & CAT_DEFERRED_ALLOCATION) {
                uint32_t count = (uint32_t)(shape >> 48) & 0x3FFF;
                uint32_t first = (uint32_t)(shape >> 32) & 0xFFFF;
                cat_record_captured(words, ptr, event->size, t_cat_deferred_frames + first, count, (uint32_t)shape,
                                    event->scope);
            } else {
                cat_record_removal(ptr);
                g_cat_next.free(ptr);  // never a bootstrap block: cat_defer_free is not called for those
            }
        }
        uint64_t expected = CAT_HOOK_INSIDE | (claimed << CAT_HOOK_EVENT_SHIFT);
        expected |= __atomic_load_n(&t_cat_hook, __ATOMIC_RELAXED) & ((uint64_t)CAT_HOOK_FRAMES_MASK << CAT_HOOK_FRAMES_SHIFT);
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        if (__atomic_compare_exchange_n(&t_cat_hook, &expected, 0, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return;
    }
}

// Every exit of the hook: leaves at once when nothing was queued (the common case: one CAS), else drains.
static inline void cat_hook_leave(void) {
    if (CAT_UNLIKELY(!cat_hook_try_leave())) cat_drain_and_leave();
}

// The key's destructor, at thread exit: folds the thread's deltas into the shared counters and leaves the
// registry, inside the reader side (a writer never sees the slot half gone). As the hook: the flag is set, so a
// signal handler's allocation or free meanwhile is queued and recorded (without deltas) at the leave.
static void cat_deltas_at_thread_exit(void *value) {
    (void)value;
    int slot = t_cat_delta_slot;
    if (slot <= 0 || cat_in_hook()) return;
    int savedErrno = errno;
    cat_hook_enter();
    uint64_t *words = cat_state_words();
    uint32_t shard = cat_thread_shard_inline();
    cat_gate_enter(shard);
    if (cat_load_acquire(words + CAT_W_READY)) cat_current_recorder()->foldDeltas(words, cat_my_deltas());
    cat_store_release(&g_cat_delta_threads[slot - 1], 0);
    t_cat_delta_slot = -1;
    cat_gate_exit(shard);
    cat_hook_leave();
    errno = savedErrno;
}

// MARK: - Sampling (design: thread_state.c)

// The whole cost of an allocation that sampling skips, inlined into every member of the malloc family: the
// relaxed load says whether skipping is allowed at all (sampled mode, no process-wide measurement; 0 in exact
// mode, where everything is recorded), the TLS subtract is the countdown (initial-exec: one %fs-relative
// instruction), and the branch is taken for all but about one allocation in T/s. No stack, no table, no hook.
static inline int cat_sample_skip(size_t size) {
    return cat_load_relaxed(&g_cat_sample_skip) != 0 && (t_cat_sample_left -= (int64_t)size) > 0;
}

// The decision for an allocation that reached the hook in sampled mode (the countdown crossed, or must be drawn
// afresh). Returns 1 when it is recorded. Inside a measurement scope every allocation is recorded (weight 1:
// the table logic sees the scope tag) and the countdown is held below zero. A signal handler interrupting this
// between its TLS read and write makes its own decision whose countdown update is lost: only the spacing of
// the next sample changes, not the weight of any recorded block.
static __attribute__((noinline)) int cat_sample_decide(size_t size) {
    if (t_cat_scope != 0 || cat_load_relaxed(cat_state_words() + CAT_W_SCOPE_PROCESS) != 0) {
        t_cat_sample_left = INT64_MIN / 2;
        t_cat_sample_valid = 0;
        return 1;
    }
    if (!t_cat_sample_valid) {
        // First allocation of the thread (or after a scope, seeding, fork): the countdown starts here.
        t_cat_sample_valid = 1;
        t_cat_sample_left = cat_sample_interval() - (int64_t)size;
        if (t_cat_sample_left > 0) return 0;
    }
    t_cat_sample_left = cat_sample_interval();
    return 1;
}

// Whether `ptr` may be in the pointer table, before a free enters the hook to remove it. In exact mode any
// block may be. In sampled mode the table holds only sampled and measured blocks — a few per T bytes live —
// and g_cat_sample_filter counts its entries by address bucket: a zero bucket proves the block is not there,
// with one load from a 128 KiB static array, instead of entering the hook (errno, the guard's CAS, the gate's
// two atomic adds, an indirect call and the table probe: several times the cost of glibc's free). A nonzero
// bucket (another sampled block hashed there) costs the lookup as before. The allocating thread counted the
// entry in before malloc returned the block, and whoever frees it got it after that (the program's own
// ordering), so the count is visible here.
static inline int cat_maybe_tracked(const void *ptr) {
    if (cat_load_relaxed(&g_cat_sample_mean) == 0) return 1;
    uint64_t bucket = ((uint64_t)(uintptr_t)ptr * CAT_SAMPLE_FILTER_MULTIPLIER) >> (64 - CAT_SAMPLE_FILTER_BITS);
    return cat_load_relaxed(&g_cat_sample_filter[bucket]) != 0;
}

// Inside malloc. Never allocates: the frame buffer is on the stack (CAT_MAX_FRAMES words); the table logic is
// `@_noLocks` Swift; the gate waits only while a writer holds it. Preserves errno.
static __attribute__((noinline)) void cat_record_allocation(void *ptr, size_t size, void *frameAddress,
                                                            void *returnAddress) {
    // Sampled mode: only allocations that crossed the countdown (or are measured) go further.
    if (cat_load_relaxed(&g_cat_sample_mean) != 0 && ptr != NULL && t_cat_state == CAT_THREAD_NORMAL &&
        !cat_sample_decide(size))
        return;
    if (CAT_UNLIKELY(cat_in_hook())) {
        // A rare path's own allocations pass through. Any other comes from a signal handler that interrupted
        // the hook (the hook itself never allocates: the tests assert this count stays 0 without handlers).
        if (t_cat_rare_path) return;
        cat_add_relaxed(&g_cat_internal_allocations, 1);
        if (ptr != NULL && t_cat_state == CAT_THREAD_NORMAL) cat_defer_allocation(ptr, size, frameAddress, returnAddress);
        return;
    }
    if (ptr == NULL || t_cat_state != CAT_THREAD_NORMAL) return;
    int savedErrno = errno;
    cat_hook_enter();
    uint64_t *words = cat_state_words();
    int capture;
    uint64_t scope = cat_current_scope(words, &capture);
    // The block's pointer-table slot is a cache miss (a random place in a large table): ask for it now, so it
    // arrives while the stack is captured. Same formula as _UnsafePointerTable.home; a stale base or capacity
    // (a rebuild meanwhile) only makes the prefetch useless, and prefetching never faults.
    uint64_t capacity = cat_load_relaxed(words + CAT_W_POINTER_CAPACITY);
    const uint64_t *slots = (const uint64_t *)(uintptr_t)cat_load_relaxed(words + CAT_W_POINTER_BASE);
    if (slots && capacity) {
        unsigned __int128 product = (unsigned __int128)((uint64_t)(uintptr_t)ptr * 0x9E3779B97F4A7C15ull) * capacity;
        __builtin_prefetch(slots + (uint64_t)(product >> 64) * 2, 1, 3);
    }
    uintptr_t frames[CAT_MAX_FRAMES];
    uint32_t total = 0;
    uint32_t count = capture ? cat_capture_stack(g_cat_unwinder, frameAddress, returnAddress, frames, g_cat_max_frames,
                                                 &total)
                             : 0;
    cat_record_captured(words, ptr, size, frames, count, total, scope);
    cat_hook_leave();
    errno = savedErrno;
}

// Inside free/realloc, before the real free. Returns the removed table value (0 if untracked). Not for a
// nested call (free and realloc queue those, cat_defer_free); the check below only keeps one from recursing.
static __attribute__((noinline)) uint64_t cat_record_free(void *ptr) {
    if (cat_in_hook() || t_cat_state == CAT_THREAD_INTERNAL) return 0;
    int savedErrno = errno;
    cat_hook_enter();
    uint64_t removed = cat_record_removal(ptr);
    cat_hook_leave();
    errno = savedErrno;
    return removed;
}

static __attribute__((noinline)) void cat_restore(void *ptr, uint64_t removed) {
    if (removed == 0 || cat_in_hook()) return;
    int savedErrno = errno;
    cat_hook_enter();
    uint32_t shard = cat_thread_shard_inline();
    uint64_t *deltas = cat_hook_deltas(true);
    cat_gate_enter(shard);
    cat_current_recorder()->restore(cat_state_words(), deltas, shard, ptr, removed);
    cat_gate_exit(shard);
    cat_hook_leave();
    errno = savedErrno;
}

// The real allocator returned NULL for a valid request: the allocation-failure report (cat_emergency.h), which
// returns at once unless configured. Preserves errno. The report runs with the hook's flag set; when a signal
// handler queued events meanwhile, its leave keeps the flag and they are drained here.
static __attribute__((noinline)) void cat_allocation_failed(const char *function, size_t size) {
    int savedErrno = errno;
    bool outermost = !cat_in_hook();
    cat_emergency_report(function, size);
    if (outermost && cat_in_hook()) cat_drain_and_leave();
    errno = savedErrno;
}

// Deliberately no __builtin_expect: with an "unlikely" weight, clang's hot/cold splitting outlines the armed
// branch into `malloc.cold.1`, where __builtin_frame_address/__builtin_return_address would describe the
// outlined function instead of malloc's caller. The release-build tests check the first frame is the caller.
#define CAT_ARMED() (cat_load_relaxed(&g_cat_active) != 0)

// MARK: - The malloc family

void *malloc(size_t size) {
    if (CAT_SPECIAL()) return cat_special_malloc(size);
    void *ptr = g_cat_next.malloc(size);
    if (CAT_ARMED()) {
        if (ptr == NULL && size != 0) cat_allocation_failed("malloc", size);
        if (!cat_sample_skip(size)) cat_record_allocation(ptr, size, __builtin_frame_address(0), __builtin_return_address(0));
    }
    return ptr;
}

void free(void *ptr) {
    if (cat_heap_contains(ptr)) {  // a block of the tracker's threads' heap, freed by any thread: never tracked
        cat_heap_free(ptr);
        return;
    }
    if (CAT_ARMED() && ptr) {
        // Inside the hook, a free comes from a signal handler that interrupted it: queued, and freed at the
        // hook's exit after it is recorded (thread_state.c). Bootstrap blocks are never tracked nor freed.
        if (CAT_UNLIKELY(cat_in_hook())) {
            if (cat_is_bootstrap(ptr) || cat_defer_free(ptr)) return;
        } else if (cat_maybe_tracked(ptr)) {
            cat_record_free(ptr);
        }
    }
    if (cat_is_bootstrap(ptr) || CAT_UNLIKELY(t_cat_special == CAT_SPECIAL_RESOLVING)) return;
    g_cat_next.free(ptr);
}

void *calloc(size_t count, size_t size) {
    if (CAT_SPECIAL()) return cat_special_calloc(count, size);
    void *ptr = g_cat_next.calloc(count, size);
    if (CAT_ARMED()) {
        size_t total = 0;
        if (!__builtin_mul_overflow(count, size, &total)) {
            if (ptr == NULL && total != 0) cat_allocation_failed("calloc", total);
            if (!cat_sample_skip(total)) cat_record_allocation(ptr, total, __builtin_frame_address(0), __builtin_return_address(0));
        }
    }
    return ptr;
}

// realloc of a bootstrap block: move it to the real allocator.
static void *cat_realloc_bootstrap(void *ptr, size_t size) {
    void *moved = malloc(size);
    if (moved) {
        size_t old = cat_bootstrap_size(ptr);
        memcpy(moved, ptr, old < size ? old : size);
    }
    return moved;
}

// realloc from a signal handler that interrupted the hook. The old block's entry cannot be removed here, and the
// real realloc would free the old block at once (its address could then be reused before the removal is
// recorded), so it is done as malloc, copy and a queued free: a realloc may always move the block. Size 0 frees
// the block and returns NULL, as glibc's realloc does. A full queue falls back to the real realloc, the lost
// free and the unrecorded allocation counted as dropped.
static __attribute__((noinline)) void *cat_realloc_nested(void *ptr, size_t size, void *frameAddress,
                                                          void *returnAddress) {
    if (size == 0) {
        if (cat_defer_free(ptr)) return NULL;
        return g_cat_next.realloc(ptr, 0);
    }
    void *moved = g_cat_next.malloc(size);
    if (moved == NULL) return NULL;  // errno is the allocator's ENOMEM; the old block is untouched
    size_t old = g_cat_next.malloc_usable_size(ptr);
    memcpy(moved, ptr, old < size ? old : size);
    if (!cat_defer_free(ptr)) {
        g_cat_next.free(moved);
        cat_count_overflow();  // the allocation the real realloc makes is not recorded either
        return g_cat_next.realloc(ptr, size);
    }
    if (!cat_sample_skip(size)) cat_record_allocation(moved, size, frameAddress, returnAddress);  // in the hook: queued
    return moved;
}

// realloc of a block of the tracker's heap, or by a tracker thread: a new block (from wherever this thread
// allocates, recorded if it is the program's), the contents copied, the old block freed. Size 0 frees the block
// and returns NULL, as glibc's realloc does.
static __attribute__((noinline)) void *cat_realloc_moving(void *ptr, size_t size) {
    if (!ptr) return malloc(size);
    if (size == 0) {
        free(ptr);
        return NULL;
    }
    void *moved = malloc(size);
    if (moved == NULL) return NULL;
    size_t old = malloc_usable_size(ptr);
    memcpy(moved, ptr, old < size ? old : size);
    free(ptr);
    return moved;
}

// realloc and reallocarray share this body; each passes its own frame so the stack starts at its caller.
static inline __attribute__((always_inline)) void *cat_realloc(void *ptr, size_t size, void *frameAddress,
                                                               void *returnAddress, const char *name) {
    if (CAT_SPECIAL()) {
        if (t_cat_special == CAT_SPECIAL_RESOLVING) return cat_resolving_malloc(size);
        return cat_realloc_moving(ptr, size);
    }
    if (ptr && cat_is_bootstrap(ptr)) return cat_realloc_bootstrap(ptr, size);
    if (cat_heap_contains(ptr)) return cat_realloc_moving(ptr, size);
    if (!CAT_ARMED()) return g_cat_next.realloc(ptr, size);
    if (CAT_UNLIKELY(ptr && cat_in_hook())) return cat_realloc_nested(ptr, size, frameAddress, returnAddress);
    // Remove the old entry first (the real realloc may free it and the address be reused at once), restore it
    // if the real realloc fails and the old block is still live.
    uint64_t removed = ptr && cat_maybe_tracked(ptr) ? cat_record_free(ptr) : 0;
    void *moved = g_cat_next.realloc(ptr, size);
    if (moved) {
        if (!cat_sample_skip(size)) cat_record_allocation(moved, size, frameAddress, returnAddress);
    } else if (ptr && size != 0) {
        cat_restore(ptr, removed);  // failed: the old block is untouched
    }                               // size 0 with NULL result: the old block was freed (glibc semantics)
    if (moved == NULL && size != 0) cat_allocation_failed(name, size);
    return moved;
}

void *realloc(void *ptr, size_t size) {
    return cat_realloc(ptr, size, __builtin_frame_address(0), __builtin_return_address(0), "realloc");
}

// As glibc implements it: an overflow check, then realloc. Not forwarded: glibc's reallocarray calls the public
// realloc, which would come back through this interposer and count the block twice.
void *reallocarray(void *ptr, size_t count, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;  // the old block is untouched
        return NULL;
    }
    return cat_realloc(ptr, total, __builtin_frame_address(0), __builtin_return_address(0), "reallocarray");
}

int posix_memalign(void **out, size_t alignment, size_t size) {
    if (CAT_SPECIAL()) {
        if (alignment < sizeof(void *) || (alignment & (alignment - 1))) return EINVAL;
        *out = cat_special_aligned(alignment, size);
        return *out ? 0 : ENOMEM;
    }
    int result = g_cat_next.posix_memalign(out, alignment, size);
    if (CAT_ARMED() && result == 0) {
        if (!cat_sample_skip(size)) cat_record_allocation(*out, size, __builtin_frame_address(0), __builtin_return_address(0));
    }
    else if (CAT_ARMED() && result == ENOMEM)
        cat_allocation_failed("posix_memalign", size);
    return result;
}

// For the allocators whose failure shows only in errno (aligned_alloc, memalign, valloc, pvalloc): errno is
// cleared before the call so a stale ENOMEM from earlier is not mistaken for this call's, and put back after a
// call that did not set it, so the caller sees errno as the allocator left it.
static inline int cat_errno_clear(void) {
    int saved = errno;
    errno = 0;
    return saved;
}
static inline int cat_errno_settle(int saved) {
    int set = errno;
    if (set == 0) errno = saved;
    return set;
}

void *aligned_alloc(size_t alignment, size_t size) {
    if (CAT_SPECIAL()) return cat_special_aligned(alignment, size);
    int saved = cat_errno_clear();
    void *ptr = g_cat_next.aligned_alloc ? g_cat_next.aligned_alloc(alignment, size)
                                         : g_cat_next.memalign(alignment, size);
    int failure = cat_errno_settle(saved);
    if (CAT_ARMED()) {
        if (ptr == NULL && failure == ENOMEM) cat_allocation_failed("aligned_alloc", size);
        if (!cat_sample_skip(size)) cat_record_allocation(ptr, size, __builtin_frame_address(0), __builtin_return_address(0));
    }
    return ptr;
}

void *memalign(size_t alignment, size_t size) {
    if (CAT_SPECIAL()) return cat_special_aligned(alignment, size);
    int saved = cat_errno_clear();
    void *ptr = g_cat_next.memalign(alignment, size);
    int failure = cat_errno_settle(saved);
    if (CAT_ARMED()) {
        if (ptr == NULL && failure == ENOMEM) cat_allocation_failed("memalign", size);
        if (!cat_sample_skip(size)) cat_record_allocation(ptr, size, __builtin_frame_address(0), __builtin_return_address(0));
    }
    return ptr;
}

void *valloc(size_t size) {
    if (CAT_SPECIAL()) return cat_special_aligned(4096, size);
    int saved = cat_errno_clear();
    void *ptr = g_cat_next.valloc ? g_cat_next.valloc(size) : g_cat_next.memalign((size_t)getpagesize(), size);
    int failure = cat_errno_settle(saved);
    if (CAT_ARMED()) {
        if (ptr == NULL && failure == ENOMEM) cat_allocation_failed("valloc", size);
        if (!cat_sample_skip(size)) cat_record_allocation(ptr, size, __builtin_frame_address(0), __builtin_return_address(0));
    }
    return ptr;
}

void *pvalloc(size_t size) {
    if (CAT_SPECIAL()) {
        size_t rounded;
        if (__builtin_add_overflow(size, (size_t)4095, &rounded)) { errno = ENOMEM; return NULL; }
        return cat_special_aligned(4096, rounded & ~(size_t)4095);
    }
    void *ptr;
    int saved = cat_errno_clear();
    if (g_cat_next.pvalloc) {
        ptr = g_cat_next.pvalloc(size);
    } else {
        size_t page = (size_t)getpagesize();
        size_t rounded;
        if (__builtin_add_overflow(size, page - 1, &rounded)) { errno = ENOMEM; return NULL; }
        rounded &= ~(page - 1);
        ptr = g_cat_next.memalign(page, rounded ? rounded : page);
    }
    int failure = cat_errno_settle(saved);
    if (CAT_ARMED()) {
        if (ptr == NULL && failure == ENOMEM) cat_allocation_failed("pvalloc", size);
        if (!cat_sample_skip(size)) cat_record_allocation(ptr, size, __builtin_frame_address(0), __builtin_return_address(0));
    }
    return ptr;
}

size_t malloc_usable_size(void *ptr) {
    if (ptr && cat_is_bootstrap(ptr)) return cat_bootstrap_size(ptr);
    if (cat_heap_contains(ptr)) return cat_heap_usable_size(ptr);
    if (CAT_UNLIKELY(t_cat_special == CAT_SPECIAL_RESOLVING)) return 0;
    return g_cat_next.malloc_usable_size(ptr);
}

#else  // CAT_SANITIZER

// The interposer is compiled out: no signal handler can interrupt a hook that does not exist.
void cat_debug_deferred_events(uint64_t *frees, uint64_t *allocations, uint64_t *overflows) {
    *frees = 0;
    *allocations = 0;
    *overflows = 0;
}

#endif  // CAT_SANITIZER

// MARK: - Process events

static uint64_t g_cat_fork_installed;
static int g_cat_fork_held_gate;
static int g_cat_fork_saved_state;

// Around fork(): hold the API mutex and the gate's writer side, so the child inherits tables at rest.
static void cat_on_fork_prepare(void) {
    cat_api_lock();
    g_cat_fork_held_gate = cat_load_acquire(cat_state_words() + CAT_W_READY) != 0;
    if (g_cat_fork_held_gate) {
        g_cat_fork_saved_state = cat_thread_set_state(CAT_THREAD_INTERNAL);
        cat_gate_lock_writer();
        cat_deltas_fold_all();  // the child keeps only this thread: the others' deltas go into the counters
    }
    cat_heap_fork_prepare();  // last: the heap's lock is a leaf
}

static void cat_on_fork_parent(void) {
    cat_heap_fork_parent();
    if (g_cat_fork_held_gate) {
        cat_gate_unlock_writer();
        cat_thread_set_state(g_cat_fork_saved_state);
    }
    cat_api_unlock();
}

static void cat_on_fork_child(void) {
    // Only the forking thread exists in the child: other threads' reader counts are void.
    cat_heap_fork_child();
    cat_tracker_threads_reset_in_child();
    if (g_cat_fork_held_gate) {
        cat_gate_reset_in_child();
        cat_thread_set_state(g_cat_fork_saved_state);
    }
    cat_api_reinit_in_child();
    cat_deltas_reset_in_child();
    cat_emergency_reset_in_child();
    cat_sampling_reseed_in_child();
}

void cat_install_fork_handlers(void) {
    uint64_t expected = 0;
    if (cat_cas_acq_rel(&g_cat_fork_installed, &expected, 1))
        pthread_atfork(cat_on_fork_prepare, cat_on_fork_parent, cat_on_fork_child);
}

// Read ALLOCATION_TRACKING once at process start. The Swift module parses it (one clear stderr line and
// tracking left off when it is malformed): cat_swift_start_from_environment_impl (cat_internal.h).

// A copy of this library inside a shared object (alloc-track's LD_PRELOAD library) stands aside when the main
// program defines malloc itself: such a program links its own copy, which reads the same variable, and whose malloc
// forwards to this one (RTLD_NEXT), so two started copies would record every allocation twice. (A program with a
// statically linked allocator of its own cannot be tracked by a preloaded copy either: its malloc never reaches it.)
int cat_main_program_owns_malloc(void) {
    void *inUse = dlsym(RTLD_DEFAULT, "malloc");
    Dl_info info;
    struct link_map *owner = NULL, *self = NULL;
    if (!inUse || !dladdr1(inUse, &info, (void **)&owner, RTLD_DL_LINKMAP) || !owner) return 0;
    if (!dladdr1((void *)&cat_main_program_owns_malloc, &info, (void **)&self, RTLD_DL_LINKMAP) || !self) return 0;
    return owner != self && owner == _r_debug.r_map;  // r_map: the main program, first in the link map
}

__attribute__((constructor)) static void cat_start_from_environment(void) {
    const char *value = getenv("ALLOCATION_TRACKING");
    if (value && *value && !cat_main_program_owns_malloc()) cat_swift_start_from_environment_impl();
}

// Per-thread state: the reentrancy guard, the thread's counter shard and measurement scope, and the markers for
// a rare path or the allocation-failure report (contracts: cat_internal.h, and CAllocationTracking.h for what
// Swift calls). The lowest layer of the C target: it depends on no other file, and every file that runs inside
// malloc depends on it.
//
// Everything here is initial-exec TLS or a plain atomic counter: reading or writing it never allocates and never
// calls __tls_get_addr, so the hook can use it from inside malloc.
//
// MARK: The reentrancy guard and the deferred-event queue
//
// The guard (CAT_HOOK_INSIDE in t_cat_hook) exists to keep the tracker's own work out of the tables. But the
// hook never allocates, so a malloc or free that arrives while the flag is set comes from a signal handler that
// interrupted the hook, and it is the program's: it must be recorded. It cannot be recorded *there*: the
// interrupted code may hold the gate's writer side (a rebuild in cat_service_requests), and a reader entering
// the gate would wait for itself; it may be in the middle of interning a trace, whose entry a nested intern of
// the same stack would wait to see published; and libunwind may be mid-walk in this thread's buffer. A lock-free
// remove that is safe to re-enter would fix the free but not the allocation (the intern), and would put signal
// safety into every table operation. So the event is queued here and recorded when the outermost hook exits,
// where recording is safe again (interposer.c: cat_hook_leave).
//
// - A queued free's real free is deferred too: it runs at the drain, after the free is recorded, so the address
//   cannot be handed out again (to this thread or another) while the table still holds it. Queued allocations
//   carry their size, scope and a frame-pointer stack captured in the handler (cat_capture_stack_nested: no rare
//   path, no libunwind). Events are recorded in the order they were queued, so a handler's malloc and free of
//   the same block net out.
// - Handlers nest (a second signal while the first one pushes), so a slot is claimed with an atomic
//   read-modify-write on the TLS word, written, and then marked ready. A drain never runs inside a push: a push
//   happens only while the flag is set, the drain runs only in the outermost hook, and a handler runs to
//   completion before the code it interrupted resumes.
// - The claim counters live in the same word as the flag, so leaving is one compare-and-swap from "inside, no
//   events" to 0: a handler cannot queue an event between the last check and the leave (it would be stranded,
//   and a later handler running outside the hook could free a queued allocation before it is recorded).
// - Full queue (64 events, or 512 frame words for the stacks): the free runs at once, the allocation stays
//   unrecorded, and either is counted as dropped (TracedMemory.droppedAllocations: the events the tracker saw
//   but could not record).
// - Every exit of the hook drains: the allocation and free records, a realloc's restore, and the
//   allocation-failure report (its leave keeps the flag when events are waiting; interposer.c drains after it).
//   A thread cannot exit or fork with events queued unless a handler forks or jumps out of the hook.
//
// MARK: Sampling (Poisson, by bytes)
//
// As jemalloc, tcmalloc and Go do it: each thread counts down the bytes it allocates (t_cat_sample_left); the
// allocation that takes the count to zero or below is sampled, and the next countdown is drawn from the
// exponential distribution with mean T. Because the exponential is memoryless, every allocation of s bytes is
// sampled with probability p = 1 − exp(−s/T) independently of what came before, which is what makes the
// per-block weights 1/p (Swift: _SampleWeight) unbiased. Per thread, with its own generator (xorshift64*,
// seeded from a process seed and a per-thread number): no lock and no shared cache line on the allocation path.
// The unsampled path is in interposer.c (cat_sample_skip): one relaxed load, one TLS subtract, one branch.
#define _GNU_SOURCE  // pthread_getattr_np
#include "cat_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>

CAT_TLS int t_cat_state;
CAT_TLS uint64_t t_cat_hook;
CAT_TLS cat_deferred_event t_cat_deferred[CAT_DEFERRED_EVENTS];
CAT_TLS uintptr_t t_cat_deferred_frames[CAT_DEFERRED_FRAME_WORDS];
CAT_TLS int t_cat_rare_path;
CAT_TLS int t_cat_special;
CAT_TLS uint32_t t_cat_shard;
CAT_TLS uint64_t t_cat_scope;
uint64_t g_cat_internal_allocations;

static uint64_t g_cat_next_shard;

uint64_t g_cat_delta_slots[CAT_D_THREADS][CAT_D_STRIDE] __attribute__((aligned(64)));
CAT_TLS int t_cat_delta_slot;
uint64_t g_cat_delta_threads[CAT_D_THREADS];

int cat_deltas_claim_slot(void) {
    for (int i = 0; i < CAT_D_THREADS; i++) {
        uint64_t expected = 0, mine = (uint64_t)(uintptr_t)g_cat_delta_slots[i];
        if (cat_load_relaxed(&g_cat_delta_threads[i]) == 0 && cat_cas_acq_rel(&g_cat_delta_threads[i], &expected, mine))
            return i + 1;
    }
    return -1;
}

void cat_deltas_reset_in_child(void) {
    for (int i = 0; i < CAT_D_THREADS; i++)
        if (i + 1 != t_cat_delta_slot) cat_store_relaxed(&g_cat_delta_threads[i], 0);
}

CAT_TLS int64_t t_cat_sample_left;
CAT_TLS int t_cat_sample_valid;
static CAT_TLS uint64_t t_cat_sample_rng;  // xorshift64* state; 0 until seeded
uint64_t g_cat_sample_mean;
uint64_t g_cat_sample_skip;
static uint64_t g_cat_sample_seed;
static uint64_t g_cat_sample_threads;

// splitmix64's finaliser: spreads a seed (or seed + thread number) over all 64 bits, never to 0 in practice
// (xorshift's only bad state; checked anyway).
static uint64_t cat_mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z ? z : 0x9E3779B97F4A7C15ull;
}

int64_t cat_sample_interval(void) {
    uint64_t x = t_cat_sample_rng;
    if (CAT_UNLIKELY(x == 0))
        x = cat_mix(cat_load_relaxed(&g_cat_sample_seed) ^ (cat_add_relaxed(&g_cat_sample_threads, 1) << 32));
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    t_cat_sample_rng = x;
    uint64_t r = x * 0x2545F4914F6CDD1Dull;
    double u = (double)((r >> 11) + 1) * 0x1p-53;  // uniform on (0, 1]: log(u) is finite
    double draw = -log(u) * (double)cat_load_relaxed(&g_cat_sample_mean);
    if (draw > 0x1p62) draw = 0x1p62;  // a countdown never overflows the subtract
    return (int64_t)draw + 1;
}

void cat_sampling_set_seed(uint64_t seed) { cat_store_relaxed(&g_cat_sample_seed, seed); }

void cat_thread_seed_sampling(uint64_t seed) {
    t_cat_sample_rng = cat_mix(seed);
    t_cat_sample_valid = 0;
    t_cat_sample_left = 0;  // the next allocation reaches the hook and draws
}

void cat_sampling_reseed_in_child(void) {
    if (t_cat_sample_rng != 0) t_cat_sample_rng = cat_mix(t_cat_sample_rng ^ (uint64_t)getpid());
    t_cat_sample_valid = 0;
    t_cat_sample_left = 0;
}

int cat_thread_set_state(int state) {
    int previous = t_cat_state;
    t_cat_state = state;
    return previous;
}

uint32_t cat_thread_assign_shard(void) {
    uint32_t shard = (uint32_t)(cat_add_relaxed(&g_cat_next_shard, 1) % 63) + 1;
    t_cat_shard = shard;
    return shard;
}

uint32_t cat_thread_shard(void) { return cat_thread_shard_inline(); }

uint64_t cat_thread_scope(void) { return t_cat_scope; }
void cat_thread_set_scope(uint64_t tag) {
    t_cat_scope = tag;
    if (tag != 0) {
        // A measurement records every allocation: hold the countdown far below zero so that cat_sample_skip
        // never passes (2^62 bytes cannot be allocated), and draw afresh once the scope is over.
        t_cat_sample_left = INT64_MIN / 2;
        t_cat_sample_valid = 0;
    }
}

uint64_t cat_debug_internal_allocations(void) { return cat_load_relaxed(&g_cat_internal_allocations); }

bool cat_enter_emergency(void) {
    if (cat_in_hook() || t_cat_state == CAT_THREAD_INTERNAL) return false;
    cat_hook_enter();
    return true;
}

void cat_leave_emergency(void) { (void)cat_hook_try_leave(); }

// MARK: Thread names

// prctl rather than pthread_setname_np: no _GNU_SOURCE needed, and it names the calling thread, which is all the
// tracker's threads need. The kernel keeps the first 15 bytes.
void cat_thread_set_name(const char *name) { prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0); }

// MARK: Thread creation

// The tracker's threads start with every asynchronous signal blocked (the watchdog then unblocks the report signal
// alone): a process-directed signal must reach the program's own threads, as it would without the library. A
// program that waits for a signal on its main thread loses it when a library thread takes it instead — dash, for
// one, drops a trapped signal whose handler runs on another thread while its main thread is vforked, and
// `alloc-track run` then could not stop a shell. The faults stay unblocked: one in a tracker thread must still
// crash the process, not hang it.
//
// They also allocate from a private heap (tracker_heap.c), so that their memory is counted, and each records its
// stack's range while it runs, so that the stack's resident pages are counted too (cat_tracker_threads_memory).

enum { CAT_TRACKER_STACKS = 8 };
static uint64_t g_cat_tracker_stacks[CAT_TRACKER_STACKS][2];  // [start, length]; start 0: free slot

typedef struct {
    void *_Nullable (*start)(void *_Nullable);
    void *_Nullable argument;
} cat_thread_start;

static void *_Nullable cat_thread_trampoline(void *_Nullable raw) {
    cat_thread_set_state(CAT_THREAD_SUSPENDED);  // before anything here allocates (pthread_getattr_np does)
    cat_thread_start begin = *(cat_thread_start *)raw;
    free(raw);
#ifndef CAT_SANITIZER
    if (cat_load_acquire(&g_cat_heap_base)) t_cat_special = CAT_SPECIAL_HEAP;
#endif
    int slot = -1;
    pthread_attr_t attributes;
    if (pthread_getattr_np(pthread_self(), &attributes) == 0) {
        void *stack = NULL;
        size_t length = 0;
        if (pthread_attr_getstack(&attributes, &stack, &length) == 0 && stack) {
            for (int i = 0; i < CAT_TRACKER_STACKS && slot < 0; i++) {
                uint64_t expected = 0;
                if (cat_cas_acq_rel(&g_cat_tracker_stacks[i][0], &expected, (uint64_t)(uintptr_t)stack)) {
                    cat_store_release(&g_cat_tracker_stacks[i][1], length);
                    slot = i;
                }
            }
        }
        pthread_attr_destroy(&attributes);
    }
    void *result = begin.start(begin.argument);
    if (slot >= 0) {
        cat_store_release(&g_cat_tracker_stacks[slot][1], 0);
        cat_store_release(&g_cat_tracker_stacks[slot][0], 0);
    }
    t_cat_special = 0;
    return result;
}

int cat_thread_uses_private_heap(void) { return t_cat_special == CAT_SPECIAL_HEAP; }

void cat_tracker_threads_memory(uint64_t *heapResident, uint64_t *heapLive, uint64_t *heapBlocks,
                                uint64_t *stacksResident) {
    cat_heap_statistics(heapResident, heapLive, heapBlocks);
    *stacksResident = 0;
    for (int i = 0; i < CAT_TRACKER_STACKS; i++) {
        uint64_t start = cat_load_acquire(&g_cat_tracker_stacks[i][0]);
        uint64_t length = cat_load_acquire(&g_cat_tracker_stacks[i][1]);
        if (start && length) *stacksResident += cat_resident_bytes((void *)(uintptr_t)start, (size_t)length);
    }
}

void cat_tracker_threads_reset_in_child(void) {
    for (int i = 0; i < CAT_TRACKER_STACKS; i++) {
        cat_store_relaxed(&g_cat_tracker_stacks[i][0], 0);
        cat_store_relaxed(&g_cat_tracker_stacks[i][1], 0);
    }
}

int cat_thread_create(pthread_t *thread, void *_Nullable (*start)(void *_Nullable), void *_Nullable argument) {
#ifndef CAT_SANITIZER
    cat_heap_create();  // once; on failure the threads use the real allocator
#endif
    int state = cat_thread_set_state(CAT_THREAD_SUSPENDED);  // the tracker's allocation, not the program's
    cat_thread_start *begin = malloc(sizeof *begin);
    cat_thread_set_state(state);
    if (!begin) return ENOMEM;
    begin->start = start;
    begin->argument = argument;
    sigset_t blocked, previous;
    sigfillset(&blocked);
    static const int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT};
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) sigdelset(&blocked, faults[i]);
    pthread_sigmask(SIG_SETMASK, &blocked, &previous);
    int result = pthread_create(thread, NULL, cat_thread_trampoline, begin);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (result != 0) free(begin);
    return result;
}

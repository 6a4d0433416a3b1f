// cat_internal.h: the contracts between the C files of CAllocationTracking that Swift must not see.
//
// Private: this header is not in include/, so the Swift module never imports it. What Swift calls (and what the
// C files share that Swift calls too) is declared, with its contract, in include/: CAllocationTracking.h (state
// layout, gate, recorder, per-thread state), cat_report.h (text writer, dates, process memory, triggers),
// cat_emergency.h (the allocation-failure report and its names arena), cat_images.h (loaded images). Every C
// file includes this header; no C file declares a function of another by hand.
//
// Dependency order: each file calls only into the files listed above it (and into the Swift table logic through
// the installed cat_recorder), so there is no circle between C files.
//
//   tracker_heap.c      the private heap of the tracker's own threads, so that their memory is counted.
//                       Depends on nothing.
//   thread_state.c      per-thread state, initial-exec TLS: the reentrancy guard and the queue of events a
//                       signal handler made inside the hook, the thread's shard and measurement scope, the
//                       rare-path and emergency markers, the tracker's threads' creation (-> tracker_heap).
//   limit_trigger.c     the clocks and the once-per-crossing decision for a soft limit.
//   report_writer.c     the fixed-buffer text writer, number and UTC date formatting, the report file.
//   process_memory.c    process RSS, OOM score, cgroup memory usage and limit.
//   signal_trigger.c    the report signal's flag, nanosleep.
//   loaded_images.c     the loaded images and their GNU build ids (one program-header parser), and the static
//                       image list the allocation-failure report reads.
//   names_arena.c       the pre-resolved names of the sites, for the allocation-failure report.
//   table_memory.c      the shared state words, the installed recorder, the quiescence gate, table memory, the
//                       API mutex, the loader's counters.
//   stack_capture.c     the two unwinders                       (-> thread_state)
//   emergency_report.c  the allocation-failure report: configuration, rate limit, the follow-up sequence lock,
//                       the text             (-> thread_state, limit_trigger, report_writer, process_memory,
//                                               loaded_images, names_arena, table_memory)
//   interposer.c        the malloc family and the hook, arming, fork handlers, the start from the environment
//                                            (-> thread_state, table_memory, stack_capture, emergency_report)
//
// Everything reachable from inside malloc (the hook, the gate, stack capture, the allocation-failure report)
// must not allocate, lock, or touch lazily initialised globals; each function below says whether it may be
// called there.
#ifndef CAT_INTERNAL_H
#define CAT_INTERNAL_H

#include "CAllocationTracking.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#pragma clang assume_nonnull begin

/// Thread-locals of the allocation path. initial-exec: an access is one thread-pointer-relative load or store
/// and never calls __tls_get_addr, which may allocate (and would re-enter malloc). Every such variable must be
/// declared with it.
#define CAT_TLS __thread __attribute__((tls_model("initial-exec")))
/// Symbols shared between the C files only: not exported from the image that links this target (a preloaded
/// copy of the tracker must not bind another's).
#define CAT_PRIVATE __attribute__((visibility("hidden")))

#define CAT_LIKELY(x) __builtin_expect(!!(x), 1)
#define CAT_UNLIKELY(x) __builtin_expect(!!(x), 0)

// MARK: - Per-thread state (thread_state.c)
//
// Defined in thread_state.c. The hook in interposer.c reads and writes these directly (one TLS access each,
// as when they were static in that file: a function call per allocation is not free); the other files use the
// functions below. All of it is allocation-free and async-signal-safe.

/// CAT_THREAD_* (CAllocationTracking.h): what the hook does with this thread's allocations and frees.
extern CAT_PRIVATE CAT_TLS int t_cat_state;
/// The reentrancy guard and the deferred-event queue's claim counters, in one word so that leaving the hook
/// and finding the queue empty are one atomic step (design: thread_state.c). CAT_HOOK_INSIDE is set while this
/// thread runs the tracker's hook or writes the allocation-failure report: a free or an allocation arriving
/// meanwhile (from a signal handler that interrupted it) is queued, not recorded (cat_hook_*, below).
extern CAT_PRIVATE CAT_TLS uint64_t t_cat_hook;
/// 1 during a documented rare path inside the hook that may allocate (cat_enter_rare_path): its allocations
/// pass through like any inside the hook but are not counted as the hook's own.
extern CAT_PRIVATE CAT_TLS int t_cat_rare_path;
/// Where this thread's allocations go instead of the real allocator (0: nowhere else; checked by one test at the
/// top of every member of the malloc family): CAT_SPECIAL_RESOLVING while it resolves the real allocator with
/// dlsym (the bootstrap buffer), CAT_SPECIAL_HEAP on the tracker's own threads (tracker_heap.c).
extern CAT_PRIVATE CAT_TLS int t_cat_special;
enum { CAT_SPECIAL_RESOLVING = 1, CAT_SPECIAL_HEAP = 2 };
/// The thread's shard, 1…63; 0 until assigned (cat_thread_shard_inline).
extern CAT_PRIVATE CAT_TLS uint32_t t_cat_shard;
/// The thread's innermost measurement scope tag (0: none); cat_thread_scope / cat_thread_set_scope.
extern CAT_PRIVATE CAT_TLS uint64_t t_cat_scope;
/// Allocations made while this thread was inside the hook, outside a rare path (relaxed counter;
/// cat_debug_internal_allocations): a signal handler's that interrupted the hook (queued and recorded when the
/// hook exits), or the hook's own, which would be a bug (the tests assert none without signal handlers).
extern CAT_PRIVATE uint64_t g_cat_internal_allocations;

// MARK: - Per-thread counter deltas (thread_state.c holds them; interposer.c registers; design: Swift,
// _UnsafeThreadDeltas)

/// Each registered thread's counter deltas (CAT_D_* words, a 64-byte-aligned stride each). Static memory, not
/// TLS: a fold may meet the slot of a thread that exited without folding (it registered after its key
/// destructors ran), and must find memory there, not a freed thread's TLS. Written only by the owning thread,
/// inside the gate's reader side.
#define CAT_D_STRIDE ((CAT_D_WORDS + 7) / 8 * 8)
extern CAT_PRIVATE uint64_t g_cat_delta_slots[CAT_D_THREADS][CAT_D_STRIDE];
/// This thread's registry slot + 1 (0: not registered yet; -1: none: the registry was full, or the thread is
/// exiting and has folded its deltas).
extern CAT_PRIVATE CAT_TLS int t_cat_delta_slot;
/// The registry: the address of each claimed slot's words in g_cat_delta_slots (0: free slot). A writer of the
/// gate folds or discards what the addresses hold; a thread releases its slot at exit, inside the reader side.
extern CAT_PRIVATE uint64_t g_cat_delta_threads[CAT_D_THREADS];
/// The calling thread's deltas; only while t_cat_delta_slot > 0.
static inline uint64_t *cat_my_deltas(void) { return g_cat_delta_slots[t_cat_delta_slot - 1]; }
/// Claims a registry slot for the calling thread: its index + 1, or -1 when the registry is full. Lock-free.
CAT_PRIVATE int cat_deltas_claim_slot(void);
/// In the child of fork(): the other threads are gone (their deltas were folded by the prepare handler); frees
/// their slots.
CAT_PRIVATE void cat_deltas_reset_in_child(void);

// MARK: - The tracker threads' private heap (tracker_heap.c; design there)
//
// Inside malloc: cat_heap_malloc, cat_heap_aligned (tracker threads, under the heap's spin lock), cat_heap_free,
// cat_heap_usable_size (any thread; free never waits). The rest outside.

/// The heap's address space (pages exist once touched).
#define CAT_HEAP_RESERVE ((uint64_t)1 << 30)
extern CAT_PRIVATE uint64_t g_cat_heap_base;
/// Whether `ptr` is a block of the heap: one relaxed load of the base (0 while there is no heap; a block's address
/// can only reach here after the base was published) and one compare against the constant size.
static inline bool cat_heap_contains(const void *_Nullable ptr) {
    uint64_t base = __atomic_load_n(&g_cat_heap_base, __ATOMIC_RELAXED);
    return base != 0 && (uint64_t)(uintptr_t)ptr - base < CAT_HEAP_RESERVE;
}
/// Maps the heap once (outside malloc). 0, or -1 when it cannot be mapped (the threads use the real allocator).
CAT_PRIVATE int cat_heap_create(void);
/// A block of at least `size` bytes (16-byte aligned), or NULL when the heap has no room.
CAT_PRIVATE void *_Nullable cat_heap_malloc(size_t size);
/// A block aligned to `alignment` (a power of two), or NULL when the heap has no room.
CAT_PRIVATE void *_Nullable cat_heap_aligned(size_t alignment, size_t size);
CAT_PRIVATE void cat_heap_free(void *ptr);
CAT_PRIVATE size_t cat_heap_usable_size(void *ptr);
/// The heap's resident bytes (mincore over what it has used), and its live blocks' usable bytes and count.
CAT_PRIVATE void cat_heap_statistics(uint64_t *resident, uint64_t *live, uint64_t *blocks);
/// Bytes of [start, start + length) resident in memory (mincore); pages not mapped end the count.
CAT_PRIVATE uint64_t cat_resident_bytes(void *start, size_t length);
/// Around fork(): the heap's lock held across it, released in both processes.
CAT_PRIVATE void cat_heap_fork_prepare(void);
CAT_PRIVATE void cat_heap_fork_parent(void);
CAT_PRIVATE void cat_heap_fork_child(void);
/// In the child of fork(): the tracker's threads are gone; forgets their stacks (thread_state.c).
CAT_PRIVATE void cat_tracker_threads_reset_in_child(void);

// MARK: - Sampling state (thread_state.c; design there)

/// Bytes this thread may still allocate before its next sampled allocation (the countdown). Kept below zero
/// while the thread is in a measurement scope (every allocation recorded), so the skip below never passes then.
extern CAT_PRIVATE CAT_TLS int64_t t_cat_sample_left;
/// 0 when the countdown must be drawn afresh at the next allocation that reaches the hook: a new thread, after
/// a measurement scope, after seeding or fork.
extern CAT_PRIVATE CAT_TLS int t_cat_sample_valid;
/// The mean sampling interval T in bytes (0: exact), as in CAT_W_SAMPLE_MEAN; set by cat_set_sampling.
extern CAT_PRIVATE uint64_t g_cat_sample_mean;
/// Nonzero while unsampled allocations may be skipped: sampling on and no process-wide measurement scope.
extern CAT_PRIVATE uint64_t g_cat_sample_skip;
/// The pointer table's entries per address bucket, in sampled mode (table_memory.c owns it and zeroes it with
/// the tables; the Swift table logic counts entries in and out, inside the gate; the free path reads it).
extern CAT_PRIVATE uint64_t g_cat_sample_filter[CAT_SAMPLE_FILTER_BUCKETS];

/// The next countdown: a draw from the exponential distribution with mean g_cat_sample_mean, in whole bytes,
/// at least 1 (the ceiling of the draw, so that an allocation of s bytes crosses it with probability exactly
/// 1 − exp(−s/T)). From the thread's own generator, seeded on first use: no lock, no shared state but a
/// counter read once per thread. Allocation-free (log() from libm allocates nothing).
CAT_PRIVATE int64_t cat_sample_interval(void);
/// The process seed the threads' generators start from (each mixes in its own number). cat_set_sampling.
CAT_PRIVATE void cat_sampling_set_seed(uint64_t seed);
/// In the child of fork(): the thread's generator would repeat the parent's choices; mixes in the new pid and
/// draws afresh.
CAT_PRIVATE void cat_sampling_reseed_in_child(void);

/// Assigns the calling thread its shard (round-robin over 1…63) and returns it. Allocation-free.
CAT_PRIVATE uint32_t cat_thread_assign_shard(void);

/// cat_thread_shard() for the hook, inlined: one TLS load once the thread has a shard.
static inline uint32_t cat_thread_shard_inline(void) {
    uint32_t shard = t_cat_shard;
    return CAT_LIKELY(shard != 0) ? shard : cat_thread_assign_shard();
}

/// Brackets a documented rare path inside the hook that may allocate: pthread_getattr_np reading the main
/// thread's stack bounds, libunwind's first backtrace on a thread (stack_capture.c). The allocations made in
/// between pass through untracked without counting as the hook's own. Not nestable. Allocation-free.
static inline void cat_enter_rare_path(void) { t_cat_rare_path = 1; }
static inline void cat_leave_rare_path(void) { t_cat_rare_path = 0; }

/// Brackets the allocation-failure report (emergency_report.c): the thread counts as inside the hook, so an
/// allocation made while writing it (there should be none but a signal handler's) is queued like any that
/// arrives inside the hook and counted by cat_debug_internal_allocations. Returns false, changing nothing, when
/// the thread is the tracker's own already (inside the hook, or CAT_THREAD_INTERNAL): there is no report from
/// there. Allocation-free.
CAT_PRIVATE bool cat_enter_emergency(void);
/// Ends what a successful cat_enter_emergency began: leaves the hook unless a signal handler queued events
/// meanwhile, in which case the thread stays inside it and the caller of cat_emergency_report (interposer.c,
/// cat_allocation_failed) drains the queue and leaves.
CAT_PRIVATE void cat_leave_emergency(void);

// MARK: - The deferred-event queue (thread_state.c holds it; interposer.c pushes and drains)
//
// A free or an allocation that arrives while this thread is inside the hook comes from a signal handler that
// interrupted it (the hook itself never allocates). It cannot be recorded there (why: thread_state.c), so it is
// queued in this thread's initial-exec TLS and recorded, in order, when the outermost hook exits; a queued
// free's real free runs only then, after its record, so its address cannot be reused before.
enum {
    CAT_HOOK_INSIDE = 1,             // t_cat_hook bit 0
    CAT_HOOK_EVENT_SHIFT = 1,        // bits 1…16: events claimed since the outermost hook entry
    CAT_HOOK_EVENT_MASK = 0xFFFF,
    CAT_HOOK_FRAMES_SHIFT = 17,      // bits 17…40: frame-pool words claimed
    CAT_HOOK_FRAMES_MASK = 0xFFFFFF,
    CAT_DEFERRED_EVENTS = 64,        // queue capacity; beyond it an event is not recorded (counted as dropped)
    CAT_DEFERRED_FRAME_WORDS = 512,  // the frame pool the queued allocations' stacks share (4 KiB)
    CAT_DEFERRED_MAX_FRAMES = 64,    // frames kept per queued allocation (the true depth is kept too)
};

/// One queued event. `shape` is written last and says it is complete (CAT_DEFERRED_READY): a handler that
/// jumped out of a push (siglongjmp) leaves a claimed slot that the drain skips.
typedef struct {
    uintptr_t pointer;
    uint64_t size;    // allocations: the requested size
    uint64_t scope;   // allocations: the measurement scope tag when the handler ran
    uint64_t shape;   // READY | ALLOCATION | frame count << 48 | first pool word << 32 | total frames
} cat_deferred_event;
#define CAT_DEFERRED_READY (1ull << 63)
#define CAT_DEFERRED_ALLOCATION (1ull << 62)

extern CAT_PRIVATE CAT_TLS cat_deferred_event t_cat_deferred[CAT_DEFERRED_EVENTS];
extern CAT_PRIVATE CAT_TLS uintptr_t t_cat_deferred_frames[CAT_DEFERRED_FRAME_WORDS];

/// Whether this thread is inside the hook (or writing the allocation-failure report). One TLS load.
static inline bool cat_in_hook(void) { return (__atomic_load_n(&t_cat_hook, __ATOMIC_RELAXED) & CAT_HOOK_INSIDE) != 0; }

/// Enters the hook. Only when cat_in_hook() is false, which means the queue is empty and t_cat_hook is 0 (the
/// leave below resets both at once). The signal fence keeps the compiler from moving the hook's work above it:
/// a handler that runs after this store sees the flag.
static inline void cat_hook_enter(void) {
    __atomic_store_n(&t_cat_hook, (uint64_t)CAT_HOOK_INSIDE, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

/// Leaves the hook if nothing was queued since it was entered: one compare-and-swap, so a handler cannot queue
/// an event between the check and the leave. Returns false (still inside) when events are waiting: the caller
/// drains them (interposer.c) and tries again.
///
/// Only this thread and its signal handlers ever touch t_cat_hook, and a signal is delivered between
/// instructions, never inside one: on x86-64 a plain `cmpxchg` (no `lock` prefix, which only orders against other
/// cores and costs ~20 cycles on every malloc and free) is atomic enough. Elsewhere the compiler's atomic.
static inline bool cat_hook_try_leave(void) {
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    uint64_t expected = CAT_HOOK_INSIDE;
#if defined(__x86_64__)
    bool swapped;
    __asm__ volatile("cmpxchgq %3, %1" : "+a"(expected), "+m"(t_cat_hook), "=@ccz"(swapped) : "r"((uint64_t)0) : "memory");
    return swapped;
#else
    return __atomic_compare_exchange_n(&t_cat_hook, &expected, 0, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
#endif
}

/// Claims the next queue slot; returns its index, or -1 when the queue is full. Inside a signal handler that
/// interrupted the hook. An atomic read-modify-write on the TLS word, because a second handler may interrupt
/// this one between reading and writing it (checked first so a full queue's counter stops growing).
static inline int cat_deferred_claim_event(void) {
    if (((__atomic_load_n(&t_cat_hook, __ATOMIC_RELAXED) >> CAT_HOOK_EVENT_SHIFT) & CAT_HOOK_EVENT_MASK) >=
        CAT_DEFERRED_EVENTS)
        return -1;
    uint64_t old = __atomic_fetch_add(&t_cat_hook, 1ull << CAT_HOOK_EVENT_SHIFT, __ATOMIC_RELAXED);
    uint64_t index = (old >> CAT_HOOK_EVENT_SHIFT) & CAT_HOOK_EVENT_MASK;
    return index < CAT_DEFERRED_EVENTS ? (int)index : -1;
}

/// Claims `count` words of the frame pool; returns the first one's index, or -1 when the pool cannot hold them
/// (the allocation is then queued without frames). Same rules as cat_deferred_claim_event.
static inline int cat_deferred_claim_frames(uint32_t count) {
    if (((__atomic_load_n(&t_cat_hook, __ATOMIC_RELAXED) >> CAT_HOOK_FRAMES_SHIFT) & CAT_HOOK_FRAMES_MASK) + count >
        CAT_DEFERRED_FRAME_WORDS)
        return -1;
    uint64_t old = __atomic_fetch_add(&t_cat_hook, (uint64_t)count << CAT_HOOK_FRAMES_SHIFT, __ATOMIC_RELAXED);
    uint64_t start = (old >> CAT_HOOK_FRAMES_SHIFT) & CAT_HOOK_FRAMES_MASK;
    return start + count <= CAT_DEFERRED_FRAME_WORDS ? (int)start : -1;
}

// MARK: - Stack capture (stack_capture.c)

/// cat_capture_stack for a signal handler that interrupted the hook (a queued allocation): a frame-pointer walk
/// whatever the configured unwinder, and only when this thread's stack bounds are known already; otherwise the
/// immediate caller alone. Never takes the rare path (reading the bounds allocates) and never calls libunwind
/// (the interrupted hook may be walking with it, in this thread's buffer). Allocation-free, async-signal-safe.
CAT_PRIVATE uint32_t cat_capture_stack_nested(void *frameAddress, void *returnAddress, uintptr_t *out,
                                              uint32_t maxFrames, uint32_t *totalFrames);

// MARK: - Table memory and the gate (table_memory.c)

/// The table logic installed by cat_install_recorder (a copy in static memory). Before the first installation
/// every function pointer is NULL; the hook is never armed then. Allocation-free: callable inside malloc.
CAT_PRIVATE const cat_recorder *cat_current_recorder(void);
/// Copies `recorder` into the static storage cat_current_recorder returns (cat_install_recorder, with tracking
/// disarmed).
CAT_PRIVATE void cat_install_recorder_ops(const cat_recorder *recorder);

/// In the child of fork(), where only the forking thread exists (it held the API mutex through the prepare
/// handler): a fresh, unlocked API mutex.
CAT_PRIVATE void cat_api_reinit_in_child(void);
/// In the child of fork(): the other threads' gate reader counts are void; zeroes them and releases the writer
/// side the prepare handler held.
CAT_PRIVATE void cat_gate_reset_in_child(void);

// MARK: - The allocation-failure report (emergency_report.c)

/// In the child of fork(): a report another thread of the parent was writing does not exist there; clears the
/// busy flag so the child can report its own failures.
CAT_PRIVATE void cat_emergency_reset_in_child(void);

// MARK: - Upcall into Swift

/// Defined in Swift (`@_cdecl` in the AllocationTracking module): parses ALLOCATION_TRACKING and starts the
/// tracker, or prints one line naming the bad part and leaves tracking off. Called once, at process start, by a
/// constructor in interposer.c, and only when the variable is set and not empty. Not hidden: the definition is
/// Swift's.
void cat_swift_start_from_environment_impl(void);

#pragma clang assume_nonnull end

#endif

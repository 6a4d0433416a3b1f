// CAllocationTracking: the part of swift-allocation-tracking that must be C.
//
// - The interposed malloc family (interposer.c). Linking this target into an executable replaces malloc, free,
//   calloc, realloc, reallocarray, posix_memalign, aligned_alloc, memalign, valloc and pvalloc for the whole
//   process; each forwards to the next definition found with dlsym(RTLD_NEXT) (libc, or a preloaded jemalloc /
//   tcmalloc / another interposer; reallocarray goes through realloc, as glibc's does), and never changes the
//   block layout.
// - The per-thread reentrancy guard, with its queue of the frees and allocations a signal handler makes while
//   the hook runs, shard and measurement scope (thread_state.c: initial-exec TLS, so reading it never
//   allocates).
// - Stack capture (stack_capture.c): libunwind's unw_backtrace, loaded with dlopen(RTLD_LOCAL), or a
//   frame-pointer walk bounded by the thread's stack.
// - The memory under the tables and the quiescence gate that lets them be rebuilt, cleared and copied
//   (table_memory.c): every system call the tables need, so the Swift side can be proven call-free.
// - Atomics on plain memory for the C side (this header, static inline; Swift uses Synchronization.Atomic).
// - The report written when an allocation fails, without allocating (emergency_report.c, cat_emergency.h): the
//   interposer calls cat_emergency_report() when the real allocator returns NULL for a valid request. It prints
//   names resolved beforehand (names_arena.c) and, for the others, image offsets with build ids from a list of
//   the loaded images (loaded_images.c, cat_images.h).
// - The allocation-free report primitives (cat_report.h): text writer and UTC dates (report_writer.c), process
//   and cgroup memory (process_memory.c), soft-limit triggers and clocks (limit_trigger.c), the report signal
//   (signal_trigger.c).
//
// The contracts between the C files that Swift does not use are in cat_internal.h (not in include/), which also
// gives the files' dependency order.
//
// The table logic lives in Swift (module AllocationTracking, _AllocationRecorder.swift). The interposer calls it
// through the function pointers installed with cat_install_recorder(); those functions are `@_noLocks`: the
// compiler proves they do not allocate, lock or touch metadata or lazily initialised globals.
//
// All symbols are prefixed `cat_` (CAllocationTracking); globals `g_cat_`, thread-locals `t_cat_`.
#ifndef C_ALLOCATION_TRACKING_H
#define C_ALLOCATION_TRACKING_H

#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#pragma clang assume_nonnull begin

// MARK: - Atomics on plain memory
//
// Thin wrappers over the compiler builtins so Swift can operate atomically on memory it laid out itself
// (mmap'd tables). Orderings are in the names; `seq_cst` is used only where a Dekker-style handshake needs
// it (the quiescence gate). All are async-signal-safe and lock-free on x86_64 and arm64.

static inline uint64_t cat_load_relaxed(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline uint64_t cat_load_acquire(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint64_t cat_load_seq_cst(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void cat_store_relaxed(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline void cat_store_release(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void cat_store_seq_cst(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline uint64_t cat_add_relaxed(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static inline uint64_t cat_sub_relaxed(uint64_t *p, uint64_t v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
static inline uint64_t cat_add_seq_cst(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static inline uint64_t cat_sub_release(uint64_t *p, uint64_t v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELEASE); }
/// Compare-and-swap; returns true on success. On failure `*expected` receives the current value.
static inline bool cat_cas_acq_rel(uint64_t *p, uint64_t *expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline bool cat_cas_seq_cst(uint64_t *p, uint64_t *expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
static inline void cat_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

// MARK: - Shared state layout
//
// The tracker's state lives in one static array of 64-bit words (cat_state_words()), zero at process start, so
// code inside malloc reaches it without running any initialiser. Both languages use these offsets: Swift for the
// table logic (atomics from the Synchronization module), C for the gate and the table memory.
enum {
    CAT_SHARDS = 64,       // per-thread-group counters, one 64-byte line each (cat_thread_shard())
    CAT_SHARD_WORDS = 8,
    CAT_S_READERS = 0,     // gate readers inside
    CAT_S_LIVE_BLOCKS = 1, // wrapping deltas: only the sum over shards is meaningful
    CAT_S_TOTAL_ALLOCATIONS = 2,
    CAT_S_TOTAL_BYTES = 3,
    CAT_S_POINTER_SLOTS_USED = 4,
    CAT_S_DROPPED = 5,

    CAT_W_GATE_WRITER = 512,
    CAT_W_CURRENT = 520,   // traced bytes now
    CAT_W_PEAK = 521,
    CAT_W_PEAK_EPOCH = 522, // bumped each time the peak is set: trace entries rebase their peak counters lazily
    CAT_W_POINTER_BASE = 528,
    CAT_W_POINTER_CAPACITY = 529,
    CAT_W_INDEX_BASE = 530,
    CAT_W_INDEX_CAPACITY = 531,
    CAT_W_READY = 532,     // 1 while tables exist (checked inside the gate)
    CAT_W_MAX_TRACES = 533,
    CAT_W_REQUESTS = 534,  // CAT_NEED_* bits set by Swift, serviced by C outside the gate
    CAT_W_MAPPED_BYTES = 535,
    CAT_W_TRACE_COUNT = 536,
    // Sampling (cat_set_sampling). Both survive cat_tables_release (clearTraces keeps the mode); stop clears them.
    CAT_W_SAMPLE_MEAN = 537,   // the mean sampling interval T in bytes; 0: exact (every allocation recorded)
    CAT_W_SAMPLE_FILTER = 538, // address of the CAT_SAMPLE_FILTER_BUCKETS counters of table entries by address hash
    CAT_W_ARENA_CURSOR = 544,  // chunk << 32 | word offset
    CAT_W_TRACE_CHUNKS = 576,
    CAT_TRACE_CHUNK_LIMIT = 4096,
    CAT_W_ARENA_CHUNKS = 4672,
    CAT_ARENA_CHUNK_LIMIT = 1024,
    // Measurement scopes (AllocationTracker.measure). Everything from CAT_W_SCOPES on survives
    // cat_tables_release (stop/clearTraces): a late free on another thread may still read a scope record, so
    // records live in this static memory forever and are recycled by generation, never freed.
    CAT_W_SCOPES = 5760,        // CAT_SCOPES records of CAT_SCOPE_WORDS words (CAT_SCOPE_* below)
    CAT_SCOPES = 256,
    CAT_SCOPE_WORDS = 16,
    CAT_W_SCOPE_PROCESS = 9856, // tag of the innermost active process-wide scope (0: none)
    CAT_STATE_WORDS = 9864,

    // The words of one measurement scope record (semantics: _UnsafeScopes in Swift).
    CAT_SCOPE_HEAD = 0,            // the tag (generation << 16 | index + 1) while active, | 1 << 63 once ended
    CAT_SCOPE_PARENT = 1,          // the enclosing scope's tag (0: none)
    CAT_SCOPE_FLAGS = 2,           // CAT_SCOPE_CAPTURE_STACKS; read by the hook
    CAT_SCOPE_ALLOCATIONS = 3,
    CAT_SCOPE_ALLOCATED_BYTES = 4,
    CAT_SCOPE_FREES = 5,
    CAT_SCOPE_FREED_BYTES = 6,
    CAT_SCOPE_CURRENT_BYTES = 7,
    CAT_SCOPE_PEAK_BYTES = 8,
    CAT_SCOPE_CAPTURE_STACKS = 1,  // flag: the scope wants stacks (a counting-only scope skips the capture)

    // Sampling. In sampled mode the block counters (CAT_E_*_BLOCKS, CAT_S_LIVE_BLOCKS, CAT_S_TOTAL_ALLOCATIONS)
    // count in units of 2^-16 block, so that a sampled block's fractional weight 1/p adds and subtracts exactly;
    // in exact mode they count whole blocks. Bytes are always whole bytes (s/p rounded: at most half a byte off
    // per sampled block, against at least T bytes of weight).
    CAT_SAMPLE_BLOCK_SHIFT = 16,
    // The free path's filter (sampled mode only): a count of the pointer table's entries per bucket of addresses,
    // so that the free of a block that was never sampled (nearly all) proves it with one load, without entering
    // the hook (interposer.c: cat_maybe_tracked). Bucket: the top 14 bits of address * CAT_SAMPLE_FILTER_MULTIPLIER.
    CAT_SAMPLE_FILTER_BITS = 14,
    CAT_SAMPLE_FILTER_BUCKETS = 1 << 14,

    // Per-thread counter deltas (exact mode; design and the bounds they keep: _UnsafeThreadDeltas in Swift). Each
    // thread that records allocations has a slot of CAT_D_WORDS words (static memory, cat_internal.h): a header,
    // then CAT_D_SITES site slots of CAT_DS_WORDS words, direct-mapped by trace id. Only the owning thread writes
    // them, inside the gate's reader side; a holder of the writer side (a read, fork, clear) folds or discards them.
    CAT_D_CURRENT = 0,         // bytes added to `current` and not yet flushed to CAT_W_CURRENT (wrapping: signed)
    CAT_D_DIRTY = 1,           // bit i set: slot i holds a delta
    CAT_D_SLOTS = 2,           // the first slot's first word
    CAT_D_SITES = 64,
    CAT_DS_WORDS = 6,
    CAT_DS_TRACE = 0,          // trace id + 1 (0: free slot)
    CAT_DS_LIVE_BLOCKS = 1,    // wrapping deltas of the site's CAT_E_* counters
    CAT_DS_LIVE_BYTES = 2,
    CAT_DS_TOTAL_BLOCKS = 3,
    CAT_DS_TOTAL_BYTES = 4,
    CAT_DS_EVENTS = 5,         // allocations and frees since the slot was last flushed
    CAT_D_WORDS = 2 + 64 * 6,
    CAT_D_BOUND_BYTES = 65536, // a delta reaching this many bytes (either sign) is flushed at once
    CAT_D_BOUND_EVENTS = 64,   // a site slot is flushed after this many events
    CAT_D_THREADS = 1024,      // threads with deltas at once (cat_deltas_*); the rest update the shared words

    CAT_TRACE_ENTRIES_PER_CHUNK = 4096,
    CAT_TRACE_ENTRY_WORDS = 16,  // two 64-byte lines; the words below (used by _UnsafeTraceTable and the report)
    // First line: every word an allocation or a free reads or writes, so that an operation on a site touches one
    // cache line (two threads sharing a site bounce one line, not two).
    CAT_E_FRAMES = 0,        // address of the frames in the arena
    CAT_E_SHAPE = 1,         // totalFrames << 32 | stored frame count
    CAT_E_SCOPE = 2,         // measurement scope tag (0: none)
    CAT_E_LIVE_BLOCKS = 3,
    CAT_E_LIVE_BYTES = 4,
    CAT_E_TOTAL_BLOCKS = 5,
    CAT_E_TOTAL_BYTES = 6,
    CAT_E_PEAK_EPOCH = 7,    // the global peak epoch the two peak words below belong to
    // Second line: read when an entry is created, re-indexed or copied, and when the peak moved.
    CAT_E_HASH = 8,          // stack hash (index rebuilds)
    CAT_E_PUBLISHED = 9,     // 1 once visible through the index
    CAT_E_PEAK_BYTES = 10,
    CAT_E_PEAK_BLOCKS = 11,
    CAT_TRACE_CHUNK_BYTES = 4096 * 128,
    CAT_ARENA_CHUNK_WORDS = 32768,  // 256 KiB (1024 chunks: 256 MiB of frames at most)
};

/// Requests from the table logic to the memory owner (bits of CAT_W_REQUESTS).
enum {
    CAT_NEED_POINTER_REBUILD = 1,
    CAT_NEED_INDEX_REBUILD = 2,
    CAT_NEED_TRACE_CHUNK = 4,
    CAT_NEED_ARENA_CHUNK = 8,
};

/// Result of recordAllocation: the pointer table had no free slot; rebuild and call again.
enum { CAT_RECORD_DONE = 0, CAT_RECORD_RETRY = 1 };

uint64_t *_Nonnull cat_state_words(void);

// MARK: - Table memory and the quiescence gate (table_memory.c)

/// The table logic, implemented in Swift (`@_noLocks`: proven not to allocate, lock, or touch metadata or
/// lazily initialised globals). The interposer calls the first three inside malloc, between
/// cat_gate_enter/cat_gate_exit; the rest run with the gate's writer side held.
typedef struct {
    /// `scopeTag`: the measurement scope the allocating thread is in (0: none), part of the trace's identity.
    /// `deltas`: the calling thread's counter deltas (CAT_D_*), or NULL to update the shared counters directly
    /// (a thread without a registry slot, or exiting).
    uint32_t (*recordAllocation)(uint64_t *words, uint64_t *_Nullable deltas, uint32_t shard, void *ptr, size_t size,
                                 const uintptr_t *frames, uint32_t frameCount, uint32_t totalFrames,
                                 uint32_t lastAttempt, uint64_t scopeTag);
    /// Before the real free. Returns the removed packed value (0 when the block was not tracked).
    uint64_t (*recordFree)(uint64_t *words, uint64_t *_Nullable deltas, uint32_t shard, void *ptr);
    /// Puts back an entry removed by a realloc whose real realloc failed.
    void (*restore)(uint64_t *words, uint64_t *_Nullable deltas, uint32_t shard, void *ptr, uint64_t value);
    /// Adds a thread's counter deltas to the shared counters and zeroes them. With the gate's writer side held
    /// (a read, fork), or the reader side by the owning thread (its exit). Does not move the peak.
    void (*foldDeltas)(uint64_t *words, uint64_t *deltas);
    /// Slots the pointer table should have after a rebuild (2 x live, at least the minimum).
    uint64_t (*pointerCapacityNeeded)(uint64_t *words);
    /// Rehashes the live entries into `slots` (zeroed, capacity x 16 bytes) and installs it.
    void (*rebuildPointerTable)(uint64_t *words, void *slots, uint64_t capacity);
    /// Cells the trace index should have (a power of two), or 0 when it needs no rebuild.
    uint64_t (*indexCapacityNeeded)(uint64_t *words);
    /// Re-inserts every published trace into `cells` (zeroed, capacity x 4 bytes) and installs it.
    void (*rebuildIndex)(uint64_t *words, void *cells, uint64_t capacity);
    /// The allocation-failure report (cat_emergency.h): the ids of the (at most `capacity`) published traces with
    /// the most live bytes, largest first, with their live bytes and blocks; returns how many. Called inside a
    /// failing malloc with the gate's reader side held; writes only into the caller's (static) arrays.
    uint64_t (*topSites)(uint64_t *words, uint64_t *ids, uint64_t *bytes, uint64_t *blocks, uint64_t capacity);
} cat_recorder;

/// Installs the table logic and the capture settings (`maxFrames` 1…256, `unwinder` CAT_UNWINDER_*). Call with
/// tracking disarmed.
void cat_install_recorder(const cat_recorder *recorder, uint32_t maxFrames, int unwinder);

/// Reader side of the gate, taken by every table operation inside malloc (a per-shard counter: readers never
/// wait for each other). Waits (sched_yield) only while a writer holds the gate: the documented rare path.
void cat_gate_enter(uint32_t shard);
void cat_gate_exit(uint32_t shard);
/// Writer side: waits until no reader is inside. The calling thread must be CAT_THREAD_INTERNAL (its own
/// allocations would otherwise wait for itself).
void cat_gate_lock_writer(void);
void cat_gate_unlock_writer(void);
/// The writer side if it can be had without waiting long: 1 (held), or 0 when another writer holds it or the
/// readers have not drained after `maxYields` sched_yield()s (nothing held).
int cat_gate_try_lock_writer(uint32_t maxYields);

/// Maps the initial tables (writer side held). Returns 0, or -1 when memory cannot be mapped.
int cat_tables_create(uint64_t maxTraces);
/// Unmaps every table and zeroes the counters, and every thread's deltas (writer side held).
void cat_tables_release(void);
/// Folds every thread's counter deltas into the shared counters and raises the peak to `current` if it is
/// above it (writer side held, tables ready): after it, the shared counters are exact. Never allocates.
void cat_deltas_fold_all(void);
/// cat_deltas_fold_all for a thread that must not wait (the watchdog): takes the writer side with
/// cat_gate_try_lock_writer, outside it. 1: folded; 0: the gate was busy (the shared counters lag by the pending
/// deltas, the bounds in _UnsafeThreadDeltas). The caller is not recorded (a tracker thread, suspended).
int cat_deltas_try_fold_all(uint32_t maxYields);
/// Services CAT_W_REQUESTS: maps the next chunks, rebuilds tables (takes the writer side). Outside the gate.
void cat_service_requests(void);

/// sched_yield().
void cat_yield(void);
/// A process-wide mutex serialising the public API (start/stop/clear/snapshot) and fork(). Never taken inside
/// the allocation path.
void cat_api_lock(void);
void cat_api_unlock(void);
/// Writes `length` bytes to stderr with write(2) (no stdio, no allocation).
void cat_write_stderr(const char *text, size_t length);

/// The dynamic loader's running totals of objects loaded and unloaded (glibc's dlpi_adds / dlpi_subs), so the
/// symbolicator knows when its image map is stale. Outside the allocation path (dl_iterate_phdr takes the
/// loader's lock).
void cat_loader_counts(uint64_t *loads, uint64_t *unloads);

// MARK: - Report signal (signal_trigger.c)

/// Installs a handler for `signo` that only counts the signal and wakes cat_signal_wait_ns (the previous action
/// is saved and restored by cat_signal_uninstall). Returns 0 or -errno. Outside the allocation path; API lock held.
int cat_signal_install(int signo);
void cat_signal_uninstall(void);
/// The number of signals that arrived since the last call (0: none), and resets it. Never allocates.
uint64_t cat_signal_take(void);
/// Waits `ns` nanoseconds, or less when the report signal arrives meanwhile (or arrived since the last wait):
/// the watchdog's wait between polls. Never allocates.
void cat_signal_wait_ns(uint64_t ns);
/// Unblocks `signo` in the calling thread (the watchdog), so the signal is delivered even when the process
/// started with it blocked (a blocked mask is inherited across exec and by new threads).
void cat_signal_unblock_here(int signo);
/// nanosleep, resumed after signals. Never allocates.
void cat_sleep_ns(uint64_t ns);

// MARK: - Availability

/// 1 when the interposer is compiled in; 0 under AddressSanitizer / ThreadSanitizer, whose runtimes own malloc.
/// Thread-safe; never allocates.
int cat_interposer_available(void);

// MARK: - Arming

/// Arms (1) or disarms (0) the hooks. When disarmed, every interposed call costs one predictable branch.
void cat_set_active(int active);
int cat_is_active(void);

// MARK: - Per-thread state (the reentrancy guard; thread_state.c)

/// The calling thread's state. NORMAL: allocations tracked. SUSPENDED: allocations untracked, frees still
/// recorded (a suspended thread may free a block it allocated while tracked). INTERNAL: everything passes
/// straight through (the tracker's own work: inside the hook, or while it holds the table gate).
enum { CAT_THREAD_NORMAL = 0, CAT_THREAD_SUSPENDED = 1, CAT_THREAD_INTERNAL = 2 };
/// Sets the calling thread's state and returns the previous one. Async-signal-safe, never allocates.
int cat_thread_set_state(int state);
/// Names the calling thread (at most 15 bytes kept), so that `top -H`, `perf` and `/proc/PID/task/*/comm` tell the
/// tracker's own threads apart. For the tracker's threads only, at their start.
void cat_thread_set_name(const char *name);
/// pthread_create for the tracker's own threads: the new thread starts with every signal blocked but the faults, so
/// that the program's threads get the signals sent to the process, and allocates from the tracker's private heap
/// (tracker_heap.c). Returns pthread_create's result.
int cat_thread_create(pthread_t *_Nonnull thread, void *_Nullable (*_Nonnull start)(void *_Nullable),
                      void *_Nullable argument);
/// The private heap's address range [base, limit) (both 0 before it exists): for tests and benchmarks that find its
/// mapping in /proc/PID/smaps where the kernel cannot name it.
void cat_tracker_heap_range(uint64_t *_Nonnull base, uint64_t *_Nonnull limit);
/// Gives back the pages of the private heap's large blocks freed since its last allocation (they are otherwise given
/// back at the next one). Cheap when nothing was freed; the watchdog calls it on every poll. Outside malloc.
void cat_heap_trim(void);
/// 1 on a tracker thread that allocates from the private heap (cat_thread_create), else 0. Never allocates.
int cat_thread_uses_private_heap(void);
/// The memory of the tracker's own threads: their private heap's resident bytes (mincore), its live blocks' usable
/// bytes and count, and the resident bytes of the running tracker threads' stacks. Outside malloc.
void cat_tracker_threads_memory(uint64_t *_Nonnull heapResident, uint64_t *_Nonnull heapLive, uint64_t *_Nonnull heapBlocks,
                                uint64_t *_Nonnull stacksResident);
/// A small per-thread number in 1…63 (assigned on first use, reused round-robin), used to shard counters so
/// threads do not contend on one cache line. Never allocates.
uint32_t cat_thread_shard(void);
/// The calling thread's innermost measurement scope tag (0: none; initial-exec TLS). The hook attributes the
/// thread's allocations to it, or to the process-wide scope (CAT_W_SCOPE_PROCESS) when it is 0. Never allocates.
uint64_t cat_thread_scope(void);
/// Also makes sampling exact for the thread while `tag` is not 0 (a measurement records every allocation), and
/// draws its countdown afresh after.
void cat_thread_set_scope(uint64_t tag);

// MARK: - Sampling (thread_state.c, interposer.c)

/// The filter bucket multiplier (CAT_SAMPLE_FILTER_BITS): the C free path and the Swift table logic agree on it.
#define CAT_SAMPLE_FILTER_MULTIPLIER 0xD6E8FEB86659FD93ull
/// Sets the sampling mode: `meanBytes` 0 for exact tracking, else Poisson sampling with mean interval T =
/// `meanBytes` (CAT_W_SAMPLE_MEAN); `seed` seeds the threads' generators (each thread mixes in its own number).
/// With tracking disarmed and the tables created (start), or with tracking disarmed at stop (0). Never allocates.
/// A thread that already existed keeps the countdown it was counting (thread-locals of other threads cannot be
/// reached): after a restart with a different T, its first sample comes after an interval drawn with the old T.
void cat_set_sampling(uint64_t meanBytes, uint64_t seed);
/// Re-reads the process-wide measurement scope (CAT_W_SCOPE_PROCESS): while one is active, no allocation is
/// skipped by sampling. Call after changing that word. Never allocates.
void cat_sampling_refresh(void);
/// Test seam: seeds the calling thread's sampling generator with `seed` and makes its next allocation draw a
/// fresh countdown, so a single-threaded workload samples the same blocks on every run. Never allocates.
void cat_thread_seed_sampling(uint64_t seed);

// MARK: - Stack capture

enum { CAT_UNWINDER_LIBUNWIND = 0, CAT_UNWINDER_FRAME_POINTERS = 1 };
enum { CAT_MAX_FRAMES = 256 };

/// Loads libunwind with dlopen(RTLD_LOCAL) (never linked: libunwind.so.8 exports _Unwind_* and a weak
/// `backtrace`, which would replace the process's C++ exception unwinder) and resolves unw_backtrace.
/// Returns 0 on success; otherwise writes a message into `error`. Idempotent. Call outside the allocation path.
/// `ALLOCATION_TRACKING_LIBUNWIND`, when set, names the library to load instead (a path).
int cat_load_libunwind(char *error, size_t errorSize);

/// Captures the calling thread's stack. `frameAddress` is __builtin_frame_address(0) of the interposed
/// function and `returnAddress` its __builtin_return_address(0): both unwinders start at that caller, so the
/// tracker's own frames are skipped. Writes at most `maxFrames` return addresses into `out` and returns how
/// many; `*totalFrames` receives the true depth (saturating at CAT_TOTAL_FRAMES_LIMIT for libunwind).
/// Runs inside malloc: never allocates (the first call on a thread reads the thread's stack bounds with
/// pthread_getattr_np, a documented rare path whose own allocations pass through the reentrancy guard).
enum { CAT_TOTAL_FRAMES_LIMIT = 1024 };
uint32_t cat_capture_stack(int unwinder, void *frameAddress, void *returnAddress, uintptr_t *out, uint32_t maxFrames,
                           uint32_t *totalFrames);

// MARK: - Process events

/// Registers (once) pthread_atfork handlers that hold the API mutex and the gate's writer side around fork(),
/// so the child inherits a consistent tracker.
void cat_install_fork_handlers(void);

/// Whether this copy of the library is in a shared object while the main program defines malloc itself (it links
/// its own copy, or an allocator of its own): then this copy's malloc is not the process's, and it does not start
/// from ALLOCATION_TRACKING (the program's own copy does). Calls dlsym and dladdr1: not inside malloc.
int cat_main_program_owns_malloc(void);

/// ALLOCATION_TRACKING is read once at process start by a constructor in interposer.c, which calls the Swift
/// function `cat_swift_start_from_environment_impl` (defined with @_cdecl in the AllocationTracking module).

// MARK: - Test support (package-internal use by the tests)

/// Allocations made while a thread was inside the tracker's own hook, outside a documented rare path: those of
/// a signal handler that interrupted the hook (queued and recorded when the hook exits), or the hook's own. The
/// tests assert this stays 0 where no signal handler allocates: the hook itself never allocates.
uint64_t cat_debug_internal_allocations(void);
/// Events that signal handlers made while their thread was inside the hook (design: thread_state.c): frees and
/// allocations queued (recorded, in order, when the hook exited), and those the full queue could not take
/// (also counted in the dropped allocations). Process-wide, since the process started. Never allocates.
void cat_debug_deferred_events(uint64_t *frees, uint64_t *allocations, uint64_t *overflows);

#pragma clang assume_nonnull end

#ifdef __cplusplus
}
#endif

// The allocation-free primitives of the top-allocators report: text writer, process and cgroup memory, limit
// triggers.
#include "cat_report.h"
// The report written when an allocation fails, without allocating; pre-resolved names and image build ids.
#include "cat_emergency.h"
#include "cat_images.h"

#endif

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
//   thread_state.c      per-thread state, initial-exec TLS: the reentrancy guard, the thread's shard and
//                       measurement scope, the rare-path and emergency markers. Depends on nothing.
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
/// 1 while this thread runs the tracker's hook or writes the allocation-failure report: an allocation it makes
/// meanwhile passes straight through untracked (and is counted in g_cat_internal_allocations).
extern CAT_PRIVATE CAT_TLS int t_cat_in_hook;
/// 1 during a documented rare path inside the hook that may allocate (cat_enter_rare_path): its allocations
/// pass through like any inside the hook but are not counted as the hook's own.
extern CAT_PRIVATE CAT_TLS int t_cat_rare_path;
/// The thread's shard, 1…63; 0 until assigned (cat_thread_shard_inline).
extern CAT_PRIVATE CAT_TLS uint32_t t_cat_shard;
/// The thread's innermost measurement scope tag (0: none); cat_thread_scope / cat_thread_set_scope.
extern CAT_PRIVATE CAT_TLS uint64_t t_cat_scope;
/// Allocations made inside the hook outside a rare path (relaxed counter): cat_debug_internal_allocations.
extern CAT_PRIVATE uint64_t g_cat_internal_allocations;

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
/// allocation made while writing it (there should be none) passes straight through and is counted by
/// cat_debug_internal_allocations. Returns false, changing nothing, when the thread is the tracker's own
/// already (inside the hook, or CAT_THREAD_INTERNAL): there is no report from there. Allocation-free.
CAT_PRIVATE bool cat_enter_emergency(void);
/// Ends what a successful cat_enter_emergency began.
CAT_PRIVATE void cat_leave_emergency(void);

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

// C helpers for the benchmark workloads: allocations at a chosen call depth, and a fixed number of malloc calls.
#ifndef C_WORKLOADS_H
#define C_WORKLOADS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// malloc(size) called from `depth` nested frames of this helper (depth >= 1). Each level is a real call
/// (noinline, not a tail call), so the captured stacks differ by depth.
void *_Nullable cw_malloc_at_depth(uint32_t depth, size_t size);

/// Exactly `count` malloc(size) calls (each immediately freed): `count` mallocs and `count` frees, nothing else.
void cw_malloc_free_n(uint32_t count, size_t size);

#ifdef __cplusplus
}
#endif

#endif

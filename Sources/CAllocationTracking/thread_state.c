// Per-thread state: the reentrancy guard, the thread's counter shard and measurement scope, and the markers for
// a rare path or the allocation-failure report (contracts: cat_internal.h, and CAllocationTracking.h for what
// Swift calls). The lowest layer of the C target: it depends on no other file, and every file that runs inside
// malloc depends on it.
//
// Everything here is initial-exec TLS or a plain atomic counter: reading or writing it never allocates and never
// calls __tls_get_addr, so the hook can use it from inside malloc.
#include "cat_internal.h"

CAT_TLS int t_cat_state;
CAT_TLS int t_cat_in_hook;
CAT_TLS int t_cat_rare_path;
CAT_TLS uint32_t t_cat_shard;
CAT_TLS uint64_t t_cat_scope;
uint64_t g_cat_internal_allocations;

static uint64_t g_cat_next_shard;

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
void cat_thread_set_scope(uint64_t tag) { t_cat_scope = tag; }

uint64_t cat_debug_internal_allocations(void) { return cat_load_relaxed(&g_cat_internal_allocations); }

bool cat_enter_emergency(void) {
    if (t_cat_in_hook || t_cat_state == CAT_THREAD_INTERNAL) return false;
    t_cat_in_hook = 1;
    return true;
}

void cat_leave_emergency(void) { t_cat_in_hook = 0; }

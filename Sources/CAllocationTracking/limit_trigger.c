// The once-per-crossing decision for a soft memory limit, and the clocks it is fed with.
//
// A limit is checked from allocating threads (tracked bytes, inside malloc) and from a watchdog (RSS, cgroup
// usage), so the check cannot allocate or lock: it is a few atomic loads and compare-and-swaps on the trigger's
// own fields, with no state elsewhere.
//
// State machine: armed --(usage >= limit, CAS armed 1 -> 0)--> disarmed --(usage < rearmBelow)--> armed.
// Only the thread whose CAS disarms the trigger may fire; it fires unless the last fire is less than
// minIntervalNs ago, and claims the fire by a CAS on lastFiredNs, so even two crossings racing through a
// re-arm cannot both fire inside one interval.
#define _GNU_SOURCE
#include "cat_internal.h"

#include <time.h>

void cat_trigger_init(cat_limit_trigger *trigger, uint64_t limit, uint64_t hysteresisBytes, uint64_t minIntervalNs) {
    cat_store_relaxed(&trigger->limit, limit);
    cat_store_relaxed(&trigger->rearmBelow, hysteresisBytes < limit ? limit - hysteresisBytes : 0);
    cat_store_relaxed(&trigger->minIntervalNs, minIntervalNs);
    cat_store_relaxed(&trigger->lastFiredNs, CAT_TRIGGER_NEVER);
    cat_store_relaxed(&trigger->fireCount, 0);
    cat_store_release(&trigger->armed, limit != 0 ? 1 : 0);
}

bool cat_trigger_check(cat_limit_trigger *trigger, uint64_t usage, uint64_t nowNs) {
    uint64_t limit = cat_load_relaxed(&trigger->limit);
    if (limit == 0) return false;
    if (usage < limit) {
        if (usage < cat_load_relaxed(&trigger->rearmBelow) && cat_load_relaxed(&trigger->armed) == 0) {
            uint64_t expected = 0;
            (void)cat_cas_acq_rel(&trigger->armed, &expected, 1);
        }
        return false;
    }
    // Cheap test first: above the limit, almost every check finds the trigger disarmed.
    if (cat_load_relaxed(&trigger->armed) == 0) return false;
    uint64_t expected = 1;
    if (!cat_cas_acq_rel(&trigger->armed, &expected, 0)) return false;

    uint64_t minInterval = cat_load_relaxed(&trigger->minIntervalNs);
    uint64_t last = cat_load_acquire(&trigger->lastFiredNs);
    for (;;) {
        if (last != CAT_TRIGGER_NEVER && (nowNs < last || nowNs - last < minInterval)) return false;
        if (cat_cas_acq_rel(&trigger->lastFiredNs, &last, nowNs)) break;
        // Another crossing fired meanwhile: `last` now holds its time; judge again against it.
    }
    cat_add_relaxed(&trigger->fireCount, 1);
    return true;
}

uint64_t cat_monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

int64_t cat_unix_seconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec;
}

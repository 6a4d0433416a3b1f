#include "CWorkloads.h"

#include <stdlib.h>

__attribute__((noinline)) void *cw_malloc_at_depth(uint32_t depth, size_t size) {
    if (depth <= 1) {
        void *p = malloc(size);
        __asm__ volatile("" : : "r"(p) : "memory");
        return p;
    }
    void *p = cw_malloc_at_depth(depth - 1, size);
    // Work after the call keeps it a real call (no tail call, no recursion-to-loop).
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

__attribute__((noinline)) void cw_malloc_free_n(uint32_t count, size_t size) {
    for (uint32_t i = 0; i < count; i++) {
        void *p = malloc(size);
        // Escapes to an opaque asm: the compiler cannot elide the malloc/free pair.
        __asm__ volatile("" : : "r"(p) : "memory");
        free(p);
    }
}

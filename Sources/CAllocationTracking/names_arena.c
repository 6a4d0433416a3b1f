// The pre-resolved names of the sites, for the allocation-failure report (contract: include/cat_emergency.h).
//
// Symbolicating inside a failing malloc is impossible (dladdr and reading debug info allocate), so a background
// thread (the watchdog's `_EmergencyNames.refresh()`) names the sites the report would print while memory is
// plentiful and stores one short line per trace id here. The arena is reserved once, MAP_NORESERVE: pages are
// touched only as names are stored. One writer (API lock held); readers (the report) see no name or a complete
// one: a record is written first and published with a release store of its offset.
#define _GNU_SOURCE
#include "cat_internal.h"

#include <string.h>
#include <sys/mman.h>

enum { CAT_NAMES_ARENA_BYTES = 8 << 20, CAT_NAME_MAX = 1024 };

static uint64_t *g_cat_names_index;     // maxTraces words: arena offset + 1 of the trace's record, 0 none
static uint64_t g_cat_names_capacity;   // entries in the index
static unsigned char *g_cat_names_arena;
static uint64_t g_cat_names_cursor;     // bytes used in the arena
static uint64_t g_cat_names_watermark;  // one past the highest trace id given to cat_names_put (for the reset)
static uint64_t g_cat_names_generation;

static void *cat_names_map(size_t bytes) {
    void *pages = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return pages == MAP_FAILED ? NULL : pages;
}

int cat_names_reserve(uint64_t maxTraces) {
    if (cat_load_acquire((uint64_t *)&g_cat_names_arena) != 0) return 0;
    if (maxTraces == 0) maxTraces = 1;
    uint64_t *index = cat_names_map(maxTraces * sizeof(uint64_t));
    if (!index) return -1;
    unsigned char *arena = cat_names_map(CAT_NAMES_ARENA_BYTES);
    if (!arena) { munmap(index, maxTraces * sizeof(uint64_t)); return -1; }
    g_cat_names_index = index;
    cat_store_release(&g_cat_names_capacity, maxTraces);
    cat_store_release((uint64_t *)&g_cat_names_arena, (uint64_t)(uintptr_t)arena);
    return 0;
}

int cat_names_put(uint64_t traceID, const char *text, size_t length) {
    unsigned char *arena = (unsigned char *)(uintptr_t)cat_load_acquire((uint64_t *)&g_cat_names_arena);
    if (!arena) return 0;
    if (length > CAT_NAME_MAX) length = CAT_NAME_MAX;
    int stored = 0;
    // An id past the index (a later start with a larger maxTraces) or a full arena: no name (the caller
    // remembers, so as not to resolve it again every second).
    if (length > 0 && traceID < g_cat_names_capacity) {
        uint64_t offset = g_cat_names_cursor;
        uint64_t record = (16 + length + 7) & ~(uint64_t)7;
        if (offset + record <= CAT_NAMES_ARENA_BYTES) {
            uint64_t header[2] = {traceID, length};
            memcpy(arena + offset, header, sizeof(header));
            memcpy(arena + offset + 16, text, length);
            g_cat_names_cursor = offset + record;
            cat_store_release(&g_cat_names_index[traceID], offset + 1);  // publishes the complete record
            stored = 1;
        }
    }
    if (traceID + 1 > g_cat_names_watermark) cat_store_release(&g_cat_names_watermark, traceID + 1);
    return stored;
}

void cat_names_reset(void) {
    if (!g_cat_names_arena) {
        cat_add_seq_cst(&g_cat_names_generation, 1);
        return;
    }
    uint64_t used = g_cat_names_watermark < g_cat_names_capacity ? g_cat_names_watermark : g_cat_names_capacity;
    for (uint64_t i = 0; i < used; i++) cat_store_relaxed(&g_cat_names_index[i], 0);
    g_cat_names_cursor = 0;
    cat_store_release(&g_cat_names_watermark, 0);
    cat_add_seq_cst(&g_cat_names_generation, 1);
}

uint64_t cat_names_generation(void) { return cat_load_acquire(&g_cat_names_generation); }

size_t cat_names_get(uint64_t traceID, const char **text) {
    *text = NULL;
    unsigned char *arena = (unsigned char *)(uintptr_t)cat_load_acquire((uint64_t *)&g_cat_names_arena);
    if (!arena || traceID >= cat_load_acquire(&g_cat_names_capacity)) return 0;
    uint64_t slot = cat_load_acquire(&g_cat_names_index[traceID]);
    if (slot == 0 || slot - 1 + 16 > CAT_NAMES_ARENA_BYTES) return 0;
    uint64_t header[2];
    memcpy(header, arena + slot - 1, sizeof(header));
    // A record of another id (the names were reset meanwhile) or a length running off the arena: no name.
    if (header[0] != traceID || header[1] == 0 || header[1] > CAT_NAME_MAX ||
        slot - 1 + 16 + header[1] > CAT_NAMES_ARENA_BYTES)
        return 0;
    *text = (const char *)arena + slot - 1 + 16;
    return (size_t)header[1];
}

uint64_t cat_names_bytes(void) {
    if (cat_load_acquire((uint64_t *)&g_cat_names_arena) == 0) return 0;
    return cat_load_relaxed(&g_cat_names_watermark) * sizeof(uint64_t) + cat_load_relaxed(&g_cat_names_cursor);
}

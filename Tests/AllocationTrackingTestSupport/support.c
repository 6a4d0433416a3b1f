#define _GNU_SOURCE
#include "AllocationTrackingTestSupport.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#define ATS_SECTION __attribute__((section("ats_alloc_text"), noinline, used))
// Keeps the helper's frame on the stack in optimised builds (no tail call into the allocator).
#define ATS_RETURN(expression)                              \
    do {                                                    \
        void *ats_result = (void *)(expression);            \
        __asm__ __volatile__("" : : "r"(ats_result) : "memory"); \
        return ats_result;                                  \
    } while (0)

extern char __start_ats_alloc_text[];
extern char __stop_ats_alloc_text[];
uintptr_t ats_alloc_text_start(void) { return (uintptr_t)__start_ats_alloc_text; }
uintptr_t ats_alloc_text_end(void) { return (uintptr_t)__stop_ats_alloc_text; }

ATS_SECTION static void *ats_one(const char *function, size_t size) {
    void *block = NULL;
    if (strcmp(function, "malloc") == 0) ATS_RETURN(malloc(size));
    if (strcmp(function, "calloc") == 0) ATS_RETURN(calloc(size, 1));
    if (strcmp(function, "realloc") == 0) ATS_RETURN(realloc(NULL, size));
    if (strcmp(function, "reallocarray") == 0) ATS_RETURN(reallocarray(NULL, size, 1));
    if (strcmp(function, "posix_memalign") == 0) { int code = posix_memalign(&block, 64, size); __asm__ __volatile__("" : : "r"(code) : "memory"); return code == 0 ? block : NULL; }
    if (strcmp(function, "aligned_alloc") == 0) ATS_RETURN(aligned_alloc(64, size));
    if (strcmp(function, "memalign") == 0) ATS_RETURN(memalign(128, size));
    if (strcmp(function, "valloc") == 0) ATS_RETURN(valloc(size));
    if (strcmp(function, "pvalloc") == 0) ATS_RETURN(pvalloc(size));
    if (strcmp(function, "strdup") == 0) {
        char text[4096];
        size_t n = size > 0 ? size - 1 : 0;
        if (n >= sizeof(text)) n = sizeof(text) - 1;
        memset(text, 'x', n);
        text[n] = 0;
        ATS_RETURN(strdup(text));  // allocates strlen + 1 == size bytes inside libc
    }
    if (strcmp(function, "new") == 0) ATS_RETURN(ats_cxx_new(size));
    return NULL;
}

ATS_SECTION int ats_allocate(const char *function, size_t count, size_t size, void **out) {
    int ok = 0;
    for (size_t i = 0; i < count; i++) {
        out[i] = ats_one(function, size);
        if (out[i]) ok++;
    }
    return ok;
}

ATS_SECTION char *ats_getline(FILE *file) {
    char *line = NULL;
    size_t capacity = 0;
    ssize_t length = getline(&line, &capacity, file);
    __asm__ __volatile__("" : : "r"(length) : "memory");
    if (length < 0) { free(line); return NULL; }
    return line;
}

void ats_free_all(void **blocks, size_t count) {
    for (size_t i = 0; i < count; i++) free(blocks[i]);
}

void ats_delete_all(void **blocks, size_t count) {
    for (size_t i = 0; i < count; i++) ats_cxx_delete(blocks[i]);
}

ATS_SECTION void *ats_realloc(void *block, size_t size) { ATS_RETURN(realloc(block, size)); }

ATS_SECTION void *ats_malloc_at_depth(size_t size, int depth) {
    if (depth <= 1) ATS_RETURN(malloc(size));
    void *result = ats_malloc_at_depth(size, depth - 1);
    __asm__ __volatile__("" ::: "memory");  // no tail call
    return result;
}

static uint64_t ats_next(uint64_t *state) {
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

ATS_SECTION void ats_stress_step(void **slots, size_t *sizes, size_t slotCount, uint64_t *rng, size_t *heldBytes) {
    uint64_t r = ats_next(rng);
    size_t slot = (size_t)(r % slotCount);
    size_t size = (size_t)((r >> 20) % 2048);
    if (!slots[slot]) {
        slots[slot] = malloc(size);
        if (slots[slot]) { sizes[slot] = size; *heldBytes += size; }
    } else if ((r >> 40) % 3 == 0) {
        void *moved = realloc(slots[slot], size + 1);
        if (moved) { *heldBytes += size + 1; *heldBytes -= sizes[slot]; slots[slot] = moved; sizes[slot] = size + 1; }
    } else {
        free(slots[slot]);
        *heldBytes -= sizes[slot];
        slots[slot] = NULL;
        sizes[slot] = 0;
    }
}

int ats_errno_after_free(void *ptr, int value) {
    errno = value;
    free(ptr);
    return errno;
}

void *ats_memalign(size_t alignment, size_t size) { return memalign(alignment, size); }
size_t ats_usable_size(void *block) { return malloc_usable_size(block); }

// Allocation from a known C line, for the attribution tests: *line receives the line of the malloc call.
ATS_SECTION void *ats_malloc_attributed(size_t size, int *line) {
    *line = __LINE__ + 1;
    ATS_RETURN(malloc(size));
}

// A block whose pages are touched (so it counts in RSS and the cgroup), from a known line.
ATS_SECTION void *ats_malloc_touched(size_t size, int *line) {
    *line = __LINE__ + 1;
    char *block = malloc(size);
    if (block) memset(block, 0x5a, size);
    ATS_RETURN(block);
}

// The allocation-failure scenario: every block comes from this one malloc call (one trace), whose line is known.
ATS_SECTION static void *ats_oom_block(size_t size, int *line) {
    *line = __LINE__ + 1;
    ATS_RETURN(malloc(size));
}

int ats_limit_address_space(size_t headroom) {
    char text[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    ssize_t n = read(fd, text, sizeof(text) - 1);
    int readErrno = errno;
    close(fd);
    if (n <= 0) return n < 0 ? readErrno : EIO;
    size_t pages = 0;
    for (ssize_t i = 0; i < n && text[i] >= '0' && text[i] <= '9'; i++) pages = pages * 10 + (size_t)(text[i] - '0');
    struct rlimit limit;
    if (getrlimit(RLIMIT_AS, &limit) != 0) return errno;
    limit.rlim_cur = (rlim_t)(pages * (size_t)sysconf(_SC_PAGESIZE) + headroom);
    return setrlimit(RLIMIT_AS, &limit) == 0 ? 0 : errno;
}

int ats_unlimit_address_space(void) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_AS, &limit) != 0) return errno;
    limit.rlim_cur = limit.rlim_max;
    return setrlimit(RLIMIT_AS, &limit) == 0 ? 0 : errno;
}

ATS_SECTION size_t ats_allocate_until_failure(size_t blockSize, size_t warmupBlocks, void (*afterWarmup)(void),
                                              void **out, size_t capacity, int *errnoOut, int *line) {
    size_t count = 0;
    *errnoOut = 0;
    for (; count < capacity; count++) {
        if (count == warmupBlocks && afterWarmup) afterWarmup();
        void *block = ats_oom_block(blockSize, line);
        if (!block) {
            *errnoOut = errno;
            break;
        }
        memset(block, 1, 4096);  // touch a page (the blocks count towards RSS a little)
        out[count] = block;
    }
    __asm__ __volatile__("" ::: "memory");  // no tail call
    return count;
}
// One suite at a time may own the process-wide tracker (start/stop, or AllocationTracker.measure's implicit
// start): the test targets share one process, so their suites take this flag (see TrackerExclusive.swift).
static int ats_tracker_owner;
int ats_tracker_try_acquire(void) {
    int expected = 0;
    return __atomic_compare_exchange_n(&ats_tracker_owner, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
void ats_tracker_release(void) { __atomic_store_n(&ats_tracker_owner, 0, __ATOMIC_RELEASE); }

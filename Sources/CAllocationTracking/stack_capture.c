// Stack capture: two unwinders behind one function (cat_capture_stack).
//
// libunwind (default): unw_backtrace reads DWARF CFI, so it walks through code built without frame pointers
// (glibc, libstdc++, most Debian libraries). It is loaded with dlopen(RTLD_LOCAL) and never linked: linking
// libunwind.so.8 would put its _Unwind_* and weak `backtrace` ahead of libgcc_s in symbol lookup and silently
// replace the process's C++ exception unwinder. unw_backtrace itself takes no lock of its own and does not
// call malloc; it finds unwind tables with dl_iterate_phdr, which takes the loader's (recursive) lock.
//
// Frame pointers: follows the saved-rbp chain, bounded by the thread's stack range, strictly upwards. Swift and
// C code built by SwiftPM on Linux keeps frame pointers; glibc and libstdc++ do not, so a walk that enters
// them stops (or, for a leaf that leaves rbp alone, skips them). Cheaper than libunwind by a wide margin.
#define _GNU_SOURCE
#include "cat_internal.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*cat_unw_backtrace_fn)(void **buffer, int size);
static cat_unw_backtrace_fn g_cat_unw_backtrace;
static void *g_cat_libunwind_handle;

int cat_load_libunwind(char *error, size_t errorSize) {
    if (g_cat_unw_backtrace) return 0;
    // ALLOCATION_TRACKING_LIBUNWIND names another libunwind (a path, for installs outside the loader's path).
    const char *override = getenv("ALLOCATION_TRACKING_LIBUNWIND");
    const char *names[] = {"libunwind.so.8", "libunwind.so"};
    size_t nameCount = 2;
    if (override && *override) {
        names[0] = override;
        nameCount = 1;
    }
    void *handle = NULL;
    for (size_t i = 0; i < nameCount && !handle; i++) handle = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *reason = dlerror();
        snprintf(error, errorSize,
                 "libunwind is not installed (%s); install it with `apt-get install -y libunwind8` "
                 "(Debian/Ubuntu; or libunwind-dev), or start with unwinder: .framePointers",
                 reason ? reason : "dlopen failed");
        return -1;
    }
    cat_unw_backtrace_fn fn = (cat_unw_backtrace_fn)dlsym(handle, "unw_backtrace");
    if (!fn) fn = (cat_unw_backtrace_fn)dlsym(handle, "_Ux86_64_backtrace");
    if (!fn) fn = (cat_unw_backtrace_fn)dlsym(handle, "_Uaarch64_backtrace");
    if (!fn) {
        snprintf(error, errorSize, "libunwind was loaded but has no unw_backtrace; install libunwind8 >= 1.1");
        dlclose(handle);
        return -1;
    }
    g_cat_libunwind_handle = handle;
    // Warm it up outside the allocation path: its first call initialises caches.
    void *warm[8];
    fn(warm, 8);
    __atomic_store_n(&g_cat_unw_backtrace, fn, __ATOMIC_RELEASE);
    return 0;
}

// MARK: - Thread stack bounds (for the frame-pointer walk)

static CAT_TLS uintptr_t t_cat_stack_low;
static CAT_TLS uintptr_t t_cat_stack_high;

// Documented rare path: once per thread, inside the hook. pthread_getattr_np reads /proc/self/maps for the main
// thread, which allocates; those allocations pass through the reentrancy guard untracked.
static void cat_read_stack_bounds(void) {
    pthread_attr_t attr;
    void *base = NULL;
    size_t size = 0;
    cat_enter_rare_path();
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        pthread_attr_getstack(&attr, &base, &size);
        pthread_attr_destroy(&attr);
    }
    cat_leave_rare_path();
    if (base && size) {
        t_cat_stack_low = (uintptr_t)base;
        t_cat_stack_high = (uintptr_t)base + size;
    } else {
        t_cat_stack_low = 1;  // unknown: the walk records only the immediate caller
        t_cat_stack_high = 1;
    }
}

static uint32_t cat_walk_frame_pointers(uintptr_t frame, uintptr_t returnAddress, uintptr_t *out, uint32_t maxFrames,
                                        uint32_t *totalFrames) {
    if (t_cat_stack_high == 0) cat_read_stack_bounds();
    const uintptr_t low = t_cat_stack_low, high = t_cat_stack_high;
    uint32_t count = 0, total = 0;
    out[count++] = returnAddress;
    total = 1;
    // frame is the interposed function's own frame: [frame] = caller's saved frame pointer, [frame+8] = returnAddress.
    if (frame < low || frame + 16 > high) { *totalFrames = total; return count; }
    uintptr_t fp = *(const uintptr_t *)frame;
    while (fp > frame && fp + 16 <= high && (fp & (sizeof(uintptr_t) - 1)) == 0) {
        uintptr_t ra = ((const uintptr_t *)fp)[1];
        if (ra < 4096) break;
        if (count < maxFrames) out[count++] = ra;
        total++;
        frame = fp;
        fp = *(const uintptr_t *)fp;
    }
    *totalFrames = total;
    return count;
}

// MARK: - libunwind

static CAT_TLS void *t_cat_unwind_buffer[CAT_TOTAL_FRAMES_LIMIT + 16];
static CAT_TLS int t_cat_unwind_warm;

static uint32_t cat_walk_libunwind(uintptr_t returnAddress, uintptr_t *out, uint32_t maxFrames, uint32_t *totalFrames) {
    cat_unw_backtrace_fn fn = __atomic_load_n(&g_cat_unw_backtrace, __ATOMIC_ACQUIRE);
    if (!fn) { *totalFrames = 1; out[0] = returnAddress; return 1; }
    int n;
    if (__builtin_expect(t_cat_unwind_warm, 1)) {
        n = fn(t_cat_unwind_buffer, CAT_TOTAL_FRAMES_LIMIT + 16);
    } else {
        // Documented rare path: libunwind's first backtrace on a thread creates its per-thread trace cache
        // (pthread_setspecific and a small allocation); those allocations pass through the guard untracked.
        cat_enter_rare_path();
        n = fn(t_cat_unwind_buffer, CAT_TOTAL_FRAMES_LIMIT + 16);
        cat_leave_rare_path();
        t_cat_unwind_warm = 1;
    }
    // Skip our own frames: everything up to the interposed function's return address into its caller.
    int skip = -1;
    for (int i = 0; i < n && i < 16; i++) {
        if ((uintptr_t)t_cat_unwind_buffer[i] == returnAddress) { skip = i; break; }
    }
    if (skip < 0) { *totalFrames = 1; out[0] = returnAddress; return 1; }
    uint32_t total = (uint32_t)(n - skip);
    if (total > CAT_TOTAL_FRAMES_LIMIT) total = CAT_TOTAL_FRAMES_LIMIT;
    uint32_t count = total < maxFrames ? total : maxFrames;
    for (uint32_t i = 0; i < count; i++) out[i] = (uintptr_t)t_cat_unwind_buffer[skip + (int)i];
    *totalFrames = total;
    return count;
}

uint32_t cat_capture_stack_nested(void *frameAddress, void *returnAddress, uintptr_t *out, uint32_t maxFrames,
                                  uint32_t *totalFrames) {
    if (maxFrames == 0) { *totalFrames = 0; return 0; }
    if (t_cat_stack_high == 0) {  // bounds unknown: reading them is a rare path, not for a nested context
        out[0] = (uintptr_t)returnAddress;
        *totalFrames = 1;
        return 1;
    }
    return cat_walk_frame_pointers((uintptr_t)frameAddress, (uintptr_t)returnAddress, out, maxFrames, totalFrames);
}

__attribute__((noinline)) uint32_t cat_capture_stack(int unwinder, void *frameAddress, void *returnAddress,
                                                     uintptr_t *out, uint32_t maxFrames, uint32_t *totalFrames) {
    if (maxFrames == 0) { *totalFrames = 0; return 0; }
    if (unwinder == CAT_UNWINDER_LIBUNWIND)
        return cat_walk_libunwind((uintptr_t)returnAddress, out, maxFrames, totalFrames);
    return cat_walk_frame_pointers((uintptr_t)frameAddress, (uintptr_t)returnAddress, out, maxFrames, totalFrames);
}

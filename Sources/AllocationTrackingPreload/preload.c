// libAllocationTrackingPreload.so: the interposer and the Swift core for an unmodified program, by LD_PRELOAD.
//
// The core's own constructor (interposer.c) already starts the tracker from ALLOCATION_TRACKING. This one adds
// what only a preloaded copy needs: the tracker stays in the process it was preloaded into. Without
// ALLOC_TRACK_FOLLOW_CHILDREN=1 it starts the tracker itself, then removes ALLOCATION_TRACKING and itself from
// LD_PRELOAD, so that the programs it runs (a shell's commands, a build's compilers) are not tracked and do not
// race for the same `snapshot_at_exit` file. The two constructors run in either order: whichever comes second
// finds the tracker started (a second start is a no-op), or the variable gone.
#define _GNU_SOURCE
#include <CAllocationTracking.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// Defined with @_cdecl in the AllocationTracking module (cat_internal.h): parses ALLOCATION_TRACKING and starts
// the tracker, or prints one line naming the bad part. This library is the core's other environment entry point.
void cat_swift_start_from_environment_impl(void);

static void alloc_track_say(const char *text) { cat_write_stderr(text, strlen(text)); }

// Removes every entry naming this library (by its path as loaded, or by the same file) from LD_PRELOAD, whose
// entries are separated by colons or spaces.
static void alloc_track_strip_preload(void) {
    const char *list = getenv("LD_PRELOAD");
    Dl_info self;
    if (!list || !dladdr((void *)&alloc_track_strip_preload, &self) || !self.dli_fname) return;
    char *selfReal = realpath(self.dli_fname, NULL);
    char *copy = strdup(list);
    char *kept = calloc(strlen(list) + 1, 1);
    if (!copy || !kept) goto done;
    char *saved = NULL;
    for (char *entry = strtok_r(copy, ": ", &saved); entry; entry = strtok_r(NULL, ": ", &saved)) {
        char *real = realpath(entry, NULL);
        int isSelf = strcmp(entry, self.dli_fname) == 0 || (real && selfReal && strcmp(real, selfReal) == 0);
        free(real);
        if (isSelf) continue;
        if (*kept) strcat(kept, ":");
        strcat(kept, entry);
    }
    if (*kept) setenv("LD_PRELOAD", kept, 1); else unsetenv("LD_PRELOAD");
done:
    free(selfReal);
    free(copy);
    free(kept);
}

// With --follow-children the children are tracked with the same settings, but the snapshot file is this
// process's: `snapshot_at_exit` is removed from what they inherit (a child exiting first would take the name).
static void alloc_track_keep_snapshot_here(void) {
    const char *value = getenv("ALLOCATION_TRACKING");
    char *copy = value ? strdup(value) : NULL;
    char *kept = value ? calloc(strlen(value) + 1, 1) : NULL;
    if (copy && kept) {
        char *saved = NULL;
        for (char *item = strtok_r(copy, ",", &saved); item; item = strtok_r(NULL, ",", &saved)) {
            if (strncmp(item, "snapshot_at_exit=", strlen("snapshot_at_exit=")) == 0) continue;
            if (*kept) strcat(kept, ",");
            strcat(kept, item);
        }
        setenv("ALLOCATION_TRACKING", *kept ? kept : "1", 1);
    }
    free(copy);
    free(kept);
}

__attribute__((constructor)) static void alloc_track_preload_start(void) {
    const char *value = getenv("ALLOCATION_TRACKING");
    if (!value || !*value) return;
    const char *followValue = getenv("ALLOC_TRACK_FOLLOW_CHILDREN");
    int follow = followValue && strcmp(followValue, "1") == 0;
    if (cat_main_program_owns_malloc()) {
        // The program's own copy reads ALLOCATION_TRACKING after this (the main program's constructors run last),
        // so the variable stays; its children inherit it.
        alloc_track_say("alloc-track: this program defines malloc itself (it links swift-allocation-tracking, or an "
                        "allocator of its own): the preloaded tracker stands aside, and the program's own copy "
                        "tracks from ALLOCATION_TRACKING if it is this library\n");
        if (!follow) alloc_track_strip_preload();
        return;
    }
    if (!cat_is_active()) cat_swift_start_from_environment_impl();
    if (follow) {
        alloc_track_keep_snapshot_here();
    } else {
        unsetenv("ALLOCATION_TRACKING");
        alloc_track_strip_preload();
    }
}

// Starting a test's child process without Foundation's Process: its exit is noticed through SIGCHLD, which a
// thread of the test process that does not block it can swallow (NIO's and the tests' own threads), so that
// waitUntilExit waits for ever on a child that is already a zombie. The runner (TrackerTestSupport's
// runChildProcess) waits with waitpid itself.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/types.h>
#include <unistd.h>

#include "AllocationTrackingTestSupport.h"

int ats_spawn(const char *path, char *const argv[], char *const envp[], const char *directory, const char *input,
              int output, int errors, pid_t *pid) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int result = posix_spawn_file_actions_init(&actions);
    if (result != 0) return result;
    result = posix_spawnattr_init(&attributes);
    if (result != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return result;
    }
    // Its own process group, so that a deadline kills what it started too (alloc-track's child, a shell's).
    // The signal mask is inherited from the calling thread, as with Foundation's Process (tests rely on a
    // child started from a libdispatch worker thread having that thread's mask).
    result = posix_spawnattr_setpgroup(&attributes, 0);
    if (result == 0) result = posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
    if (result == 0) result = posix_spawn_file_actions_addopen(&actions, 0, input ? input : "/dev/null", O_RDONLY, 0);
    if (result == 0) result = posix_spawn_file_actions_adddup2(&actions, output, 1);
    if (result == 0) result = posix_spawn_file_actions_adddup2(&actions, errors, 2);
    if (result == 0 && directory) result = posix_spawn_file_actions_addchdir_np(&actions, directory);
    if (result == 0) result = posix_spawn(pid, path, &actions, &attributes, argv, envp);
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    return result;
}

int ats_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC) == 0 ? 0 : errno; }

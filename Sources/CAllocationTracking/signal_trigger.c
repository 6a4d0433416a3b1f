// The on-demand report signal: a handler that only counts the signal and wakes the watchdog (both
// async-signal-safe), which answers with a report written outside the handler.
//
// Why a wake-up pipe and not only a flag polled every `pollInterval`: a report asked for by hand should start
// at once, not at the next poll; the watchdog waits for its next poll *on the pipe* (ppoll), so a signal ends
// the wait. Why a count and not a flag: signals arriving while a report is written are answered by the next one,
// which says how many it merged (an operator sending one every few seconds must be able to tell that some were
// merged, not lost).
#define _GNU_SOURCE
#include "cat_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t g_cat_signal_pending;
static int g_cat_signal_number;
static struct sigaction g_cat_signal_previous;
/// The wake-up pipe: [0] read by the watchdog, [1] written by the handler. Created once per process and never
/// closed: a handler still running on another thread while the signal is uninstalled must not write into a
/// descriptor that was closed and reused for something else. -1 until created.
static int g_cat_signal_pipe[2] = {-1, -1};

static void cat_signal_handler(int signo) {
    (void)signo;
    __atomic_add_fetch(&g_cat_signal_pending, 1, __ATOMIC_ACQ_REL);
    int fd = __atomic_load_n(&g_cat_signal_pipe[1], __ATOMIC_ACQUIRE);
    if (fd >= 0) {
        int saved = errno;  // the interrupted code may be about to read errno
        char byte = 1;
        ssize_t ignored = write(fd, &byte, 1);  // non-blocking: a full pipe already wakes the watchdog
        (void)ignored;
        errno = saved;
    }
}

int cat_signal_install(int signo) {
    if (g_cat_signal_number == signo) return 0;
    if (g_cat_signal_number != 0) cat_signal_uninstall();
    if (g_cat_signal_pipe[0] < 0) {
        int fds[2];
        // Without the pipe the watchdog still sees the count at its next poll: not a reason to refuse the signal.
        if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0) {
            g_cat_signal_pipe[0] = fds[0];
            __atomic_store_n(&g_cat_signal_pipe[1], fds[1], __ATOMIC_RELEASE);
        }
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = cat_signal_handler;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    if (sigaction(signo, &action, &g_cat_signal_previous) != 0) return -errno;
    g_cat_signal_number = signo;
    return 0;
}

void cat_signal_uninstall(void) {
    if (g_cat_signal_number == 0) return;
    sigaction(g_cat_signal_number, &g_cat_signal_previous, NULL);
    g_cat_signal_number = 0;
}

uint64_t cat_signal_take(void) { return __atomic_exchange_n(&g_cat_signal_pending, 0, __ATOMIC_ACQ_REL); }

void cat_sleep_ns(uint64_t ns) {
    struct timespec t = {.tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u)};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
}

void cat_signal_wait_ns(uint64_t ns) {
    int fd = g_cat_signal_pipe[0];
    if (fd < 0) {
        cat_sleep_ns(ns);
        return;
    }
    uint64_t end = cat_monotonic_ns() + ns;
    for (;;) {
        uint64_t now = cat_monotonic_ns();
        if (now >= end) return;
        uint64_t left = end - now;
        struct timespec t = {.tv_sec = (time_t)(left / 1000000000u), .tv_nsec = (long)(left % 1000000000u)};
        struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
        int ready = ppoll(&p, 1, &t, NULL);
        if (ready > 0) {
            char drain[64];
            while (read(fd, drain, sizeof drain) > 0) {}
            return;
        }
        if (ready == 0 || errno != EINTR) return;
    }
}

void cat_signal_unblock_here(int signo) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signo);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

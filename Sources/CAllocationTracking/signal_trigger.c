// The on-demand report signal: a handler that only sets a flag (async-signal-safe), which the watchdog thread
// takes on its next poll and answers with a report written outside the handler.
#define _GNU_SOURCE
#include "cat_internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>

static uint64_t g_cat_signal_pending;
static int g_cat_signal_number;
static struct sigaction g_cat_signal_previous;

static void cat_signal_handler(int signo) {
    (void)signo;
    __atomic_store_n(&g_cat_signal_pending, 1, __ATOMIC_RELEASE);
}

int cat_signal_install(int signo) {
    if (g_cat_signal_number == signo) return 0;
    if (g_cat_signal_number != 0) cat_signal_uninstall();
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

int cat_signal_take(void) { return (int)__atomic_exchange_n(&g_cat_signal_pending, 0, __ATOMIC_ACQ_REL); }

void cat_sleep_ns(uint64_t ns) {
    struct timespec t = {.tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u)};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
}

void cat_signal_unblock_here(int signo) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signo);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

// The C twin of workload M (Benchmarks/Sources/Workloads/MallocStorm.swift): the same steps, seeds, sizes and
// call depths, in a plain C program, so that profilers that run unmodified programs (heaptrack, jemalloc's and
// tcmalloc's samplers, this project's preload library through `alloc-track run`) are measured on the same work.
//
//     cc -O2 -g -fno-omit-frame-pointer -pthread mstorm.c -o mstorm && ./mstorm [threads] [iterations]
//
// Prints one line: threads, malloc calls, wall and CPU milliseconds of the storm itself (thread start to join,
// excluding process start-up and exit, where heaptrack and the preload library do their set-up and writing).
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { SLOTS = 1024 };

__attribute__((noinline)) static void *malloc_at_depth(uint32_t depth, size_t size) {
    if (depth <= 1) {
        void *p = malloc(size);
        __asm__ volatile("" : : "r"(p) : "memory");
        return p;
    }
    void *p = malloc_at_depth(depth - 1, size);
    __asm__ volatile("" : : "r"(p) : "memory");  // work after the call: a real call, not a tail call
    return p;
}

static uint64_t xorshift(uint64_t x) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

struct job { uint64_t seed; long iterations; long mallocs; };

static void *storm(void *argument) {
    struct job *job = argument;
    void *pool[SLOTS] = {0};
    uint64_t state = job->seed;
    long mallocs = 0;
    for (long i = 0; i < job->iterations; i++) {
        state = xorshift(state);
        unsigned slot = (unsigned)(state & (SLOTS - 1));
        if (pool[slot]) {
            free(pool[slot]);
            pool[slot] = NULL;
        } else {
            size_t size = 16 + (size_t)((state >> 16) % 2001);     // 16…2016 bytes
            uint32_t depth = 10 + (uint32_t)((state >> 40) % 12);  // 10…21 frames
            pool[slot] = malloc_at_depth(depth, size);
            mallocs++;
        }
    }
    for (unsigned slot = 0; slot < SLOTS; slot++) free(pool[slot]);
    job->mallocs = mallocs;
    return NULL;
}

static double ms(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    long iterations = argc > 2 ? atol(argv[2]) : 2000000;
    if (threads < 1 || threads > 64 || iterations < 1) {
        fprintf(stderr, "mstorm: usage: mstorm [threads 1…64] [iterations ≥ 1]\n");
        return 2;
    }
    pthread_t thread[64];
    struct job jobs[64];
    double wall = ms(CLOCK_MONOTONIC), cpu = ms(CLOCK_PROCESS_CPUTIME_ID);
    for (int t = 0; t < threads; t++) {
        // The Swift workload's seeds (MallocStorm.seed(for:)).
        jobs[t] = (struct job){0x9E3779B97F4A7C15ULL + (uint64_t)t * 0xBF58476D1CE4E5B9ULL, iterations, 0};
        pthread_create(&thread[t], NULL, storm, &jobs[t]);
    }
    long mallocs = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(thread[t], NULL);
        mallocs += jobs[t].mallocs;
    }
    printf("threads=%d mallocs=%ld wall_ms=%.1f cpu_ms=%.1f\n", threads, mallocs,
           ms(CLOCK_MONOTONIC) - wall, ms(CLOCK_PROCESS_CPUTIME_ID) - cpu);
    return 0;
}

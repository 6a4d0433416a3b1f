// Allocation helpers for the tests. Their code is placed in the `ats_alloc_text` section, so a test can check that
// a captured stack has a frame inside them: [ats_alloc_text_start(), ats_alloc_text_end()).
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

uintptr_t ats_alloc_text_start(void);
uintptr_t ats_alloc_text_end(void);

/// Calls the named malloc-family function (`malloc`, `calloc`, `realloc`, `reallocarray`, `posix_memalign`,
/// `aligned_alloc`, `memalign`, `valloc`, `pvalloc`, `strdup`, `getline`, `new`) `count` times, each allocating
/// `size` bytes, storing the blocks in `out`. Returns the number of successful allocations.
int ats_allocate(const char *function, size_t count, size_t size, void **out);
/// getline() from `file` into a fresh buffer (libc allocates it); returns the buffer.
char *ats_getline(FILE *file);
/// free() each block.
void ats_free_all(void **blocks, size_t count);
/// delete[] each block (for `new`).
void ats_delete_all(void **blocks, size_t count);
/// realloc from inside the helper section.
void *ats_realloc(void *block, size_t size);
/// malloc at a given call depth (recursion inside the helper section).
void *ats_malloc_at_depth(size_t size, int depth);
/// One random stress step on `slots` (malloc/realloc/free), using and updating `*rng`; keeps `*heldBytes` equal
/// to the requested bytes of the blocks currently held in `slots` (sizes tracked in `sizes`).
void ats_stress_step(void **slots, size_t *sizes, size_t slotCount, uint64_t *rng, size_t *heldBytes);
/// errno after free(ptr) when errno was set to `value` before.
int ats_errno_after_free(void *ptr, int value);
/// memalign and malloc_usable_size (glibc's <malloc.h>, not imported into Swift by Glibc).
void *ats_memalign(size_t alignment, size_t size);
size_t ats_usable_size(void *block);
/// malloc from a C++ translation unit with operator new[].
void *ats_cxx_new(size_t size);
/// malloc / operator new[] from a known source line (written to *line), for the attribution tests.
void *ats_malloc_attributed(size_t size, int *line);
void *ats_cxx_new_attributed(size_t size, int *line);
/// malloc + memset (the pages count in RSS and the cgroup) from a known line.
void *ats_malloc_touched(size_t size, int *line);
void ats_cxx_delete(void *block);
/// operator new[] returning NULL where it would throw std::bad_alloc.
void *ats_cxx_try_new(size_t size);
/// Sets RLIMIT_AS to the process's current address-space size plus `headroom` bytes, without allocating
/// (/proc/self/statm read into a stack buffer). Returns 0, or an errno value.
int ats_limit_address_space(size_t headroom);
/// Raises RLIMIT_AS back to its hard limit. Returns 0, or an errno value.
int ats_unlimit_address_space(void);
/// Allocates `blockSize`-byte blocks from one known malloc line (written to *line) into `out` until malloc returns
/// NULL (errno then written to *errnoOut) or `capacity` blocks are held; calls `afterWarmup` once, after the first
/// `warmupBlocks` blocks, from inside the loop (so every block shares one stack). Returns the number of blocks.
size_t ats_allocate_until_failure(size_t blockSize, size_t warmupBlocks, void (*afterWarmup)(void), void **out,
                                  size_t capacity, int *errnoOut, int *line);
/// A process-wide flag: the test suites that use the tracker (in any test target) hold it while they run.
/// Returns 1 when acquired.
int ats_tracker_try_acquire(void);
void ats_tracker_release(void);

#include <sys/types.h>
/// Starts `path` (argv, envp NULL-terminated) in a process group of its own, standard input from the file `input`
/// (NULL: /dev/null), output and errors onto the descriptors `output` and `errors` (the write ends of pipes), in
/// `directory` (NULL: the current one). Returns 0 and the pid in *pid, or an errno value. The caller reaps it with
/// waitpid.
int ats_spawn(const char *path, char *const argv[], char *const envp[], const char *directory, const char *input,
              int output, int errors, pid_t *pid);
/// pipe2(fds, O_CLOEXEC) (not visible to Swift): 0, or an errno value.
int ats_pipe_cloexec(int fds[2]);

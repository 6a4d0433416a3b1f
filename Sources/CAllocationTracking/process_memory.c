// Process and container memory, read for the report and for the RSS / cgroup soft limits.
//
// These readings are taken by a watchdog and when the report is written, possibly after malloc failed or from a
// signal handler, so they cannot allocate or lock: no stdio (fopen allocates its FILE), no opendir, no
// getline. Each file is small (statm, oom_score, one cgroup value, /proc/self/cgroup); it is read with
// open/read/close into a stack buffer and parsed by hand.
#define _GNU_SOURCE
#include "cat_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

static uint64_t g_cat_page_size;

void cat_process_memory_init(void) {
    long size = sysconf(_SC_PAGESIZE);
    if (size > 0) cat_store_relaxed(&g_cat_page_size, (uint64_t)size);
}

static uint64_t cat_page_size(void) {
    uint64_t size = cat_load_relaxed(&g_cat_page_size);
    return size != 0 ? size : (uint64_t)getpagesize();
}

// MARK: - Reading small files

static int cat_open_read(const char *path) {
    int fd;
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    return fd;
}

// Reads at most size - 1 bytes of `path` and NUL-terminates. Returns the length, or -1.
static long cat_read_small_file(const char *path, char *buffer, size_t size) {
    int fd = cat_open_read(path);
    if (fd < 0) return -1;
    size_t length = 0;
    while (length + 1 < size) {
        ssize_t n = read(fd, buffer + length, size - 1 - length);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            close(fd);
            return -1;
        }
        if (n == 0) break;
        length += (size_t)n;
    }
    close(fd);
    buffer[length] = 0;
    return (long)length;
}

static bool cat_file_exists(const char *path) {
    int fd = cat_open_read(path);
    if (fd < 0) return false;
    close(fd);
    return true;
}

static bool cat_is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Parses an unsigned decimal at *cursor (leading blanks skipped), advancing past it. Returns false when there
// are no digits or the value overflows.
static bool cat_parse_u64(const char **cursor, uint64_t *value) {
    const char *p = *cursor;
    while (cat_is_space(*p)) p++;
    if (*p < '0' || *p > '9') return false;
    uint64_t v = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        uint64_t digit = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - digit) / 10) return false;
        v = v * 10 + digit;
    }
    *value = v;
    *cursor = p;
    return true;
}

static bool cat_parse_int(const char **cursor, int *value) {
    const char *p = *cursor;
    while (cat_is_space(*p)) p++;
    bool negative = *p == '-';
    if (negative) p++;
    uint64_t magnitude;
    if (!cat_parse_u64(&p, &magnitude) || magnitude > 2147483647u) return false;
    *value = negative ? -(int)magnitude : (int)magnitude;
    *cursor = p;
    return true;
}

// The whole file must be one number (then optional whitespace).
static bool cat_read_u64_file(const char *path, uint64_t *value) {
    char buffer[64];
    if (cat_read_small_file(path, buffer, sizeof(buffer)) <= 0) return false;
    const char *p = buffer;
    if (!cat_parse_u64(&p, value)) return false;
    while (cat_is_space(*p)) p++;
    return *p == 0;
}

// MARK: - Process

uint64_t cat_process_rss_bytes(void) {
    // "size resident shared text lib data dt", in pages.
    char buffer[256];
    if (cat_read_small_file("/proc/self/statm", buffer, sizeof(buffer)) <= 0) return 0;
    const char *p = buffer;
    uint64_t size, resident;
    if (!cat_parse_u64(&p, &size) || !cat_parse_u64(&p, &resident)) return 0;
    return resident * cat_page_size();
}

int cat_read_oom_score(int *score, int *scoreAdj) {
    char buffer[32];
    const char *p = buffer;
    if (cat_read_small_file("/proc/self/oom_score", buffer, sizeof(buffer)) <= 0 || !cat_parse_int(&p, score))
        return -1;
    p = buffer;
    if (cat_read_small_file("/proc/self/oom_score_adj", buffer, sizeof(buffer)) <= 0 || !cat_parse_int(&p, scoreAdj))
        return -1;
    return 0;
}

// MARK: - cgroup

// Joins `root` (trailing slashes dropped), `middle` ("" or "/memory"), `path` (a cgroup path: "/" or "/a/b")
// and `file` ("/memory.current") into `out`. Returns false when it does not fit.
static bool cat_cgroup_join(char *out, size_t size, const char *root, const char *middle, const char *path,
                            const char *file) {
    size_t length = 0;
    size_t rootLength = 0;
    while (root[rootLength]) rootLength++;
    while (rootLength > 1 && root[rootLength - 1] == '/') rootLength--;
    const char *parts[4] = {root, middle, path, file};
    size_t limits[4] = {rootLength, (size_t)-1, (size_t)-1, (size_t)-1};
    for (int part = 0; part < 4; part++) {
        const char *s = parts[part];
        // "/" as the cgroup path adds nothing; any other path keeps its leading '/' and loses a trailing one.
        size_t n = 0;
        while (n < limits[part] && s[n]) n++;
        if (part == 2) {
            while (n > 0 && s[n - 1] == '/') n--;
            if (n > 0 && s[0] != '/') {
                if (length + 1 >= size) return false;
                out[length++] = '/';
            }
        }
        if (length + n >= size) return false;
        for (size_t i = 0; i < n; i++) out[length + i] = s[i];
        length += n;
    }
    out[length] = 0;
    return true;
}

// Fills `out` when <root><middle><path><usageFile> exists; the limit file is recorded only if it exists.
static bool cat_cgroup_try(cat_cgroup *out, int version, const char *root, const char *middle, const char *path,
                           const char *usageFile, const char *limitFile) {
    if (!cat_cgroup_join(out->usagePath, sizeof(out->usagePath), root, middle, path, usageFile)) return false;
    if (!cat_file_exists(out->usagePath)) return false;
    // The group's directory and the mount's (root + middle), for the walk over the ancestors.
    char mount[sizeof(out->directory)];
    if (!cat_cgroup_join(out->directory, sizeof(out->directory), root, middle, path, "") ||
        !cat_cgroup_join(mount, sizeof(mount), root, middle, "/", "")) {
        out->directory[0] = 0;
        mount[0] = 0;
    }
    size_t directoryLength = 0, mountLength = 0;
    while (out->directory[directoryLength]) directoryLength++;
    while (mount[mountLength]) mountLength++;
    out->directoryLength = (uint32_t)directoryLength;
    out->mountLength = (uint32_t)mountLength;
    if (!cat_cgroup_join(out->limitPath, sizeof(out->limitPath), root, middle, path, limitFile) ||
        !cat_file_exists(out->limitPath))
        out->limitPath[0] = 0;
    out->version = version;
    return true;
}

// True when the comma-separated `controllers[0..<length]` contains "memory".
static bool cat_has_memory_controller(const char *controllers, size_t length) {
    size_t start = 0;
    while (start <= length) {
        size_t end = start;
        while (end < length && controllers[end] != ',') end++;
        if (end - start == 6) {
            const char *c = controllers + start;
            if (c[0] == 'm' && c[1] == 'e' && c[2] == 'm' && c[3] == 'o' && c[4] == 'r' && c[5] == 'y') return true;
        }
        start = end + 1;
    }
    return false;
}

enum { CAT_CGROUP_PATH_MAX = 400 };

// One line of /proc/self/cgroup, "hierarchy-id:controllers:path" (the path may itself contain ':').
static void cat_cgroup_parse_line(const char *line, size_t length, char *v2Path, bool *haveV2, char *v1Path,
                                  bool *haveV1) {
    size_t firstColon = 0;
    while (firstColon < length && line[firstColon] != ':') firstColon++;
    if (firstColon == length) return;
    size_t secondColon = firstColon + 1;
    while (secondColon < length && line[secondColon] != ':') secondColon++;
    if (secondColon == length) return;
    const char *path = line + secondColon + 1;
    size_t pathLength = length - secondColon - 1;
    if (pathLength == 0 || pathLength >= CAT_CGROUP_PATH_MAX) return;
    const char *controllers = line + firstColon + 1;
    size_t controllersLength = secondColon - firstColon - 1;
    char *target = NULL;
    if (firstColon == 1 && line[0] == '0' && controllersLength == 0) {
        target = v2Path;
        *haveV2 = true;
    } else if (cat_has_memory_controller(controllers, controllersLength)) {
        target = v1Path;
        *haveV1 = true;
    }
    if (!target) return;
    for (size_t i = 0; i < pathLength; i++) target[i] = path[i];
    target[pathLength] = 0;
}

int cat_cgroup_detect(const char *procSelfCgroupPath, const char *cgroupRoot, cat_cgroup *out) {
    const char *procPath = procSelfCgroupPath ? procSelfCgroupPath : "/proc/self/cgroup";
    const char *root = cgroupRoot ? cgroupRoot : "/sys/fs/cgroup";
    out->version = 0;
    out->usagePath[0] = 0;
    out->limitPath[0] = 0;

    char v2Path[CAT_CGROUP_PATH_MAX] = "/", v1Path[CAT_CGROUP_PATH_MAX] = "/";
    bool haveV2 = false, haveV1 = false;

    // Line by line through a read buffer; a line longer than `line` is skipped.
    int fd = cat_open_read(procPath);
    if (fd >= 0) {
        char chunk[1024], line[CAT_CGROUP_PATH_MAX + 128];
        size_t lineLength = 0;
        bool lineTooLong = false;
        for (;;) {
            ssize_t n = read(fd, chunk, sizeof(chunk));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            for (ssize_t i = 0; i < n; i++) {
                if (chunk[i] == '\n') {
                    if (!lineTooLong) cat_cgroup_parse_line(line, lineLength, v2Path, &haveV2, v1Path, &haveV1);
                    lineLength = 0;
                    lineTooLong = false;
                } else if (lineLength < sizeof(line)) {
                    line[lineLength++] = chunk[i];
                } else {
                    lineTooLong = true;
                }
            }
        }
        if (lineLength > 0 && !lineTooLong) cat_cgroup_parse_line(line, lineLength, v2Path, &haveV2, v1Path, &haveV1);
        close(fd);
    } else {
        // No /proc: the mount's own root is the best guess for both versions.
        haveV2 = haveV1 = true;
    }

    if (haveV2) {
        if (cat_cgroup_try(out, 2, root, "", v2Path, "/memory.current", "/memory.max")) return 0;
        if (cat_cgroup_try(out, 2, root, "", "/", "/memory.current", "/memory.max")) return 0;
        if (cat_cgroup_try(out, 2, root, "/unified", v2Path, "/memory.current", "/memory.max")) return 0;
    }
    if (haveV1) {
        if (cat_cgroup_try(out, 1, root, "/memory", v1Path, "/memory.usage_in_bytes", "/memory.limit_in_bytes"))
            return 0;
        if (cat_cgroup_try(out, 1, root, "/memory", "/", "/memory.usage_in_bytes", "/memory.limit_in_bytes"))
            return 0;
    }
    out->version = 0;
    out->usagePath[0] = 0;
    out->limitPath[0] = 0;
    out->directory[0] = 0;
    out->directoryLength = out->mountLength = 0;
    return -1;
}

// A limit file: "max" (v2) or a number; values >= 1 << 62 mean no limit (v1 prints LONG_MAX rounded down to a
// page, 9223372036854771712). *limit 0: none. False when it cannot be read or parsed.
static bool cat_cgroup_read_limit(const char *path, uint64_t *limit) {
    char buffer[64];
    if (cat_read_small_file(path, buffer, sizeof(buffer)) <= 0) return false;
    const char *p = buffer;
    while (cat_is_space(*p)) p++;
    if (p[0] == 'm' && p[1] == 'a' && p[2] == 'x' && (p[3] == 0 || cat_is_space(p[3]))) {
        *limit = 0;
        return true;
    }
    uint64_t value;
    if (!cat_parse_u64(&p, &value)) return false;
    while (cat_is_space(*p)) p++;
    if (*p != 0) return false;
    *limit = value >= ((uint64_t)1 << 62) ? 0 : value;
    return true;
}

// usage/limit > bestUsage/bestLimit (limits > 0), without division.
static bool cat_cgroup_closer(uint64_t usage, uint64_t limit, uint64_t bestUsage, uint64_t bestLimit) {
    return (unsigned __int128)usage * bestLimit > (unsigned __int128)bestUsage * limit;
}

// cat_cgroup_read, and the length within cgroup->directory of the group whose values were taken (the group's own
// directory or one of its ancestors: each is a prefix of it).
static int cat_cgroup_read_group(const cat_cgroup *cgroup, uint64_t *usage, uint64_t *limit, size_t *groupLength) {
    if (cgroup->version == 0) return -1;
    if (!cat_read_u64_file(cgroup->usagePath, usage)) return -1;
    *limit = 0;
    *groupLength = cgroup->directoryLength;
    if (cgroup->limitPath[0] != 0 && !cat_cgroup_read_limit(cgroup->limitPath, limit)) return -1;
    // The ancestors up to the mount's root: a limit set on a parent (a pod, a systemd slice) applies too, to the
    // parent's usage. The group closest to its limit wins. Unreadable ancestors are skipped.
    const char *usageFile = cgroup->version == 2 ? "/memory.current" : "/memory.usage_in_bytes";
    const char *limitFile = cgroup->version == 2 ? "/memory.max" : "/memory.limit_in_bytes";
    char path[sizeof(cgroup->directory) + 32];
    size_t length = cgroup->directoryLength;
    if (length >= sizeof(cgroup->directory)) return 0;
    for (size_t i = 0; i < length; i++) path[i] = cgroup->directory[i];
    for (int level = 0; level < 32; level++) {
        while (length > cgroup->mountLength && path[length - 1] != '/') length--;
        if (length <= cgroup->mountLength) break;
        length--;  // the '/' before the last component
        uint64_t ancestorUsage, ancestorLimit;
        size_t f = 0;
        for (; limitFile[f]; f++) path[length + f] = limitFile[f];
        path[length + f] = 0;
        if (!cat_cgroup_read_limit(path, &ancestorLimit) || ancestorLimit == 0) continue;
        for (f = 0; usageFile[f]; f++) path[length + f] = usageFile[f];
        path[length + f] = 0;
        if (!cat_read_u64_file(path, &ancestorUsage)) continue;
        if (*limit == 0 || cat_cgroup_closer(ancestorUsage, ancestorLimit, *usage, *limit)) {
            *usage = ancestorUsage;
            *limit = ancestorLimit;
            *groupLength = length;
        }
    }
    return 0;
}

int cat_cgroup_read(const cat_cgroup *cgroup, uint64_t *usage, uint64_t *limit) {
    size_t groupLength;
    return cat_cgroup_read_group(cgroup, usage, limit, &groupLength);
}

// The value of the line "<key> <number>" in the memory.stat file at `path`, read line by line through a stack
// buffer (the file is 1–2 KiB, more than one read may return; a line longer than the buffer is skipped). False
// when the file cannot be read or has no such line.
static bool cat_read_stat_value(const char *path, const char *key, uint64_t *value) {
    size_t keyLength = 0;
    while (key[keyLength]) keyLength++;
    int fd = cat_open_read(path);
    if (fd < 0) return false;
    char chunk[1024], line[128];
    size_t lineLength = 0;
    bool lineTooLong = false, found = false;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (ssize_t i = 0; i < n && !found; i++) {
            bool end = chunk[i] == '\n';
            if (!end) {
                if (lineLength + 1 < sizeof(line)) line[lineLength++] = chunk[i];
                else lineTooLong = true;
                continue;
            }
            if (!lineTooLong && lineLength > keyLength && line[keyLength] == ' ') {
                bool same = true;
                for (size_t k = 0; k < keyLength && same; k++) same = line[k] == key[k];
                if (same) {
                    line[lineLength] = 0;
                    const char *p = line + keyLength;
                    found = cat_parse_u64(&p, value);
                }
            }
            lineLength = 0;
            lineTooLong = false;
        }
        if (found) break;
    }
    close(fd);
    return found;
}

int cat_cgroup_read_working_set(const cat_cgroup *cgroup, uint64_t *usage, uint64_t *limit, uint64_t *workingSet) {
    size_t groupLength;
    *workingSet = UINT64_MAX;
    if (cat_cgroup_read_group(cgroup, usage, limit, &groupLength) != 0) return -1;
    char path[sizeof(cgroup->directory) + 32];
    if (groupLength >= sizeof(cgroup->directory)) return 0;
    for (size_t i = 0; i < groupLength; i++) path[i] = cgroup->directory[i];
    const char *file = "/memory.stat";
    size_t f = 0;
    for (; file[f]; f++) path[groupLength + f] = file[f];
    path[groupLength + f] = 0;
    // v1's memory.stat has the group's own "inactive_file" and the hierarchy's "total_inactive_file"; its
    // usage_in_bytes counts the hierarchy, so the total is the one to subtract. v2's counters are hierarchical.
    uint64_t inactive;
    if (cat_read_stat_value(path, cgroup->version == 2 ? "inactive_file" : "total_inactive_file", &inactive))
        *workingSet = inactive < *usage ? *usage - inactive : 0;
    return 0;
}

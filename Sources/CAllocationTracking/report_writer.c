// The report's text writer and its file.
//
// The top-allocators report is written when malloc has just failed or the process is about to be killed for
// its memory, and possibly from inside malloc or a signal handler: it cannot allocate, lock, or use stdio
// (printf allocates for some formats and takes the stream lock). So text goes through a fixed buffer to raw
// write(2) calls, every number is formatted by hand (sizes exactly as CPython's tracemalloc does, with integer
// arithmetic), and dates are formatted without gmtime (which takes the timezone lock).
#define _GNU_SOURCE
#include "cat_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <unistd.h>

// MARK: - Writing to the fds

void cat_tw_init(cat_text_writer *w, int fd0, int fd1) {
    w->used = 0;
    w->fdCount = 0;
    w->fds[0] = w->fds[1] = -1;
    w->failed[0] = w->failed[1] = 0;
    w->error[0] = w->error[1] = 0;
    w->written[0] = w->written[1] = 0;
    w->total = 0;
    if (fd0 >= 0) w->fds[w->fdCount++] = fd0;
    if (fd1 >= 0) w->fds[w->fdCount++] = fd1;
}

// Writes everything or fails: returns 0, or the errno (EIO for a write that returned 0), adding the bytes taken to
// `*written` either way (a full disk takes part of a write, then fails the rest with ENOSPC). EINTR retries;
// EAGAIN (a non-blocking stderr pipe that is full) waits in poll for up to ~10 s in total before giving up; write
// returning 0 counts as a failure so this cannot spin.
static int cat_write_all(int fd, const char *bytes, size_t length, uint64_t *written) {
    int waits = 0;
    while (length > 0) {
        ssize_t n = write(fd, bytes, length);
        if (n > 0) {
            bytes += n;
            length -= (size_t)n;
            *written += (uint64_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && waits < 100) {
            struct pollfd p = {.fd = fd, .events = POLLOUT, .revents = 0};
            (void)poll(&p, 1, 100);
            waits++;
            continue;
        }
        return n < 0 ? errno : EIO;
    }
    return 0;
}

int cat_tw_flush(cat_text_writer *w) {
    int result = 0;
    for (int i = 0; i < w->fdCount; i++) {
        if (!w->failed[i] && w->used > 0) {
            int error = cat_write_all(w->fds[i], w->buffer, w->used, &w->written[i]);
            if (error != 0) {
                w->failed[i] = 1;
                w->error[i] = error;
            }
        }
        if (w->failed[i]) result = -1;
    }
    w->total += w->used;
    w->used = 0;
    return result;
}

void cat_tw_bytes(cat_text_writer *w, const char *bytes, size_t length) {
    while (length > 0) {
        if (w->used == CAT_TW_BUFFER_SIZE) cat_tw_flush(w);
        size_t room = CAT_TW_BUFFER_SIZE - w->used;
        size_t n = length < room ? length : room;
        for (size_t i = 0; i < n; i++) w->buffer[w->used + i] = bytes[i];
        w->used += n;
        bytes += n;
        length -= n;
    }
}

static size_t cat_strlen(const char *text) {
    size_t n = 0;
    while (text[n]) n++;
    return n;
}

void cat_tw_str(cat_text_writer *w, const char *text) {
    if (!text) text = "(null)";
    cat_tw_bytes(w, text, cat_strlen(text));
}

void cat_tw_char(cat_text_writer *w, char c) {
    if (w->used == CAT_TW_BUFFER_SIZE) cat_tw_flush(w);
    w->buffer[w->used++] = c;
}

// MARK: - Numbers

// Decimal digits of `value` right-aligned in `out[0..<20]`; returns the index of the first digit.
static int cat_format_u64(uint64_t value, char out[20]) {
    int i = 20;
    do {
        out[--i] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    return i;
}

void cat_tw_u64(cat_text_writer *w, uint64_t value) {
    char digits[20];
    int first = cat_format_u64(value, digits);
    cat_tw_bytes(w, digits + first, (size_t)(20 - first));
}

void cat_tw_i64(cat_text_writer *w, int64_t value, bool plusSign) {
    if (value < 0) {
        cat_tw_char(w, '-');
        cat_tw_u64(w, (uint64_t)0 - (uint64_t)value);  // INT64_MIN has no positive int64
    } else {
        if (plusSign) cat_tw_char(w, '+');
        cat_tw_u64(w, (uint64_t)value);
    }
}

void cat_tw_hex(cat_text_writer *w, uint64_t value, int minDigits) {
    static const char hex[] = "0123456789abcdef";
    char digits[16];
    int i = 16;
    if (minDigits > 16) minDigits = 16;
    do {
        digits[--i] = hex[value & 0xF];
        value >>= 4;
    } while (value != 0);
    while (16 - i < minDigits) digits[--i] = '0';
    cat_tw_bytes(w, "0x", 2);
    cat_tw_bytes(w, digits + i, (size_t)(16 - i));
}

// `numerator / denominator` with `decimals` decimals (0 or 1), correctly rounded with exact ties to even, as
// CPython's float formatting (and glibc's printf) do for a value that is exact in binary. 128-bit arithmetic:
// the numerator is at most 2^64 * 1000 (a percentage).
static void cat_tw_fixed(cat_text_writer *w, unsigned __int128 numerator, unsigned __int128 denominator,
                         int decimals) {
    if (decimals == 1) numerator *= 10;
    unsigned __int128 quotient = numerator / denominator;
    unsigned __int128 twiceRemainder = (numerator % denominator) * 2;
    if (twiceRemainder > denominator || (twiceRemainder == denominator && (quotient & 1))) quotient++;
    unsigned __int128 integer = decimals == 1 ? quotient / 10 : quotient;
    // The integer part can pass 2^64 only for a percentage far above 100%.
    char digits[40];
    int i = 40;
    do {
        digits[--i] = (char)('0' + (int)(integer % 10));
        integer /= 10;
    } while (integer != 0);
    cat_tw_bytes(w, digits + i, (size_t)(40 - i));
    if (decimals == 1) {
        cat_tw_char(w, '.');
        cat_tw_char(w, (char)('0' + (int)(quotient % 10)));
    }
}

// CPython Lib/tracemalloc.py:
//     for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
//         if abs(size) < 100 and unit != 'B': return "%+.1f %s" or "%.1f %s"
//         if abs(size) < 10 * 1024 or unit == 'TiB': return "%+.0f %s" or "%.0f %s"
//         size /= 1024
// `size / 1024^k` is exact in binary, so comparing the integer magnitude against `bound << 10k` decides the
// same branches, and cat_tw_fixed rounds the exact quotient as Python's formatting does.
void cat_tw_size(cat_text_writer *w, int64_t bytes, bool sign) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    uint64_t magnitude = bytes < 0 ? (uint64_t)0 - (uint64_t)bytes : (uint64_t)bytes;
    if (bytes < 0) {
        cat_tw_char(w, '-');
    } else if (sign) {
        cat_tw_char(w, '+');
    }
    for (int unit = 0; unit < 5; unit++) {
        int shift = 10 * unit;
        int decimals = -1;
        if (unit != 0 && magnitude < ((uint64_t)100 << shift)) {
            decimals = 1;
        } else if (magnitude < ((uint64_t)10 * 1024 << shift) || unit == 4) {
            decimals = 0;
        }
        if (decimals >= 0) {
            cat_tw_fixed(w, magnitude, (unsigned __int128)1 << shift, decimals);
            cat_tw_char(w, ' ');
            cat_tw_str(w, units[unit]);
            return;
        }
    }
}

void cat_tw_percent(cat_text_writer *w, uint64_t part, uint64_t whole) {
    if (whole == 0) {
        cat_tw_str(w, "0.0%");
        return;
    }
    cat_tw_fixed(w, (unsigned __int128)part * 100, whole, 1);
    cat_tw_char(w, '%');
}

// MARK: - UTC time

// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's civil_from_days). No overflow for any
// day count an int64_t of seconds gives (|days| < 2^47).
static void cat_civil_from_days(int64_t days, int64_t *year, int *month, int *day) {
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    int64_t dayOfEra = days - era * 146097;                                                 // [0, 146096]
    int64_t yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146096) / 365;  // [0, 399]
    int64_t dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100);   // [0, 365]
    int64_t monthIndex = (5 * dayOfYear + 2) / 153;                                        // [0, 11], from March
    *day = (int)(dayOfYear - (153 * monthIndex + 2) / 5 + 1);
    *month = (int)(monthIndex < 10 ? monthIndex + 3 : monthIndex - 9);
    *year = yearOfEra + era * 400 + (*month <= 2);
}

// `value` in decimal, zero-padded to `minDigits`, at `out`; returns the characters written.
static size_t cat_put_decimal(char *out, uint64_t value, int minDigits) {
    char digits[20];
    int first = cat_format_u64(value, digits);
    while (20 - first < minDigits) digits[--first] = '0';
    size_t n = (size_t)(20 - first);
    for (size_t i = 0; i < n; i++) out[i] = digits[first + (int)i];
    return n;
}

size_t cat_format_utc(int64_t unixSeconds, bool compact, char *out) {
    // Floor division without overflow (INT64_MIN included): a time before 1970 is a day before plus a
    // non-negative second of that day.
    int64_t days = unixSeconds / 86400, secondOfDay = unixSeconds % 86400;
    if (secondOfDay < 0) {
        secondOfDay += 86400;
        days -= 1;
    }
    int64_t year;
    int month, day;
    cat_civil_from_days(days, &year, &month, &day);
    size_t n = 0;
    if (year < 0) out[n++] = '-';
    n += cat_put_decimal(out + n, year < 0 ? (uint64_t)0 - (uint64_t)year : (uint64_t)year, 4);
    if (!compact) out[n++] = '-';
    n += cat_put_decimal(out + n, (uint64_t)month, 2);
    if (!compact) out[n++] = '-';
    n += cat_put_decimal(out + n, (uint64_t)day, 2);
    out[n++] = 'T';
    n += cat_put_decimal(out + n, (uint64_t)(secondOfDay / 3600), 2);
    if (!compact) out[n++] = ':';
    n += cat_put_decimal(out + n, (uint64_t)(secondOfDay / 60 % 60), 2);
    if (!compact) out[n++] = ':';
    n += cat_put_decimal(out + n, (uint64_t)(secondOfDay % 60), 2);
    out[n++] = 'Z';
    out[n] = 0;
    return n;
}

// MARK: - The report file

// A bounded string builder on caller memory; `overflow` is set instead of writing past the end.
typedef struct {
    char *out;
    size_t size;
    size_t length;
    int overflow;
} cat_path_builder;

static void cat_pb_bytes(cat_path_builder *b, const char *bytes, size_t n) {
    if (b->length + n >= b->size) {
        b->overflow = 1;
        return;
    }
    for (size_t i = 0; i < n; i++) b->out[b->length + i] = bytes[i];
    b->length += n;
    b->out[b->length] = 0;
}

static void cat_pb_str(cat_path_builder *b, const char *text) { cat_pb_bytes(b, text, cat_strlen(text)); }

static void cat_pb_u64(cat_path_builder *b, uint64_t value, int minDigits) {
    char digits[20];
    int first = cat_format_u64(value, digits);
    while (20 - first < minDigits) digits[--first] = '0';
    cat_pb_bytes(b, digits + first, (size_t)(20 - first));
}

static void cat_pb_i64(cat_path_builder *b, int64_t value, int minDigits) {
    if (value < 0) {
        cat_pb_bytes(b, "-", 1);
        cat_pb_u64(b, (uint64_t)0 - (uint64_t)value, minDigits);
    } else {
        cat_pb_u64(b, (uint64_t)value, minDigits);
    }
}

// Creates `<stem><extension>`, then `<stem>-1<extension>` … `<stem>-100<extension>`, the first that does not exist
// (`path` holds the stem, `stemLength` bytes, and has room for PATH_MAX). See cat_report_open_file.
static int cat_report_create_numbered(char *path, size_t stemLength, const char *extension, char *pathOut,
                                      size_t pathOutSize) {
    cat_path_builder base = {.out = path, .size = PATH_MAX, .length = stemLength, .overflow = 0};
    for (int attempt = 0; attempt <= 100; attempt++) {
        cat_path_builder name = base;
        name.length = stemLength;
        if (attempt > 0) {
            cat_pb_str(&name, "-");
            cat_pb_u64(&name, (uint64_t)attempt, 0);
        }
        cat_pb_str(&name, extension);
        if (name.overflow || name.length >= pathOutSize) return -ENAMETOOLONG;
        for (size_t i = 0; i <= name.length; i++) pathOut[i] = path[i];
        int fd;
        do {
            fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        } while (fd < 0 && errno == EINTR);
        if (fd >= 0) return fd;
        // O_CREAT | O_EXCL fails with EEXIST on any existing name, symlinks included (never followed).
        if (errno != EEXIST) return -errno;
    }
    return -EEXIST;
}

int cat_report_open_file(const char *directory, int pid, int64_t unixSeconds, char *pathOut, size_t pathOutSize) {
    if (pathOutSize > 0) pathOut[0] = 0;
    size_t directoryLength = cat_strlen(directory);
    if (directoryLength == 0) return -EINVAL;
    while (directoryLength > 1 && directory[directoryLength - 1] == '/') directoryLength--;

    char stamp[CAT_UTC_TEXT_SIZE];
    cat_format_utc(unixSeconds, true, stamp);

    char path[PATH_MAX];
    cat_path_builder base = {.out = path, .size = sizeof(path), .length = 0, .overflow = 0};
    path[0] = 0;
    cat_pb_bytes(&base, directory, directoryLength);
    if (!(directoryLength == 1 && directory[0] == '/')) cat_pb_str(&base, "/");
    cat_pb_str(&base, "alloc-report-");
    cat_pb_i64(&base, pid, 0);
    cat_pb_str(&base, "-");
    cat_pb_str(&base, stamp);
    if (base.overflow) return -ENAMETOOLONG;
    return cat_report_create_numbered(path, base.length, ".txt", pathOut, pathOutSize);
}

int cat_report_open_companion(const char *textPath, const char *extension, char *pathOut, size_t pathOutSize) {
    if (pathOutSize > 0) pathOut[0] = 0;
    size_t length = cat_strlen(textPath);
    if (length == 0) return -EINVAL;
    if (length >= 4 && textPath[length - 4] == '.' && textPath[length - 3] == 't' && textPath[length - 2] == 'x' &&
        textPath[length - 1] == 't')
        length -= 4;
    char path[PATH_MAX];
    cat_path_builder stem = {.out = path, .size = sizeof(path), .length = 0, .overflow = 0};
    path[0] = 0;
    cat_pb_bytes(&stem, textPath, length);
    if (stem.overflow) return -ENAMETOOLONG;
    return cat_report_create_numbered(path, stem.length, extension, pathOut, pathOutSize);
}

void cat_fsync_close(int fd) {
    if (fd < 0) return;
    (void)fsync(fd);
    (void)close(fd);
}

int cat_report_close_file(int fd) {
    if (fd < 0) return 0;
    int result = 0;
    if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS) result = -errno;
    // Linux releases the fd even when close fails (EINTR included): never retried. An error here is a deferred
    // write error (NFS reports a full disk at close).
    if (close(fd) != 0 && errno != EINTR && result == 0) result = -errno;
    return result;
}

const char *cat_errno_text(int error) {
    switch (error) {
    case ENOSPC: return "No space left on device";
    case EDQUOT: return "Disk quota exceeded";
    case EFBIG: return "File too large";
    case EIO: return "Input/output error";
    case EROFS: return "Read-only file system";
    case EACCES: return "Permission denied";
    case EPERM: return "Operation not permitted";
    case ENOENT: return "No such file or directory";
    case ENOTDIR: return "Not a directory";
    case EEXIST: return "File exists";
    case ENAMETOOLONG: return "File name too long";
    case ELOOP: return "Too many levels of symbolic links";
    case EMFILE: return "Too many open files";
    case ENFILE: return "Too many open files in system";
    case EBADF: return "Bad file descriptor";
    case EPIPE: return "Broken pipe";
    case ENOMEM: return "Cannot allocate memory";
    case EINVAL: return "Invalid argument";
    default: return NULL;
    }
}

int cat_open_unnamed_file(const char *directory) {
    int fd;
    do {
        fd = open(directory, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    } while (fd < 0 && errno == EINTR);
    return fd >= 0 ? fd : -errno;
}

int cat_link_unnamed_file(int fd, const char *path) {
    char source[64];
    cat_path_builder b = {.out = source, .size = sizeof(source), .length = 0, .overflow = 0};
    cat_pb_str(&b, "/proc/self/fd/");
    cat_pb_u64(&b, (uint64_t)fd, 0);
    if (b.overflow) return -ENAMETOOLONG;
    return linkat(AT_FDCWD, source, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0 ? 0 : -errno;
}

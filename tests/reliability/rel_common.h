/* rel_common.h: small helpers shared by the reliability programs (header-only, all static).
 *
 * Failures are reported with write(2) and abort(), never through stdio or malloc: several
 * programs report while the heap is exhausted, from a fork child, or with the process at
 * its mapping limit. */
#ifndef STARMALLOC_REL_COMMON_H
#define STARMALLOC_REL_COMMON_H

#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Marks a helper that only checks memory (pattern loops): under libFuzzer its comparisons are
 * not worth tracing, and tracing them would slow fuzzing down several times. */
#if defined(__clang__)
#define REL_NO_COVERAGE __attribute__((no_sanitize("coverage")))
#else
#define REL_NO_COVERAGE
#endif

/* The name printed in front of every message (set by main). */
static const char *rel_program = "reliability";
/* Where messages go (a program that captures its own stderr points this at the original). */
static int rel_report_fd = STDERR_FILENO;

/* Writes all of buf to fd, ignoring errors (there is nowhere to report them). */
static inline void rel_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

/* printf-style message on stderr, formatted into a stack buffer (no allocation). */
__attribute__((format(printf, 1, 2))) static inline void rel_say(const char *fmt, ...)
{
    char buf[512];
    int head = snprintf(buf, sizeof(buf), "%s: ", rel_program);
    va_list ap;
    va_start(ap, fmt);
    int body = vsnprintf(buf + head, sizeof(buf) - (size_t)head - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)head + (body < 0 ? 0 : (size_t)body);
    if (len > sizeof(buf) - 2)
        len = sizeof(buf) - 2;
    buf[len++] = '\n';
    rel_write_all(rel_report_fd, buf, len);
}

/* Reports "FAIL: <message>" (with the source line) and aborts. */
#define REL_FAIL(...)                                                                              \
    do {                                                                                           \
        rel_say("FAIL (line %d)", __LINE__);                                                       \
        rel_say(__VA_ARGS__);                                                                      \
        abort();                                                                                   \
    } while (0)

/* Fails with the condition's text and a printf-style explanation when cond is false. */
#define REL_CHECK(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            rel_say("FAIL (line %d): %s", __LINE__, #cond);                                        \
            rel_say(__VA_ARGS__);                                                                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A small, fast, seeded generator (splitmix64): tests must be reproducible from their seed. */
struct rel_rng {
    uint64_t state;
};

static inline uint64_t rel_next(struct rel_rng *rng)
{
    uint64_t z = (rng->state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* Uniform in [0, bound), bound >= 1 (the bias is irrelevant here). */
static inline size_t rel_below(struct rel_rng *rng, size_t bound)
{
    return (size_t)(rel_next(rng) % bound);
}

/* The pattern byte at offset i of a block tagged `tag`: differs between blocks and along a
 * block, so a block moved, truncated, overlapped or reused while live is detected. */
REL_NO_COVERAGE static inline unsigned char rel_pattern_byte(uint64_t tag, size_t i)
{
    uint64_t x = (tag + i) * UINT64_C(0x9E3779B97F4A7C15);
    return (unsigned char)(x >> 56);
}

REL_NO_COVERAGE static inline void rel_fill(void *p, size_t len, uint64_t tag)
{
    unsigned char *b = p;
    for (size_t i = 0; i < len; i++)
        b[i] = rel_pattern_byte(tag, i);
}

/* The first offset in [0, len) that does not hold the pattern, or len. */
REL_NO_COVERAGE static inline size_t rel_mismatch(const void *p, size_t len, uint64_t tag)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++)
        if (b[i] != rel_pattern_byte(tag, i))
            return i;
    return len;
}

REL_NO_COVERAGE static inline bool rel_all_zero(const void *p, size_t len)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++)
        if (b[i])
            return false;
    return true;
}

static inline double rel_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* argv[index] as an unsigned number in [min, max], or `fallback` when absent; exits with a
 * usage message on anything else. */
static inline unsigned long rel_arg(int argc, char **argv, int index, unsigned long fallback,
                                    unsigned long min, unsigned long max)
{
    if (index >= argc)
        return fallback;
    char *end = NULL;
    unsigned long v = strtoul(argv[index], &end, 0);
    if (!end || *end != '\0' || end == argv[index] || v < min || v > max) {
        rel_say("bad argument %d '%s' (expected %lu..%lu)", index, argv[index], min, max);
        exit(2);
    }
    return v;
}

/* The process's resident set in bytes (/proc/self/statm), 0 when unknown. Read with
 * open/read and parsed by hand: no stdio, no allocation. */
static inline size_t rel_rss_bytes(void)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    const char *c = buf;
    while (*c && *c != ' ') /* skip the total size */
        c++;
    size_t pages = 0;
    for (c++; *c >= '0' && *c <= '9'; c++)
        pages = pages * 10 + (size_t)(*c - '0');
    return pages * (size_t)sysconf(_SC_PAGESIZE);
}

#endif

/* Shared helpers of the workload programs: see common.h. */
#include "common.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *out, const char *name, const char *about, const struct wl_options *opt,
                  const struct wl_flag *flags)
{
    fprintf(out, "usage: wl-%s [--scale X] [--threads N] [--seed S]", name);
    for (const struct wl_flag *f = flags; f && f->name; f++)
        fprintf(out, " [--%s]", f->name);
    fprintf(out,
            "\n%s\n"
            "  --scale X    amount of work relative to the default run (default %g)\n"
            "  --threads N  worker threads where the workload has them (default %d)\n"
            "  --seed S     base seed of the PRNGs (default %" PRIu64 ")\n",
            about, opt->scale, opt->threads, opt->seed);
    for (const struct wl_flag *f = flags; f && f->name; f++)
        fprintf(out, "  --%-10s %s\n", f->name, f->help);
    fprintf(out,
            "Prints one line: RESULT name=%s ... time_s= ops_per_s= peak_rss_kb= final_rss_kb=\n",
            name);
}

void wl_parse_args(int argc, char **argv, const char *name, const char *about,
                   struct wl_options *opt)
{
    wl_parse_args_flags(argc, argv, name, about, opt, NULL);
}

void wl_parse_args_flags(int argc, char **argv, const char *name, const char *about,
                         struct wl_options *opt, const struct wl_flag *flags)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            usage(stdout, name, about, opt, flags);
            exit(0);
        }
        const struct wl_flag *flag = flags;
        while (flag && flag->name && (strncmp(arg, "--", 2) || strcmp(arg + 2, flag->name)))
            flag++;
        if (flag && flag->name) {
            *flag->set = 1;
            continue;
        }
        if (i + 1 >= argc)
            goto bad;
        const char *value = argv[++i];
        char *end = NULL;
        errno = 0;
        if (!strcmp(arg, "--scale")) {
            opt->scale = strtod(value, &end);
            if (!(opt->scale > 0) || opt->scale > 1e6)
                goto bad;
        } else if (!strcmp(arg, "--threads")) {
            long n = strtol(value, &end, 10);
            if (n < 1 || n > 1024)
                goto bad;
            opt->threads = (int)n;
        } else if (!strcmp(arg, "--seed")) {
            opt->seed = strtoull(value, &end, 0);
        } else {
            goto bad;
        }
        if (errno || end == value || *end)
            goto bad;
        continue;
    bad:
        fprintf(stderr, "wl-%s: bad argument '%s'\n", name, arg);
        usage(stderr, name, about, opt, flags);
        exit(2);
    }
}

uint64_t wl_scaled(const struct wl_options *opt, double count, uint64_t minimum)
{
    double n = count * opt->scale;
    return n < (double)minimum ? minimum : (uint64_t)n;
}

uint64_t wl_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void wl_rng_init(struct wl_rng *rng, uint64_t seed, uint64_t a, uint64_t b)
{
    uint64_t x = wl_mix(seed ^ wl_mix(a ^ wl_mix(b)));
    for (int i = 0; i < 4; i++) {
        x = wl_mix(x);
        rng->s[i] = x;
    }
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t wl_rng_next(struct wl_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t wl_rng_below(struct wl_rng *rng, uint64_t bound)
{
    /* Lemire's multiply-shift; the tiny bias does not matter for a workload. */
    return (uint64_t)(((unsigned __int128)wl_rng_next(rng) * bound) >> 64);
}

uint64_t wl_rng_range(struct wl_rng *rng, uint64_t lo, uint64_t hi)
{
    return lo + wl_rng_below(rng, hi - lo + 1);
}

uint64_t wl_rng_log_range(struct wl_rng *rng, uint64_t lo, uint64_t hi)
{
    unsigned lo_bits = 63 - (unsigned)__builtin_clzll(lo);
    unsigned hi_bits = 63 - (unsigned)__builtin_clzll(hi);
    unsigned bits = (unsigned)wl_rng_range(rng, lo_bits, hi_bits);
    uint64_t base = 1ULL << bits;
    uint64_t v = base + wl_rng_below(rng, base);
    return v < lo ? lo : v > hi ? hi : v;
}

double wl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

long wl_peak_rss_kb(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return ru.ru_maxrss;
}

long wl_current_rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    long size_pages = 0, resident_pages = -1;
    if (fscanf(f, "%ld %ld", &size_pages, &resident_pages) != 2)
        resident_pages = -1;
    fclose(f);
    return resident_pages < 0 ? -1 : resident_pages * (sysconf(_SC_PAGESIZE) / 1024);
}

static _Noreturn void out_of_memory(size_t size)
{
    fprintf(stderr, "wl: error: allocation of %zu bytes failed\n", size);
    exit(1);
}

void *wl_malloc(size_t size)
{
    void *p = malloc(size);
    if (!p)
        out_of_memory(size);
    return p;
}

void *wl_calloc(size_t count, size_t size)
{
    void *p = calloc(count, size);
    if (!p)
        out_of_memory(count * size);
    return p;
}

void *wl_realloc(void *p, size_t size)
{
    void *q = realloc(p, size);
    if (!q)
        out_of_memory(size);
    return q;
}

void wl_fail(const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "wl-%s: error: ", name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

void wl_report(const char *name, const struct wl_options *opt, double time_s, uint64_t ops,
               uint64_t checksum, const char *extra)
{
    long final_rss = wl_current_rss_kb();
    long peak_rss = wl_peak_rss_kb();
    printf("RESULT name=%s threads=%d scale=%g time_s=%.4f ops=%" PRIu64
           " ops_per_s=%.0f peak_rss_kb=%ld final_rss_kb=%ld checksum=%016" PRIx64 "%s%s\n",
           name, opt->threads, opt->scale, time_s, ops, time_s > 0 ? (double)ops / time_s : 0.0,
           peak_rss, final_rss, checksum, extra ? " " : "", extra ? extra : "");
    fflush(stdout);
}

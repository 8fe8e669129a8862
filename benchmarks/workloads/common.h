/* common.h: what every workload program shares: options, a seeded PRNG, timing, RSS and the
 * one RESULT line that benchmarks/compare.sh parses.
 *
 * The workloads call plain malloc/free and are never linked with StarMalloc, so one binary runs
 * under any allocator through LD_PRELOAD. Everything they compute is deterministic (seeded
 * PRNGs, per-thread streams that do not depend on scheduling), so the checksum they print
 * must be the same under every allocator: a different one means an allocator returned
 * overlapping or corrupted memory. */
#ifndef WL_COMMON_H
#define WL_COMMON_H

#include <stddef.h>
#include <stdint.h>

struct wl_options {
    double scale;  /* multiplies the amount of work (1.0 = the default run) */
    int threads;   /* worker threads, for the workloads that have them */
    uint64_t seed; /* base seed of every PRNG stream */
};

/* Parses --scale X, --threads N, --seed S and --help into *opt, which holds the program's
 * defaults on entry. Exits with a usage message on a bad argument. */
void wl_parse_args(int argc, char **argv, const char *name, const char *about,
                   struct wl_options *opt);

/* An option without a value that only some workloads have: "--<name>" sets *set to 1. */
struct wl_flag {
    const char *name; /* without the leading "--" */
    const char *help; /* one line for the usage message */
    int *set;
};
/* wl_parse_args that also accepts the flags of the array `flags`, ended by a NULL name. */
void wl_parse_args_flags(int argc, char **argv, const char *name, const char *about,
                         struct wl_options *opt, const struct wl_flag *flags);

/* Work count scaled by opt->scale, at least `minimum`. */
uint64_t wl_scaled(const struct wl_options *opt, double count, uint64_t minimum);

/* xoshiro256** seeded through splitmix64: fast, good enough, and identical everywhere. */
struct wl_rng {
    uint64_t s[4];
};
/* A stream identified by (seed, a, b): distinct (a, b) give independent streams. */
void wl_rng_init(struct wl_rng *rng, uint64_t seed, uint64_t a, uint64_t b);
uint64_t wl_rng_next(struct wl_rng *rng);
/* Uniform in [0, bound), bound >= 1. */
uint64_t wl_rng_below(struct wl_rng *rng, uint64_t bound);
/* Uniform in [lo, hi]. */
uint64_t wl_rng_range(struct wl_rng *rng, uint64_t lo, uint64_t hi);
/* Log-uniform in [lo, hi] (lo >= 1): as many small sizes per octave as large ones. */
uint64_t wl_rng_log_range(struct wl_rng *rng, uint64_t lo, uint64_t hi);

/* A 64-bit mix of x (splitmix64's finaliser), for tags and checksums. */
uint64_t wl_mix(uint64_t x);

/* Monotonic seconds. */
double wl_now(void);

/* Peak resident set size in KiB (getrusage ru_maxrss). */
long wl_peak_rss_kb(void);
/* Current resident set size in KiB (/proc/self/statm). */
long wl_current_rss_kb(void);

/* malloc/calloc/realloc that stop the program with a message when they return NULL. */
void *wl_malloc(size_t size);
void *wl_calloc(size_t count, size_t size);
void *wl_realloc(void *p, size_t size);

/* Stops the program: "wl-<name>: error: <message>" on stderr, exit status 1. */
_Noreturn void wl_fail(const char *name, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints the machine-readable line
 *   RESULT name=<name> threads=N scale=X time_s=T ops=N ops_per_s=R peak_rss_kb=P
 *          final_rss_kb=F checksum=<hex>[ <extra>]
 * where extra is more key=value pairs (may be NULL). final_rss_kb is read now. */
void wl_report(const char *name, const struct wl_options *opt, double time_s, uint64_t ops,
               uint64_t checksum, const char *extra);

#endif

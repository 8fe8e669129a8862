/* stress_threads: many threads allocating, verifying, handing over and freeing blocks.
 *
 * Linked against the shared starmalloc library, so malloc & co. below are StarMalloc's.
 * Usage: stress_threads [threads=8] [rounds-per-thread=100000] [seed=1]
 *
 * Every thread runs a fixed number of rounds (not a time budget) driven by its own seeded
 * PRNG. Each round picks one operation: allocate (malloc, calloc, aligned_alloc,
 * posix_memalign), free, realloc, hand a block to another thread's inbox, or take blocks from
 * its own inbox (then free, realloc or keep them). Every EPOCH rounds all threads meet at a
 * barrier and drain their inboxes, so hand-overs reach their receivers however the threads are
 * scheduled. Sizes are mostly 1..1024 bytes, with a tail up to 256 KiB and a few blocks of
 * 1..4 MiB. Every live block holds a pattern derived from its (id, size), checked before each
 * free or realloc (realloc: the kept prefix) and at the end; calloc blocks are checked to be
 * zero. Blocks handed over are freed by another thread, so a large share of the frees are
 * cross-thread. Any mismatch prints one clear line and aborts. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "splitmix.h"

#include "starmalloc.h"

enum {
    MAX_THREADS = 256,
    LOCAL_CAP = 192,  /* live blocks a thread keeps */
    INBOX_CAP = 256,  /* blocks waiting in one thread's inbox */
    EPOCH = 512,      /* rounds between two barriers, after which every thread drains its inbox */
    USABLE_SAMPLE = 4 /* check malloc_usable_size on one allocation in this many */
};

#define KIB ((size_t)1024)
#define MIB (KIB * KIB)

struct block {
    unsigned char *p;
    size_t size;
    uint64_t id;
    unsigned owner; /* thread that allocated (or last reallocated) it; MAX_THREADS = main */
};

struct inbox {
    pthread_mutex_t lock;
    struct block items[INBOX_CAP];
    unsigned count;
};

struct counters {
    uint64_t allocs, frees, cross_frees, reallocs, cross_reallocs, callocs, aligned, handed,
        received, usable_checks;
    uint64_t bytes;
};

struct worker {
    pthread_t thread;
    unsigned index;
    uint64_t rng;
    uint64_t next_id;
    struct block local[LOCAL_CAP];
    unsigned nlocal;
    struct counters c;
};

static unsigned nthreads = 8;
static unsigned long rounds = 100000;
static uint64_t seed = 1;
static struct inbox inboxes[MAX_THREADS];
static pthread_barrier_t epoch_barrier;
static struct worker *workers;

/* ---- failure reporting ------------------------------------------------------------------ */

__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char *fmt, ...);

static void fail(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "stress_threads: FAIL: %s\n", line);
    fflush(stderr);
    abort();
}

/* ---- PRNG and patterns ------------------------------------------------------------------ */

static uint64_t rnd(struct worker *w)
{
    return splitmix64(&w->rng);
}

static size_t rnd_range(struct worker *w, size_t lo, size_t hi) /* inclusive */
{
    return lo + (size_t)(rnd(w) % (hi - lo + 1));
}

/* Sizes biased small: 1..1024 mostly, a log-uniform tail up to 256 KiB, a few 1..4 MiB. */
static size_t random_size(struct worker *w)
{
    unsigned r = (unsigned)(rnd(w) % 10000);
    if (r < 8500)
        return r < 300 ? rnd_range(w, 1, 15) : rnd_range(w, 16, 1024);
    if (r < 9990) {
        unsigned bits = (unsigned)rnd_range(w, 10, 17); /* 1 KiB .. 256 KiB */
        return rnd_range(w, ((size_t)1 << bits) + 1, (size_t)2 << bits);
    }
    return rnd_range(w, 1 * MIB, 4 * MIB);
}

static uint64_t pattern_seed(uint64_t id, size_t size)
{
    uint64_t s = id * 0xD6E8FEB86659FD93ull ^ (uint64_t)size;
    return splitmix64(&s);
}

static uint64_t pattern_word(uint64_t pseed, size_t j)
{
    uint64_t x = pseed + (uint64_t)j * 0x9E3779B97F4A7C15ull;
    return x ^ (x >> 29);
}

static void fill(const struct block *b)
{
    uint64_t ps = pattern_seed(b->id, b->size);
    size_t words = b->size / 8;
    uint64_t *wp = (uint64_t *)(void *)b->p; /* 16-byte aligned, checked at allocation */
    for (size_t j = 0; j < words; j++)
        wp[j] = pattern_word(ps, j);
    uint64_t tail = pattern_word(ps, words);
    memcpy(b->p + words * 8, &tail, b->size % 8);
}

/* Checks the first `len` bytes of b against the pattern of (b->id, b->size). */
static void verify_prefix(const struct block *b, size_t len, const char *when, unsigned self)
{
    uint64_t ps = pattern_seed(b->id, b->size);
    size_t words = len / 8;
    const uint64_t *wp = (const uint64_t *)(const void *)b->p;
    size_t bad = SIZE_MAX;
    for (size_t j = 0; j < words; j++)
        if (wp[j] != pattern_word(ps, j)) {
            bad = j * 8;
            break;
        }
    if (bad == SIZE_MAX && len % 8) {
        uint64_t tail = pattern_word(ps, words);
        if (memcmp(b->p + words * 8, &tail, len % 8) != 0)
            bad = words * 8;
    }
    if (bad == SIZE_MAX)
        return;
    /* Name the first wrong byte exactly. */
    for (size_t i = bad; i < len; i++) {
        uint64_t word = pattern_word(ps, i / 8);
        unsigned char expect[8];
        memcpy(expect, &word, sizeof expect);
        if (b->p[i] != expect[i % 8])
            fail("thread %u: block id %" PRIu64
                 " (%p, size %zu, allocated by thread %u) corrupted %s: "
                 "byte %zu is 0x%02x, expected 0x%02x",
                 self, b->id, (void *)b->p, b->size, b->owner, when, i, b->p[i], expect[i % 8]);
    }
    fail("thread %u: block id %" PRIu64 " mismatch %s (not located)", self, b->id, when);
}

static void verify(const struct block *b, const char *when, unsigned self)
{
    verify_prefix(b, b->size, when, self);
}

/* ---- checks on fresh pointers ----------------------------------------------------------- */

static void check_fresh(struct worker *w, const struct block *b, size_t align, const char *fn)
{
    if (((uintptr_t)b->p & 15) != 0)
        fail("thread %u: %s(%zu) returned %p, not 16-byte aligned", w->index, fn, b->size,
             (void *)b->p);
    if (align && ((uintptr_t)b->p & (align - 1)) != 0)
        fail("thread %u: %s(%zu, align %zu) returned misaligned %p", w->index, fn, b->size, align,
             (void *)b->p);
    if (rnd(w) % USABLE_SAMPLE == 0 || b->size > 128 * KIB) {
        size_t usable = starmalloc_malloc_usable_size(b->p);
        if (usable < b->size)
            fail("thread %u: starmalloc_malloc_usable_size(%p) = %zu < requested %zu (%s)",
                 w->index, (void *)b->p, usable, b->size, fn);
        w->c.usable_checks++;
    }
}

/* ---- operations ------------------------------------------------------------------------- */

static void release(struct worker *w, struct block *b, const char *when)
{
    verify(b, when, w->index);
    free(b->p);
    w->c.frees++;
    if (b->owner != w->index)
        w->c.cross_frees++;
    b->p = NULL;
}

static void allocate(struct worker *w, struct block *b)
{
    size_t size = random_size(w);
    unsigned kind = (unsigned)(rnd(w) % 100);
    size_t align = 0;
    const char *fn;
    b->id = ((uint64_t)w->index << 48) | w->next_id++;
    b->owner = w->index;
    if (kind < 65) {
        fn = "malloc";
        b->p = malloc(size);
    } else if (kind < 85) {
        fn = "calloc";
        size_t n = rnd_range(w, 1, 8);
        size = (size + n - 1) / n * n;
        b->p = calloc(n, size / n);
        w->c.callocs++;
    } else {
        align = (size_t)16 << rnd_range(w, 0, 8); /* 16 .. 4096 */
        if (rnd(w) % 64 == 0)
            align = (size_t)64 * KIB;
        size = (size + align - 1) / align * align; /* C17 aligned_alloc: a multiple of align */
        if (kind < 95) {
            fn = "aligned_alloc";
            b->p = aligned_alloc(align, size);
        } else {
            fn = "posix_memalign";
            void *out = NULL;
            int err = posix_memalign(&out, align, size);
            if (err)
                fail("thread %u: posix_memalign(%zu, %zu) failed: %s", w->index, align, size,
                     strerror(err));
            b->p = out;
        }
        w->c.aligned++;
    }
    b->size = size;
    if (!b->p)
        fail("thread %u: %s(%zu) returned NULL: %s", w->index, fn, size, strerror(errno));
    check_fresh(w, b, align, fn);
    if (kind >= 65 && kind < 85) {
        for (size_t i = 0; i < size; i++)
            if (b->p[i] != 0)
                fail("thread %u: calloc(%zu) block %p: byte %zu is 0x%02x, not zero", w->index,
                     size, (void *)b->p, i, b->p[i]);
    }
    fill(b);
    w->c.allocs++;
    w->c.bytes += size;
}

static void reallocate(struct worker *w, struct block *b)
{
    size_t new_size = random_size(w);
    size_t keep = new_size < b->size ? new_size : b->size;
    verify(b, "before realloc", w->index);
    unsigned char *q = realloc(b->p, new_size);
    if (!q)
        fail("thread %u: realloc(%p, %zu) returned NULL: %s", w->index, (void *)b->p, new_size,
             strerror(errno));
    struct block moved = *b;
    moved.p = q;
    verify_prefix(&moved, keep, "after realloc (kept prefix)", w->index);
    if (b->owner != w->index)
        w->c.cross_reallocs++; /* a block from another thread, resized (and maybe freed) here */
    b->p = q;
    b->size = new_size;
    b->owner = w->index;
    check_fresh(w, b, 0, "realloc");
    fill(b);
    w->c.reallocs++;
}

static void push_local(struct worker *w, const struct block *b)
{
    if (w->nlocal == LOCAL_CAP) {
        unsigned victim = (unsigned)(rnd(w) % LOCAL_CAP);
        release(w, &w->local[victim], "before free (local set full)");
        w->local[victim] = *b;
        return;
    }
    w->local[w->nlocal++] = *b;
}

static struct block take_local(struct worker *w, unsigned i)
{
    struct block b = w->local[i];
    w->local[i] = w->local[--w->nlocal];
    return b;
}

static void hand_over(struct worker *w)
{
    if (w->nlocal == 0 || nthreads < 2)
        return;
    unsigned to = (w->index + 1 + (unsigned)(rnd(w) % (nthreads - 1))) % nthreads;
    struct block b = take_local(w, (unsigned)(rnd(w) % w->nlocal));
    struct inbox *in = &inboxes[to];
    bool sent = false;
    pthread_mutex_lock(&in->lock);
    if (in->count < INBOX_CAP) {
        in->items[in->count++] = b;
        sent = true;
    }
    pthread_mutex_unlock(&in->lock);
    if (sent)
        w->c.handed++;
    else
        release(w, &b, "before free (inbox full)");
}

static void drain_inbox(struct worker *w)
{
    struct block got[INBOX_CAP];
    unsigned n;
    struct inbox *in = &inboxes[w->index];
    pthread_mutex_lock(&in->lock);
    n = in->count;
    memcpy(got, in->items, n * sizeof got[0]);
    in->count = 0;
    pthread_mutex_unlock(&in->lock);
    for (unsigned i = 0; i < n; i++) {
        w->c.received++;
        verify(&got[i], "on receipt from another thread", w->index);
        unsigned what = (unsigned)(rnd(w) % 4);
        if (what < 2) {
            release(w, &got[i], "before cross-thread free");
        } else {
            if (what == 2)
                reallocate(w, &got[i]);
            push_local(w, &got[i]);
        }
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (unsigned long r = 0; r < rounds; r++) {
        unsigned op = (unsigned)(rnd(w) % 100);
        if (op < 35 || w->nlocal == 0) {
            struct block b;
            allocate(w, &b);
            push_local(w, &b);
        } else if (op < 55) {
            struct block b = take_local(w, (unsigned)(rnd(w) % w->nlocal));
            release(w, &b, "before free");
        } else if (op < 68) {
            reallocate(w, &w->local[rnd(w) % w->nlocal]);
        } else if (op < 85) {
            hand_over(w);
        } else {
            drain_inbox(w);
        }
        /* However the threads are scheduled, blocks handed over are freed by their receivers. */
        if (r % EPOCH == EPOCH - 1) {
            pthread_barrier_wait(&epoch_barrier);
            drain_inbox(w);
        }
    }
    /* Check and free everything this thread still holds; its inbox is drained by main. */
    while (w->nlocal) {
        struct block b = take_local(w, w->nlocal - 1);
        release(w, &b, "at thread exit");
    }
    return NULL;
}

/* ---- main ------------------------------------------------------------------------------- */

static unsigned long parse_arg(const char *s, const char *what, unsigned long lo, unsigned long hi)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 0);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "stress_threads: bad %s '%s' (expected %lu..%lu)\n", what, s, lo, hi);
        fprintf(stderr, "usage: stress_threads [threads] [rounds-per-thread] [seed]\n");
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        nthreads = (unsigned)parse_arg(argv[1], "thread count", 1, MAX_THREADS);
    if (argc > 2)
        rounds = parse_arg(argv[2], "round count", 1, 100000000ul);
    if (argc > 3)
        seed = parse_arg(argv[3], "seed", 0, ~0ul);
    if (argc > 4) {
        fprintf(stderr, "usage: stress_threads [threads] [rounds-per-thread] [seed]\n");
        return 2;
    }

    /* Prove that malloc is StarMalloc's: this aborts for a pointer it did not hand out. */
    void *probe = malloc(100);
    if (!probe || starmalloc_malloc_usable_size(probe) < 100)
        fail("malloc(100) is not a StarMalloc block of at least 100 bytes");
    free(probe);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    workers = calloc(nthreads, sizeof *workers);
    if (!workers)
        fail("calloc of the worker table failed");
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_mutex_init(&inboxes[i].lock, NULL);
        workers[i].index = i;
        workers[i].rng = seed * 0x2545F4914F6CDD1Dull + i + 1;
    }
    pthread_barrier_init(&epoch_barrier, NULL, nthreads);
    for (unsigned i = 0; i < nthreads; i++) {
        int err = pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
        if (err)
            fail("pthread_create: %s", strerror(err));
    }
    for (unsigned i = 0; i < nthreads; i++)
        pthread_join(workers[i].thread, NULL);
    pthread_barrier_destroy(&epoch_barrier);

    /* Blocks still in inboxes: checked and freed here, by a thread that allocated none of them. */
    struct counters total = {0};
    for (unsigned i = 0; i < nthreads; i++) {
        struct inbox *in = &inboxes[i];
        for (unsigned k = 0; k < in->count; k++) {
            verify(&in->items[k], "in an inbox at the end", MAX_THREADS);
            free(in->items[k].p);
            total.frees++;
            total.cross_frees++;
        }
        in->count = 0;
        pthread_mutex_destroy(&in->lock);
    }
    for (unsigned i = 0; i < nthreads; i++) {
        const struct counters *c = &workers[i].c;
        total.allocs += c->allocs;
        total.frees += c->frees;
        total.cross_frees += c->cross_frees;
        total.reallocs += c->reallocs;
        total.cross_reallocs += c->cross_reallocs;
        total.callocs += c->callocs;
        total.aligned += c->aligned;
        total.handed += c->handed;
        total.received += c->received;
        total.usable_checks += c->usable_checks;
        total.bytes += c->bytes;
    }
    free(workers);
    clock_gettime(CLOCK_MONOTONIC, &t1);

    if (total.allocs != total.frees)
        fail("%" PRIu64 " blocks allocated but %" PRIu64 " freed", total.allocs, total.frees);
    if (nthreads > 1 && total.cross_frees * 10 < total.frees)
        fail("only %" PRIu64 " of %" PRIu64 " frees were cross-thread (expected >= 10%%)",
             total.cross_frees, total.frees);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("stress_threads: %u threads x %lu rounds (seed %" PRIu64 "): %" PRIu64 " allocations "
           "(%" PRIu64 " calloc, %" PRIu64 " aligned, %.1f MiB), %" PRIu64 " reallocs (%" PRIu64
           " cross-thread), %" PRIu64 " frees (%" PRIu64 " cross-thread, %.0f%%), %" PRIu64
           " handed over, %" PRIu64 " usable-size checks, %.2f s: ok\n",
           nthreads, rounds, seed, total.allocs, total.callocs, total.aligned,
           (double)total.bytes / (double)MIB, total.reallocs, total.cross_reallocs, total.frees,
           total.cross_frees,
           100.0 * (double)total.cross_frees / (double)(total.frees ? total.frees : 1),
           total.handed, total.usable_checks, secs);
    return 0;
}

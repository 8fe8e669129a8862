/* rel_concurrency: the prefixed API (starmalloc_core, no overriding) from many threads at once:
 * the concurrency test that runs under ThreadSanitizer (tests/run-reliability.sh).
 *
 * Usage: rel_concurrency [threads=4] [waves=6] [ops-per-thread=4000] [seed=1]
 * Each wave starts `threads` threads that exit at its end, so thread caches are created,
 * flushed at thread exit and recycled many times. A thread runs random operations on its own
 * blocks (malloc, calloc, realloc, aligned_alloc, posix_memalign, free, free_sized,
 * malloc_usable_size), posts some blocks to another thread's mailbox and frees what arrives in
 * its own (cross-thread frees, including blocks of threads of earlier waves). Meanwhile one
 * more thread keeps reading the statistics and trimming. Every block holds a pattern that is
 * checked before it is freed or resized. Calling starmalloc_* directly keeps the C library's
 * and the sanitizer runtime's own allocations out of StarMalloc. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "rel_common.h"
#include "starmalloc.h"

#define KIB ((size_t)1024)

enum {
    MAX_THREADS = 64,
    OWN_SLOTS = 48,
    MAILBOX = 64,
};

struct block {
    unsigned char *p;
    size_t size;
    uint64_t tag;
};

struct mailbox {
    pthread_mutex_t lock;
    struct block blocks[MAILBOX];
    unsigned count;
};

static struct mailbox mailboxes[MAX_THREADS];
static unsigned nthreads;
static unsigned long ops_per_thread;
static uint64_t seed;
static atomic_bool stop_observer;

static void fill(struct block *b)
{
    size_t len = b->size < 192 ? b->size : 192;
    rel_fill(b->p, len, b->tag);
}

static void check(const struct block *b, const char *when)
{
    size_t len = b->size < 192 ? b->size : 192;
    size_t at = rel_mismatch(b->p, len, b->tag);
    REL_CHECK(at == len, "%s: block %p (%zu bytes) changed at offset %zu", when, (void *)b->p,
              b->size, at);
}

static void drop(struct block *b)
{
    check(b, "before free");
    if (b->size % 3 == 0)
        starmalloc_free_sized(b->p, b->size);
    else
        starmalloc_free(b->p);
    b->p = NULL;
}

static size_t random_size(struct rel_rng *rng)
{
    switch (rel_below(rng, 16)) {
    case 0:
        return 128 * KIB + rel_below(rng, 256 * KIB); /* large */
    case 1:
    case 2:
        return 1 + rel_below(rng, 16 * KIB);
    default:
        return 1 + rel_below(rng, 300);
    }
}

static void allocate(struct block *b, struct rel_rng *rng)
{
    size_t size = random_size(rng);
    void *p = NULL;
    switch (rel_below(rng, 4)) {
    case 0:
        p = starmalloc_calloc(1, size);
        REL_CHECK(!p || rel_all_zero(p, size < 4096 ? size : 4096), "calloc not zeroed");
        break;
    case 1:
        p = starmalloc_aligned_alloc((size_t)16 << rel_below(rng, 8), size);
        break;
    case 2:
        REL_CHECK(starmalloc_posix_memalign(&p, 64, size) == 0, "posix_memalign failed");
        break;
    default:
        p = starmalloc_malloc(size);
        break;
    }
    REL_CHECK(p != NULL, "allocation of %zu bytes failed (errno %d)", size, errno);
    REL_CHECK(starmalloc_malloc_usable_size(p) >= size, "usable size below %zu", size);
    *b = (struct block){p, size, rel_next(rng)};
    fill(b);
}

static void resize(struct block *b, struct rel_rng *rng)
{
    check(b, "before realloc");
    size_t size = random_size(rng);
    unsigned char *p = starmalloc_realloc(b->p, size);
    REL_CHECK(p != NULL, "realloc to %zu failed", size);
    size_t keep = b->size < size ? b->size : size;
    if (keep > 192)
        keep = 192;
    REL_CHECK(rel_mismatch(p, keep, b->tag) == keep, "realloc lost the content");
    *b = (struct block){p, size, rel_next(rng)};
    fill(b);
}

static void post(unsigned to, struct block *b)
{
    struct mailbox *m = &mailboxes[to];
    pthread_mutex_lock(&m->lock);
    if (m->count < MAILBOX) {
        m->blocks[m->count++] = *b;
        b->p = NULL;
    }
    pthread_mutex_unlock(&m->lock);
    if (b->p)
        drop(b);
}

static void empty_mailbox(unsigned self)
{
    struct block arrived[MAILBOX];
    struct mailbox *m = &mailboxes[self];
    pthread_mutex_lock(&m->lock);
    unsigned n = m->count;
    memcpy(arrived, m->blocks, n * sizeof(arrived[0]));
    m->count = 0;
    pthread_mutex_unlock(&m->lock);
    for (unsigned i = 0; i < n; i++)
        drop(&arrived[i]);
}

struct worker_arg {
    unsigned self;
    unsigned wave;
};

static void *worker(void *argp)
{
    const struct worker_arg *arg = argp;
    struct rel_rng rng = {seed * 65537 + arg->wave * 1000 + arg->self};
    struct block own[OWN_SLOTS] = {{0}};
    for (unsigned long op = 0; op < ops_per_thread; op++) {
        struct block *b = &own[rel_below(&rng, OWN_SLOTS)];
        unsigned what = (unsigned)rel_below(&rng, 10);
        if (!b->p)
            allocate(b, &rng);
        else if (what < 4)
            drop(b);
        else if (what < 6)
            resize(b, &rng);
        else if (what < 8)
            post((unsigned)rel_below(&rng, nthreads), b);
        else
            REL_CHECK(starmalloc_malloc_usable_size(b->p) >= b->size, "usable size shrank");
        if (op % 64 == 0)
            empty_mailbox(arg->self);
    }
    /* Some blocks outlive their thread: they stay in other threads' mailboxes. */
    for (unsigned i = 0; i < OWN_SLOTS; i++)
        if (own[i].p)
            post((unsigned)rel_below(&rng, nthreads), &own[i]);
    return NULL;
}

static void *observer(void *unused)
{
    (void)unused;
    unsigned long rounds = 0;
    while (!atomic_load(&stop_observer)) {
        struct starmalloc_stats st;
        starmalloc_stats_get(&st);
        REL_CHECK(st.peak_committed_bytes >= st.large_bytes, "statistics out of order");
        if (++rounds % 8 == 0)
            starmalloc_trim(0);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    rel_program = "rel_concurrency";
    nthreads = (unsigned)rel_arg(argc, argv, 1, 4, 1, MAX_THREADS);
    unsigned waves = (unsigned)rel_arg(argc, argv, 2, 6, 1, 100000);
    ops_per_thread = rel_arg(argc, argv, 3, 4000, 1, 100000000ul);
    seed = rel_arg(argc, argv, 4, 1, 0, ~0ul);
    double start = rel_now();
    for (unsigned i = 0; i < MAX_THREADS; i++)
        pthread_mutex_init(&mailboxes[i].lock, NULL);

    pthread_t obs;
    REL_CHECK(pthread_create(&obs, NULL, observer, NULL) == 0, "pthread_create");
    for (unsigned w = 0; w < waves; w++) {
        pthread_t threads[MAX_THREADS];
        struct worker_arg args[MAX_THREADS];
        for (unsigned i = 0; i < nthreads; i++) {
            args[i] = (struct worker_arg){i, w};
            REL_CHECK(pthread_create(&threads[i], NULL, worker, &args[i]) == 0, "pthread_create");
        }
        for (unsigned i = 0; i < nthreads; i++)
            pthread_join(threads[i], NULL);
    }
    atomic_store(&stop_observer, true);
    pthread_join(obs, NULL);
    for (unsigned i = 0; i < nthreads; i++)
        empty_mailbox(i);

    struct starmalloc_stats st;
    starmalloc_stats_get(&st);
    REL_CHECK(st.large_objects == 0, "%zu large objects left after every block was freed",
              st.large_objects);
    rel_say("%u waves of %u threads, %lu operations each (%.1f s)", waves, nthreads, ops_per_thread,
            rel_now() - start);
    return 0;
}

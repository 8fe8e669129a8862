/* rel_thread_churn: thousands of short-lived threads; memory stays bounded.
 *
 * Linked against the overriding library. Usage: rel_thread_churn [threads=5000] [seed=1]
 * Threads are started in waves of WAVE at a time. Each allocates BLOCKS blocks (mostly small,
 * a few large), fills them with a pattern, frees half of them itself and hands the other half
 * to a shared exchange, from which later threads take and free them (cross-thread frees of
 * blocks whose allocating thread has exited); each checks the pattern before every free. Then
 * it exits. After the first BASELINE threads the committed memory (starmalloc_stats_get) and
 * the resident set are recorded; after all of them, both must still be of the same order:
 * a thread's cache and arena state must be reused by later threads, not kept per dead thread,
 * and slots cached by an exited thread must come back. Finally every block is freed and no
 * large object may remain. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "rel_common.h"
#include "starmalloc.h"
#include "starmalloc/config.h"

#define KIB ((size_t)1024)
#define MIB (KIB * KIB)

enum {
    WAVE = 8,        /* threads alive at once */
    BLOCKS = 300,    /* blocks per thread */
    BASELINE = 200,  /* threads before the baseline is measured */
    EXCHANGE = 4096, /* blocks waiting to be freed by another thread */
};

struct block {
    unsigned char *p;
    size_t size;
    uint64_t tag;
};

static struct {
    pthread_mutex_t lock;
    struct block blocks[EXCHANGE];
    size_t count;
} exchange = {PTHREAD_MUTEX_INITIALIZER, {{0}}, 0};

static uint64_t seed;

static void fill(struct block *b)
{
    size_t len = b->size < 256 ? b->size : 256;
    rel_fill(b->p, len, b->tag);
    if (b->size > len)
        b->p[b->size - 1] = (unsigned char)b->tag;
}

static void check_and_free(const struct block *b)
{
    size_t len = b->size < 256 ? b->size : 256;
    REL_CHECK(rel_mismatch(b->p, len, b->tag) == len &&
                  (b->size == len || b->p[b->size - 1] == (unsigned char)b->tag),
              "block %p (%zu bytes) changed while live", (void *)b->p, b->size);
    free(b->p);
}

static void *thread_main(void *arg)
{
    uint64_t id = (uint64_t)(uintptr_t)arg;
    struct rel_rng rng = {seed * 1000003 + id};
    struct block mine[BLOCKS];
    for (size_t i = 0; i < BLOCKS; i++) {
        size_t size = rel_below(&rng, 64) == 0  ? 128 * KIB + rel_below(&rng, 256 * KIB)
                      : rel_below(&rng, 4) == 0 ? 1 + rel_below(&rng, 8 * KIB)
                                                : 1 + rel_below(&rng, 512);
        mine[i] = (struct block){malloc(size), size, rel_next(&rng)};
        REL_CHECK(mine[i].p != NULL, "thread %llu: malloc(%zu) failed (errno %d)",
                  (unsigned long long)id, size, errno);
        fill(&mine[i]);
    }
    /* Half freed here (some right away, in random order), half handed over. */
    size_t handed = 0;
    struct block taken[BLOCKS];
    size_t ntaken = 0;
    pthread_mutex_lock(&exchange.lock);
    for (size_t i = 0; i < BLOCKS; i++) {
        if (i % 2 && exchange.count < EXCHANGE) {
            exchange.blocks[exchange.count++] = mine[i];
            mine[i].p = NULL;
            handed++;
        }
    }
    /* Take (up to) what was handed, from the oldest threads' blocks too. */
    while (ntaken < handed && exchange.count > handed) {
        size_t k = rel_below(&rng, exchange.count - handed);
        taken[ntaken++] = exchange.blocks[k];
        exchange.blocks[k] = exchange.blocks[--exchange.count];
    }
    pthread_mutex_unlock(&exchange.lock);
    for (size_t i = 0; i < ntaken; i++)
        check_and_free(&taken[i]);
    for (size_t i = BLOCKS; i-- > 0;)
        if (mine[i].p)
            check_and_free(&mine[i]);
    return NULL;
}

static void run_threads(unsigned from, unsigned to)
{
    pthread_t threads[WAVE];
    for (unsigned first = from; first < to; first += WAVE) {
        unsigned n = to - first < WAVE ? to - first : WAVE;
        for (unsigned i = 0; i < n; i++)
            REL_CHECK(
                pthread_create(&threads[i], NULL, thread_main, (void *)(uintptr_t)(first + i)) == 0,
                "pthread_create failed");
        for (unsigned i = 0; i < n; i++)
            REL_CHECK(pthread_join(threads[i], NULL) == 0, "pthread_join failed");
    }
}

struct measure {
    size_t committed;
    size_t small_committed;
    size_t slots_in_use;
    size_t rss;
};

static struct measure measure(void)
{
    struct starmalloc_stats st;
    starmalloc_stats_get(&st);
    return (struct measure){st.committed_bytes, st.small_committed_bytes, st.small_slots_in_use,
                            rel_rss_bytes()};
}

int main(int argc, char **argv)
{
    rel_program = "rel_thread_churn";
    unsigned nthreads = (unsigned)rel_arg(argc, argv, 1, 5000, 2 * BASELINE, 1000000);
    seed = rel_arg(argc, argv, 2, 1, 0, ~0ul);
    double start = rel_now();

    run_threads(0, BASELINE);
    struct measure base = measure();
    run_threads(BASELINE, nthreads);
    struct measure end = measure();

    rel_say("after %u threads: committed %zu KiB (small %zu KiB), slots in use %zu, RSS %zu KiB",
            BASELINE, base.committed / KIB, base.small_committed / KIB, base.slots_in_use,
            base.rss / KIB);
    rel_say("after %u threads: committed %zu KiB (small %zu KiB), slots in use %zu, RSS %zu KiB "
            "(%.1f s)",
            nthreads, end.committed / KIB, end.small_committed / KIB, end.slots_in_use,
            end.rss / KIB, rel_now() - start);

    /* Linear growth would be (nthreads / BASELINE) times the baseline: 25x for the defaults.
     * Allow twice the baseline plus a margin for the exchange's changing contents. */
    REL_CHECK(end.small_committed <= 2 * base.small_committed + 4 * MIB,
              "small committed memory grew from %zu KiB to %zu KiB over %u threads",
              base.small_committed / KIB, end.small_committed / KIB, nthreads);
    REL_CHECK(end.slots_in_use <= 2 * base.slots_in_use + 4096,
              "slots in use grew from %zu to %zu: exited threads keep slots", base.slots_in_use,
              end.slots_in_use);
    if (base.rss && end.rss)
        REL_CHECK(end.rss <= 2 * base.rss + 32 * MIB, "RSS grew from %zu KiB to %zu KiB",
                  base.rss / KIB, end.rss / KIB);

    /* Everything left in the exchange is freed by this thread. */
    for (size_t i = 0; i < exchange.count; i++)
        check_and_free(&exchange.blocks[i]);
    exchange.count = 0;
    struct starmalloc_stats st;
    starmalloc_stats_get(&st);
    REL_CHECK(st.large_objects == 0, "%zu large objects left after every block was freed",
              st.large_objects);
    return 0;
}

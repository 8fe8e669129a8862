/* wl-larson: a server pattern, modelled on Larson and Krishnan's allocator benchmark.
 *
 * Every thread owns one segment of live blocks of random sizes. It repeatedly frees a random
 * block of its segment and allocates a new one in its place. After each epoch the threads
 * rotate segments (thread t works on segment (t + epoch) % threads), so the blocks a thread
 * finds in its new segment were allocated by another thread, and it frees them, as when a
 * server hands a request to a worker. Each block carries tags at both ends, checked before
 * it is freed.
 *
 * By default a fixed total amount of work is split over the threads: 40 epochs of 400000
 * replacements in all at --scale 1. With --per-thread every thread does the same work
 * whatever the number of threads, so that the throughput (ops_per_s) of --threads 1 and
 * --threads 2 compare: the scaling measurement of benchmarks/compare.sh. Its epochs are longer
 * (8 of 2 million replacements per thread at --scale 1; 2 million or more from --scale 0.25
 * up): a handover costs about the same whatever the epoch's length (the segment's blocks move
 * to another core's cache, the allocator takes back memory freed by another thread), and with
 * short epochs that fixed cost, not the allocator's throughput, would decide the ratio. Every
 * epoch, the first included, starts with a handover, so that the ratio does not depend on the
 * scale. The threads share nothing they write often but the blocks they hand over: each
 * thread's counters and segment are in cache lines of their own. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

enum { SLOTS_PER_SEGMENT = 4000, CACHE_LINE = 64 };

/* Aligned to a cache line (and its size a multiple of one), so that two threads working on
 * neighbouring segments never write to one line. */
struct segment {
    _Alignas(CACHE_LINE) void *blocks[SLOTS_PER_SEGMENT];
    uint32_t sizes[SLOTS_PER_SEGMENT];
};

static struct wl_options opt = {.scale = 1.0, .threads = 4, .seed = 1};
static int per_thread; /* --per-thread: every thread does a whole run's work */
static struct segment *segments;
static pthread_barrier_t barrier;
static uint64_t epochs, ops_per_epoch;
static unsigned first_shift; /* thread t works on segment (t + first_shift + epoch) % threads */

/* Mostly small requests with a tail of medium ones, as a server's request objects. */
static uint32_t random_size(struct wl_rng *rng)
{
    if (wl_rng_below(rng, 8) != 0)
        return (uint32_t)wl_rng_range(rng, 16, 256);
    return (uint32_t)wl_rng_log_range(rng, 256, 8192);
}

static uint64_t block_tag(unsigned seg, unsigned slot, uint32_t size)
{
    return wl_mix(((uint64_t)seg << 48) ^ ((uint64_t)slot << 24) ^ size);
}

static void put_block(struct segment *s, unsigned seg, unsigned slot, uint32_t size)
{
    char *p = wl_malloc(size);
    uint64_t tag = block_tag(seg, slot, size);
    memcpy(p, &tag, 8);
    memcpy(p + size - 8, &tag, 8);
    s->blocks[slot] = p;
    s->sizes[slot] = size;
}

static void drop_block(struct segment *s, unsigned seg, unsigned slot)
{
    char *p = s->blocks[slot];
    uint32_t size = s->sizes[slot];
    uint64_t tag = block_tag(seg, slot, size), head, tail;
    memcpy(&head, p, 8);
    memcpy(&tail, p + size - 8, 8);
    if (head != tag || tail != tag)
        wl_fail("larson", "block %p (segment %u slot %u, %u bytes) was overwritten", (void *)p, seg,
                slot, size);
    free(p);
}

/* One cache line (at least) each: worker t writes only its own. */
struct worker {
    _Alignas(CACHE_LINE) pthread_t thread;
    unsigned index;
    uint64_t checksum;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    unsigned nseg = (unsigned)opt.threads;
    struct wl_rng rng;
    uint64_t checksum = 0; /* in a register, not in the shared workers array */

    /* Fill the own segment, then start rotating. */
    wl_rng_init(&rng, opt.seed, w->index, UINT64_MAX);
    for (unsigned slot = 0; slot < SLOTS_PER_SEGMENT; slot++)
        put_block(&segments[w->index], w->index, slot, random_size(&rng));
    pthread_barrier_wait(&barrier);

    for (uint64_t e = 0; e < epochs; e++) {
        unsigned seg = (unsigned)((w->index + first_shift + e) % nseg);
        struct segment *s = &segments[seg];
        wl_rng_init(&rng, opt.seed, seg, e); /* the stream depends on the work, not the thread */
        for (uint64_t i = 0; i < ops_per_epoch; i++) {
            unsigned slot = (unsigned)wl_rng_below(&rng, SLOTS_PER_SEGMENT);
            drop_block(s, seg, slot);
            uint32_t size = random_size(&rng);
            put_block(s, seg, slot, size);
            checksum += size ^ slot;
        }
        pthread_barrier_wait(&barrier);
    }

    unsigned seg = (unsigned)((w->index + first_shift + epochs) % nseg);
    for (unsigned slot = 0; slot < SLOTS_PER_SEGMENT; slot++)
        drop_block(&segments[seg], seg, slot);
    w->checksum = checksum;
    return NULL;
}

int main(int argc, char **argv)
{
    static const struct wl_flag flags[] = {
        {"per-thread", "every thread does the work of a whole run (to compare throughputs)",
         &per_thread},
        {NULL, NULL, NULL},
    };
    wl_parse_args_flags(argc, argv, "larson",
                        "Server pattern: threads replace random blocks and free each other's.",
                        &opt, flags);
    if (per_thread) {
        epochs = wl_scaled(&opt, 8, 2); /* 2 million replacements each from --scale 0.25 up */
        ops_per_epoch = wl_scaled(&opt, 16e6, 2000) / epochs;
        first_shift = 1;
    } else {
        epochs = wl_scaled(&opt, 40, 2);
        ops_per_epoch = 400000 / (uint64_t)opt.threads;
    }
    /* aligned_alloc for the alignment of the types (malloc guarantees only 16 bytes). */
    segments = aligned_alloc(CACHE_LINE, (size_t)opt.threads * sizeof *segments);
    struct worker *workers = aligned_alloc(CACHE_LINE, (size_t)opt.threads * sizeof *workers);
    if (!segments || !workers)
        wl_fail("larson", "out of memory");
    memset(workers, 0, (size_t)opt.threads * sizeof *workers);
    pthread_barrier_init(&barrier, NULL, (unsigned)opt.threads);

    double start = wl_now();
    for (int t = 0; t < opt.threads; t++) {
        workers[t].index = (unsigned)t;
        if (pthread_create(&workers[t].thread, NULL, worker_main, &workers[t]) != 0)
            wl_fail("larson", "pthread_create failed");
    }
    uint64_t checksum = 0;
    for (int t = 0; t < opt.threads; t++) {
        pthread_join(workers[t].thread, NULL);
        checksum += workers[t].checksum;
    }
    double elapsed = wl_now() - start;

    pthread_barrier_destroy(&barrier);
    free(workers);
    free(segments);
    wl_report("larson", &opt, elapsed, epochs * ops_per_epoch * (uint64_t)opt.threads, checksum,
              per_thread ? "work=per-thread" : "work=total");
    return 0;
}

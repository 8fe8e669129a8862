/* wl-larson: a server pattern, modelled on Larson and Krishnan's allocator benchmark.
 *
 * Every thread owns one segment of live blocks of random sizes. It repeatedly frees a random
 * block of its segment and allocates a new one in its place. After each epoch the threads
 * rotate segments (thread t works on segment (t + epoch) % threads), so most blocks are freed
 * by another thread than the one that allocated them, as when a server hands a request to a
 * worker. Each block carries tags at both ends, checked before it is freed. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

enum { SLOTS_PER_SEGMENT = 4000 };

struct segment {
    void *blocks[SLOTS_PER_SEGMENT];
    uint32_t sizes[SLOTS_PER_SEGMENT];
};

static struct wl_options opt = {.scale = 1.0, .threads = 4, .seed = 1};
static struct segment *segments;
static pthread_barrier_t barrier;
static uint64_t epochs, ops_per_epoch;

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

struct worker {
    pthread_t thread;
    unsigned index;
    uint64_t checksum;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    unsigned nseg = (unsigned)opt.threads;
    struct wl_rng rng;

    /* Fill the own segment, then start rotating. */
    wl_rng_init(&rng, opt.seed, w->index, UINT64_MAX);
    for (unsigned slot = 0; slot < SLOTS_PER_SEGMENT; slot++)
        put_block(&segments[w->index], w->index, slot, random_size(&rng));
    pthread_barrier_wait(&barrier);

    for (uint64_t e = 0; e < epochs; e++) {
        unsigned seg = (unsigned)((w->index + e) % nseg);
        struct segment *s = &segments[seg];
        wl_rng_init(&rng, opt.seed, seg, e); /* the stream depends on the work, not the thread */
        for (uint64_t i = 0; i < ops_per_epoch; i++) {
            unsigned slot = (unsigned)wl_rng_below(&rng, SLOTS_PER_SEGMENT);
            drop_block(s, seg, slot);
            uint32_t size = random_size(&rng);
            put_block(s, seg, slot, size);
            w->checksum += size ^ slot;
        }
        pthread_barrier_wait(&barrier);
    }

    unsigned seg = (unsigned)((w->index + epochs) % nseg);
    for (unsigned slot = 0; slot < SLOTS_PER_SEGMENT; slot++)
        drop_block(&segments[seg], seg, slot);
    return NULL;
}

int main(int argc, char **argv)
{
    wl_parse_args(argc, argv, "larson",
                  "Server pattern: threads replace random blocks and free each other's.", &opt);
    epochs = wl_scaled(&opt, 40, 2);
    ops_per_epoch = 400000 / (uint64_t)opt.threads;
    segments = wl_calloc((size_t)opt.threads, sizeof *segments);
    struct worker *workers = wl_calloc((size_t)opt.threads, sizeof *workers);
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
              NULL);
    return 0;
}

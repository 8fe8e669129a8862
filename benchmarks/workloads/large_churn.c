/* wl-large: churn of large objects (64 KiB to 8 MiB).
 *
 * A window of live large buffers is replaced at random: free one, allocate another of a
 * log-uniform size, and write one word into every page of it (as a program that fills its
 * buffer would touch it). The cost is dominated by how the allocator gets large blocks from
 * the kernel and gives them back: a fresh mapping per object pays page faults and zeroing
 * every time; a cache of freed blocks does not. With --threads N, N threads churn at once. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

enum { WINDOW = 16, PAGE = 4096 };

static struct wl_options opt = {.scale = 1.0, .threads = 1, .seed = 1};
static uint64_t steps;

struct worker {
    pthread_t thread;
    unsigned index;
    uint64_t checksum;
};

struct block {
    uint64_t *p;
    size_t size, id;
};

static void fill(struct block *b)
{
    for (size_t off = 0; off < b->size - 8; off += PAGE)
        b->p[off / 8] = b->id ^ off;
    b->p[b->size / 8 - 1] = ~b->id;
}

static uint64_t check(const struct block *b)
{
    uint64_t sum = 0;
    for (size_t off = 0; off < b->size - 8; off += PAGE) {
        if (b->p[off / 8] != (b->id ^ off))
            wl_fail("large", "block %p (%zu bytes) changed at offset %zu", (void *)b->p, b->size,
                    off);
        sum += b->p[off / 8];
    }
    if (b->p[b->size / 8 - 1] != ~b->id)
        wl_fail("large", "block %p (%zu bytes) changed at its end", (void *)b->p, b->size);
    return sum;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct wl_rng rng;
    wl_rng_init(&rng, opt.seed, w->index, 0);
    struct block window[WINDOW] = {{0}};
    uint64_t id = (uint64_t)w->index << 40;
    for (uint64_t s = 0; s < steps + WINDOW; s++) {
        struct block *b = &window[s < WINDOW ? s : wl_rng_below(&rng, WINDOW)];
        if (b->p) {
            w->checksum += check(b);
            free(b->p);
        }
        b->size = wl_rng_log_range(&rng, 64 << 10, 8 << 20) & ~(size_t)7;
        b->p = wl_malloc(b->size);
        b->id = id++;
        fill(b);
    }
    for (int i = 0; i < WINDOW; i++) {
        w->checksum += check(&window[i]);
        free(window[i].p);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    wl_parse_args(argc, argv, "large", "Churn of large objects, 64 KiB to 8 MiB.", &opt);
    steps = wl_scaled(&opt, 6000.0 / opt.threads, 10);
    struct worker *workers = wl_calloc((size_t)opt.threads, sizeof *workers);
    double start = wl_now();
    for (int t = 0; t < opt.threads; t++) {
        workers[t].index = (unsigned)t;
        if (pthread_create(&workers[t].thread, NULL, worker_main, &workers[t]) != 0)
            wl_fail("large", "pthread_create failed");
    }
    uint64_t checksum = 0;
    for (int t = 0; t < opt.threads; t++) {
        pthread_join(workers[t].thread, NULL);
        checksum += workers[t].checksum;
    }
    double elapsed = wl_now() - start;
    free(workers);
    wl_report("large", &opt, elapsed, (steps + WINDOW) * (uint64_t)opt.threads, checksum, NULL);
    return 0;
}

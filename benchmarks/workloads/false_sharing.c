/* wl-false-sharing: allocator-induced false sharing, modelled on Hoard's cache-thrash
 * (active) and cache-scratch (passive) tests.
 *
 * Active: each thread repeatedly allocates a small object, writes it many times and frees
 * it. An allocator that hands neighbouring objects of one cache line to different threads
 * makes the cores fight over that line.
 * Passive: the main thread allocates one small object per thread, back to back, and hands
 * them out; each thread frees its object and then allocates, writes and frees its own. An
 * allocator that gives a freed object to the thread that freed it recreates the sharing.
 * Both phases are timed together; the RESULT line also gives each phase's time. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

enum { OBJECT_BYTES = 8, WRITES_PER_BYTE = 200 };

static struct wl_options opt = {.scale = 1.0, .threads = 2, .seed = 1};
static uint64_t rounds;
static pthread_barrier_t barrier;

struct worker {
    pthread_t thread;
    char *handed; /* passive phase: the object the main thread allocated for us */
    uint64_t checksum;
};

static uint64_t thrash(uint64_t n)
{
    uint64_t sum = 0;
    for (uint64_t i = 0; i < n; i++) {
        volatile char *p = wl_malloc(OBJECT_BYTES);
        for (int b = 0; b < OBJECT_BYTES; b++)
            p[b] = 0;
        for (int r = 0; r < WRITES_PER_BYTE; r++)
            for (int b = 0; b < OBJECT_BYTES; b++)
                p[b] = (char)(p[b] + 1);
        sum += (unsigned char)p[i % OBJECT_BYTES];
        free((void *)p);
    }
    return sum;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    pthread_barrier_wait(&barrier); /* active phase */
    w->checksum += thrash(rounds);
    pthread_barrier_wait(&barrier); /* passive phase */
    free(w->handed);
    w->checksum += thrash(rounds);
    return NULL;
}

int main(int argc, char **argv)
{
    wl_parse_args(argc, argv, "false-sharing",
                  "Allocator-induced false sharing (cache-thrash and cache-scratch phases).", &opt);
    rounds = wl_scaled(&opt, 2500000.0 / opt.threads, 10);
    unsigned n = (unsigned)opt.threads;
    struct worker *workers = wl_calloc(n, sizeof *workers);
    pthread_barrier_init(&barrier, NULL, n + 1);
    for (unsigned t = 0; t < n; t++)
        if (pthread_create(&workers[t].thread, NULL, worker_main, &workers[t]) != 0)
            wl_fail("false-sharing", "pthread_create failed");

    double start = wl_now();
    pthread_barrier_wait(&barrier);
    /* While the workers thrash, prepare the passive phase's neighbouring objects. */
    for (unsigned t = 0; t < n; t++) {
        workers[t].handed = wl_malloc(OBJECT_BYTES);
        memset(workers[t].handed, 0, OBJECT_BYTES);
    }
    pthread_barrier_wait(&barrier);
    double passive_start = wl_now();
    uint64_t checksum = 0;
    for (unsigned t = 0; t < n; t++) {
        pthread_join(workers[t].thread, NULL);
        checksum += workers[t].checksum;
    }
    double end = wl_now();

    pthread_barrier_destroy(&barrier);
    free(workers);
    char extra[96];
    snprintf(extra, sizeof extra, "active_s=%.4f passive_s=%.4f", passive_start - start,
             end - passive_start);
    wl_report("false-sharing", &opt, end - start, 2 * rounds * n, checksum, extra);
    return 0;
}

/* stress_large_move: large objects grown by realloc (moved with mremap) while other threads
 * map new large objects.
 *
 * Usage: stress_large_move [rounds=20000]  (ctest runs 5000)
 *
 * Two threads repeatedly allocate a 256 KiB object, write it, grow it to 1 MiB with realloc
 * (which moves its pages to a new mapping) and free it; the main thread meanwhile allocates
 * 256 KiB objects aligned to 64 KiB (always a fresh mapping, never a kept one) and frees them.
 * Once the pages have moved, the old object's range is free for the kernel to hand out
 * again: every allocation must still succeed (a stale record of the old object once made the
 * new one's registration fail: NULL and ENOMEM with plenty of memory), and every grown object
 * must keep its content. Any failure prints one line and exits 1. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SMALL = 256 << 10, BIG = 1 << 20, ALIGN = 64 << 10, GROWERS = 2 };

static atomic_int stop;
static atomic_long failures;

static void failed(const char *what)
{
    if (atomic_fetch_add(&failures, 1) == 0)
        fprintf(stderr, "stress_large_move: FAIL: %s (%s)\n", what, strerror(errno));
}

static void *grower(void *arg)
{
    unsigned char tag = (unsigned char)(uintptr_t)arg;
    while (!atomic_load(&stop) && atomic_load(&failures) == 0) {
        unsigned char *p = malloc(SMALL);
        if (!p) {
            failed("malloc(256 KiB) returned NULL");
            break;
        }
        memset(p, tag, SMALL);
        unsigned char *q = realloc(p, BIG);
        if (!q) {
            failed("realloc(256 KiB -> 1 MiB) returned NULL");
            free(p);
            break;
        }
        if (q[0] != tag || q[SMALL / 2] != tag || q[SMALL - 1] != tag)
            failed("realloc lost the content of the object it moved");
        free(q);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long rounds = argc > 1 ? strtol(argv[1], NULL, 10) : 20000;
    pthread_t threads[GROWERS];
    for (int i = 0; i < GROWERS; i++)
        if (pthread_create(&threads[i], NULL, grower, (void *)(uintptr_t)(0xa0 + i)) != 0) {
            fprintf(stderr, "stress_large_move: pthread_create failed\n");
            return 1;
        }
    for (long i = 0; i < rounds && atomic_load(&failures) == 0; i++) {
        void *p = aligned_alloc(ALIGN, SMALL);
        if (!p) {
            failed("aligned_alloc(64 KiB, 256 KiB) returned NULL");
            break;
        }
        free(p);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < GROWERS; i++)
        pthread_join(threads[i], NULL);
    if (atomic_load(&failures) != 0)
        return 1;
    printf("stress_large_move: %ld rounds, no failure\n", rounds);
    return 0;
}

/* wl-fragmentation: how much memory an allocator keeps after a program frees most of it.
 *
 * Three cycles of:
 * 1. allocate many small objects (16-512 B, about 128 MiB at scale 1);
 * 2. free a random 90% of them, leaving the survivors scattered over the heap;
 * 3. allocate medium objects (0.5-16 KiB, about 96 MiB) that cannot reuse the small holes
 *    unless the allocator coalesces or returns them;
 * 4. free the medium objects and 90% of the small survivors (1% of each cycle's small
 *    objects stay alive until the end, pinning the pages they are on).
 * The RESULT line gives the peak RSS, the RSS after steps 2 and 3 of the last cycle and the
 * final RSS after the last cycle, together with the bytes still live then:
 * final_rss_kb - live_kb is memory the allocator holds for nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

enum { CYCLES = 3 };

struct object {
    uint64_t *p;
    size_t size;
    uint64_t id; /* written at both ends of the object */
};

static void touch(struct object *o, uint64_t id)
{
    o->id = id;
    o->p[0] = id;
    o->p[o->size / 8 - 1] = ~id;
}

static void release(struct object *o, uint64_t *checksum)
{
    uint64_t id = o->id;
    if (o->p[0] != id || o->p[o->size / 8 - 1] != ~id)
        wl_fail("fragmentation", "object %p (%zu bytes) was overwritten", (void *)o->p, o->size);
    *checksum += id ^ o->size;
    free(o->p);
    o->p = NULL;
}

/* Appends to a growing array of objects. */
static struct object *push(struct object **array, size_t *n, size_t *cap)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 1024;
        *array = wl_realloc(*array, *cap * sizeof **array);
    }
    return &(*array)[(*n)++];
}

int main(int argc, char **argv)
{
    struct wl_options opt = {.scale = 1.0, .threads = 1, .seed = 1};
    wl_parse_args(argc, argv, "fragmentation", "Peak and final RSS after freeing most objects.",
                  &opt);
    size_t small_bytes = wl_scaled(&opt, 128 << 20, 1 << 16);
    size_t medium_bytes = wl_scaled(&opt, 96 << 20, 1 << 16);
    struct wl_rng rng;
    wl_rng_init(&rng, opt.seed, 0, 0);
    uint64_t checksum = 0, ops = 0;
    struct object *small = NULL, *medium = NULL, *kept = NULL;
    size_t small_cap = 0, medium_cap = 0, nkept = 0, kept_cap = 0, live_bytes = 0;
    long rss_after_free = 0, rss_mixed = 0;

    double start = wl_now();
    for (uint64_t cycle = 0; cycle < CYCLES; cycle++) {
        uint64_t id_base = cycle << 40;
        size_t nsmall = 0, nmedium = 0;
        for (size_t total = 0; total < small_bytes;) {
            struct object *o = push(&small, &nsmall, &small_cap);
            o->size = wl_rng_log_range(&rng, 16, 512) & ~(size_t)7;
            o->p = wl_malloc(o->size);
            touch(o, id_base + nsmall - 1);
            total += o->size;
        }
        ops += nsmall;

        for (size_t i = 0; i < nsmall; i++)
            if (wl_rng_below(&rng, 10) != 0) {
                release(&small[i], &checksum);
                ops++;
            }
        rss_after_free = wl_current_rss_kb();

        for (size_t total = 0; total < medium_bytes;) {
            struct object *o = push(&medium, &nmedium, &medium_cap);
            o->size = wl_rng_log_range(&rng, 512, 16384) & ~(size_t)7;
            o->p = wl_malloc(o->size);
            touch(o, ~(id_base + nmedium - 1));
            total += o->size;
        }
        ops += nmedium;
        rss_mixed = wl_current_rss_kb();

        for (size_t i = 0; i < nmedium; i++)
            release(&medium[i], &checksum);
        ops += nmedium;
        /* 1% of the small objects survive the cycle, pinning their pages. */
        for (size_t i = 0; i < nsmall; i++) {
            if (!small[i].p)
                continue;
            if (wl_rng_below(&rng, 10) != 0) {
                release(&small[i], &checksum);
                ops++;
                continue;
            }
            *push(&kept, &nkept, &kept_cap) = small[i];
            live_bytes += small[i].size;
        }
    }
    double elapsed = wl_now() - start;

    char extra[160];
    snprintf(extra, sizeof extra, "rss_after_free_kb=%ld rss_mixed_kb=%ld live_kb=%zu",
             rss_after_free, rss_mixed, live_bytes / 1024);
    wl_report("fragmentation", &opt, elapsed, ops, checksum, extra);
    for (size_t i = 0; i < nkept; i++)
        release(&kept[i], &checksum);
    free(kept);
    free(small);
    free(medium);
    return 0;
}

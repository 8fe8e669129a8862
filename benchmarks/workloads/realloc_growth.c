/* wl-realloc: buffers grown piece by piece with realloc.
 *
 * A set of live buffers (string builders, growing arrays) each grows by small appends, every
 * append a realloc to the exact new length, as naive code does, until it reaches its own
 * random final length (log-uniform from 256 B to 256 KiB, so the buffers cross from small
 * size classes into large mappings). The full content is then verified and the buffer
 * freed and replaced. Allocators that grow in place, or move blocks cheaply, win here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

enum { BUFFERS = 64 };

struct buffer {
    unsigned char *data;
    size_t len, final_len;
    uint64_t id;
};

static unsigned char byte_at(uint64_t id, size_t pos)
{
    return (unsigned char)((pos * 131u) ^ (id * 7u) ^ (pos >> 9));
}

static void start(struct buffer *b, struct wl_rng *rng, uint64_t id)
{
    b->data = NULL;
    b->len = 0;
    b->final_len = wl_rng_log_range(rng, 256, 256 << 10);
    b->id = id;
}

static uint64_t finish(struct buffer *b)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < b->len; i++) {
        if (b->data[i] != byte_at(b->id, i))
            wl_fail("realloc", "buffer %llu (%zu bytes) lost its content at byte %zu",
                    (unsigned long long)b->id, b->len, i);
        sum += b->data[i];
    }
    free(b->data);
    return wl_mix(sum ^ b->len);
}

int main(int argc, char **argv)
{
    struct wl_options opt = {.scale = 1.0, .threads = 1, .seed = 1};
    wl_parse_args(argc, argv, "realloc", "Buffers grown piece by piece with realloc.", &opt);
    uint64_t appends = wl_scaled(&opt, 900000, 100);
    struct wl_rng rng;
    wl_rng_init(&rng, opt.seed, 0, 0);
    struct buffer buffers[BUFFERS];
    uint64_t next_id = 0, checksum = 0, completed = 0;
    for (int i = 0; i < BUFFERS; i++)
        start(&buffers[i], &rng, next_id++);

    double t0 = wl_now();
    for (uint64_t n = 0; n < appends; n++) {
        struct buffer *b = &buffers[wl_rng_below(&rng, BUFFERS)];
        /* Appends of a few bytes mostly, sometimes a larger piece. */
        size_t piece =
            wl_rng_below(&rng, 8) ? wl_rng_range(&rng, 1, 64) : wl_rng_log_range(&rng, 64, 4096);
        b->data = wl_realloc(b->data, b->len + piece);
        for (size_t i = 0; i < piece; i++)
            b->data[b->len + i] = byte_at(b->id, b->len + i);
        b->len += piece;
        if (b->len >= b->final_len) {
            checksum += finish(b);
            completed++;
            start(b, &rng, next_id++);
        }
    }
    double elapsed = wl_now() - t0;

    for (int i = 0; i < BUFFERS; i++)
        checksum += finish(&buffers[i]);
    char extra[64];
    snprintf(extra, sizeof extra, "buffers_completed=%llu", (unsigned long long)completed);
    wl_report("realloc", &opt, elapsed, appends, checksum, extra);
    return 0;
}

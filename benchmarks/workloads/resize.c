/* wl-resize: large buffers grown and shrunk with realloc.
 *
 * A few live buffers (a log being accumulated, a decoded file, a growing array of records)
 * each grow by appends of 4 KiB to 512 KiB until they reach their own random final length
 * (log-uniform from 1 MiB to 16 MiB). Capacity grows geometrically, by half of itself at
 * least, as std::vector or a string builder does, so each buffer is reallocated about a dozen
 * times, and the program writes one word into every page it appends (as a program that fills
 * its buffer touches it). At its final length a buffer is, at random: shrunk to fit and
 * freed; truncated to a quarter (realloc to a smaller size, what a reset of a reused buffer
 * does) and grown again to a new final length; or freed as it is. Every page still held is
 * checked before a truncation and before a free.
 *
 * The cost is how the allocator resizes blocks of megabytes: moving the pages of a mapping
 * (mremap) or growing into the address space after it costs a few system calls; copying
 * costs a read and a write of every page, written or not. Shrinking may give pages back or
 * keep them. */
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

enum { BUFFERS = 8, PAGE = 4096 };

struct buffer {
    uint64_t *data;
    size_t len, capacity, final_len;
    uint64_t id;
};

static uint64_t page_word(const struct buffer *b, size_t offset)
{
    return wl_mix(b->id) ^ offset;
}

static void pick_final_len(struct buffer *b, struct wl_rng *rng)
{
    b->final_len = wl_rng_log_range(rng, 1 << 20, 16 << 20) & ~(size_t)7;
}

static void start(struct buffer *b, struct wl_rng *rng, uint64_t id)
{
    b->data = NULL;
    b->len = 0;
    b->capacity = 0;
    b->id = id;
    pick_final_len(b, rng);
}

/* Appends `piece` bytes (a multiple of 8): reallocates to a capacity at least half as large
 * again when they do not fit, then writes the first word of every page they start. */
static void append(struct buffer *b, size_t piece)
{
    size_t new_len = b->len + piece;
    if (new_len > b->capacity) {
        size_t grown = (b->capacity + b->capacity / 2) & ~(size_t)7;
        b->capacity = grown > new_len ? grown : new_len;
        b->data = wl_realloc(b->data, b->capacity);
    }
    for (size_t off = (b->len + PAGE - 1) & ~(size_t)(PAGE - 1); off < new_len; off += PAGE)
        b->data[off / 8] = page_word(b, off);
    b->len = new_len;
}

/* Checks the first word of every page of the buffer's content; returns their sum. */
static uint64_t check(const struct buffer *b)
{
    uint64_t sum = 0;
    for (size_t off = 0; off < b->len; off += PAGE) {
        if (b->data[off / 8] != page_word(b, off))
            wl_fail("resize", "buffer %llu (%zu of %zu bytes) changed at offset %zu",
                    (unsigned long long)b->id, b->len, b->capacity, off);
        sum += b->data[off / 8];
    }
    return wl_mix(sum ^ b->len);
}

/* Keeps the first quarter of the buffer (realloc to that size) and gives it a new final
 * length to grow to. */
static void truncate_to_quarter(struct buffer *b, struct wl_rng *rng)
{
    b->len = (b->len / 4) & ~(size_t)7;
    b->capacity = b->len;
    b->data = wl_realloc(b->data, b->capacity);
    pick_final_len(b, rng);
    if (b->final_len <= b->len)
        b->final_len = b->len * 2;
}

int main(int argc, char **argv)
{
    struct wl_options opt = {.scale = 1.0, .threads = 1, .seed = 1};
    wl_parse_args(argc, argv, "resize", "Large buffers grown and shrunk with realloc.", &opt);
    uint64_t finals = wl_scaled(&opt, 60, 4); /* buffers that reach a final length */
    struct wl_rng rng;
    wl_rng_init(&rng, opt.seed, 0, 0);
    struct buffer buffers[BUFFERS];
    uint64_t next_id = 0, checksum = 0, appends = 0, truncations = 0;
    for (int i = 0; i < BUFFERS; i++)
        start(&buffers[i], &rng, next_id++);

    double t0 = wl_now();
    for (uint64_t done = 0; done < finals;) {
        struct buffer *b = &buffers[wl_rng_below(&rng, BUFFERS)];
        append(b, wl_rng_log_range(&rng, 4 << 10, 512 << 10) & ~(size_t)7);
        appends++;
        if (b->len < b->final_len)
            continue;
        done++;
        checksum += check(b);
        switch (wl_rng_below(&rng, 4)) {
        case 0:
        case 1: /* shrunk to fit, then dropped */
            b->data = wl_realloc(b->data, b->len);
            free(b->data);
            start(b, &rng, next_id++);
            break;
        case 2: /* reset for reuse: truncated, grown again */
            truncate_to_quarter(b, &rng);
            checksum += check(b);
            truncations++;
            break;
        default:
            free(b->data);
            start(b, &rng, next_id++);
        }
    }
    double elapsed = wl_now() - t0;

    for (int i = 0; i < BUFFERS; i++) {
        checksum += check(&buffers[i]);
        free(buffers[i].data);
    }
    char extra[96];
    snprintf(extra, sizeof extra, "appends=%llu truncations=%llu", (unsigned long long)appends,
             (unsigned long long)truncations);
    wl_report("resize", &opt, elapsed, finals, checksum, extra);
    return 0;
}

/* wl-bignum: many short-lived small objects, as in bignum arithmetic.
 *
 * A pool of big integers (each a small header plus a separately allocated limb array, as in
 * most bignum libraries) is combined at random: add, subtract, multiply (truncated so the
 * numbers stay small) and conversion to decimal text. Every operation allocates its result
 * and temporaries and frees the value it replaces, so most objects live for a few
 * operations only. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

enum { POOL = 512, MAX_LIMBS = 24 };

struct big {
    size_t n;        /* limbs in use (>= 1; the top one may be zero only when n == 1) */
    uint32_t *limbs; /* little-endian base 2^32 */
};

static struct big *big_new(size_t n)
{
    struct big *b = wl_malloc(sizeof *b);
    b->n = n;
    b->limbs = wl_malloc(n * sizeof *b->limbs);
    return b;
}

static void big_free(struct big *b)
{
    free(b->limbs);
    free(b);
}

/* Drops leading zero limbs and gives the spare memory back, as bignum libraries do. */
static struct big *big_normalize(struct big *b)
{
    size_t n = b->n < MAX_LIMBS ? b->n : MAX_LIMBS;
    while (n > 1 && b->limbs[n - 1] == 0)
        n--;
    if (n != b->n) {
        b->limbs = wl_realloc(b->limbs, n * sizeof *b->limbs);
        b->n = n;
    }
    return b;
}

static struct big *big_random(struct wl_rng *rng)
{
    struct big *b = big_new(wl_rng_range(rng, 1, MAX_LIMBS / 2));
    for (size_t i = 0; i < b->n; i++)
        b->limbs[i] = (uint32_t)wl_rng_next(rng);
    return big_normalize(b);
}

static struct big *big_add(const struct big *a, const struct big *b)
{
    size_t n = (a->n > b->n ? a->n : b->n) + 1;
    struct big *r = big_new(n);
    uint64_t carry = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t s = carry + (i < a->n ? a->limbs[i] : 0) + (i < b->n ? b->limbs[i] : 0);
        r->limbs[i] = (uint32_t)s;
        carry = s >> 32;
    }
    return big_normalize(r);
}

static int big_compare(const struct big *a, const struct big *b)
{
    if (a->n != b->n)
        return a->n < b->n ? -1 : 1;
    for (size_t i = a->n; i-- > 0;)
        if (a->limbs[i] != b->limbs[i])
            return a->limbs[i] < b->limbs[i] ? -1 : 1;
    return 0;
}

/* |a - b| */
static struct big *big_sub(const struct big *a, const struct big *b)
{
    if (big_compare(a, b) < 0) {
        const struct big *t = a;
        a = b;
        b = t;
    }
    struct big *r = big_new(a->n);
    int64_t borrow = 0;
    for (size_t i = 0; i < a->n; i++) {
        int64_t d = (int64_t)a->limbs[i] - (i < b->n ? b->limbs[i] : 0) - borrow;
        borrow = d < 0;
        r->limbs[i] = (uint32_t)(d + (borrow << 32));
    }
    return big_normalize(r);
}

/* a * b modulo 2^(32 * MAX_LIMBS), through a full-size temporary product. */
static struct big *big_mul(const struct big *a, const struct big *b)
{
    size_t n = a->n + b->n;
    uint32_t *t = wl_calloc(n, sizeof *t);
    for (size_t i = 0; i < a->n; i++) {
        uint64_t carry = 0;
        for (size_t j = 0; j < b->n; j++) {
            uint64_t p = (uint64_t)a->limbs[i] * b->limbs[j] + t[i + j] + carry;
            t[i + j] = (uint32_t)p;
            carry = p >> 32;
        }
        t[i + b->n] = (uint32_t)carry;
    }
    struct big *r = wl_malloc(sizeof *r);
    r->n = n;
    r->limbs = t;
    return big_normalize(r);
}

/* Decimal text of a, by repeated division by 10^9 of a shrinking copy. */
static char *big_to_decimal(const struct big *a)
{
    struct big *q = big_new(a->n);
    memcpy(q->limbs, a->limbs, a->n * sizeof *a->limbs);
    char *text = wl_malloc(a->n * 10 + 10);
    size_t len = 0;
    for (;;) {
        uint64_t rem = 0;
        for (size_t i = q->n; i-- > 0;) {
            uint64_t cur = (rem << 32) | q->limbs[i];
            q->limbs[i] = (uint32_t)(cur / 1000000000u);
            rem = cur % 1000000000u;
        }
        big_normalize(q);
        bool last = q->n == 1 && q->limbs[0] == 0;
        for (int d = 0; d < 9 && (rem || !last || d == 0); d++) {
            text[len++] = (char)('0' + rem % 10);
            rem /= 10;
        }
        if (last)
            break;
    }
    text[len] = '\0';
    for (size_t i = 0; i < len / 2; i++) {
        char c = text[i];
        text[i] = text[len - 1 - i];
        text[len - 1 - i] = c;
    }
    big_free(q);
    return text;
}

int main(int argc, char **argv)
{
    struct wl_options opt = {.scale = 1.0, .threads = 1, .seed = 1};
    wl_parse_args(argc, argv, "bignum", "Many short-lived small objects: bignum arithmetic.", &opt);
    uint64_t steps = wl_scaled(&opt, 3000000, 100);
    struct wl_rng rng;
    wl_rng_init(&rng, opt.seed, 0, 0);
    struct big *pool[POOL];
    for (int i = 0; i < POOL; i++)
        pool[i] = big_random(&rng);

    uint64_t checksum = 0;
    double start = wl_now();
    for (uint64_t s = 0; s < steps; s++) {
        struct big *a = pool[wl_rng_below(&rng, POOL)], *b = pool[wl_rng_below(&rng, POOL)];
        struct big *r;
        unsigned op = (unsigned)wl_rng_below(&rng, 16);
        if (op < 6) {
            r = big_add(a, b);
        } else if (op < 10) {
            r = big_sub(a, b);
        } else if (op < 15) {
            r = big_mul(a, b);
        } else {
            char *text = big_to_decimal(a);
            size_t len = strlen(text);
            checksum = wl_mix(checksum ^ len ^ (uint64_t)(unsigned char)text[len / 2]);
            free(text);
            r = big_random(&rng);
        }
        checksum += r->limbs[0];
        unsigned victim = (unsigned)wl_rng_below(&rng, POOL);
        big_free(pool[victim]);
        pool[victim] = r;
    }
    double elapsed = wl_now() - start;

    for (int i = 0; i < POOL; i++) {
        checksum ^= wl_mix(pool[i]->n ^ pool[i]->limbs[pool[i]->n - 1]);
        big_free(pool[i]);
    }
    wl_report("bignum", &opt, elapsed, steps, checksum, NULL);
    return 0;
}

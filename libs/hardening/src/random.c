/* A ChaCha8-based CSPRNG seeded once from getrandom(2): each stream is ChaCha8 under the
 * process key with its own nonce, and hands out a 64-byte block's worth of output before
 * computing the next one, so most draws cost a few instructions. */
#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "starmalloc/hardening.h"
#include "starmalloc/region.h"

/* The process key, alone in its page so that it can be made read-only once drawn. */
static struct {
    uint32_t key[8];
    int ready;
    int sealed;
} __attribute__((aligned(SM_PAGE_SIZE))) master;
_Static_assert(sizeof(master) == SM_PAGE_SIZE, "the key has its page to itself");
#define master_key master.key

static uint32_t rotl32(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static inline __attribute__((always_inline)) void quarter_round(uint32_t x[16], int a, int b, int c,
                                                                int d)
{
    x[a] += x[b], x[d] = rotl32(x[d] ^ x[a], 16);
    x[c] += x[d], x[b] = rotl32(x[b] ^ x[c], 12);
    x[a] += x[b], x[d] = rotl32(x[d] ^ x[a], 8);
    x[c] += x[d], x[b] = rotl32(x[b] ^ x[c], 7);
}

void sm_chacha_block(const uint32_t key[8], uint64_t counter, uint64_t nonce, int rounds,
                     uint32_t out[16])
{
    uint32_t in[16] = {0x61707865u,
                       0x3320646eu,
                       0x79622d32u,
                       0x6b206574u,
                       key[0],
                       key[1],
                       key[2],
                       key[3],
                       key[4],
                       key[5],
                       key[6],
                       key[7],
                       (uint32_t)counter,
                       (uint32_t)(counter >> 32),
                       (uint32_t)nonce,
                       (uint32_t)(nonce >> 32)};
    uint32_t x[16];
    memcpy(x, in, sizeof(x));
    for (int round = 0; round < rounds; round += 2) {
        quarter_round(x, 0, 4, 8, 12);
        quarter_round(x, 1, 5, 9, 13);
        quarter_round(x, 2, 6, 10, 14);
        quarter_round(x, 3, 7, 11, 15);
        quarter_round(x, 0, 5, 10, 15);
        quarter_round(x, 1, 6, 11, 12);
        quarter_round(x, 2, 7, 8, 13);
        quarter_round(x, 3, 4, 9, 14);
    }
    for (int i = 0; i < 16; i++)
        out[i] = x[i] + in[i];
}

static int fill_from_kernel(void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        p += n;
        len -= (size_t)n;
    }
    return 1;
}

/* Without getrandom (seccomp, very old kernel): mix what differs between processes. It is
 * weak, so it is reported once. */
static void fill_from_fallback(uint32_t key[8])
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    uint64_t mix[4] = {(uint64_t)t.tv_nsec ^ ((uint64_t)t.tv_sec << 32), (uint64_t)getpid(),
                       (uint64_t)(uintptr_t)&t, (uint64_t)(uintptr_t)&master_key};
    uint32_t block[16];
    sm_chacha_block(key, mix[0] ^ mix[1], mix[2] ^ mix[3], 8, block);
    memcpy(key, block, 32);
}

static void draw_key(void)
{
    if (!fill_from_kernel(master_key, sizeof(master_key))) {
        fill_from_fallback(master_key);
        sm_warn("getrandom failed: random secrets are weak");
    }
}

void sm_random_global_init(void)
{
    if (master.ready)
        return;
    draw_key();
    master.ready = 1;
}

void sm_random_seal(void)
{
    if (master.sealed)
        return;
    master.sealed = 1; /* before the page becomes read-only */
    if (!sm_region_protect_read_only(&master, sizeof(master))) {
        master.sealed = 0;
        sm_harden_note_guard_failure("the random key could not be made read-only");
    }
}

void sm_random_reseed(void)
{
    bool sealed = master.sealed;
    if (sealed && !sm_region_protect_read_write(&master, sizeof(master))) {
        sm_harden_note_guard_failure("the random key could not be renewed after fork");
        return;
    }
    draw_key();
    if (sealed)
        sm_region_protect_read_only(&master, sizeof(master));
}

void sm_random_init(struct sm_random *rng, uint64_t stream)
{
    sm_random_global_init();
    memset(rng, 0, sizeof(*rng));
    rng->nonce = stream;
    rng->next = SM_RANDOM_BYTES; /* empty: the first draw computes a block */
}

void sm_random_refill(struct sm_random *rng)
{
    uint32_t block[16];
    sm_chacha_block(master_key, rng->counter++, rng->nonce, 8, block);
    memcpy(rng->bytes, block, sizeof(rng->bytes));
    rng->next = 0;
}

uint64_t sm_random_u64(struct sm_random *rng)
{
    if (rng->next + 8 > SM_RANDOM_BYTES)
        sm_random_refill(rng);
    uint64_t value;
    memcpy(&value, &rng->bytes[rng->next], sizeof(value));
    rng->next += 8;
    return value;
}

void sm_random_fill(void *buf, size_t len)
{
    sm_random_global_init();
    if (!fill_from_kernel(buf, len)) {
        struct sm_random rng;
        sm_random_init(&rng, (uint64_t)(uintptr_t)buf);
        for (size_t i = 0; i < len; i++)
            ((unsigned char *)buf)[i] = (unsigned char)sm_random_u64(&rng);
    }
}

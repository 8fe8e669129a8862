/* starmalloc/hardening.h: the hardening policies and fatal-error reporting.
 *
 * The allocator calls the policies at fixed points (a slot handed out, a slot freed);
 * which policies run is fixed at build time by the SM_* constants of starmalloc/config.h,
 * and a disabled policy compiles to nothing. Nothing here allocates. */
#ifndef STARMALLOC_HARDENING_H
#define STARMALLOC_HARDENING_H

#include <stddef.h>
#include <stdint.h>

#include "starmalloc/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Writes "starmalloc: fatal: <what> at <addr>" and a newline to stderr with one write(2),
 * then aborts. Never returns, never allocates. */
__attribute__((noreturn)) void sm_fatal(const char *what, const void *addr);

/* Writes "starmalloc: warning: <what>" and a newline to stderr with one write(2). */
void sm_warn(const char *what);

/* Start-up: picks the fastest byte loops this CPU supports for the hooks below (AVX2 on
 * x86-64 when present). Call once, before threads start; the hooks also work before it. */
void sm_harden_init(void);

/* Bytes at the end of every slot taken by its canary (0 when canaries are off). The user
 * may use slot_size - SM_CANARY_BYTES bytes of a slot. */
enum { SM_CANARY_BYTES = SM_CANARIES != 0 ? 8 : 0 };

/* Hook: the slot [slot, slot + slot_size) of a slab whose secret is `secret` was just
 * claimed for the user. Checks that nobody wrote to it since it was freed (write-after-free
 * check: aborts with "write after free"), then writes its canary.
 * Returns 1 when the user's bytes are known to be zero (calloc may skip its memset). */
int sm_harden_on_alloc(void *slot, size_t slot_size, uint64_t secret);

/* Hook: like sm_harden_on_alloc for a slot that was never handed out since its memory came
 * from the kernel (zero, and unreachable by any dangling pointer): writes its canary without
 * the write-after-free check, whose reads would only fault in zero pages. Returns 1. */
int sm_harden_on_alloc_fresh(void *slot, size_t slot_size, uint64_t secret);

/* Hook: the slot is being freed (it is known to be allocated). Checks its canary and, when
 * it is intact, zeroes the slot if zero-on-free is on and returns 1. Returns 0, changing
 * nothing, when an overflow changed the canary (the caller reports "canary corrupted"). */
int sm_harden_on_free(void *slot, size_t slot_size, uint64_t secret);

/* Zeroes a freed large object [p, p + bytes) (p page-aligned) that stays unused for a while:
 * the pages it touched with streaming stores where the CPU has them, which neither read the
 * memory first nor fill the cache with it; the pages it never touched (or that are in swap)
 * are discarded instead of faulted in (sm_region_clear). */
void sm_harden_zero_freed_large(void *p, size_t bytes);

/* Whether the canary of an allocated slot is intact (always 1 when canaries are off). */
int sm_harden_canary_intact(const void *slot, size_t slot_size, uint64_t secret);

/* A guard page or protection change the kernel refused (e.g. vm.max_map_count reached):
 * counts it and, the first time, writes one warning line naming `what`. */
void sm_harden_note_guard_failure(const char *what);

/* Guard or protection changes refused so far. */
uint64_t sm_harden_guard_failures(void);

/* A cryptographically secure random stream (ChaCha8 under a process-wide key drawn from
 * getrandom(2), one nonce per stream). Not thread-safe: one stream per lock holder. */
enum { SM_RANDOM_BYTES = 64 };
struct sm_random {
    uint8_t bytes[SM_RANDOM_BYTES]; /* the current block's output */
    uint64_t counter;               /* blocks computed so far */
    uint64_t nonce;                 /* the stream's identity */
    uint32_t next;                  /* next unused byte of `bytes` */
};

/* Draws the process key from getrandom(2) the first time (later calls do nothing). If the
 * kernel refuses, derives a weak key from time, pid and addresses and warns once. */
void sm_random_global_init(void);

/* Makes the process key read-only (after initialisation); a refusal is counted and reported
 * like a refused guard. */
void sm_random_seal(void);

/* Draws a new process key (in a fork child, so that it does not repeat its parent's random
 * choices: streams continue under the new key). */
void sm_random_reseed(void);

/* Starts stream number `stream` (distinct streams give independent output). */
void sm_random_init(struct sm_random *rng, uint64_t stream);

/* 64 random bits. */
uint64_t sm_random_u64(struct sm_random *rng);

/* Computes the stream's next block into rng->bytes (for sm_random_below's refills). */
void sm_random_refill(struct sm_random *rng);

/* A random number in [0, bound), bound >= 1. Powers of two up to 256 draw 8 bits (exactly
 * uniform, a block serving 64 draws: the quarantine's random stage, most slab sizes), other
 * bounds up to 2^16 draw 16 bits (with a bias of at most bound / 2^16, which only tilts
 * choices among at most a few hundred places), larger ones 32 bits. Lemire's multiply-shift;
 * inline, as it runs for every slot that enters a quarantine. */
static inline uint32_t sm_random_below(struct sm_random *rng, uint32_t bound)
{
    if (bound > 65536)
        return (uint32_t)(((sm_random_u64(rng) & 0xffffffffu) * (uint64_t)bound) >> 32);
    if (bound <= 256 && (bound & (bound - 1)) == 0) {
        if (rng->next >= SM_RANDOM_BYTES)
            sm_random_refill(rng);
        return ((uint32_t)rng->bytes[rng->next++] * bound) >> 8;
    }
    if (rng->next + 2 > SM_RANDOM_BYTES)
        sm_random_refill(rng);
    uint32_t value = (uint32_t)rng->bytes[rng->next] | (uint32_t)rng->bytes[rng->next + 1] << 8;
    rng->next += 2;
    return (value * bound) >> 16;
}

/* Fills buf with len random bytes straight from the kernel (a stream if it refuses). */
void sm_random_fill(void *buf, size_t len);

/* The ChaCha block function (`rounds` = 8 for the streams above, 20 for RFC 8439 test
 * vectors): words 12-13 of the state are the 64-bit counter, words 14-15 the nonce. */
void sm_chacha_block(const uint32_t key[8], uint64_t counter, uint64_t nonce, int rounds,
                     uint32_t out[16]);

/* Formats value as "0x..." hexadecimal into buf (at least 19 bytes, NUL-terminated);
 * returns the length. For messages written without printf. */
size_t sm_format_hex(char *buf, uintptr_t value);

#ifdef __cplusplus
}
#endif

#endif

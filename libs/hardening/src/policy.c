/* The per-slot policies, called by the allocator at its hook points. */
#include <stdatomic.h>
#include <string.h>

#include "starmalloc/hardening.h"

static atomic_uint_fast64_t guard_failures;

/* The canary of the slot ending at slot_end: the slab secret mixed with the address (so a
 * canary copied from another slot does not fit), with a zero low byte, which on a
 * little-endian machine is the first byte after the user's data and stops string reads. */
static uint64_t canary_value(const char *slot_end, uint64_t secret)
{
    return (secret ^ ((uint64_t)(uintptr_t)slot_end * UINT64_C(0x9e3779b97f4a7c15))) &
           ~UINT64_C(0xff);
}

static uint64_t *canary_location(const void *slot, size_t slot_size)
{
    return (uint64_t *)(void *)((char *)slot + slot_size - SM_CANARY_BYTES);
}

/* Whether [p, p + bytes) is all zero; p and bytes are multiples of 16 (slot sizes are). Four
 * independent accumulators let the loop run at the machine's load width. */
static int all_zero(const void *p, size_t bytes)
{
    const uint64_t *word = p;
    size_t blocks = bytes / 32;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t k = 0; k < blocks; k++, word += 4) {
        a |= word[0];
        b |= word[1];
        c |= word[2];
        d |= word[3];
    }
    if (bytes % 32) /* slot sizes are multiples of 16: one half block may remain */
        a |= word[0] | word[1];
    return (a | b | c | d) == 0;
}

int sm_harden_on_alloc(void *slot, size_t slot_size, uint64_t secret)
{
    /* Freed slots were zeroed, canary included, and fresh slabs come zeroed from the kernel:
     * any non-zero byte was written after free. */
    if (SM_WRITE_AFTER_FREE_CHECK && !all_zero(slot, slot_size))
        sm_fatal("write after free", slot);
    if (SM_CANARIES)
        *canary_location(slot, slot_size) = canary_value((char *)slot + slot_size, secret);
    return SM_ZERO_ON_FREE ? 1 : 0;
}

int sm_harden_canary_intact(const void *slot, size_t slot_size, uint64_t secret)
{
    if (!SM_CANARIES)
        return 1;
    return *canary_location(slot, slot_size) ==
           canary_value((const char *)slot + slot_size, secret);
}

int sm_harden_on_free(void *slot, size_t slot_size, uint64_t secret)
{
    if (!sm_harden_canary_intact(slot, slot_size, secret))
        return 0;
    if (SM_ZERO_ON_FREE)
        memset(slot, 0, slot_size);
    return 1;
}

void sm_harden_note_guard_failure(const char *what)
{
    if (atomic_fetch_add_explicit(&guard_failures, 1, memory_order_relaxed) == 0)
        sm_warn(what);
}

uint64_t sm_harden_guard_failures(void)
{
    return atomic_load_explicit(&guard_failures, memory_order_relaxed);
}

/* The per-slot policies, called by the allocator at its hook points. */
#include <stdatomic.h>
#include <string.h>

#include "bytes.h"
#include "starmalloc/hardening.h"
#include "starmalloc/region.h"

static atomic_uint_fast64_t guard_failures;

/* The canary of the slot ending at slot_end: the slab secret mixed with the address (so a
 * canary copied from another slot does not fit), with a zero low byte, which on a
 * little-endian machine is the first byte after the user's data and stops string reads. */
static uint64_t canary_value(const char *slot_end, uint64_t secret)
{
    return (secret ^ ((uint64_t)(uintptr_t)slot_end * UINT64_C(0x9e3779b97f4a7c15))) &
           ~UINT64_C(0xff);
}

/* The canary is read and written with memcpy (one move once compiled): a slot may be memory
 * of a declared type (a test's array), which a uint64_t lvalue may not access. GCC 12 -O3
 * did exploit that, forwarding the bytes a test had written before set_canary past it. */
static void set_canary(void *slot, size_t slot_size, uint64_t secret)
{
    if (!SM_CANARIES)
        return;
    uint64_t canary = canary_value((char *)slot + slot_size, secret);
    memcpy((char *)slot + slot_size - SM_CANARY_BYTES, &canary, sizeof canary);
}

int sm_harden_on_alloc(void *slot, size_t slot_size, uint64_t secret)
{
    /* Freed slots were zeroed, canary included, and fresh slabs come zeroed from the kernel:
     * any non-zero byte was written after free. */
    if (SM_WRITE_AFTER_FREE_CHECK && sm_bytes_any_nonzero(slot, slot_size))
        sm_fatal("write after free", slot);
    set_canary(slot, slot_size, secret);
    return SM_ZERO_ON_FREE ? 1 : 0;
}

int sm_harden_on_alloc_fresh(void *slot, size_t slot_size, uint64_t secret)
{
    set_canary(slot, slot_size, secret);
    return 1;
}

void sm_harden_zero_freed_large(void *p, size_t bytes)
{
    sm_region_clear(p, bytes, sm_bytes_zero_cold);
}

int sm_harden_canary_intact(const void *slot, size_t slot_size, uint64_t secret)
{
    if (!SM_CANARIES)
        return 1;
    uint64_t canary;
    memcpy(&canary, (const char *)slot + slot_size - SM_CANARY_BYTES, sizeof canary);
    return canary == canary_value((const char *)slot + slot_size, secret);
}

int sm_harden_on_free(void *slot, size_t slot_size, uint64_t secret)
{
    if (!sm_harden_canary_intact(slot, slot_size, secret))
        return 0;
    if (SM_ZERO_ON_FREE)
        sm_bytes_zero(slot, slot_size);
    return 1;
}

void sm_harden_init(void)
{
    sm_bytes_init();
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

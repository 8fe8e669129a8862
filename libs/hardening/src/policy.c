/* The per-slot policies, called by the allocator at its hook points. */
#include <string.h>

#include "starmalloc/hardening.h"

int sm_harden_on_alloc(void *slot, size_t slot_size)
{
    (void)slot;
    (void)slot_size;
    /* With zero-on-free every slot is zero when handed out: fresh slab pages come zeroed
     * from the kernel and freed slots were cleared on free. */
    return SM_ZERO_ON_FREE ? 1 : 0;
}

void sm_harden_on_free(void *slot, size_t slot_size)
{
    if (SM_ZERO_ON_FREE)
        memset(slot, 0, slot_size);
}

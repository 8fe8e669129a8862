/* Forwarders for glue.h. */
#include "glue.h"

#include <stdlib.h>

#include "starmalloc/arena.h"
#include "starmalloc/slab.h"

struct sm_slab *bench_slab_create(unsigned slots)
{
    struct sm_slab *slab = aligned_alloc(64, sizeof *slab);
    if (slab)
        sm_slab_init(slab, slots);
    return slab;
}

void bench_slab_destroy(struct sm_slab *slab)
{
    free(slab);
}

int bench_slab_claim(struct sm_slab *slab)
{
    return sm_slab_claim_slot(slab);
}

int bench_slab_claim_from(struct sm_slab *slab, unsigned start)
{
    return sm_slab_claim_slot_from(slab, start);
}

int bench_slab_release(struct sm_slab *slab, unsigned slot)
{
    return sm_slab_release_slot(slab, slot) == SM_SLAB_RELEASED ? 0 : -1;
}

unsigned bench_arena_of_thread(void)
{
    return sm_arena_of_thread();
}

void *bench_arena_alloc(unsigned arena, unsigned cls)
{
    int zeroed = 0;
    return sm_arena_alloc(arena, cls, &zeroed);
}

void bench_arena_free(void *p)
{
    sm_arena_free(p);
}

/* Private to libs/arena: the layout shared by its source files. */
#ifndef STARMALLOC_ARENA_INTERNAL_H
#define STARMALLOC_ARENA_INTERNAL_H

#include "starmalloc/arena.h"

/* Set once by sm_arena_init, then made read-only, so that a memory-corruption bug cannot
 * redirect the allocator's regions. Page alignment makes it fill a page of its own. */
struct __attribute__((aligned(SM_PAGE_SIZE))) heap_layout {
    char *slab_base; /* the slab region: SM_ARENAS x SM_NB_CLASSES class regions */
    size_t slab_bytes;
    size_t region_bytes; /* one class region, a power of two */
    unsigned region_shift;
    char *meta_base; /* the metadata region: headers, then each class's slab metadata */
    size_t meta_bytes;
    struct sm_class_state *states; /* [arena * SM_NB_CLASSES + class] */
};

extern struct heap_layout sm_layout;

/* Sets up a state's random stream (number `stream`) and slot quarantine. */
void sm_arena_state_init_policies(struct sm_class_state *s, uint64_t stream);

#endif

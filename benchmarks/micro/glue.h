/* glue.h: C++-clean entry points to the component libraries whose public headers do not
 * compile as C++ yet (slab.h uses _Static_assert; arena.h uses <stdatomic.h> types and
 * includes hardening.h, which uses _Noreturn). Each function only forwards to the library
 * (glue.c is C, and IPO inlines it into the benchmark loops). */
#ifndef SM_BENCH_GLUE_H
#define SM_BENCH_GLUE_H

#ifdef __cplusplus
extern "C" {
#endif

/* One slab's metadata (struct sm_slab) on the heap, reset to `slots` free slots. */
struct sm_slab;
struct sm_slab *bench_slab_create(unsigned slots);
void bench_slab_destroy(struct sm_slab *slab);
int bench_slab_claim(struct sm_slab *slab);                      /* sm_slab_claim_slot */
int bench_slab_claim_from(struct sm_slab *slab, unsigned start); /* sm_slab_claim_slot_from */
int bench_slab_release(struct sm_slab *slab, unsigned slot);     /* 0: released */

/* sm_arena_of_thread, sm_arena_alloc, sm_arena_free; call after the heap is initialised
 * (any starmalloc_malloc). */
unsigned bench_arena_of_thread(void);
void *bench_arena_alloc(unsigned arena, unsigned cls);
void bench_arena_free(void *p);

#ifdef __cplusplus
}
#endif

#endif

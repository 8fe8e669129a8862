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
    size_t region_mask;  /* region_bytes - 1 */
    unsigned region_shift;
    char *meta_base; /* the metadata region: headers, then each class's slab metadata */
    size_t meta_bytes;
    struct sm_class_state *states; /* [arena * SM_NB_CLASSES + class] */
};

extern struct heap_layout sm_layout;

/* The bytes of one class's bin in a thread cache (tcache.c): a class's bin is
 * cache_bin_offset = class_index * SM_CACHE_BIN_BYTES bytes into a cache. */
enum { SM_CACHE_BIN_BYTES = 1024 };

static inline struct sm_class_state *sm_arena_state(unsigned arena, unsigned cls)
{
    return &sm_layout.states[(size_t)arena * SM_NB_CLASSES + cls];
}

/* The (arena, class) state that owns p (in the slab region): one shift. */
static inline struct sm_class_state *sm_arena_owner_of(const void *p)
{
    if (!sm_layout.states) /* a pointer in the slab region implies an initialised layout */
        __builtin_unreachable();
    size_t offset = (uintptr_t)p - (uintptr_t)sm_layout.slab_base;
    return &sm_layout.states[offset >> sm_layout.region_shift];
}

/* The slab that holds byte offset `in_region` of s's class region. */
static inline uint32_t sm_arena_slab_at(const struct sm_class_state *s, size_t in_region)
{
    return (uint32_t)sm_sizeclass_slab_index(&s->info, in_region / SM_PAGE_SIZE);
}

/* The slot of slab `slab` that starts at byte offset `in_region` of s's class region (exact
 * for a slot start; see sm_sizeclass_slot_index for other offsets). */
static inline uint32_t sm_arena_slot_at(const struct sm_class_state *s, size_t in_region,
                                        uint32_t slab)
{
    return sm_sizeclass_slot_index(&s->info, (uint32_t)(in_region - (size_t)slab * s->slab_bytes));
}

/* Pointer -> (owner, slab, slot) by arithmetic, for a p known to be the start of a slot
 * (e.g. a slot a thread cache holds). Fills *ref whatever p is. */
static inline void sm_arena_locate_trusted(const void *p, struct sm_slot_ref *ref)
{
    size_t offset = (uintptr_t)p - (uintptr_t)sm_layout.slab_base;
    struct sm_class_state *owner = &sm_layout.states[offset >> sm_layout.region_shift];
    size_t in_region = offset & sm_layout.region_mask;
    ref->owner = owner;
    ref->slab = sm_arena_slab_at(owner, in_region);
    ref->slot = sm_arena_slot_at(owner, in_region, ref->slab);
    ref->slot_size = owner->info.slot_size;
}

/* sm_arena_locate, inlined into the hot paths: like sm_arena_locate_trusted, then checks
 * that p really is the start of a slot. */
static inline enum sm_locate_result sm_arena_locate_inline(const void *p, struct sm_slot_ref *ref)
{
    sm_arena_locate_trusted(p, ref);
    size_t offset = (uintptr_t)p - (uintptr_t)sm_layout.slab_base;
    uint32_t in_slab =
        (uint32_t)((offset & sm_layout.region_mask) - (size_t)ref->slab * ref->owner->slab_bytes);
    if (ref->slot >= ref->owner->info.slots || ref->slot * ref->slot_size != in_slab)
        return SM_LOCATE_NOT_SLOT_START;
    return SM_LOCATE_OK;
}

/* The index in s->allocated_bytes of the byte of the slot that starts at p. */
static inline uint32_t sm_arena_allocated_index(const struct sm_class_state *s, const void *p)
{
    return (uint32_t)((size_t)((const char *)p - s->slab_memory) >> s->allocated_shift);
}

/* The free's fast lookup: finds the owner of p (in the slab region) and the index of the
 * allocated byte of the slot that would start at p in the owner's allocated bytes. Returns
 * false when p is not at a multiple of the class's byte spacing or that byte is not
 * committed. Lock-free. True is not yet a validation: only the byte of a slot's start can be
 * 1 (see sm_slab_defer_byte), so the caller's exchange on the byte decides. */
static inline bool sm_arena_allocated_lookup(const void *p, struct sm_class_state **owner,
                                             size_t *index)
{
    size_t offset = (uintptr_t)p - (uintptr_t)sm_layout.slab_base;
    struct sm_class_state *s = &sm_layout.states[offset >> sm_layout.region_shift];
    size_t in_region = offset & sm_layout.region_mask;
    unsigned shift = s->allocated_shift;
    /* A rotation: an offset that is not a multiple of 2^shift turns into a huge index, which
     * fails the bound below with the out-of-range ones. */
    size_t rotated = in_region >> shift | in_region << ((64 - shift) & 63);
    if (rotated >= __atomic_load_n(&s->allocated_bytes_committed, __ATOMIC_RELAXED))
        return false;
    *owner = s;
    *index = rotated; /* below the committed bytes: fits 32 bits */
    return true;
}

/* The metadata of the slab that holds p (in s's class region): for the hardening policies'
 * per-slab secret. */
static inline struct sm_slab *sm_arena_slab_of(const struct sm_class_state *s, const void *p)
{
    size_t page = (size_t)((const char *)p - s->slab_memory) / SM_PAGE_SIZE;
    return &s->slabs[sm_sizeclass_slab_index(&s->info, page)];
}

/* Claims up to `count` slots of s (one lock acquisition), marks them deferred (held by a
 * thread cache) and stores each one's address, its slab's canary secret (0 without
 * SM_CANARIES), allocated-byte index and whether it is fresh (never handed out since its slab
 * came from the kernel: zero, no write-after-free check needed) in
 * slots/secrets/allocated_indices/fresh [0..n), the first claimed at n - 1.
 * Returns n (0 when the class region is exhausted or memory cannot be committed). */
uint32_t sm_arena_claim_batch(struct sm_class_state *s, uint32_t count, void **slots,
                              uint64_t *secrets, uint32_t *allocated_indices, uint8_t *fresh);

/* After a class's lock was released (allocation or free): gives back retained slabs for the
 * new memory taken meanwhile while more is retained than allowed, and runs a decay step when
 * one is due (see sm_arena_give_back_retained). One atomic load when nothing is retained.
 * Takes class locks in turn: call with none held. */
void sm_arena_settle_retained(void);

/* Whether p is the start of a slot of a slab whose metadata is set up (every slab below the
 * class's fresh_next: one that held slots, or a guard slab, whose slots are never in use);
 * fills *ref. Safe without any lock (arithmetic and an atomic load). */
bool sm_arena_locate_set_up(const void *p, struct sm_slot_ref *ref);

/* Whether a set-up slab is one that holds slots (not a guard slab, not being reset). */
bool sm_arena_slab_holds_slots(const struct sm_slab *slab);

/* With s's lock held: makes a deferred slot free. */
void sm_arena_release_deferred_locked(struct sm_class_state *s, uint32_t slab, uint32_t slot);

/* With s's lock held: makes the deferred slot whose allocated byte has index `index` free. */
void sm_arena_release_index_locked(struct sm_class_state *s, uint32_t index);

/* With s's lock held: holds the deferred slot whose allocated byte has index `index` in the
 * slot quarantine. When that makes another slot leave the quarantine, returns true with its
 * index in *out_index, still deferred: the caller reuses it or releases it with
 * sm_arena_release_index_locked. */
bool sm_arena_quarantine_locked(struct sm_class_state *s, uint32_t index, uint32_t *out_index);

/* The start of the slot whose allocated byte has index `index` (see allocated_bytes). */
static inline char *sm_arena_index_address(const struct sm_class_state *s, uint32_t index)
{
    return s->slab_memory + ((size_t)index << s->allocated_shift);
}

/* Thread caches (tcache.c). */
/* Reserves the caches' pool. When that is impossible (address-space limit) every thread runs
 * without a cache, on the locked paths: slower, never failing. */
void sm_tcache_init(void);
void sm_tcache_fork_prepare(void);
void sm_tcache_fork_parent(void);
void sm_tcache_fork_child(void);

/* Sets up a state's random stream (number `stream`) and slot quarantine. */
void sm_arena_state_init_policies(struct sm_class_state *s, uint64_t stream);

#endif

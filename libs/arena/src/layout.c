/* The slab and metadata reservations, and the per-(arena, class) headers inside them. */
#include <stdint.h>

#include "arena_internal.h"
#include "starmalloc/hardening.h"
#include "starmalloc/region.h"
#include "starmalloc/sizeclass.h"

struct heap_layout sm_layout;
_Static_assert(sizeof(struct heap_layout) == SM_PAGE_SIZE, "the layout has its page to itself");

enum {
    DEFAULT_REGION_SHIFT = 32, /* 4 GiB per (arena, class) when the kernel allows it */
    MAX_REGION_SHIFT = 36,     /* page numbers in a class region stay below 2^24 */
    MIN_REGION_SHIFT = 18,     /* 256 KiB: still one slab of the largest class */
};
/* Allocated-byte indices (one byte per 16 bytes at most) fit in 32 bits, below the
 * quarantine's empty mark. */
_Static_assert(((uint64_t)1 << (DEFAULT_REGION_SHIFT - 4)) < SM_QUARANTINE_NONE,
               "allocated-byte indices fit below SM_QUARANTINE_NONE");

static size_t page_round(size_t bytes)
{
    return (bytes + SM_PAGE_SIZE - 1) & ~(size_t)(SM_PAGE_SIZE - 1);
}

static size_t headers_bytes(void)
{
    return page_round(sizeof(struct sm_class_state) * SM_ARENAS * SM_NB_CLASSES);
}

static uint32_t slabs_per_region(unsigned cls, size_t region_bytes)
{
    return (uint32_t)(region_bytes / sm_sizeclass_slab_bytes(cls));
}

/* Every slot of class cls starts at a multiple of 2^allocated_shift bytes of its class
 * region (the largest power of two that divides both the slot and the slab size): one
 * allocated byte per 2^allocated_shift bytes then gives each slot its own byte, found from
 * the slot's address with one shift. */
static unsigned allocated_shift_of(unsigned cls)
{
    unsigned slot_shift = (unsigned)__builtin_ctz(sm_sizeclass_geometry(cls)->slot_size);
    unsigned slab_shift = (unsigned)__builtin_ctzll(sm_sizeclass_slab_bytes(cls));
    return slot_shift < slab_shift ? slot_shift : slab_shift;
}

/* A class's struct sm_slab array, then its allocated bytes, each in whole pages. */
static size_t slab_array_bytes(unsigned cls, size_t region_bytes)
{
    return page_round(slabs_per_region(cls, region_bytes) * sizeof(struct sm_slab));
}

static size_t class_meta_bytes(unsigned cls, size_t region_bytes)
{
    size_t slab_bytes = sm_sizeclass_slab_bytes(cls);
    return slab_array_bytes(cls, region_bytes) +
           page_round(slabs_per_region(cls, region_bytes) * slab_bytes >> allocated_shift_of(cls));
}

static size_t meta_bytes_for(size_t region_bytes)
{
    size_t per_arena = 0;
    for (unsigned c = 0; c < SM_NB_CLASSES; c++)
        per_arena += class_meta_bytes(c, region_bytes);
    return headers_bytes() + per_arena * SM_ARENAS;
}

/* The largest class region size worth trying: the default, cut down so that the slab region
 * takes at most a quarter of an RLIMIT_AS limit (leaving room for large objects). */
static unsigned first_region_shift(void)
{
    size_t limit = sm_region_address_space_limit();
    unsigned shift = DEFAULT_REGION_SHIFT;
    while (shift > MIN_REGION_SHIFT && limit != SIZE_MAX &&
           ((size_t)SM_ARENAS * SM_NB_CLASSES << shift) > limit / 4)
        shift--;
    return shift;
}

static bool reserve_both(unsigned shift)
{
    size_t region_bytes = (size_t)1 << shift;
    size_t slab_bytes = region_bytes * SM_ARENAS * SM_NB_CLASSES;
    size_t meta_bytes = meta_bytes_for(region_bytes);
    char *slabs = sm_region_reserve(slab_bytes, SM_PAGE_SIZE);
    if (!slabs)
        return false;
    char *meta = sm_region_reserve(meta_bytes, SM_PAGE_SIZE);
    if (!meta || !sm_region_commit(meta, headers_bytes())) {
        if (meta)
            sm_region_release(meta, meta_bytes);
        sm_region_release(slabs, slab_bytes);
        return false;
    }
    sm_layout.slab_base = slabs;
    sm_layout.slab_bytes = slab_bytes;
    sm_layout.region_bytes = region_bytes;
    sm_layout.region_mask = region_bytes - 1;
    sm_layout.region_shift = shift;
    sm_layout.meta_base = meta;
    sm_layout.meta_bytes = meta_bytes;
    return true;
}

static void init_states(void)
{
    struct sm_class_state *states = (void *)sm_layout.meta_base;
    char *meta = sm_layout.meta_base + headers_bytes();
    for (unsigned a = 0; a < SM_ARENAS; a++) {
        for (unsigned c = 0; c < SM_NB_CLASSES; c++) {
            size_t i = (size_t)a * SM_NB_CLASSES + c;
            struct sm_class_state *s = &states[i];
            s->class_index = c;
            s->cache_bin_offset = (size_t)c * SM_CACHE_BIN_BYTES;
            s->info = *sm_sizeclass_geometry(c);
            s->slab_bytes = sm_sizeclass_slab_bytes(c);
            s->empty_slabs_kept = (uint32_t)(SM_EMPTY_BYTES_KEPT / s->slab_bytes);
            if (s->empty_slabs_kept < SM_EMPTY_SLABS_KEPT_MIN)
                s->empty_slabs_kept = SM_EMPTY_SLABS_KEPT_MIN;
            s->max_slabs = slabs_per_region(c, sm_layout.region_bytes);
            s->slab_memory = sm_layout.slab_base + i * sm_layout.region_bytes;
            s->slabs = (void *)meta;
            s->allocated_bytes = (uint8_t *)meta + slab_array_bytes(c, sm_layout.region_bytes);
            s->allocated_shift = allocated_shift_of(c);
            sm_slab_lists_init(&s->lists);
            sm_arena_state_init_policies(s, i);
            meta += class_meta_bytes(c, sm_layout.region_bytes);
        }
    }
    sm_layout.states = states;
}

/* Makes the layout read-only. Failure (the kernel refusing a protection change) leaves it
 * writable, which is counted and reported like a refused guard. */
static void seal_layout(void)
{
    if (!sm_region_protect_read_only(&sm_layout, SM_PAGE_SIZE))
        sm_harden_note_guard_failure("the allocator's layout could not be made read-only");
}

bool sm_arena_init(void)
{
    _Static_assert(((size_t)SM_ARENAS * SM_NB_CLASSES << MAX_REGION_SHIFT) > 0, "no overflow");
    if (sm_region_kernel_page_size() > SM_PAGE_SIZE)
        return false; /* slabs are laid out in 4 KiB pages */
    sm_harden_init();
    for (unsigned shift = first_region_shift(); shift >= MIN_REGION_SHIFT; shift--) {
        if (reserve_both(shift)) {
            init_states();
            seal_layout();
            sm_random_seal();
            sm_tcache_init();
            return true;
        }
    }
    return false;
}

bool sm_arena_contains(const void *p)
{
    return (uintptr_t)p - (uintptr_t)sm_layout.slab_base < sm_layout.slab_bytes;
}

size_t sm_arena_slab_region_bytes(void)
{
    return sm_layout.slab_bytes;
}

size_t sm_arena_class_region_bytes(void)
{
    return sm_layout.region_bytes;
}

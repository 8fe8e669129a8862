/* starmalloc/sizeclass.h: the size-class table generated from STARMALLOC_SIZE_CLASSES.
 *
 * Class c holds slots of sm_sizeclass_geometry(c)->slot_size bytes (a multiple of 16) in
 * slabs of slab_pages pages; classes ascend by size and class 0 holds 16 bytes. */
#ifndef STARMALLOC_SIZECLASS_H
#define STARMALLOC_SIZECLASS_H

#include <stddef.h>
#include <stdint.h>

#include "starmalloc/config.h"

#ifdef __cplusplus
extern "C" {
#endif

struct sm_sizeclass_info {
    uint32_t slot_size;       /* bytes per slot */
    uint32_t slab_pages;      /* slab size in SM_PAGE_SIZE pages, 1..SM_MAX_SLAB_PAGES */
    uint32_t slots;           /* slots per slab, 1..SM_MAX_SLOTS */
    uint32_t slot_recip;      /* ceil(2^32 / slot_size): see sm_sizeclass_slot_index */
    uint32_t slab_page_recip; /* ceil(2^30 / slab_pages): see sm_sizeclass_slab_index */
};

/* The class that holds `size` bytes: the smallest with slot_size >= size. O(1), one load.
 * size must be at most SM_MAX_SMALL_SIZE (larger sizes are the caller's error). */
unsigned sm_sizeclass_of(size_t size);

/* The smallest class that holds `size` bytes at an address aligned to `align` (a power of
 * two no larger than SM_PAGE_SIZE): its slot size is a multiple of align, so every slot of
 * a page-aligned slab is aligned. Returns SM_NB_CLASSES when no class qualifies. */
unsigned sm_sizeclass_of_aligned(size_t size, size_t align);

/* The geometry of class c (c < SM_NB_CLASSES). */
const struct sm_sizeclass_info *sm_sizeclass_geometry(unsigned c);

/* Slab size of class c in bytes. */
size_t sm_sizeclass_slab_bytes(unsigned c);

/* Slot index of byte offset `offset` within a slab of class c, without division.
 * Exact when offset is a multiple of the slot size (offset / slot_size <= SM_MAX_SLOTS);
 * the caller detects other offsets by checking index * slot_size == offset. */
static inline uint32_t sm_sizeclass_slot_index(const struct sm_sizeclass_info *info,
                                               uint32_t offset)
{
    return (uint32_t)(((uint64_t)offset * info->slot_recip) >> 32);
}

/* Slab index (page_number / slab_pages) for any page_number below 2^24, without division.
 * 64-bit in and out, so that an index into an array needs no zero extension. */
static inline size_t sm_sizeclass_slab_index(const struct sm_sizeclass_info *info,
                                             size_t page_number)
{
    return (size_t)(((uint64_t)page_number * info->slab_page_recip) >> 30);
}

#ifdef __cplusplus
}
#endif

#endif

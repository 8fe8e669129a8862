/* The size-class table and O(1) lookups over it. */
#include "starmalloc/sizeclass.h"

#include "sizeclass_table.inc"

_Static_assert(sizeof(sizeclass_lookup) == SM_MAX_SMALL_SIZE / 16 + 1, "lookup covers every size");

unsigned sm_sizeclass_of(size_t size)
{
    return sizeclass_lookup[(size + 15) >> 4];
}

unsigned sm_sizeclass_of_aligned(size_t size, size_t align)
{
    if (size > SM_MAX_SMALL_SIZE)
        return SM_NB_CLASSES;
    for (unsigned c = sm_sizeclass_of(size); c < SM_NB_CLASSES; c++) {
        if ((sizeclass_table[c].slot_size & (align - 1)) == 0)
            return c;
    }
    return SM_NB_CLASSES;
}

const struct sm_sizeclass_info *sm_sizeclass_geometry(unsigned c)
{
    return &sizeclass_table[c];
}

size_t sm_sizeclass_slab_bytes(unsigned c)
{
    return (size_t)sizeclass_table[c].slab_pages * SM_PAGE_SIZE;
}

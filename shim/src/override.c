/* The overriding C allocation ABI: malloc & co. are StarMalloc's prefixed functions.
 * Kept apart from the allocator so that the prefixed API can be linked without it. */
#include <malloc.h>
#include <stdlib.h>

#include "starmalloc.h"

#define SM_OVERRIDE __attribute__((visibility("default")))

/* C23 functions that this glibc does not declare yet. */
void free_sized(void *p, size_t size);
void free_aligned_sized(void *p, size_t align, size_t size);

SM_OVERRIDE void *malloc(size_t size)
{
    return starmalloc_malloc(size);
}

SM_OVERRIDE void free(void *p)
{
    starmalloc_free(p);
}

SM_OVERRIDE void *calloc(size_t count, size_t size)
{
    return starmalloc_calloc(count, size);
}

SM_OVERRIDE void *realloc(void *p, size_t size)
{
    return starmalloc_realloc(p, size);
}

SM_OVERRIDE void *reallocarray(void *p, size_t count, size_t size)
{
    return starmalloc_reallocarray(p, count, size);
}

SM_OVERRIDE void *aligned_alloc(size_t align, size_t size)
{
    return starmalloc_aligned_alloc(align, size);
}

SM_OVERRIDE int posix_memalign(void **out, size_t align, size_t size)
{
    return starmalloc_posix_memalign(out, align, size);
}

SM_OVERRIDE void *memalign(size_t align, size_t size)
{
    return starmalloc_memalign(align, size);
}

SM_OVERRIDE void *valloc(size_t size)
{
    return starmalloc_valloc(size);
}

SM_OVERRIDE void *pvalloc(size_t size)
{
    return starmalloc_pvalloc(size);
}

SM_OVERRIDE size_t malloc_usable_size(void *p)
{
    return starmalloc_malloc_usable_size(p);
}

SM_OVERRIDE void free_sized(void *p, size_t size)
{
    starmalloc_free_sized(p, size);
}

SM_OVERRIDE void free_aligned_sized(void *p, size_t align, size_t size)
{
    starmalloc_free_aligned_sized(p, align, size);
}

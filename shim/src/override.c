/* The overriding C allocation ABI: malloc & co. are StarMalloc's prefixed functions.
 * Kept apart from the allocator so that the prefixed API can be linked without it. */
#include <limits.h>
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

/* glibc's statistics and trimming functions, answered from StarMalloc's own counters (a
 * program calling them would otherwise read glibc's unused heap). */

SM_OVERRIDE void malloc_stats(void)
{
    starmalloc_stats_print(2); /* glibc prints to stderr too */
}

SM_OVERRIDE int malloc_trim(size_t pad)
{
    return starmalloc_trim(pad);
}

/* The mapping of StarMalloc's statistics onto glibc's fields (docs/usage.md):
 * arena: committed memory that is not a large object; uordblks: bytes in small blocks;
 * fordblks: arena - uordblks; ordblks: slabs holding memory; hblks/hblkhd: large objects and
 * their bytes; usmblks: peak committed memory; smblks, fsmblks, keepcost: 0. */
static void fill_mallinfo(struct starmalloc_stats *st)
{
    starmalloc_stats_get(st);
    if (st->small_bytes_in_use > st->small_committed_bytes) /* parts read at different times */
        st->small_bytes_in_use = st->small_committed_bytes;
}

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
SM_OVERRIDE struct mallinfo2 mallinfo2(void)
{
    struct starmalloc_stats st;
    fill_mallinfo(&st);
    return (struct mallinfo2){
        .arena = st.small_committed_bytes,
        .ordblks = st.small_slabs,
        .hblks = st.large_objects,
        .hblkhd = st.large_bytes,
        .usmblks = st.peak_committed_bytes,
        .uordblks = st.small_bytes_in_use,
        .fordblks = st.small_committed_bytes - st.small_bytes_in_use,
    };
}
#endif

/* The old interface with int fields: values above INT_MAX are clamped. */
static int clamp_int(size_t value)
{
    return value > INT_MAX ? INT_MAX : (int)value;
}

SM_OVERRIDE struct mallinfo mallinfo(void)
{
    struct starmalloc_stats st;
    fill_mallinfo(&st);
    return (struct mallinfo){
        .arena = clamp_int(st.small_committed_bytes),
        .ordblks = clamp_int(st.small_slabs),
        .hblks = clamp_int(st.large_objects),
        .hblkhd = clamp_int(st.large_bytes),
        .usmblks = clamp_int(st.peak_committed_bytes),
        .uordblks = clamp_int(st.small_bytes_in_use),
        .fordblks = clamp_int(st.small_committed_bytes - st.small_bytes_in_use),
    };
}

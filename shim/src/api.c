/* The prefixed C allocation API: C17/C23, POSIX and glibc semantics over the heap. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "heap.h"
#include "starmalloc.h"
#include "starmalloc/arena.h"
#include "starmalloc/config.h"
#include "starmalloc/hardening.h"
#include "starmalloc/sizeclass.h"

static bool is_power_of_two(size_t x)
{
    return x != 0 && (x & (x - 1)) == 0;
}

static __attribute__((noinline)) void *alloc_or_enomem(size_t size, size_t align, bool zero)
{
    int zeroed = 0;
    void *p = sm_heap_alloc(size, align, &zeroed);
    if (!p) {
        errno = ENOMEM;
        return NULL;
    }
    if (zero && !zeroed)
        memset(p, 0, size);
    return p;
}

/* The fast path: a small request served from the calling thread's cache, without a lock or
 * a system call. Everything else (first call of a thread, empty cache, large or aligned
 * requests, errors) takes alloc_or_enomem. */
static inline void *alloc_from_cache(size_t size, int *zeroed)
{
    if (__builtin_expect(size > SM_MAX_SMALL_SIZE - SM_CANARY_BYTES, 0))
        return NULL;
    return sm_arena_cache_pop(sm_sizeclass_of(size + SM_CANARY_BYTES), zeroed);
}

void *starmalloc_malloc(size_t size)
{
    int zeroed;
    void *p = alloc_from_cache(size, &zeroed);
    if (__builtin_expect(p != NULL, 1))
        return p;
    return alloc_or_enomem(size, SM_MIN_ALIGN, false);
}

void starmalloc_free(void *p)
{
    if (__builtin_expect(sm_arena_contains(p), 1)) {
        sm_arena_free_cached(p);
        return;
    }
    if (p)
        sm_heap_free_large(p);
}

void *starmalloc_calloc(size_t count, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    int zeroed;
    void *p = alloc_from_cache(total, &zeroed);
    if (__builtin_expect(p != NULL, 1)) {
        if (!zeroed)
            memset(p, 0, total);
        return p;
    }
    return alloc_or_enomem(total, SM_MIN_ALIGN, true);
}

/* The new block of a realloc that cannot resize in place; a large one that grows from
 * old_size gets room to grow into (a buffer that outgrew the small classes, or a large one
 * the kernel would not move). */
static void *alloc_for_realloc(size_t size, size_t old_size)
{
    if (size <= SM_MAX_SMALL_SIZE - SM_CANARY_BYTES || size <= old_size)
        return starmalloc_malloc(size);
    int zeroed;
    void *q = sm_large_alloc_growing(size, &zeroed);
    if (!q)
        errno = ENOMEM;
    return q;
}

void *starmalloc_realloc(void *p, size_t size)
{
    if (!p)
        return starmalloc_malloc(size);
    if (size == 0) {
        sm_heap_free(p);
        return NULL;
    }
    size_t old_size = sm_heap_usable_size(p, "realloc");
    if (size > PTRDIFF_MAX) {
        errno = ENOMEM;
        return NULL;
    }
    if (sm_heap_resize_in_place(p, old_size, size))
        return p;
    if (size > SM_MAX_SMALL_SIZE && !sm_arena_contains(p)) {
        void *moved = sm_large_grow(p, size);
        if (moved)
            return moved;
    }
    void *q = alloc_for_realloc(size, old_size);
    if (!q)
        return NULL;
    memcpy(q, p, old_size < size ? old_size : size);
    sm_heap_free(p);
    return q;
}

void *starmalloc_reallocarray(void *p, size_t count, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return starmalloc_realloc(p, total);
}

void *starmalloc_aligned_alloc(size_t align, size_t size)
{
    if (!is_power_of_two(align)) {
        errno = EINVAL;
        return NULL;
    }
    return alloc_or_enomem(size, align, false);
}

int starmalloc_posix_memalign(void **out, size_t align, size_t size)
{
    if (!is_power_of_two(align) || align % sizeof(void *) != 0)
        return EINVAL;
    int saved = errno;
    void *p = alloc_or_enomem(size, align, false);
    errno = saved;
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

void *starmalloc_memalign(size_t align, size_t size)
{
    if (align > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    size_t pow2 = SM_MIN_ALIGN;
    while (pow2 < align)
        pow2 <<= 1;
    return alloc_or_enomem(size, pow2, false);
}

void *starmalloc_valloc(size_t size)
{
    return alloc_or_enomem(size, SM_PAGE_SIZE, false);
}

void *starmalloc_pvalloc(size_t size)
{
    if (size > SIZE_MAX - SM_PAGE_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    size_t rounded = (size + SM_PAGE_SIZE - 1) & ~(size_t)(SM_PAGE_SIZE - 1);
    return alloc_or_enomem(rounded ? rounded : SM_PAGE_SIZE, SM_PAGE_SIZE, false);
}

size_t starmalloc_malloc_usable_size(void *p)
{
    return p ? sm_heap_usable_size(p, "malloc_usable_size") : 0;
}

void starmalloc_free_sized(void *p, size_t size)
{
    if (!p)
        return;
    if (size > sm_heap_usable_size(p, "free_sized"))
        sm_fatal("free_sized with a size larger than the block", p);
    sm_heap_free(p);
}

void starmalloc_free_aligned_sized(void *p, size_t align, size_t size)
{
    if (!p)
        return;
    if (!is_power_of_two(align) || ((uintptr_t)p & (align - 1)) != 0)
        sm_fatal("free_aligned_sized with an alignment the block does not have", p);
    starmalloc_free_sized(p, size);
}

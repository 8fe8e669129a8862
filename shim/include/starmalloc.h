/* starmalloc.h: StarMalloc's prefixed API.
 *
 * These functions behave exactly like their unprefixed C/POSIX/glibc namesakes and never
 * override anything, so a program can call StarMalloc explicitly next to another malloc.
 * Linking libstarmalloc (or preloading it) additionally makes malloc, free, ... StarMalloc's.
 * Every allocation is 16-byte aligned; on failure they return NULL with errno = ENOMEM
 * (EINVAL for a bad alignment). Invalid or double frees abort the process with one line
 * "starmalloc: fatal: <what> at <address>" on stderr. */
#ifndef STARMALLOC_H
#define STARMALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define STARMALLOC_API __attribute__((visibility("default")))
#else
#define STARMALLOC_API
#endif

/* size bytes (malloc(0) returns a unique minimal block). */
STARMALLOC_API void *starmalloc_malloc(size_t size);
/* Frees p (NULL is a no-op). Aborts on a pointer StarMalloc did not hand out or already freed. */
STARMALLOC_API void starmalloc_free(void *p);
/* count * size zeroed bytes; NULL + ENOMEM when the product overflows. */
STARMALLOC_API void *starmalloc_calloc(size_t count, size_t size);
/* Resizes p, keeping its content up to the smaller size; NULL p = malloc; size 0 frees p and
 * returns NULL (as glibc). On failure returns NULL + ENOMEM and p stays valid and unchanged.
 * Stays in place when the new size fits p's size class. */
STARMALLOC_API void *starmalloc_realloc(void *p, size_t size);
/* realloc(p, count * size) with overflow checking (NULL + ENOMEM). */
STARMALLOC_API void *starmalloc_reallocarray(void *p, size_t count, size_t size);
/* size bytes aligned to align, which must be a power of two (else NULL + EINVAL). */
STARMALLOC_API void *starmalloc_aligned_alloc(size_t align, size_t size);
/* *out = size bytes aligned to align; returns 0, EINVAL (align not a power of two multiple of
 * sizeof(void *)) or ENOMEM. errno is left unchanged. */
STARMALLOC_API int starmalloc_posix_memalign(void **out, size_t align, size_t size);
/* glibc memalign: an alignment that is not a power of two is rounded up to one. */
STARMALLOC_API void *starmalloc_memalign(size_t align, size_t size);
/* Page-aligned size bytes. */
STARMALLOC_API void *starmalloc_valloc(size_t size);
/* Page-aligned, size rounded up to whole pages (0 gives one page). */
STARMALLOC_API void *starmalloc_pvalloc(size_t size);
/* Bytes usable at p (at least the size requested); 0 for NULL. Aborts on an invalid pointer. */
STARMALLOC_API size_t starmalloc_malloc_usable_size(void *p);
/* C23: frees p, which was allocated with `size` bytes; aborts when size cannot be p's size. */
STARMALLOC_API void starmalloc_free_sized(void *p, size_t size);
/* C23: frees p from aligned_alloc(align, size); aborts when align or size do not fit p. */
STARMALLOC_API void starmalloc_free_aligned_sized(void *p, size_t align, size_t size);

#ifdef __cplusplus
}
#endif

#endif

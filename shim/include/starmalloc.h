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

/* The version of this header; starmalloc_version() gives the library's. Kept equal to the
 * project's VERSION by the build (configuring fails when they differ). */
#define STARMALLOC_VERSION_MAJOR 0
#define STARMALLOC_VERSION_MINOR 1
#define STARMALLOC_VERSION_PATCH 0
/* major * 10000 + minor * 100 + patch, e.g. 100 for 0.1.0. */
#define STARMALLOC_VERSION                                                                         \
    (STARMALLOC_VERSION_MAJOR * 10000 + STARMALLOC_VERSION_MINOR * 100 + STARMALLOC_VERSION_PATCH)

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

/* --- Version and build --------------------------------------------------------------- */

/* The library's STARMALLOC_VERSION (compare with the header's to detect a mismatch). */
STARMALLOC_API int starmalloc_version(void);

/* How the library was built, as a static string, e.g.
 * "StarMalloc 0.1.0 hardening=default arenas=4 size-classes=starmalloc". */
STARMALLOC_API const char *starmalloc_build_info(void);

/* --- Statistics ------------------------------------------------------------------------
 * Gathered on demand from the allocator's own counters, without allocating. Each part is
 * read under its own lock, so while other threads allocate the parts are each exact but not
 * one instant's snapshot. Setting STARMALLOC_STATS=1 in the environment prints the table of
 * starmalloc_stats_print() to stderr when the process exits. */

struct starmalloc_stats {
    size_t small_slots_in_use;    /* small blocks allocated (or held in slot quarantine) */
    size_t small_bytes_in_use;    /* their size-class bytes */
    size_t small_slabs;           /* slabs holding memory: partial, full or empty */
    size_t small_committed_bytes; /* committed memory that is not a large object: slabs,
                                     slabs committed ahead of use, out-of-band metadata */
    size_t large_objects;         /* live large objects (each its own mapping) */
    size_t large_bytes;           /* their usable bytes (whole pages, all committed) */
    size_t committed_bytes;       /* all memory StarMalloc has committed: made readable and
                                     writable, or kept with its pages (inaccessible in the
                                     large quarantine) for reuse */
    size_t peak_committed_bytes;  /* the most committed_bytes has been */
    size_t guard_failures;        /* guard pages or protections the kernel refused */
};

/* Fills *out with the current statistics (zeros before the first allocation). */
STARMALLOC_API void starmalloc_stats_get(struct starmalloc_stats *out);

/* Writes the statistics as a readable table to file descriptor fd (2 for stderr) with
 * write(2): per size class in use its slabs, slots in use, bytes and quarantined slabs;
 * large objects; guard failures; committed and peak committed memory. Never allocates;
 * write errors are ignored. */
STARMALLOC_API void starmalloc_stats_print(int fd);

/* Returns the memory of every empty slab to the kernel (the address space stays reserved
 * and reusable), unmaps the freed large mappings kept for reuse, and decommits the pages of
 * large objects held in the large quarantine (they stay quarantined). Returns 1 when memory was
 * released, else 0 (glibc malloc_trim). pad is accepted for compatibility and ignored: StarMalloc
 * keeps no heap top to pad. */
STARMALLOC_API int starmalloc_trim(size_t pad);

#ifdef __cplusplus
}
#endif

#endif

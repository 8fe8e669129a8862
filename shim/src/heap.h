/* Private to the shim: the composition of the small path (arenas) and the large path. */
#ifndef STARMALLOC_SHIM_HEAP_H
#define STARMALLOC_SHIM_HEAP_H

#include <stdbool.h>
#include <stddef.h>

/* Reserves everything the allocator needs at the first call; false when that is impossible
 * (every allocation then fails with ENOMEM; the next call tries again). */
bool sm_heap_ready(void);

/* size bytes aligned to align (a power of two); *zeroed = 1 when the bytes are known zero.
 * NULL on exhaustion (errno is not set here). */
void *sm_heap_alloc(size_t size, size_t align, int *zeroed);

/* Frees p (not NULL); aborts with "invalid free" or "double free" on a bad pointer. */
void sm_heap_free(void *p);

/* sm_heap_free for a p (not NULL) known to lie outside the slab region. */
void sm_heap_free_large(void *p);

/* Usable bytes at p, aborting with "invalid <operation>" or "<operation> of a freed pointer"
 * when p is not a live allocation. */
size_t sm_heap_usable_size(void *p, const char *operation);

/* Whether p, a live block of `usable` bytes (sm_heap_usable_size), can take size bytes
 * without moving: a slot from the sizes alone, a large object also by shrinking in place
 * (sm_large_resize_in_place). */
bool sm_heap_resize_in_place(void *p, size_t usable, size_t size);

/* Large path (above SM_MAX_SMALL_SIZE or over-aligned): one mapping per object. */
bool sm_large_init(void);
/* *zeroed = 1 when the object's bytes are known to be zero (a fresh or decommitted mapping). */
void *sm_large_alloc(size_t size, size_t align, int *zeroed);
/* sm_large_alloc (page alignment) for a block that realloc is growing: a new mapping gets as
 * much room again after the object, inaccessible address space that later growths take in
 * place (sm_large_grow), as a moved object does; a kept mapping is reused only when it kept
 * its pages. */
void *sm_large_alloc_growing(size_t size, int *zeroed);
/* Unmaps the freed mappings kept for reuse and decommits the pages of quarantined objects;
 * the budget of kept pages then restarts from the bytes of the live large objects. Returns
 * the bytes of memory that gave back. */
size_t sm_large_trim(void);
void sm_large_free(void *p);
/* 0 when p is not a live large object; *freed tells whether p was freed recently. */
size_t sm_large_usable_size(void *p, bool *freed);
/* Whether the large object p of `usable` bytes (its size, sm_large_usable_size) keeps its place for
 * size bytes (above SM_MAX_SMALL_SIZE, at most `usable`): as it is while size uses half of it at
 * least, else shrunk in place, its pages past the new end given back to the kernel and inaccessible
 * (false when the kernel refuses: the caller moves it). */
bool sm_large_resize_in_place(void *p, size_t usable, size_t size);
/* Grows the large object p to size bytes by moving its pages (no copy) to a new mapping
 * with fresh guards; returns its new address, or NULL (p unchanged) when p is not a large
 * object, size is not larger, or the kernel refuses. */
void *sm_large_grow(void *p, size_t size);
void sm_large_fork_prepare(void);
void sm_large_fork_parent(void);
void sm_large_fork_child(void);

#endif

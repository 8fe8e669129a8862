/* tests/common/abi_select.h: which allocation API a test calls.
 *
 * Built with -DSM_ABI_PREFIXED, ABI(malloc) is starmalloc_malloc (the prefixed API, which
 * never overrides anything); without, it is plain malloc, which libstarmalloc.so overrides.
 * One test source then checks both ways of calling the allocator. */
#ifndef STARMALLOC_TESTS_ABI_SELECT_H
#define STARMALLOC_TESTS_ABI_SELECT_H

#include <stddef.h>

#include <starmalloc.h>

#ifdef SM_ABI_PREFIXED
#define ABI(name) starmalloc_##name
#else
#define ABI(name) name
/* C23 functions that this glibc does not declare yet (libstarmalloc defines them). */
void free_sized(void *p, size_t size);
void free_aligned_sized(void *p, size_t align, size_t size);
#endif

#endif

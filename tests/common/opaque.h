/* tests/common/opaque.h: values the optimiser cannot see through.
 *
 * Tests misuse pointers on purpose (double frees, frees of interior pointers) and pass
 * sizes the compiler would reject or fold (malloc(SIZE_MAX) != NULL). A value passed
 * through these is, to the compiler, an unknown one: no warning, no folded check, and the
 * call really reaches the allocator. */
#ifndef STARMALLOC_TESTS_OPAQUE_H
#define STARMALLOC_TESTS_OPAQUE_H

#include <stddef.h>

static inline void *opaque(void *p)
{
    __asm__ volatile("" : "+r"(p));
    return p;
}

static inline size_t opaque_size(size_t n)
{
    __asm__ volatile("" : "+r"(n));
    return n;
}

#endif

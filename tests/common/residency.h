/* tests/common/residency.h: how many pages of a range are resident.
 *
 * Header-only test helper (static inline function); no allocation. */
#ifndef STARMALLOC_TESTS_RESIDENCY_H
#define STARMALLOC_TESTS_RESIDENCY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

/* Kernel pages of [p, p + bytes) (p page-aligned) that are resident, by mincore, which answers
 * for inaccessible (PROT_NONE) ranges too. SIZE_MAX when mincore fails (e.g. part of the range
 * is not mapped). */
static inline size_t resident_pages(const void *p, size_t bytes)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char vec[1024];
    size_t resident = 0;
    for (size_t done = 0; done + page <= bytes;) {
        size_t pages = (bytes - done) / page;
        pages = pages < sizeof vec ? pages : sizeof vec;
        if (mincore((void *)((uintptr_t)p + done), pages * page, vec) != 0)
            return SIZE_MAX;
        for (size_t i = 0; i < pages; i++)
            resident += vec[i] & 1u;
        done += pages * page;
    }
    return resident;
}

#endif

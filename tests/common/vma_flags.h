/* tests/common/vma_flags.h: what the kernel says about the mapping that holds an address.
 *
 * Header-only test helper (static inline functions): reads /proc/self/smaps with stdio, so it may
 * allocate; call it from test code, never from inside the allocator. */
#ifndef STARMALLOC_TESTS_VMA_FLAGS_H
#define STARMALLOC_TESTS_VMA_FLAGS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Whether the mapping that holds `addr` carries the two-letter VmFlags entry `flag` (e.g.
 * "hg": MADV_HUGEPAGE given). False when no mapping holds addr or smaps cannot be read. */
static inline bool vma_has_flag(const void *addr, const char *flag)
{
    FILE *smaps = fopen("/proc/self/smaps", "r");
    if (!smaps)
        return false;
    char line[512];
    bool inside = false, found = false;
    uintptr_t a = (uintptr_t)addr;
    while (!found && fgets(line, sizeof line, smaps)) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2) {
            inside = start <= a && a < end;
            continue;
        }
        if (!inside || strncmp(line, "VmFlags:", 8) != 0)
            continue;
        for (char *word = strtok(line + 8, " \n"); word; word = strtok(NULL, " \n"))
            if (strcmp(word, flag) == 0)
                found = true;
        inside = false;
    }
    fclose(smaps);
    return found;
}

/* Whether this kernel has transparent huge pages (so that MADV_HUGEPAGE is accepted). */
static inline bool kernel_has_thp(void)
{
    return access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) == 0;
}

#endif

/* tests/common/vma_flags.h: what the kernel says about the mapping that holds an address.
 *
 * Header-only test helper (static inline functions): reads /proc/self/smaps with stdio, so it may
 * allocate; call it from test code, never from inside the allocator. */
#ifndef STARMALLOC_TESTS_VMA_FLAGS_H
#define STARMALLOC_TESTS_VMA_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
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

/* How many mappings (lines of /proc/self/maps) overlap [addr, addr + bytes); -1 when the
 * file cannot be read. */
static inline int mappings_overlapping(const void *addr, size_t bytes)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps)
        return -1;
    char line[512];
    int count = 0;
    uintptr_t from = (uintptr_t)addr, to = from + bytes;
    while (fgets(line, sizeof line, maps)) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && start < to && from < end)
            count++;
    }
    fclose(maps);
    return count;
}

/* Whether the running kernel is at least major.minor (from /proc/sys/kernel/osrelease);
 * false when that cannot be read. */
static inline bool kernel_at_least(int major, int minor)
{
    FILE *f = fopen("/proc/sys/kernel/osrelease", "r");
    int have_major = 0, have_minor = 0;
    if (!f)
        return false;
    int n = fscanf(f, "%d.%d", &have_major, &have_minor);
    fclose(f);
    return n == 2 && (have_major > major || (have_major == major && have_minor >= minor));
}

/* vm.overcommit_memory (0, 1 or 2), or -1 when it cannot be read. */
static inline int overcommit_mode(void)
{
    FILE *f = fopen("/proc/sys/vm/overcommit_memory", "r");
    int mode = -1;
    if (!f)
        return -1;
    if (fscanf(f, "%d", &mode) != 1)
        mode = -1;
    fclose(f);
    return mode;
}

/* Whether StarMalloc's region layer should find guard markers usable here: built with them,
 * kernel 6.13 or later, not under strict overcommit (see sm_region_guard_markers). */
static inline bool guard_markers_expected(int built_with_markers)
{
    return built_with_markers && kernel_at_least(6, 13) && overcommit_mode() != 2 &&
           overcommit_mode() != -1;
}

/* Whether this kernel has transparent huge pages (so that MADV_HUGEPAGE is accepted). */
static inline bool kernel_has_thp(void)
{
    return access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) == 0;
}

/* Whether MADV_HUGEPAGE can give this process huge pages (see sm_region_huge_pages_enabled):
 * the kernel has THP, its mode is not `never`, and THP is not disabled for the process. */
static inline bool thp_usable(void)
{
    char mode[64] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f)
        return false;
    bool got_mode = fgets(mode, sizeof mode, f) != NULL;
    fclose(f);
    return got_mode && strstr(mode, "[never]") == NULL &&
           prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) != 1;
}

#endif

/* Private to the shim: what the statistics (stats.c) need from the rest of the shim, and what
 * the rest of the shim reports to them. */
#ifndef STARMALLOC_SHIM_STATS_H
#define STARMALLOC_SHIM_STATS_H

#include <stddef.h>
#include <stdint.h>

/* A guard page or protection change the kernel refused (e.g. vm.max_map_count reached):
 * counted in the statistics ("guard failures") and reported once on stderr, naming `what`.
 * One counter for the whole process: it forwards to sm_harden_note_guard_failure, which the
 * component libraries call directly. Never allocates. */
void sm_stats_note_guard_failure(const char *what);

/* Guard failures so far. */
uint64_t sm_stats_guard_failures(void);

/* Live large objects and their usable bytes, counted by walking the large-object map under
 * the large lock (large.c). Zero before initialisation. */
void sm_large_stats(size_t *objects, size_t *bytes);

#endif

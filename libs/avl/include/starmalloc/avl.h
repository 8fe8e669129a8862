/* starmalloc/avl.h: an AVL map from address to large-object record.
 *
 * The map is a plain data structure: it takes no lock (the large path's lock guards it)
 * and never allocates from the heap. Its nodes come from a pool of memory that the caller
 * hands in with sm_avl_pool_add(); freed nodes are recycled. Height stays within
 * 1.44 log2(n + 2), so every operation is O(log n) with recursion depth below 64. */
#ifndef STARMALLOC_AVL_H
#define STARMALLOC_AVL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One large object: the user block [addr, addr + size) inside the mapping
 * [map_addr, map_addr + map_size) (which also holds guard pages and alignment slack). */
struct sm_avl_entry {
    uintptr_t addr; /* the key: the address handed to the user */
    size_t size;    /* usable bytes from addr */
    uintptr_t map_addr;
    size_t map_size;
    unsigned flags; /* the user's: stored and returned with the entry, never read by the map */
};

struct sm_avl_node;

struct sm_avl_map {
    struct sm_avl_node *root;
    struct sm_avl_node *free_nodes; /* recycled nodes, linked through their left child */
    char *pool_next;                /* never-used pool memory: [pool_next, pool_end) */
    char *pool_end;
    size_t count;
};

enum sm_avl_status {
    SM_AVL_OK = 0,
    SM_AVL_EXISTS,    /* an entry with this key is already present; the map is unchanged */
    SM_AVL_NO_MEMORY, /* the pool is exhausted: add memory with sm_avl_pool_add and retry */
};

/* Bytes one node takes from the pool (a multiple of 16). */
size_t sm_avl_node_bytes(void);

/* Makes *map empty with an empty pool. */
void sm_avl_init(struct sm_avl_map *map);

/* Gives the map [memory, memory + bytes) (readable, writable, 16-byte aligned) for nodes.
 * Memory left over from an earlier call is abandoned. The map never returns pool memory. */
void sm_avl_pool_add(struct sm_avl_map *map, void *memory, size_t bytes);

/* Inserts a copy of *entry keyed by entry->addr. */
enum sm_avl_status sm_avl_insert(struct sm_avl_map *map, const struct sm_avl_entry *entry);

/* The entry whose key is exactly addr, or NULL. The caller may change every field but addr. */
struct sm_avl_entry *sm_avl_find(struct sm_avl_map *map, uintptr_t addr);

/* The entry whose block [addr, addr + size) contains addr, or NULL (entries do not overlap). */
struct sm_avl_entry *sm_avl_find_containing(struct sm_avl_map *map, uintptr_t addr);

/* Removes the entry keyed addr, copying it to *out when out is not NULL.
 * Returns false, leaving the map unchanged, when there is no such entry. */
bool sm_avl_remove(struct sm_avl_map *map, uintptr_t addr, struct sm_avl_entry *out);

/* Number of entries. */
size_t sm_avl_count(const struct sm_avl_map *map);

/* Calls fn(entry, ctx) for every entry in ascending key order; fn must not change the map. */
void sm_avl_foreach(const struct sm_avl_map *map, void (*fn)(const struct sm_avl_entry *, void *),
                    void *ctx);

/* Checks every invariant (key order, stored heights, balance factors within +-1, count).
 * Returns true when the map is well formed. O(n); for tests and debug builds. */
bool sm_avl_check(const struct sm_avl_map *map);

#ifdef __cplusplus
}
#endif

#endif

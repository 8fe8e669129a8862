/* The large path: one mapping per object, recorded in the AVL map under its own lock. */
#include <stdint.h>

#include "heap.h"
#include "starmalloc/arena.h"
#include "starmalloc/avl.h"
#include "starmalloc/hardening.h"
#include "starmalloc/region.h"

enum {
    NODE_POOL_BYTES_MAX = 64 << 20, /* address space for map nodes: ~1M live large objects */
    NODE_POOL_BYTES_MIN = 256 << 10,
    NODE_POOL_CHUNK = 64 << 10, /* committed at a time */
    FREED_RING = 64,            /* recently freed addresses, to name double frees */
};

static struct {
    struct sm_lock lock; /* guards everything below */
    struct sm_avl_map map;
    char *pool;
    size_t pool_bytes;
    size_t pool_committed;
    uintptr_t freed[FREED_RING];
    unsigned freed_next;
} large;

static size_t page_round(size_t bytes)
{
    return (bytes + SM_PAGE_SIZE - 1) & ~(size_t)(SM_PAGE_SIZE - 1);
}

bool sm_large_init(void)
{
    size_t bytes = NODE_POOL_BYTES_MAX;
    large.pool = sm_region_reserve_shrinking(&bytes, NODE_POOL_BYTES_MIN, SM_PAGE_SIZE);
    if (!large.pool)
        return false;
    large.pool_bytes = bytes;
    sm_avl_init(&large.map);
    return true;
}

static bool grow_node_pool(void)
{
    if (large.pool_committed + NODE_POOL_CHUNK > large.pool_bytes)
        return false;
    char *chunk = large.pool + large.pool_committed;
    if (!sm_region_commit(chunk, NODE_POOL_CHUNK))
        return false;
    large.pool_committed += NODE_POOL_CHUNK;
    sm_avl_pool_add(&large.map, chunk, NODE_POOL_CHUNK);
    return true;
}

static bool record_insert(const struct sm_avl_entry *entry)
{
    sm_lock_acquire(&large.lock);
    enum sm_avl_status status = sm_avl_insert(&large.map, entry);
    if (status == SM_AVL_NO_MEMORY && grow_node_pool())
        status = sm_avl_insert(&large.map, entry);
    sm_lock_release(&large.lock);
    return status == SM_AVL_OK;
}

/* Maps usable bytes at an address aligned to align, with `guard` inaccessible bytes on
 * each side; fills *entry. Returns false when the kernel refuses. */
static bool map_object(size_t usable, size_t align, size_t guard, struct sm_avl_entry *entry)
{
    if (guard == 0 && align <= SM_PAGE_SIZE) {
        char *p = sm_region_map(usable, SM_PAGE_SIZE);
        if (!p)
            return false;
        *entry = (struct sm_avl_entry){(uintptr_t)p, usable, (uintptr_t)p, usable};
        return true;
    }
    size_t slack = align > SM_PAGE_SIZE ? align - SM_PAGE_SIZE : 0;
    if (usable > SIZE_MAX - 2 * guard - slack)
        return false;
    size_t total = usable + 2 * guard + slack;
    char *base = sm_region_reserve(total, SM_PAGE_SIZE);
    if (!base)
        return false;
    uintptr_t user = ((uintptr_t)base + guard + align - 1) & ~(uintptr_t)(align - 1);
    uintptr_t map_start = user - guard;
    uintptr_t map_end = user + usable + guard;
    if (map_start > (uintptr_t)base)
        sm_region_release(base, map_start - (uintptr_t)base);
    if ((uintptr_t)base + total > map_end)
        sm_region_release((void *)map_end, (uintptr_t)base + total - map_end);
    if (!sm_region_commit((void *)user, usable)) {
        sm_region_release((void *)map_start, map_end - map_start);
        return false;
    }
    *entry = (struct sm_avl_entry){user, usable, map_start, map_end - map_start};
    return true;
}

void *sm_large_alloc(size_t size, size_t align)
{
    if (size == 0)
        size = 1;
    if (size > SIZE_MAX - SM_PAGE_SIZE)
        return NULL;
    size_t guard = SM_LARGE_GUARDS ? SM_PAGE_SIZE : 0;
    struct sm_avl_entry entry;
    if (!map_object(page_round(size), align, guard, &entry))
        return NULL;
    if (!record_insert(&entry)) {
        sm_region_release((void *)entry.map_addr, entry.map_size);
        return NULL;
    }
    return (void *)entry.addr;
}

static bool recently_freed(uintptr_t addr)
{
    for (unsigned i = 0; i < FREED_RING; i++)
        if (large.freed[i] == addr)
            return true;
    return false;
}

void sm_large_free(void *p)
{
    struct sm_avl_entry entry;
    sm_lock_acquire(&large.lock);
    if (!sm_avl_remove(&large.map, (uintptr_t)p, &entry)) {
        bool freed = recently_freed((uintptr_t)p);
        sm_lock_release(&large.lock);
        sm_fatal(freed ? "double free" : "invalid free", p);
    }
    large.freed[large.freed_next++ % FREED_RING] = entry.addr;
    sm_lock_release(&large.lock);
    /* Still mapped until here, so no other object can have been given this address. */
    sm_region_release((void *)entry.map_addr, entry.map_size);
}

size_t sm_large_usable_size(void *p, bool *freed)
{
    sm_lock_acquire(&large.lock);
    struct sm_avl_entry *entry = sm_avl_find(&large.map, (uintptr_t)p);
    size_t usable = entry ? entry->size : 0;
    *freed = !entry && recently_freed((uintptr_t)p);
    sm_lock_release(&large.lock);
    return usable;
}

bool sm_large_resize_in_place(void *p, size_t size)
{
    /* Only when the page count does not change: shrinking the mapping would move a guard. */
    if (size <= SM_MAX_SMALL_SIZE || size > SIZE_MAX - SM_PAGE_SIZE)
        return false;
    sm_lock_acquire(&large.lock);
    struct sm_avl_entry *entry = sm_avl_find(&large.map, (uintptr_t)p);
    bool fits = entry && page_round(size) == entry->size;
    sm_lock_release(&large.lock);
    return fits;
}

void sm_large_fork_prepare(void)
{
    sm_lock_acquire(&large.lock);
}

void sm_large_fork_parent(void)
{
    sm_lock_release(&large.lock);
}

void sm_large_fork_child(void)
{
    atomic_store_explicit(&large.lock.state, 0, memory_order_relaxed);
}

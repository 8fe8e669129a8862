/* The large path: one mapping per object, recorded in the AVL map under its own lock. */
#include <stdint.h>

#include "heap.h"
#include "starmalloc/arena.h"
#include "starmalloc/avl.h"
#include "starmalloc/hardening.h"
#include "starmalloc/region.h"
#include "stats.h"

enum {
    NODE_POOL_BYTES_MAX = 64 << 20, /* address space for map nodes: ~1M live large objects */
    NODE_POOL_BYTES_MIN = 256 << 10,
    NODE_POOL_CHUNK = 64 << 10, /* committed at a time */
    FREED_RING = 64,            /* recently freed addresses, to name double frees */
    QUARANTINE_ENTRIES = SM_LARGE_QUARANTINE ? SM_LARGE_QUARANTINE : 1,
    RANDOM_GUARD_PAGES_MAX = 16, /* SM_LARGE_GUARDS == 2: 1..16 pages on each side */
    RETAINED_ENTRIES = 32,       /* freed mappings kept for reuse */
};
/* Address space that quarantined large objects may hold (their pages count in the budget
 * below, not here): at most
 * this, and at most an eighth of an RLIMIT_AS limit. */
static const size_t QUARANTINE_BYTES_MAX = (size_t)256 << 20;

/* A freed large object ([addr, addr + size) with its guards around it) held in the
 * quarantine or kept for reuse, until it is unmapped or reused. */
struct held_object {
    uintptr_t addr;
    size_t size;
    uintptr_t map_addr;
    size_t map_size;
    bool committed; /* its small pages are kept (kept_bytes), PROT_NONE with large quarantine;
                     * else decommitted, PROT_NONE */
};

/* Page faults dominate the reuse of a decommitted object: 2.5 to 3 us per 4 KiB page on the
 * sixteenth session's machine (9 to 10 on the seventh's VM), far more than zeroing the page. So
 * a freed object keeps its small pages while a byte budget allows (reserve_committed_locked):
 * - without large quarantine (presets none, light), as they are, content and all, in preset
 *   none ("dirty"); zeroed and accessible in light, which does not promise that a dangling
 *   access traps (nor does it for slots);
 * - with large quarantine (default, paranoid), zeroed and PROT_NONE: a dangling access traps
 *   while the object is held, as it does when decommitted, and a reuse after the quarantine
 *   makes them read-write again (mprotect, about 0.2 us per page here) instead of faulting
 *   or populating them afresh. On a VM with shadow page tables (the seventh session's) a page
 *   whose protection changed takes a hidden fault of about 4 us at its next touch, as much as
 *   populating it: there this saves no time and costs the budget's RSS.
 * Objects over the budget are decommitted (PROT_NONE, their pages back to the kernel), and
 * those the program is expected to write whole get their pages back in one call when reused
 * (populate_small_pages), as do new objects.
 * Only small pages are kept or populated: the part of an object on transparent huge pages
 * (huge_bytes) goes back to the kernel at once and faults in again zeroed, in one fault per
 * 2 MiB: keeping huge pages too would fill the budget with a few objects' worth of RSS
 * (docs/performance.md has the measure); except with dirty keeping, which has nothing to
 * zero and keeps the object whole, its huge pages too (huge_bytes is 0 there). */
enum { KEEP_DIRTY = !SM_ZERO_ON_FREE && !SM_LARGE_QUARANTINE };
static const size_t COMMITTED_HELD_BYTES_MAX = (size_t)128 << 20;
static const size_t COMMITTED_OBJECT_BYTES_MAX = (size_t)16 << 20;
static const size_t BIG_REQUEST_BYTES = (size_t)1 << 30; /* see beyond_memory */

static struct {
    struct sm_lock lock; /* guards everything below */
    struct sm_avl_map map;
    char *pool;
    size_t pool_bytes;
    size_t pool_committed;
    uintptr_t freed[FREED_RING];
    unsigned freed_next;
    struct held_object held[QUARANTINE_ENTRIES]; /* FIFO: oldest at held_head */
    unsigned held_head;
    unsigned held_count;
    size_t held_bytes;
    size_t held_bytes_max;
    /* Mappings of freed objects that left the quarantine (or, without it, were freed), kept
     * (with their pages or decommitted) for reuse by a later object of about their size: a
     * reuse costs one mprotect instead of a new mapping. Oldest first; bounded like the
     * quarantine. */
    struct held_object retained[RETAINED_ENTRIES];
    unsigned retained_count;
    size_t retained_bytes;
    size_t committed_held_bytes; /* pages kept by held and retained objects */
    size_t live_bytes;           /* usable bytes of the live objects (in the map) */
    size_t live_peak_bytes;      /* the most live_bytes has been since the last trim */
    struct sm_random rng;        /* random guard sizes */
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
    size_t limit = sm_region_address_space_limit();
    large.held_bytes_max = limit / 8 < QUARANTINE_BYTES_MAX ? limit / 8 : QUARANTINE_BYTES_MAX;
    sm_random_init(&large.rng, UINT64_C(1) << 40);
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

/* The usable bytes of a live object went from `from` to `to`: 0 for one that is new or
 * freed (the large lock is held). */
static void note_live_locked(size_t from, size_t to)
{
    large.live_bytes = large.live_bytes - from + to;
    if (large.live_bytes > large.live_peak_bytes)
        large.live_peak_bytes = large.live_bytes;
}

static bool record_insert(const struct sm_avl_entry *entry)
{
    sm_lock_acquire(&large.lock);
    enum sm_avl_status status = sm_avl_insert(&large.map, entry);
    if (status == SM_AVL_NO_MEMORY && grow_node_pool())
        status = sm_avl_insert(&large.map, entry);
    if (status == SM_AVL_OK)
        note_live_locked(0, entry->size);
    sm_lock_release(&large.lock);
    return status == SM_AVL_OK;
}

/* Guard bytes for one side of a new object: none, one page, or 1..16 random pages. */
static size_t guard_bytes(void)
{
    if (SM_LARGE_GUARDS != 2)
        return SM_LARGE_GUARDS ? SM_PAGE_SIZE : 0;
    sm_lock_acquire(&large.lock);
    size_t pages = 1 + sm_random_below(&large.rng, RANDOM_GUARD_PAGES_MAX);
    sm_lock_release(&large.lock);
    return pages * SM_PAGE_SIZE;
}

/* The most guard bytes an object has after it (guard_bytes). */
static size_t guard_bytes_max(void)
{
    if (SM_LARGE_GUARDS != 2)
        return SM_LARGE_GUARDS ? SM_PAGE_SIZE : 0;
    return RANDOM_GUARD_PAGES_MAX * SM_PAGE_SIZE;
}

/* A freed object keeps the guard after it but not the room it had to grow into
 * (sm_large_grow): that address space would count against the quarantine's bound. */
static void release_growth_room(struct sm_avl_entry *entry)
{
    uintptr_t keep_end = entry->addr + entry->size + guard_bytes_max();
    uintptr_t map_end = entry->map_addr + entry->map_size;
    if (map_end <= keep_end)
        return;
    sm_region_release((void *)keep_end, map_end - keep_end);
    entry->map_size = keep_end - entry->map_addr;
}

/* Large objects of at least a huge page start on a huge-page boundary and ask for
 * transparent huge pages: one fault then maps 2 MiB instead of 4 KiB (about a seventh of the
 * time per byte on the reference machine, docs/performance.md), which is most of the cost of
 * a large object that is written whole. */
static size_t object_align(size_t usable, size_t align)
{
    if (SM_LARGE_HUGE_PAGES && usable >= SM_REGION_HUGE_PAGE_SIZE &&
        align < SM_REGION_HUGE_PAGE_SIZE)
        return SM_REGION_HUGE_PAGE_SIZE;
    return align;
}

/* The bytes at the start of the object [addr, addr + size) that transparent huge pages
 * back: its whole 2 MiB pages when it starts on one and was advised (object_align,
 * advise_object); 0 when there are none, or for dirty keeping (nothing to zero there). */
static size_t huge_bytes(uintptr_t addr, size_t size)
{
    if (!SM_LARGE_HUGE_PAGES || KEEP_DIRTY || size < SM_REGION_HUGE_PAGE_SIZE ||
        addr % SM_REGION_HUGE_PAGE_SIZE != 0 || !sm_region_huge_pages_enabled())
        return 0;
    return size & ~(size_t)(SM_REGION_HUGE_PAGE_SIZE - 1);
}

/* The bytes of the freed object [addr, addr + size) that keep their pages when it is kept:
 * its small pages. */
static size_t kept_bytes(uintptr_t addr, size_t size)
{
    return size - huge_bytes(addr, size);
}

/* The committed bytes of an object, [addr, addr + bytes), are about to be used. */
static void advise_object(uintptr_t addr, size_t bytes)
{
    if (SM_LARGE_HUGE_PAGES && bytes >= SM_REGION_HUGE_PAGE_SIZE && sm_region_huge_pages_enabled())
        sm_region_advise_huge((void *)addr, bytes);
}

/* Reserves usable bytes at an address aligned to align, with `before` and `after` bytes
 * around them, all PROT_NONE; fills *entry. Returns false when the kernel refuses. */
static bool reserve_guarded(size_t usable, size_t align, size_t before, size_t after,
                            struct sm_avl_entry *entry)
{
    size_t slack = align > SM_PAGE_SIZE ? align - SM_PAGE_SIZE : 0;
    if (usable > SIZE_MAX - before - after - slack)
        return false;
    size_t total = usable + before + after + slack;
    char *base = sm_region_reserve(total, SM_PAGE_SIZE);
    if (!base)
        return false;
    uintptr_t user = ((uintptr_t)base + before + align - 1) & ~(uintptr_t)(align - 1);
    uintptr_t map_start = user - before;
    uintptr_t map_end = user + usable + after;
    if (map_start > (uintptr_t)base)
        sm_region_release(base, map_start - (uintptr_t)base);
    if ((uintptr_t)base + total > map_end)
        sm_region_release((void *)map_end, (uintptr_t)base + total - map_end);
    *entry = (struct sm_avl_entry){user, usable, map_start, map_end - map_start, 0};
    return true;
}

/* Maps usable bytes at an address aligned to align, with `before` and `after` inaccessible
 * bytes around them; fills *entry. Returns false when the kernel refuses. */
static bool map_guarded(size_t usable, size_t align, size_t before, size_t after,
                        struct sm_avl_entry *entry)
{
    if (!reserve_guarded(usable, align, before, after, entry))
        return false;
    if (!sm_region_commit((void *)entry->addr, usable)) {
        sm_region_release((void *)entry->map_addr, entry->map_size);
        return false;
    }
    return true;
}

static bool map_plain(size_t usable, size_t align, struct sm_avl_entry *entry)
{
    char *p = sm_region_map(usable, align);
    if (!p)
        return false;
    *entry = (struct sm_avl_entry){(uintptr_t)p, usable, (uintptr_t)p, usable, 0};
    return true;
}

/* The room an object that grows gets after its guard (grow_in_place): as much again,
 * inaccessible address space only; none for a size whose double does not fit a size_t. */
static size_t growth_room(size_t usable)
{
    return usable <= SIZE_MAX / 4 ? usable : 0;
}

/* Maps an object with the configured guards and, after the guard, `room` bytes of
 * inaccessible address space to grow into (grow_in_place), which are left out when the
 * kernel refuses them. When the kernel refuses the guarded layout (vm.max_map_count: guards
 * split mappings) but maps it without guards, the object goes unguarded, which is counted and
 * reported once. */
static bool map_object_unadvised(size_t usable, size_t align, size_t room,
                                 struct sm_avl_entry *entry)
{
    size_t before = guard_bytes();
    size_t after = guard_bytes(); /* both 0 without guards */
    if (room != 0 && map_guarded(usable, align, before, after + room, entry))
        return true;
    if (!SM_LARGE_GUARDS)
        return map_plain(usable, align, entry);
    if (map_guarded(usable, align, before, after, entry))
        return true;
    if (!map_plain(usable, align, entry))
        return false;
    sm_harden_note_guard_failure("a large object was mapped without guard pages: the kernel "
                                 "refused them (vm.max_map_count reached?)");
    return true;
}

/* Maps an object with `room` to grow into (map_object_unadvised), huge-page aligned and
 * advised when it is large enough (object_align). */
static bool map_object(size_t usable, size_t align, size_t room, struct sm_avl_entry *entry)
{
    if (!map_object_unadvised(usable, object_align(usable, align), room, entry))
        return false;
    advise_object(entry->addr, usable);
    return true;
}

static void release_mapping(const struct held_object *object, size_t committed)
{
    sm_region_unmap((void *)object->map_addr, object->map_size, committed);
}

enum { KEPT_PER_LIVE = KEEP_DIRTY ? 4 : 1 }; /* see reserve_committed_locked */

/* Kept mappings that a free took out of the pool to make room in the budget for its own
 * pages (reserve_committed_locked). */
struct evicted_mappings {
    struct held_object objects[RETAINED_ENTRIES];
    unsigned count;
};

static struct held_object take_retained(unsigned i);

/* The pages that kept mappings hold and a free may take back for its own (the large lock is
 * held): those of every kept mapping without large quarantine, none with it. */
static size_t evictable_bytes_locked(void)
{
    size_t bytes = 0;
    for (unsigned i = 0; SM_LARGE_QUARANTINE == 0 && i < large.retained_count; i++)
        if (large.retained[i].committed)
            bytes += kept_bytes(large.retained[i].addr, large.retained[i].size);
    return bytes;
}

/* With the large lock held: reserves budget for an object being freed to keep `bytes` bytes
 * of pages; false when it may not. Kept pages stay under COMMITTED_HELD_BYTES_MAX and under
 * KEPT_PER_LIVE times the most bytes the program has had in live objects at once since the
 * last trim (live_peak_bytes, which counts the object being freed): a program with few large
 * objects does not get the whole budget resident (`realloc`, whose 64 buffers reach 256 KiB
 * at most: 23 MB of peak RSS in light, instead of 27), and one that frees all its buffers
 * and allocates them again keeps them all. Without large quarantine the oldest kept
 * mappings with pages give way to the object being freed, the likeliest to be reused next
 * (they go into *evicted, for the caller to unmap once the lock is released): a program
 * whose sizes moved on (256 KiB buffers, then 1 MiB ones) would else keep the old ones'
 * pages and fault the new ones' in at every reuse. With large quarantine the freed object
 * waits out the quarantine while a kept mapping may be reused at once, so nothing gives way
 * (and the objects in the quarantine hold the budget: when one buffer is freed and
 * allocated in a loop, one in 33 of them keeps its pages in preset default). Dirty keeping
 * (preset none) may keep four times the bytes: it keeps whole objects, huge pages too, and a
 * reuse saves all their faults, zeroing included (`large`: 0.8 s with one time the live
 * bytes, 0.2 s with four, as with the fixed budget alone). */
static bool reserve_committed_locked(size_t bytes, struct evicted_mappings *evicted)
{
    size_t budget = COMMITTED_HELD_BYTES_MAX;
    if (large.live_peak_bytes < budget / KEPT_PER_LIVE)
        budget = large.live_peak_bytes * KEPT_PER_LIVE;
    if (bytes > COMMITTED_OBJECT_BYTES_MAX || bytes > budget)
        return false;
    size_t room = budget - bytes; /* for the pages kept already */
    if (large.committed_held_bytes > room &&
        large.committed_held_bytes - evictable_bytes_locked() > room)
        return false;
    for (unsigned i = 0; i < large.retained_count && large.committed_held_bytes > room;) {
        if (!large.retained[i].committed) {
            i++;
            continue;
        }
        struct held_object old = take_retained(i);
        large.committed_held_bytes -= kept_bytes(old.addr, old.size);
        evicted->objects[evicted->count++] = old;
    }
    large.committed_held_bytes += bytes;
    return true;
}

static void unreserve_committed(size_t bytes)
{
    sm_lock_acquire(&large.lock);
    large.committed_held_bytes -= bytes;
    sm_lock_release(&large.lock);
}

/* Unmaps a held or kept object for good. */
static void drop_held(const struct held_object *object)
{
    release_mapping(object, object->committed ? kept_bytes(object->addr, object->size) : 0);
    if (object->committed)
        unreserve_committed(kept_bytes(object->addr, object->size));
}

/* Takes the oldest quarantined object out (the large lock is held). */
static struct held_object pop_oldest_held(void)
{
    struct held_object oldest = large.held[large.held_head];
    large.held_head = (large.held_head + 1) % QUARANTINE_ENTRIES;
    large.held_count--;
    large.held_bytes -= oldest.map_size;
    return oldest;
}

/* Unmaps the oldest quarantined objects until at most `entries` entries and `bytes` bytes
 * of address space are held. Takes the large lock; unmaps outside it. */
static void retain_mapping(const struct held_object *object);

static void shrink_quarantine(unsigned entries, size_t bytes, bool retain)
{
    sm_lock_acquire(&large.lock);
    while (large.held_count > 0 && (large.held_count > entries || large.held_bytes > bytes)) {
        struct held_object oldest = pop_oldest_held();
        sm_lock_release(&large.lock);
        if (retain)
            retain_mapping(&oldest);
        else
            drop_held(&oldest);
        sm_lock_acquire(&large.lock);
    }
    sm_lock_release(&large.lock);
}

/* Removes kept mapping i, keeping the others in age order (the large lock is held). */
static struct held_object take_retained(unsigned i)
{
    struct held_object object = large.retained[i];
    large.retained_count--;
    large.retained_bytes -= object.map_size;
    for (; i < large.retained_count; i++)
        large.retained[i] = large.retained[i + 1];
    return object;
}

/* Keeps a freed mapping for reuse, unmapping the oldest kept ones beyond the bounds. */
static void retain_mapping(const struct held_object *object)
{
    /* A mapping that went without guards (the kernel refused them) is not handed out again. */
    bool guarded = object->map_addr < object->addr &&
                   object->addr + object->size < object->map_addr + object->map_size;
    if (SM_LARGE_GUARDS != 0 && !guarded) {
        drop_held(object);
        return;
    }
    sm_lock_acquire(&large.lock);
    for (;;) {
        bool full = large.retained_count == RETAINED_ENTRIES;
        bool too_big = large.retained_bytes + object->map_size > large.held_bytes_max;
        if ((!full && !too_big) || large.retained_count == 0)
            break;
        struct held_object oldest = take_retained(0);
        sm_lock_release(&large.lock);
        drop_held(&oldest);
        sm_lock_acquire(&large.lock);
    }
    bool keep = large.retained_count < RETAINED_ENTRIES &&
                large.retained_bytes + object->map_size <= large.held_bytes_max;
    if (keep) {
        large.retained[large.retained_count++] = *object;
        large.retained_bytes += object->map_size;
    }
    sm_lock_release(&large.lock);
    if (!keep)
        drop_held(object);
}

/* Unmaps every kept mapping (the address space may be needed); returns the committed bytes
 * this gave back. */
static size_t release_retained(void)
{
    size_t committed = 0;
    sm_lock_acquire(&large.lock);
    while (large.retained_count > 0) {
        struct held_object last = take_retained(large.retained_count - 1);
        sm_lock_release(&large.lock);
        drop_held(&last);
        committed += last.committed ? kept_bytes(last.addr, last.size) : 0;
        sm_lock_acquire(&large.lock);
    }
    sm_lock_release(&large.lock);
    return committed;
}

/* Gives back the pages that quarantined objects kept (they stay PROT_NONE, now empty, as a
 * decommitted object is); returns how many bytes. The system calls are made under the large
 * lock, where the held objects cannot leave the quarantine: trim is rare. */
static size_t decommit_quarantined(void)
{
    size_t committed = 0;
    sm_lock_acquire(&large.lock);
    for (unsigned i = 0; i < large.held_count; i++) {
        struct held_object *object = &large.held[(large.held_head + i) % QUARANTINE_ENTRIES];
        size_t kept = kept_bytes(object->addr, object->size); /* the small pages, at its end */
        uintptr_t small = object->addr + object->size - kept;
        if (!object->committed || !sm_region_decommit((void *)small, kept))
            continue;
        object->committed = false;
        large.committed_held_bytes -= kept;
        committed += kept;
    }
    sm_lock_release(&large.lock);
    return committed;
}

size_t sm_large_trim(void)
{
    sm_lock_acquire(&large.lock);
    large.live_peak_bytes = large.live_bytes; /* the budget follows the program from here */
    sm_lock_release(&large.lock);
    return release_retained() + decommit_quarantined();
}

/* Between two kept objects that fit: the one with its pages (no faults), then the smaller. */
static bool better_fit(const struct held_object *a, const struct held_object *b)
{
    if (a->committed != b->committed)
        return a->committed;
    return a->size < b->size;
}

/* How much of their small pages the last freed large objects had written (were resident
 * when freed), in 1/WRITTEN_ONE, each free weighing a quarter of the average: a program that
 * writes its buffers whole gets the small pages of new and reused objects populated in one
 * call; one that uses a few pages of big buffers does not get them made resident for
 * nothing (32 reused 1 MiB mappings populated for one page written in each were 32 MiB of
 * RSS). Objects StarMalloc populated are resident whatever the program wrote, so they are
 * not measured; one object in PROBE_EVERY is left lazy, so that the average keeps learning.
 * Starts at 0: lazy until frees show otherwise. Accessed without the lock: a lost update is
 * harmless. */
enum {
    WRITTEN_ONE = 256,
    WRITTEN_TO_POPULATE = WRITTEN_ONE * 3 / 4,
    PROBE_EVERY = 32,
    /* sm_avl_entry.flags */
    ENTRY_POPULATED = 1u,  /* StarMalloc populated pages of it */
    ENTRY_KEPT_PAGES = 2u, /* reused with the pages an earlier object kept */
};
static unsigned written_share;
static unsigned populate_decisions;

/* Notes how much of the small pages of the freed object `entry` were resident, unless their
 * residency says nothing of what the program wrote into this object: StarMalloc populated
 * them, or they are pages a freed object kept, which earlier objects wrote. Objects without
 * small pages, or with more than COMMITTED_OBJECT_BYTES_MAX (never populated), are not
 * measured either. One mincore call per 2 MiB: about 2 us on the reference VM, which was 50
 * times the rest of a malloc + free pair of 256 KiB in preset none when every reuse of a kept
 * mapping was measured. */
static void note_written_share(const struct sm_avl_entry *entry)
{
    size_t huge = huge_bytes(entry->addr, entry->size);
    size_t small = entry->size - huge;
    if ((entry->flags & (ENTRY_POPULATED | ENTRY_KEPT_PAGES)) || small == 0 ||
        small > COMMITTED_OBJECT_BYTES_MAX)
        return;
    size_t resident = sm_region_resident_bytes((const void *)(entry->addr + huge), small);
    if (resident == SIZE_MAX)
        return;
    unsigned sample = (unsigned)(resident * WRITTEN_ONE / small);
    unsigned share = __atomic_load_n(&written_share, __ATOMIC_RELAXED);
    __atomic_store_n(&written_share, (share * 3 + sample) / 4, __ATOMIC_RELAXED);
}

/* Whether the next large object should be made ready to be written whole: the last freed
 * objects were written nearly whole (written_share), and it is not a probe. */
static bool expect_written_whole(void)
{
    return __atomic_load_n(&written_share, __ATOMIC_RELAXED) >= WRITTEN_TO_POPULATE &&
           __atomic_fetch_add(&populate_decisions, 1, __ATOMIC_RELAXED) % PROBE_EVERY != 0;
}

/* The usable size of an object of `usable` bytes (a multiple of the page) that the program
 * is expected to write whole, or of a growth by realloc: rounded up to whole huge pages when
 * that adds at most a quarter of the rounded size (objects of 1.5 MiB and more; at most a
 * third more memory), so that its last, partial 2 MiB faults in as one huge page instead of
 * up to 511 small pages; else `usable`. The guard after the object follows the rounded size,
 * as malloc_usable_size does. */
static size_t huge_page_round(size_t usable)
{
    const size_t huge = SM_REGION_HUGE_PAGE_SIZE;
    if (!SM_LARGE_HUGE_PAGES || usable > SIZE_MAX - huge || !sm_region_huge_pages_enabled())
        return usable;
    size_t rounded = (usable + huge - 1) & ~(huge - 1);
    return rounded - usable <= rounded / 4 ? rounded : usable;
}

/* An object of `usable` bytes at addr, fresh or decommitted, or grown in place from `from`
 * bytes, that the program is expected to write whole (expect_written_whole) is handed out: its
 * small pages past `from` come back in one call rather than one fault each, when the object is
 * small enough to have kept them (a growth to 1 GiB populates nothing, whatever the program
 * wrote before). Returns the entry's flags: ENTRY_POPULATED when it populated pages. */
static unsigned populate_small_pages(uintptr_t addr, size_t usable, size_t from)
{
    size_t small = usable - huge_bytes(addr, usable);
    if (small == 0 || small > COMMITTED_OBJECT_BYTES_MAX)
        return 0;
    size_t start = usable - small > from ? usable - small : from;
    if (start >= usable)
        return 0;
    sm_region_populate((void *)(addr + start), usable - start);
    return ENTRY_POPULATED;
}

/* Takes the kept mapping that fits `usable` bytes best, for a request of `asked` bytes (page
 * rounded; `usable` may be rounded up further, huge_page_round): at least `usable` bytes and
 * at most twice `asked`, so that a mapping reused whole never holds more than twice what was
 * asked, rounding or not. A decommitted one gets its first `usable` bytes committed and
 * populated (the rest of its old object stays PROT_NONE, part of the guard) and is zero; one
 * that kept its pages is reused whole, made read-write again with large quarantine: zero (its
 * huge pages fault in again), or (dirty) content and all. For an object that is `growing` only one
 * that kept its pages will do: a decommitted one would save nothing over a new mapping with room,
 * and would have to move at a later growth. */
static bool reuse_mapping(size_t asked, size_t usable, bool whole, bool growing,
                          struct sm_avl_entry *entry, int *zeroed)
{
    sm_lock_acquire(&large.lock);
    unsigned best = RETAINED_ENTRIES;
    for (unsigned i = 0; i < large.retained_count; i++) {
        const struct held_object *o = &large.retained[i];
        if (o->size < usable || o->size / 2 > asked || (growing && !o->committed))
            continue;
        if (best == RETAINED_ENTRIES || better_fit(o, &large.retained[best]))
            best = i;
    }
    if (best == RETAINED_ENTRIES) {
        sm_lock_release(&large.lock);
        return false;
    }
    struct held_object object = take_retained(best);
    if (object.committed) /* its pages leave the budget with it, under the same lock */
        large.committed_held_bytes -= kept_bytes(object.addr, object.size);
    sm_lock_release(&large.lock);
    if (object.committed) {
        /* With large quarantine it was PROT_NONE (keep_pages). */
        if (SM_LARGE_QUARANTINE != 0 &&
            !sm_region_protect_read_write((void *)object.addr, object.size)) {
            release_mapping(&object, kept_bytes(object.addr, object.size));
            return false;
        }
        sm_region_reuse_purged(huge_bytes(object.addr, object.size));
        /* The pages the last object had are still resident: they would read as written by
         * this one when it is freed. */
        *entry = (struct sm_avl_entry){object.addr, object.size, object.map_addr, object.map_size,
                                       ENTRY_KEPT_PAGES};
        *zeroed = !KEEP_DIRTY;
        return true;
    }
    *zeroed = 1;
    if (!sm_region_commit((void *)object.addr, usable)) {
        release_mapping(&object, 0);
        return false;
    }
    advise_object(object.addr, usable); /* the decommit dropped the advice */
    *entry = (struct sm_avl_entry){object.addr, usable, object.map_addr, object.map_size,
                                   whole ? populate_small_pages(object.addr, usable, 0) : 0};
    sm_arena_note_new_memory(usable);
    return true;
}

/* Whether an object of `bytes` is more than the kernel grants one charged mapping
 * (sm_region_overcommit_bytes_max): such a request fails as it would with glibc, instead of
 * succeeding lazily and meeting the OOM killer when it is used. Only requests of a gigabyte
 * and more ask the kernel. */
static bool beyond_memory(size_t bytes)
{
    return bytes >= BIG_REQUEST_BYTES && bytes > sm_region_overcommit_bytes_max();
}

/* sm_large_alloc, and sm_large_alloc_growing when `growing`. */
static void *large_alloc(size_t size, size_t align, bool growing, int *zeroed)
{
    if (size == 0)
        size = 1;
    if (size > SIZE_MAX - SM_PAGE_SIZE)
        return NULL;
    struct sm_avl_entry entry;
    *zeroed = 1; /* fresh mappings are zero */
    size_t asked = page_round(size);
    if (beyond_memory(asked))
        return NULL;
    bool whole = expect_written_whole();
    size_t usable = whole ? huge_page_round(asked) : asked;
    size_t room = growing ? growth_room(usable) : 0;
    bool reused =
        align <= SM_PAGE_SIZE && reuse_mapping(asked, usable, whole, growing, &entry, zeroed);
    if (!reused && !map_object(usable, align, room, &entry)) {
        /* Quarantined and kept mappings hold address space that a limit may be short of. */
        shrink_quarantine(0, 0, false);
        release_retained();
        if (!map_object(usable, align, 0, &entry))
            return NULL;
    }
    if (!reused) {
        entry.flags = whole ? populate_small_pages(entry.addr, entry.size, 0) : 0;
        sm_arena_note_new_memory(entry.size);
    }
    if (!record_insert(&entry)) {
        sm_region_unmap((void *)entry.map_addr, entry.map_size, entry.size);
        return NULL;
    }
    return (void *)entry.addr;
}

void *sm_large_alloc(size_t size, size_t align, int *zeroed)
{
    return large_alloc(size, align, false, zeroed);
}

void *sm_large_alloc_growing(size_t size, int *zeroed)
{
    return large_alloc(size, SM_PAGE_SIZE, true, zeroed);
}

/* Whether addr is a large object freed recently: held in quarantine or among the last frees. */
static bool recently_freed(uintptr_t addr)
{
    for (unsigned i = 0; i < large.held_count; i++)
        if (large.held[(large.held_head + i) % QUARANTINE_ENTRIES].addr == addr)
            return true;
    for (unsigned i = 0; i < large.retained_count; i++)
        if (large.retained[i].addr == addr)
            return true;
    for (unsigned i = 0; i < FREED_RING; i++)
        if (large.freed[i] == addr)
            return true;
    return false;
}

/* Holds a freed object, now PROT_NONE, in the quarantine (FIFO), then trims the oldest
 * objects while the quarantine is over its entry or address-space bound. */
static void quarantine_hold(const struct held_object *object)
{
    shrink_quarantine(QUARANTINE_ENTRIES - 1, SIZE_MAX, true);
    sm_lock_acquire(&large.lock);
    if (large.held_count < QUARANTINE_ENTRIES) {
        large.held[(large.held_head + large.held_count) % QUARANTINE_ENTRIES] = *object;
        large.held_count++;
        large.held_bytes += object->map_size;
        object = NULL;
    }
    sm_lock_release(&large.lock);
    if (object) /* another thread filled the place meanwhile: no quarantine for this one */
        drop_held(object);
    shrink_quarantine(QUARANTINE_ENTRIES, large.held_bytes_max, true);
}

/* Readies a freed object, within the budget, for reuse with its pages: its small pages are
 * kept, zeroed unless dirty keeping, the whole object is made PROT_NONE with large
 * quarantine, and its huge pages go back to the kernel (huge_bytes). False when the kernel
 * refuses the protection (vm.max_map_count) or to take the huge pages (locked memory,
 * mlockall): the object is then decommitted instead (the count of committed bytes is
 * unchanged so far), so that kept objects never hold huge pages that the budget and the
 * committed count do not see. */
static bool keep_pages(const struct held_object *object)
{
    size_t huge = huge_bytes(object->addr, object->size);
    if (!KEEP_DIRTY)
        sm_harden_zero_freed_large((void *)(object->addr + huge), object->size - huge);
    if (SM_LARGE_QUARANTINE != 0 && !sm_region_protect_none((void *)object->addr, object->size))
        return false;
    return huge == 0 || sm_region_purge((void *)object->addr, huge);
}

static void hold_freed(const struct held_object *object)
{
    if (SM_LARGE_QUARANTINE)
        quarantine_hold(object);
    else
        retain_mapping(object);
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
    /* In the same critical section as the removal. */
    struct evicted_mappings evicted; /* only count is initialised: objects fill up to it */
    evicted.count = 0;
    bool may_keep_pages = reserve_committed_locked(kept_bytes(entry.addr, entry.size), &evicted);
    note_live_locked(entry.size, 0);
    sm_lock_release(&large.lock);
    for (unsigned i = 0; i < evicted.count; i++)
        release_mapping(&evicted.objects[i],
                        kept_bytes(evicted.objects[i].addr, evicted.objects[i].size));
    release_growth_room(&entry);
    note_written_share(&entry);
    struct held_object object = {entry.addr, entry.size, entry.map_addr, entry.map_size, false};
    /* Still mapped until here, so no other object can have been given this address. */
    if (may_keep_pages && keep_pages(&object)) {
        object.committed = true;
        hold_freed(&object);
        return;
    }
    if (may_keep_pages)
        unreserve_committed(kept_bytes(object.addr, object.size));
    /* Decommitted and PROT_NONE: the memory goes back to the kernel, and any access through
     * a dangling pointer faults for as long as the object is held or kept. */
    if (!sm_region_decommit((void *)entry.addr, entry.size)) {
        if (SM_LARGE_QUARANTINE)
            sm_harden_note_guard_failure("a freed large object could not be made inaccessible "
                                         "(vm.max_map_count reached?)");
        release_mapping(&object, entry.size);
        return;
    }
    hold_freed(&object);
}

/* The live object at p now has `usable` bytes, and the entry flags `flags` more. */
static void record_resize(void *p, size_t usable, unsigned flags)
{
    sm_lock_acquire(&large.lock);
    struct sm_avl_entry *entry = sm_avl_find(&large.map, (uintptr_t)p);
    if (entry) {
        note_live_locked(entry->size, usable);
        entry->size = usable;
        entry->flags |= flags;
    }
    sm_lock_release(&large.lock);
}

/* Whether the object at `old` can grow to `usable` bytes where it is: the room after it holds
 * the new bytes and a fresh guard of `guard` bytes after them, and the object stays as aligned
 * as a new one of that size (object_align). */
static bool fits_in_place(const struct sm_avl_entry *old, size_t usable, size_t guard)
{
    size_t room = old->map_addr + old->map_size - (old->addr + old->size);
    size_t more = usable - old->size;
    return old->addr % object_align(usable, SM_PAGE_SIZE) == 0 && room >= more &&
           room - more >= guard;
}

/* Grows the object at `old` to `usable` bytes or more where it is, into the inaccessible room
 * after it (fits_in_place): one mprotect. When the program is expected to write it whole
 * (`whole`, expect_written_whole), its new small pages are populated (one call instead of a
 * fault each; none once the object is too large to keep them, see populate_small_pages), and
 * with large quarantine it grows by an eighth at least, room allowing, so that appends take
 * one system call per eighth instead of one per page. Without large quarantine a freed
 * object keeps its pages, the unused part of that eighth too (preset none: 12% more peak RSS
 * in `realloc`), so it grows by what is asked. Either way its end is rounded up to a huge
 * page (huge_page_round), room allowing: a buffer that grows by appends then starts each
 * 2 MiB of its growth on a fresh huge page, where an end in the middle of one would have its
 * first part faulted in 4 KiB at a time, which keeps the whole 2 MiB on small pages. */
static bool grow_in_place(void *p, const struct sm_avl_entry *old, size_t usable, bool whole)
{
    size_t guard = guard_bytes();
    size_t ahead = old->size + page_round(old->size / 8);
    size_t wanted = SM_LARGE_QUARANTINE != 0 && whole && usable < ahead ? ahead : usable;
    const size_t sizes[] = {huge_page_round(wanted), wanted, usable}; /* first that fits */
    size_t i = 0, n = sizeof sizes / sizeof sizes[0];
    while (i < n && !fits_in_place(old, sizes[i], guard))
        i++;
    if (i == n)
        return false;
    usable = sizes[i];
    void *end = (void *)(old->addr + old->size);
    size_t more = usable - old->size;
    if (!sm_region_commit(end, more))
        return false;
    advise_object(old->addr, usable); /* first: the new pages may then be huge ones */
    record_resize(p, usable, whole ? populate_small_pages(old->addr, usable, old->size) : 0);
    sm_arena_note_new_memory(more);
    return true;
}

/* Moves the object at `old` to a new place of `usable` bytes with fresh guards, huge-page
 * aligned when it is large enough, and as much room again after it (inaccessible address
 * space) for the next grow_in_place; the pages move there without being copied. */
static void *grow_by_moving(const struct sm_avl_entry *old, size_t usable)
{
    size_t align = object_align(usable, SM_PAGE_SIZE);
    size_t before = guard_bytes(), after = guard_bytes();
    size_t room = growth_room(usable);
    struct sm_avl_entry moved;
    if (!reserve_guarded(usable, align, before, after + room, &moved)) {
        room = 0;
        if (!reserve_guarded(usable, align, before, after, &moved))
            return NULL;
    }
    moved.flags = old->flags; /* populated or not, the pages it had move with it */
    /* The move and the map's update under one lock: once mremap has moved the pages, the old
     * range is free for any new mapping, and a new object there must not find the old
     * record still in the map (its insertion would fail as a duplicate). */
    sm_lock_acquire(&large.lock);
    bool moved_ok = sm_region_move((void *)old->addr, old->size, (void *)moved.addr, usable, room);
    if (moved_ok) {
        /* The removal frees a node, so the insertion cannot run out of memory. */
        sm_avl_remove(&large.map, old->addr, NULL);
        sm_avl_insert(&large.map, &moved);
        note_live_locked(old->size, usable);
        large.freed[large.freed_next++ % FREED_RING] = old->addr;
    }
    sm_lock_release(&large.lock);
    if (!moved_ok) {
        sm_region_release((void *)moved.map_addr, moved.map_size);
        return NULL;
    }
    advise_object(moved.addr, usable);
    sm_arena_note_new_memory(usable - old->size);
    if (old->addr > old->map_addr)
        sm_region_release((void *)old->map_addr, old->addr - old->map_addr);
    uintptr_t old_end = old->addr + old->size;
    if (old->map_addr + old->map_size > old_end)
        sm_region_release((void *)old_end, old->map_addr + old->map_size - old_end);
    return (void *)moved.addr;
}

void *sm_large_grow(void *p, size_t size)
{
    if (size > SIZE_MAX - 2 * SM_PAGE_SIZE)
        return NULL;
    size_t usable = page_round(size);
    if (beyond_memory(usable))
        return NULL;
    sm_lock_acquire(&large.lock);
    struct sm_avl_entry *found = sm_avl_find(&large.map, (uintptr_t)p);
    struct sm_avl_entry old = found ? *found : (struct sm_avl_entry){0, 0, 0, 0, 0};
    sm_lock_release(&large.lock);
    if (!found || usable <= old.size)
        return NULL;
    bool whole = expect_written_whole();
    if (grow_in_place(p, &old, usable, whole))
        return p;
    return grow_by_moving(&old, huge_page_round(usable));
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

/* Shrinks the live object at p from `old_usable` to `new_usable` bytes (fewer) where it is:
 * its pages past the new end go back to the kernel, and that range, inaccessible, joins the
 * guard and the room after the object (a later growth may take it back in place). The range
 * keeps its kernel mapping's flags (a protection change and MADV_DONTNEED, not a new
 * mapping), so that taken back it merges with the object again: an object made of mappings
 * with different flags cannot be moved by mremap. Returns false, p unchanged, when the kernel
 * refuses (vm.max_map_count). */
static bool shrink_in_place(void *p, size_t old_usable, size_t new_usable)
{
    char *end = (char *)p + new_usable;
    size_t given_back = old_usable - new_usable;
    if (!sm_region_protect_none(end, given_back))
        return false;
    (void)sm_region_purge(end, given_back); /* refused: the pages stay, inaccessible */
    record_resize(p, new_usable, 0);
    return true;
}

bool sm_large_resize_in_place(void *p, size_t usable, size_t size)
{
    /* The object keeps its size (the guards stay where they are) as long as the new size
     * fits in it and uses at least half of it; below that, its end gives its pages back. */
    if (size <= SM_MAX_SMALL_SIZE || size > SIZE_MAX - SM_PAGE_SIZE)
        return false;
    size_t needed = page_round(size);
    if (needed > usable)
        return false;
    return needed >= usable / 2 || shrink_in_place(p, usable, needed);
}

static void count_large(const struct sm_avl_entry *entry, void *ctx)
{
    size_t *totals = ctx;
    totals[0]++;
    totals[1] += entry->size;
}

void sm_large_stats(size_t *objects, size_t *bytes)
{
    size_t totals[2] = {0, 0};
    sm_lock_acquire(&large.lock);
    sm_avl_foreach(&large.map, count_large, totals);
    sm_lock_release(&large.lock);
    *objects = totals[0];
    *bytes = totals[1];
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
    sm_lock_reset(&large.lock);
}

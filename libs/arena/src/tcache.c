/* Thread caches: each thread keeps, per size class, a few slots of its own arena ready to
 * hand out and a few freed slots on their way to the quarantine (with slot quarantine) or
 * back to another arena's slabs (without), so that most malloc and free calls take no lock.
 * A cached slot is "deferred" (its allocated byte is 0), so a double free of it is still
 * caught, and it goes back to its own slab under its owner's lock. */
#include <pthread.h>
#include <stddef.h>
#include <string.h>

#include "arena_internal.h"
#include "starmalloc/region.h"

enum {
    CACHE_SLOTS_MAX = 32,             /* ready slots per class */
    CACHE_BYTES_PER_CLASS = 32 << 10, /* and at most about this many bytes of them */
    PENDING_MAX = 32,   /* freed slots gathered before one trip to the quarantine, and at most
                           about CACHE_BYTES_PER_CLASS bytes of them */
    CACHES_MAX = 16384, /* thread caches that can exist at once */
};

/* A ready slot remembers where its allocated byte is, so handing it out needs no address
 * arithmetic: one store to that byte. */
struct cache_bin {
    uint32_t count;              /* ready slots: slots[0..count), the next one on top */
    uint32_t capacity;           /* how many ready slots this class may hold */
    uint32_t pending;            /* freed slots in pending[0..pending) */
    uint32_t pending_capacity;   /* freed slots gathered before they enter the quarantine */
    uint32_t refill;             /* slots claimed per refill */
    uint32_t slot_size;          /* the class's, copied: no state lookup in malloc */
    struct sm_class_state *home; /* this class in the thread's arena */
    uint8_t *allocated;          /* home->allocated_bytes, copied: one load less in malloc */
    void *slots[CACHE_SLOTS_MAX];
    uint32_t allocated_index[CACHE_SLOTS_MAX]; /* each slot's byte: allocated[index] */
    uint64_t secrets[CACHE_SLOTS_MAX]; /* each slot's slab's canary secret (SM_CANARIES only) */
    uint8_t fresh[CACHE_SLOTS_MAX];    /* never handed out: zero, no write-after-free check */
    /* Freed slots on their way to the quarantine; without slot quarantine, freed slots of
     * another arena on their way back to their slabs. */
    void *pending_slots[PENDING_MAX];
} __attribute__((aligned(64)));
/* The states' cache_bin_offset are counted in these (a power of two: &bins[cls] is also a
 * shift away). */
_Static_assert(sizeof(struct cache_bin) == SM_CACHE_BIN_BYTES, "a cache bin takes 1 KiB");

struct sm_tcache {
    struct cache_bin bins[SM_NB_CLASSES];
    unsigned arena;
    struct sm_tcache *next; /* in the live list, or the free list */
    struct sm_tcache *prev; /* in the live list */
};

/* Caches are carved from their own reservation and recycled: a thread's cache returns to
 * the free list when the thread exits, so thousands of short threads reuse a few caches. */
static struct {
    struct sm_lock lock;
    char *base;
    size_t reserved_bytes;
    size_t carved_bytes;
    struct sm_tcache *free_list;
    struct sm_tcache *live;
    pthread_key_t key;
} pool;

/* A thread without a cache of its own points at this one, never written: its bins are empty
 * (malloc finds no slot) and can take no freed slot (pending_capacity 0), so both fast paths
 * fall through to their slow paths without a test of their own for "no cache". Whole pages
 * of its own, made read-only at initialisation: a stray write to it traps instead of
 * handing out slots. */
static union {
    struct sm_tcache cache;
    char pages[(sizeof(struct sm_tcache) + SM_PAGE_SIZE - 1) & ~(size_t)(SM_PAGE_SIZE - 1)];
} no_cache __attribute__((aligned(SM_PAGE_SIZE)));

enum { CACHE_NONE = 0, CACHE_ACTIVE, CACHE_UNAVAILABLE };
static __thread struct sm_tcache *thread_cache __attribute__((tls_model("initial-exec"))) =
    &no_cache.cache;
static __thread int thread_cache_state __attribute__((tls_model("initial-exec")));

static size_t cache_bytes(void)
{
    return (sizeof(struct sm_tcache) + SM_PAGE_SIZE - 1) & ~(size_t)(SM_PAGE_SIZE - 1);
}

/* ---- returning slots to their slabs ------------------------------------------------ */

/* Locks `owner`, first releasing the lock held in *locked if it is another one: a run of
 * slots with the same owner takes its lock once. */
static void lock_owner(struct sm_class_state **locked, struct sm_class_state *owner)
{
    if (*locked == owner)
        return;
    if (*locked)
        sm_lock_release(&(*locked)->lock);
    *locked = owner;
    sm_lock_acquire(&owner->lock);
}

/* Gives `count` deferred slots back to their slabs, taking their owners' locks in turn
 * (the one held in *locked stays held at the end). */
static void release_slots(struct sm_class_state **locked, void *const *slots, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++) {
        struct sm_slot_ref ref;
        sm_arena_locate_trusted(slots[i], &ref);
        lock_owner(locked, ref.owner);
        sm_arena_release_deferred_locked(*locked, ref.slab, ref.slot);
    }
}

/* Gives `count` deferred ready slots back to their slabs. */
static void return_slots(void *const *slots, uint32_t count)
{
    struct sm_class_state *locked = NULL;
    release_slots(&locked, slots, count);
    if (locked)
        sm_lock_release(&locked->lock);
    sm_arena_settle_retained();
}

static void push_ready(struct cache_bin *bin, void *p, size_t index, uint64_t secret);
static __attribute__((noinline)) void flush_remote(struct cache_bin *bin);

/* A freed slot joins the bin's freed buffer. */
static inline void add_pending(struct cache_bin *bin, void *p)
{
    bin->pending_slots[bin->pending++] = p;
}
static void drop_bottom(struct cache_bin *bin, uint32_t n);

/* The freed slots gathered in the bin enter the quarantine of their owners. The slots that
 * leave the quarantine in exchange are ready for reuse (zeroed and still deferred): they go
 * on the bin's ready stack. When it lacks room, its oldest slots go back to their slabs
 * first (after a mass free the stack then holds the latest slots, and the first emptied
 * slabs can retire), then the oldest of the returning ones. */
static __attribute__((noinline)) void flush_pending(struct cache_bin *bin)
{
    struct sm_class_state *locked = NULL;
    void *back[PENDING_MAX];
    uint32_t back_index[PENDING_MAX];
    uint32_t n = 0;
    for (uint32_t i = 0; i < bin->pending; i++) {
        void *p = bin->pending_slots[i];
        struct sm_class_state *owner = sm_arena_owner_of(p);
        uint32_t left;
        lock_owner(&locked, owner);
        if (!sm_arena_quarantine_locked(owner, sm_arena_allocated_index(owner, p), &left))
            continue;
        if (owner != bin->home) { /* another arena's slot: back to its slab (see free) */
            sm_arena_release_index_locked(owner, left);
            continue;
        }
        back[n] = sm_arena_index_address(owner, left);
        back_index[n] = left;
        n++;
    }
    uint32_t excess = bin->count + n > bin->capacity ? bin->count + n - bin->capacity : 0;
    uint32_t from_ready = excess < bin->count ? excess : bin->count;
    release_slots(&locked, bin->slots, from_ready);
    drop_bottom(bin, from_ready);
    release_slots(&locked, back, excess - from_ready);
    for (uint32_t i = excess - from_ready; i < n; i++)
        push_ready(bin, back[i], back_index[i],
                   SM_CANARIES ? sm_arena_slab_of(bin->home, back[i])->secret : 0);
    if (locked)
        sm_lock_release(&locked->lock);
    bin->pending = 0;
    sm_arena_settle_retained();
}

/* Without slot quarantine: gives the gathered slots of other arenas back to their slabs. */
static __attribute__((noinline)) void flush_remote(struct cache_bin *bin)
{
    return_slots(bin->pending_slots, bin->pending);
    bin->pending = 0;
}

/* Returns the older half of the ready slots (the bottom of the stack). */
static __attribute__((noinline)) void flush_half(struct cache_bin *bin)
{
    uint32_t half = (bin->count + 1) / 2;
    return_slots(bin->slots, half);
    drop_bottom(bin, half);
}

/* Removes the n bottom (oldest) entries of the ready stack. */
static void drop_bottom(struct cache_bin *bin, uint32_t n)
{
    uint32_t rest = bin->count - n;
    memmove(bin->slots, bin->slots + n, rest * sizeof(bin->slots[0]));
    memmove(bin->allocated_index, bin->allocated_index + n, rest * sizeof(bin->allocated_index[0]));
    if (SM_CANARIES)
        memmove(bin->secrets, bin->secrets + n, rest * sizeof(bin->secrets[0]));
    if (SM_WRITE_AFTER_FREE_CHECK)
        memmove(bin->fresh, bin->fresh + n, rest * sizeof(bin->fresh[0]));
    bin->count = rest;
}

/* `secret` is the slot's slab's canary secret, read only with SM_CANARIES (the others may
 * pass 0). Slot indices are below 2^32 but passed as size_t on the free path: then they need
 * no zero extension. */
static void push_ready(struct cache_bin *bin, void *p, size_t index, uint64_t secret)
{
    size_t n = bin->count; /* 64 bits: an index as it is, without a zero extension */
    bin->slots[n] = p;
    bin->allocated_index[n] = (uint32_t)index;
    if (SM_CANARIES)
        bin->secrets[n] = secret;
    if (SM_WRITE_AFTER_FREE_CHECK)
        bin->fresh[n] = 0;
    bin->count = (uint32_t)(n + 1);
}

static void flush_cache(struct sm_tcache *cache)
{
    for (unsigned c = 0; c < SM_NB_CLASSES; c++) {
        struct cache_bin *bin = &cache->bins[c];
        if (SM_SLOT_QUARANTINE)
            flush_pending(bin);
        else
            flush_remote(bin);
        return_slots(bin->slots, bin->count);
        bin->count = 0;
    }
}

/* ---- cache life cycle -------------------------------------------------------------- */

static void unlink_live(struct sm_tcache *cache)
{
    if (cache->prev)
        cache->prev->next = cache->next;
    else
        pool.live = cache->next;
    if (cache->next)
        cache->next->prev = cache->prev;
}

/* Thread exit (pthread key destructor): everything cached goes back, the cache is recycled,
 * and whatever this thread still frees or allocates takes the uncached path. */
static void thread_exit(void *arg)
{
    struct sm_tcache *cache = arg;
    thread_cache = &no_cache.cache;
    thread_cache_state = CACHE_UNAVAILABLE;
    flush_cache(cache);
    sm_lock_acquire(&pool.lock);
    unlink_live(cache);
    cache->next = pool.free_list;
    pool.free_list = cache;
    sm_lock_release(&pool.lock);
}

static struct sm_tcache *take_cache(void)
{
    struct sm_tcache *cache = pool.free_list;
    if (cache) {
        pool.free_list = cache->next;
        return cache;
    }
    if (pool.carved_bytes + cache_bytes() > pool.reserved_bytes)
        return NULL;
    cache = (void *)(pool.base + pool.carved_bytes);
    if (!sm_region_commit(cache, cache_bytes()))
        return NULL;
    pool.carved_bytes += cache_bytes();
    return cache;
}

static void init_bins(struct sm_tcache *cache)
{
    for (unsigned c = 0; c < SM_NB_CLASSES; c++) {
        struct cache_bin *bin = &cache->bins[c];
        bin->home = sm_arena_state(cache->arena, c);
        bin->allocated = bin->home->allocated_bytes;
        uint32_t slot_size = sm_arena_state(0, c)->info.slot_size;
        bin->slot_size = slot_size;
        uint32_t capacity = CACHE_BYTES_PER_CLASS / slot_size;
        if (capacity > CACHE_SLOTS_MAX)
            capacity = CACHE_SLOTS_MAX;
        bin->capacity = capacity ? capacity : 1;
        bin->refill = (bin->capacity + 1) / 2;
        /* Freed slots gathered: about CACHE_BYTES_PER_CLASS bytes of them, 1 to PENDING_MAX. */
        uint32_t pending = CACHE_BYTES_PER_CLASS / slot_size;
        bin->pending_capacity = pending == 0 ? 1 : pending > PENDING_MAX ? PENDING_MAX : pending;
        bin->count = 0;
        bin->pending = 0;
    }
}

/* The calling thread's cache, created at its first use; NULL when the thread runs without
 * one (exiting, or CACHES_MAX caches live). */
static struct sm_tcache *cache_of_thread(void)
{
    if (thread_cache != &no_cache.cache)
        return thread_cache;
    if (thread_cache_state != CACHE_NONE)
        return NULL;
    thread_cache_state = CACHE_UNAVAILABLE; /* a malloc from inside this function goes uncached */
    sm_lock_acquire(&pool.lock);
    struct sm_tcache *cache = take_cache();
    if (cache) {
        cache->prev = NULL;
        cache->next = pool.live;
        if (pool.live)
            pool.live->prev = cache;
        pool.live = cache;
    }
    sm_lock_release(&pool.lock);
    if (!cache)
        return NULL;
    cache->arena = sm_arena_of_thread();
    init_bins(cache);
    if (pthread_setspecific(pool.key, cache) != 0) {
        thread_exit(cache); /* no destructor: do not cache in this thread */
        return NULL;
    }
    thread_cache_state = CACHE_ACTIVE;
    thread_cache = cache;
    return cache;
}

void sm_tcache_init(void)
{
    if (!sm_region_protect_read_only(&no_cache, sizeof(no_cache)))
        sm_harden_note_guard_failure("the empty thread cache could not be made read-only");
    size_t bytes = (size_t)CACHES_MAX * cache_bytes();
    size_t limit = sm_region_address_space_limit();
    if (limit != SIZE_MAX && bytes > limit / 16)
        bytes = limit / 16;
    char *base = sm_region_reserve_shrinking(&bytes, 16 * cache_bytes(), SM_PAGE_SIZE);
    if (!base)
        return;
    /* Without the exit destructor a cache would outlive its thread: then no caches at all. */
    if (pthread_key_create(&pool.key, thread_exit) != 0) {
        sm_region_release(base, bytes);
        return;
    }
    pool.base = base;
    pool.reserved_bytes = bytes;
}

/* ---- allocation and free ----------------------------------------------------------- */

/* The cache's bin `offset` bytes into it (the bins come first: a class's bin is at class x
 * SM_CACHE_BIN_BYTES), for the fast paths. The empty asm hides how the address was made: the
 * compiler then addresses the bin's arrays from it (one register plus the index), instead of
 * re-deriving each element's address from the cache and the class (three or four
 * instructions more per malloc and per free). */
_Static_assert(offsetof(struct sm_tcache, bins) == 0, "the bins start the cache");
static inline struct cache_bin *bin_at(struct sm_tcache *cache, size_t offset)
{
    struct cache_bin *bin = (void *)((char *)cache + offset);
    __asm__("" : "+r"(bin));
    return bin;
}

/* The bin of class cls, for malloc. */
static inline struct cache_bin *bin_of(struct sm_tcache *cache, unsigned cls)
{
    return bin_at(cache, (size_t)cls * SM_CACHE_BIN_BYTES);
}

/* The cache's bin of owner's class, for free: one add of the state's offset. */
static inline struct cache_bin *bin_of_state(struct sm_tcache *cache,
                                             const struct sm_class_state *owner)
{
    return bin_at(cache, owner->cache_bin_offset);
}

/* The top ready slot, slots[top] with top = count - 1, leaves the cache for the user. */
static void *hand_out(struct cache_bin *bin, size_t top, int *zeroed)
{
    bin->count = (uint32_t)top;
    void *p = bin->slots[top];
    if (!p) /* cached slots are never NULL: the callers' NULL tests compile away */
        __builtin_unreachable();
    if (SM_WRITE_AFTER_FREE_CHECK && top > 0) {
        /* The next slot out is read whole by the write-after-free check and its allocated
         * byte is written: start fetching both while the caller works. */
        __builtin_prefetch(bin->slots[top - 1], 0);
        __builtin_prefetch(bin->allocated + bin->allocated_index[top - 1], 1);
    }
    sm_slab_undefer_byte(bin->allocated + bin->allocated_index[top]);
    uint32_t slot_size = bin->slot_size;
    uint64_t secret = SM_CANARIES ? bin->secrets[top] : 0;
    *zeroed = SM_WRITE_AFTER_FREE_CHECK && bin->fresh[top]
                  ? sm_harden_on_alloc_fresh(p, slot_size, secret)
                  : sm_harden_on_alloc(p, slot_size, secret);
    return p;
}

/* Refills an empty bin with a batch claimed under one lock. */
static uint32_t refill_bin(struct sm_tcache *cache, struct cache_bin *bin, unsigned cls)
{
    uint32_t n = sm_arena_claim_batch(sm_arena_state(cache->arena, cls), bin->refill, bin->slots,
                                      bin->secrets, bin->allocated_index, bin->fresh);
    bin->count = n;
    return n;
}

static __attribute__((noinline)) void *alloc_uncached_or_refill(unsigned cls, int *zeroed)
{
    struct sm_tcache *cache = cache_of_thread();
    if (!cache)
        return sm_arena_alloc(sm_arena_of_thread(), cls, zeroed);
    struct cache_bin *bin = &cache->bins[cls];
    if (refill_bin(cache, bin, cls) == 0) {
        /* The class region is exhausted: the slots this thread freed but has not yet passed
         * to the quarantine are the last resort (the quarantine may give some back). */
        if (!SM_SLOT_QUARANTINE || bin->pending == 0)
            return NULL;
        flush_pending(bin);
        if (bin->count == 0 && refill_bin(cache, bin, cls) == 0)
            return NULL;
    }
    return hand_out(bin, bin->count - 1, zeroed);
}

void *sm_arena_cache_pop(unsigned cls, int *zeroed)
{
    struct cache_bin *bin = bin_of(thread_cache, cls);
    size_t top; /* 64 bits: an index as it is, without a zero extension */
    /* The count's decrement is the emptiness test (one instruction less than a test first). */
    if (__builtin_expect(__builtin_sub_overflow((size_t)bin->count, 1u, &top), 0))
        return NULL; /* also a thread without a cache: no_cache's bins are empty */
    return hand_out(bin, top, zeroed);
}

void *sm_arena_alloc_cached(unsigned cls, int *zeroed)
{
    void *p = sm_arena_cache_pop(cls, zeroed);
    return p ? p : alloc_uncached_or_refill(cls, zeroed);
}

static __attribute__((noinline, cold)) _Noreturn void fail_free(const char *what, const void *p)
{
    sm_fatal(what, p);
}

static __attribute__((noinline)) void push_to_full_bin(struct cache_bin *bin, void *p, size_t index,
                                                       uint64_t secret)
{
    flush_half(bin);
    push_ready(bin, p, index, secret);
}

/* A deferred slot freed by a thread without a cache: into the quarantine, or released. */
static void free_to_owner(void *p)
{
    if (!SM_SLOT_QUARANTINE) {
        return_slots(&p, 1);
        return;
    }
    struct sm_class_state *owner = sm_arena_owner_of(p);
    uint32_t left;
    sm_lock_acquire(&owner->lock);
    if (sm_arena_quarantine_locked(owner, sm_arena_allocated_index(owner, p), &left))
        sm_arena_release_index_locked(owner, left);
    sm_lock_release(&owner->lock);
}

static void free_without_cache(void *p, struct sm_class_state *owner, size_t index,
                               uint64_t secret);

/* The freed slot that fills the bin's gathered slots, which then go on (see cache_freed_slot);
 * or, in no_cache's bins (no room at all), a slot freed by a thread without a cache. */
static __attribute__((noinline)) void add_last_pending(struct cache_bin *bin, void *p,
                                                       struct sm_class_state *owner, size_t index,
                                                       uint64_t secret)
{
    if (bin->pending_capacity == 0) {
        free_without_cache(p, owner, index, secret);
        return;
    }
    add_pending(bin, p);
    if (SM_SLOT_QUARANTINE)
        flush_pending(bin);
    else
        flush_remote(bin);
}

/* A validated, deferred slot of `owner` (its allocated byte at `index` of the owner's; its
 * slab's canary secret `secret`, known with SM_CANARIES only) joins the freeing thread's
 * cache: with slot quarantine, the gathered freed slots on their way to the quarantine;
 * without, the ready stack when it is the thread's own arena's slot, else the slots on their
 * way back to their slabs. */
static inline void cache_freed_slot(struct cache_bin *bin, void *p, struct sm_class_state *owner,
                                    size_t index, uint64_t secret)
{
    /* Freed slots never go straight back to the ready stack with slot quarantine: they pass
     * the quarantine. Without, another arena's slot goes back to its slab (in batches), not to
     * this thread: a thread that reused the slots other threads hand it would share their
     * slabs' metadata, and often their cache lines, with them. no_cache's bins have no home
     * and no room: their slots take add_last_pending. */
    if (SM_SLOT_QUARANTINE != 0 || __builtin_expect(owner != bin->home, 0)) {
        if (__builtin_expect(bin->pending + 1 >= bin->pending_capacity, 0)) {
            add_last_pending(bin, p, owner, index, secret); /* a tail call */
            return;
        }
        add_pending(bin, p);
        return;
    }
    if (__builtin_expect(bin->count == bin->capacity, 0)) {
        push_to_full_bin(bin, p, index, secret); /* a tail call keeps the fast path lean */
        return;
    }
    push_ready(bin, p, index, secret);
}

/* A free before this thread has a cache (its first call) or once it has none. */
static __attribute__((noinline)) void free_without_cache(void *p, struct sm_class_state *owner,
                                                         size_t index, uint64_t secret)
{
    struct sm_tcache *cache = cache_of_thread();
    if (!cache) {
        free_to_owner(p);
        return;
    }
    cache_freed_slot(bin_of_state(cache, owner), p, owner, index, secret);
}

/* A free that the fast lookup refused: a slot of a slab that holds slots, but not allocated,
 * is a double free; anything else (not the start of a slot, a guard slab, a slab never used)
 * an invalid free. */
static __attribute__((noinline, cold)) _Noreturn void fail_free_lookup(const void *p)
{
    struct sm_slot_ref ref;
    if (sm_arena_locate_set_up(p, &ref) && sm_arena_slab_holds_slots(&ref.owner->slabs[ref.slab]))
        fail_free("double free", p);
    fail_free("invalid free", p);
}

void sm_arena_free_cached(void *p)
{
    struct sm_class_state *owner;
    size_t index; /* 64 bits: an index as it is, without a zero extension */
    /* Only the byte of an allocated slot's start is 1: the exchange validates p. */
    if (__builtin_expect(!sm_arena_allocated_lookup(p, &owner, &index) ||
                             sm_slab_defer_byte(owner->allocated_bytes + index) != SM_SLAB_RELEASED,
                         0))
        fail_free_lookup(p);
    uint64_t secret = SM_CANARIES ? sm_arena_slab_of(owner, p)->secret : 0;
    if (__builtin_expect(!sm_harden_on_free(p, owner->info.slot_size, secret), 0))
        fail_free("canary corrupted", p);
    /* A thread without a cache has no_cache, whose bins send the slot to free_without_cache. */
    cache_freed_slot(bin_of_state(thread_cache, owner), p, owner, index, secret);
}

void sm_arena_flush_thread_cache(void)
{
    if (thread_cache != &no_cache.cache)
        flush_cache(thread_cache);
}

/* ---- fork -------------------------------------------------------------------------- */

void sm_tcache_fork_prepare(void)
{
    sm_lock_acquire(&pool.lock);
}

void sm_tcache_fork_parent(void)
{
    sm_lock_release(&pool.lock);
}

/* In the child only the forking thread exists. The other threads' caches may have been in
 * the middle of a lock-free push or pop when fork() copied them, so their content cannot be
 * trusted: the caches are recycled (a cache is reset when it is taken again) and the slots
 * they held are abandoned, still deferred. That loses at most the few cached slots per
 * thread of the parent, and never touches a block the child may use. */
void sm_tcache_fork_child(void)
{
    sm_lock_reset(&pool.lock);
    struct sm_tcache *cache = pool.live;
    while (cache) {
        struct sm_tcache *next = cache->next;
        if (cache != thread_cache) {
            unlink_live(cache);
            cache->next = pool.free_list;
            pool.free_list = cache;
        }
        cache = next;
    }
}

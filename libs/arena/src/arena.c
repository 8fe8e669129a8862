/* Small-object allocation and free within the (arena, class) regions. */
#include <stdint.h>

#include "arena_internal.h"
#include "starmalloc/hardening.h"
#include "starmalloc/region.h"
#include "starmalloc/sizeclass.h"

enum {
    SLAB_COMMIT_BYTES = 64 * 1024, /* commit fresh slabs in batches of about this much */
    META_COMMIT_BYTES = 64 * 1024, /* and their metadata in chunks of this much */
};

static atomic_uint next_arena;
static __thread unsigned thread_arena_plus_one __attribute__((tls_model("initial-exec")));

unsigned sm_arena_of_thread(void)
{
    unsigned a = thread_arena_plus_one;
    if (__builtin_expect(a != 0, 1))
        return a - 1;
    a = atomic_fetch_add_explicit(&next_arena, 1, memory_order_relaxed) % SM_ARENAS;
    thread_arena_plus_one = a + 1;
    return a;
}

static bool commit_metadata(struct sm_class_state *s, uint32_t index)
{
    const uint32_t per_chunk = META_COMMIT_BYTES / sizeof(struct sm_slab);
    uint32_t end = s->meta_committed + per_chunk;
    if (end > s->max_slabs)
        end = s->max_slabs;
    /* max_slabs entries fill whole pages of the class's metadata reservation. */
    size_t from = (size_t)s->meta_committed * sizeof(struct sm_slab);
    size_t to = ((size_t)end * sizeof(struct sm_slab) + SM_PAGE_SIZE - 1) &
                ~(size_t)(SM_PAGE_SIZE - 1);
    if (!sm_region_commit((char *)s->slabs + from, to - from))
        return false;
    s->meta_committed = (uint32_t)(to / sizeof(struct sm_slab));
    if (s->meta_committed > s->max_slabs)
        s->meta_committed = s->max_slabs;
    return index < s->meta_committed;
}

static bool commit_slabs(struct sm_class_state *s, uint32_t index)
{
    size_t slab_bytes = s->slab_bytes;
    uint32_t batch = (uint32_t)(SLAB_COMMIT_BYTES / slab_bytes);
    if (batch == 0)
        batch = 1;
    if (batch > s->max_slabs - index)
        batch = s->max_slabs - index;
    char *start = s->slab_memory + (size_t)index * slab_bytes;
    /* Under commit pressure a batch may be refused where one slab is not. */
    if (!sm_region_commit(start, batch * slab_bytes)) {
        s->commit_failures++;
        batch = 1;
        if (!sm_region_commit(start, slab_bytes))
            return false;
    }
    s->slabs_committed = index + batch;
    return true;
}

static uint32_t take_fresh_slab(struct sm_class_state *s)
{
    uint32_t index = s->fresh_next;
    if (index >= s->max_slabs)
        return SM_SLAB_NIL;
    if (index >= s->meta_committed && !commit_metadata(s, index))
        return SM_SLAB_NIL;
    if (index >= s->slabs_committed && !commit_slabs(s, index))
        return SM_SLAB_NIL;
    s->fresh_next = index + 1;
    sm_slab_init(&s->slabs[index], s->info.slots);
    return index;
}

/* A decommitted slab made usable again, or SM_SLAB_NIL. */
static uint32_t take_decommitted_slab(struct sm_class_state *s)
{
    uint32_t index = sm_slab_list_first(&s->lists, SM_SLAB_DECOMMITTED);
    if (index == SM_SLAB_NIL)
        return SM_SLAB_NIL;
    if (!sm_region_commit(s->slab_memory + (size_t)index * s->slab_bytes, s->slab_bytes)) {
        s->commit_failures++;
        return SM_SLAB_NIL;
    }
    sm_slab_set_state(&s->lists, s->slabs, index, SM_SLAB_UNUSED);
    sm_slab_init(&s->slabs[index], s->info.slots);
    return index;
}

/* A slab with a free slot when the partial list is empty: a retained empty slab first, then
 * one given back to the kernel earlier, then a fresh one. */
static uint32_t refill_partial(struct sm_class_state *s)
{
    uint32_t index = sm_slab_list_first(&s->lists, SM_SLAB_EMPTY);
    if (index == SM_SLAB_NIL)
        index = take_decommitted_slab(s);
    if (index == SM_SLAB_NIL)
        index = take_fresh_slab(s);
    if (index != SM_SLAB_NIL)
        sm_slab_set_state(&s->lists, s->slabs, index, SM_SLAB_PARTIAL);
    return index;
}

void *sm_arena_alloc(unsigned arena, unsigned cls, int *zeroed)
{
    struct sm_class_state *s = &sm_layout.states[(size_t)arena * SM_NB_CLASSES + cls];
    sm_lock_acquire(&s->lock);
    uint32_t index = sm_slab_list_first(&s->lists, SM_SLAB_PARTIAL);
    if (__builtin_expect(index == SM_SLAB_NIL, 0)) {
        index = refill_partial(s);
        if (index == SM_SLAB_NIL) {
            sm_lock_release(&s->lock);
            return NULL;
        }
    }
    struct sm_slab *slab = &s->slabs[index];
    int slot = sm_slab_claim_slot(slab);
    if (sm_slab_is_full(slab))
        sm_slab_set_state(&s->lists, s->slabs, index, SM_SLAB_FULL);
    s->slots_in_use++;
    sm_lock_release(&s->lock);
    char *p = s->slab_memory + (size_t)index * s->slab_bytes + (size_t)slot * s->info.slot_size;
    *zeroed = sm_harden_on_alloc(p, s->info.slot_size);
    return p;
}

enum sm_locate_result sm_arena_locate(const void *p, struct sm_slot_ref *ref)
{
    size_t offset = (uintptr_t)p - (uintptr_t)sm_layout.slab_base;
    struct sm_class_state *owner = &sm_layout.states[offset >> sm_layout.region_shift];
    const struct sm_sizeclass_info *info = &owner->info;
    size_t in_region = offset & (sm_layout.region_bytes - 1);
    uint32_t slab = sm_sizeclass_slab_index(info, (uint32_t)(in_region / SM_PAGE_SIZE));
    uint32_t in_slab = (uint32_t)(in_region - (size_t)slab * owner->slab_bytes);
    uint32_t slot = sm_sizeclass_slot_index(info, in_slab);
    if (slot >= info->slots || slot * info->slot_size != in_slab)
        return SM_LOCATE_NOT_SLOT_START;
    ref->owner = owner;
    ref->slab = slab;
    ref->slot = slot;
    ref->slot_size = info->slot_size;
    return SM_LOCATE_OK;
}

/* The slab's metadata when the slab has ever held slots, else NULL. */
static struct sm_slab *slab_with_slots(struct sm_class_state *s, uint32_t index)
{
    if (index >= s->fresh_next)
        return NULL;
    struct sm_slab *slab = &s->slabs[index];
    if (slab->state == SM_SLAB_UNUSED || slab->state == SM_SLAB_GUARD)
        return NULL;
    return slab;
}

/* Locks the owner of p and returns its slab, aborting unless p is a slot in use. */
static struct sm_slab *lock_slot_in_use(void *p, struct sm_slot_ref *ref)
{
    if (sm_arena_locate(p, ref) != SM_LOCATE_OK)
        sm_fatal("invalid free", p);
    sm_lock_acquire(&ref->owner->lock);
    struct sm_slab *slab = slab_with_slots(ref->owner, ref->slab);
    if (!slab) {
        sm_lock_release(&ref->owner->lock);
        sm_fatal("invalid free", p);
    }
    if (!sm_slab_slot_in_use(slab, ref->slot)) {
        sm_lock_release(&ref->owner->lock);
        sm_fatal("double free", p);
    }
    return slab;
}

void sm_arena_free(void *p)
{
    struct sm_slot_ref ref;
    struct sm_slab *slab = lock_slot_in_use(p, &ref);
    struct sm_class_state *s = ref.owner;
    sm_harden_on_free(p, ref.slot_size);
    sm_slab_release_slot(slab, ref.slot);
    s->slots_in_use--;
    /* The partial list's head stays put even when empty, so that an alloc/free loop does
     * not move it between lists every time; other empty slabs go to the empty list. */
    if (sm_slab_is_empty(slab) && sm_slab_list_first(&s->lists, SM_SLAB_PARTIAL) != ref.slab)
        sm_slab_set_state(&s->lists, s->slabs, ref.slab, SM_SLAB_EMPTY);
    else if (slab->state == SM_SLAB_FULL)
        sm_slab_set_state(&s->lists, s->slabs, ref.slab, SM_SLAB_PARTIAL);
    sm_lock_release(&s->lock);
}

enum sm_slot_status sm_arena_slot_status(const void *p, size_t *usable)
{
    struct sm_slot_ref ref;
    if (sm_arena_locate(p, &ref) != SM_LOCATE_OK)
        return SM_SLOT_INVALID;
    sm_lock_acquire(&ref.owner->lock);
    struct sm_slab *slab = slab_with_slots(ref.owner, ref.slab);
    enum sm_slot_status status = SM_SLOT_INVALID;
    if (slab)
        status = sm_slab_slot_in_use(slab, ref.slot) ? SM_SLOT_IN_USE : SM_SLOT_FREE;
    sm_lock_release(&ref.owner->lock);
    if (status == SM_SLOT_IN_USE)
        *usable = ref.slot_size;
    return status;
}

void sm_arena_fork_prepare(void)
{
    for (size_t i = 0; i < (size_t)SM_ARENAS * SM_NB_CLASSES; i++)
        sm_lock_acquire(&sm_layout.states[i].lock);
}

void sm_arena_fork_parent(void)
{
    for (size_t i = (size_t)SM_ARENAS * SM_NB_CLASSES; i-- > 0;)
        sm_lock_release(&sm_layout.states[i].lock);
}

void sm_arena_fork_child(void)
{
    /* The child has one thread: nobody can be waiting, so the locks are simply reset. */
    for (size_t i = 0; i < (size_t)SM_ARENAS * SM_NB_CLASSES; i++)
        atomic_store_explicit(&sm_layout.states[i].lock.state, 0, memory_order_relaxed);
}

static size_t trim_class(struct sm_class_state *s)
{
    size_t bytes = 0;
    sm_lock_acquire(&s->lock);
    uint32_t index = sm_slab_list_first(&s->lists, SM_SLAB_PARTIAL);
    if (index != SM_SLAB_NIL && sm_slab_is_empty(&s->slabs[index]))
        sm_slab_set_state(&s->lists, s->slabs, index, SM_SLAB_EMPTY);
    while ((index = sm_slab_list_first(&s->lists, SM_SLAB_EMPTY)) != SM_SLAB_NIL) {
        if (!sm_region_decommit(s->slab_memory + (size_t)index * s->slab_bytes, s->slab_bytes))
            break;
        sm_slab_set_state(&s->lists, s->slabs, index, SM_SLAB_DECOMMITTED);
        bytes += s->slab_bytes;
    }
    sm_lock_release(&s->lock);
    return bytes;
}

size_t sm_arena_trim(void)
{
    size_t bytes = 0;
    if (!sm_layout.states)
        return 0;
    for (size_t i = 0; i < (size_t)SM_ARENAS * SM_NB_CLASSES; i++)
        bytes += trim_class(&sm_layout.states[i]);
    return bytes;
}

void sm_arena_class_stats(unsigned arena, unsigned cls, struct sm_class_stats *out)
{
    struct sm_class_state *s = &sm_layout.states[(size_t)arena * SM_NB_CLASSES + cls];
    sm_lock_acquire(&s->lock);
    out->slots_in_use = s->slots_in_use;
    out->slabs_partial = s->lists.by_state[SM_SLAB_PARTIAL].count;
    out->slabs_full = s->lists.by_state[SM_SLAB_FULL].count;
    out->slabs_empty = s->lists.by_state[SM_SLAB_EMPTY].count;
    out->slabs_quarantined = s->lists.by_state[SM_SLAB_QUARANTINED].count;
    out->slabs_decommitted = s->lists.by_state[SM_SLAB_DECOMMITTED].count;
    out->slabs_used = s->fresh_next;
    out->commit_failures = s->commit_failures;
    sm_lock_release(&s->lock);
}

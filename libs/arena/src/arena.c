/* Small-object allocation and free within the (arena, class) regions. */
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "arena_internal.h"
#include "starmalloc/hardening.h"
#include "starmalloc/region.h"
#include "starmalloc/sizeclass.h"

enum {
    /* guard slabs in one batch (and one more): at most one per two slabs */
    GUARDS_PER_COMMIT_MAX = SM_SLAB_COMMIT_BYTES / SM_PAGE_SIZE / 2 + 2,
    SLABS_PER_COMMIT_MAX = SM_SLAB_COMMIT_BYTES / SM_PAGE_SIZE + 1, /* slabs of one page each */
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

static char *slab_start(const struct sm_class_state *s, uint32_t index)
{
    return s->slab_memory + (size_t)index * s->slab_bytes;
}

/* ---- slabs: commit, guards, retirement ---------------------------------------------- */

/* Commits the first `bytes` bytes of a metadata array (rounded up to whole pages: each array
 * fills whole pages of the class's metadata reservation), of which *committed are already. */
static bool commit_array(void *array, size_t *committed, size_t bytes)
{
    bytes = (bytes + SM_PAGE_SIZE - 1) & ~(size_t)(SM_PAGE_SIZE - 1);
    if (bytes <= *committed)
        return true;
    if (!sm_region_commit((char *)array + *committed, bytes - *committed))
        return false;
    __atomic_store_n(committed, bytes, __ATOMIC_RELEASE); /* free reads it without the lock */
    return true;
}

/* Commits the metadata (struct sm_slab and allocated bytes) of the next chunk of slabs. */
static bool commit_metadata(struct sm_class_state *s, uint32_t index)
{
    const uint32_t per_chunk = META_COMMIT_BYTES / sizeof(struct sm_slab);
    uint32_t end = s->meta_committed + per_chunk;
    if (end > s->max_slabs)
        end = s->max_slabs;
    if (!commit_array(s->slabs, &s->slabs_bytes_committed, (size_t)end * sizeof(struct sm_slab)) ||
        !commit_array(s->allocated_bytes, &s->allocated_bytes_committed,
                      (size_t)end * s->slab_bytes >> s->allocated_shift))
        return false;
    s->meta_committed = end;
    return index < end;
}

/* Resets slab `index`'s metadata, with its slots' allocated bytes (see allocated_bytes). */
static void reset_slab(struct sm_class_state *s, uint32_t index)
{
    sm_slab_init(&s->slabs[index], s->info.slots,
                 s->allocated_bytes + ((size_t)index * s->slab_bytes >> s->allocated_shift),
                 s->info.slot_size >> s->allocated_shift);
}

static bool is_guard_index(uint32_t index)
{
    return SM_GUARD_INTERVAL != 0 && index % (SM_GUARD_INTERVAL + 1) == SM_GUARD_INTERVAL;
}

/* The first index >= index that is a guard slab, or max_slabs. */
static uint32_t next_guard_index(const struct sm_class_state *s, uint32_t index)
{
    if (!SM_GUARD_INTERVAL)
        return s->max_slabs;
    uint32_t period = SM_GUARD_INTERVAL + 1;
    uint32_t guard = index - index % period + SM_GUARD_INTERVAL;
    return guard < s->max_slabs ? guard : s->max_slabs;
}

/* Guards the guard slabs in the run [from, to) that commit_slabs just committed. */
static void guard_committed_guards(const struct sm_class_state *s, uint32_t from, uint32_t to)
{
    void *starts[GUARDS_PER_COMMIT_MAX];
    size_t n = 0;
    for (uint32_t g = next_guard_index(s, from); g < to; g = next_guard_index(s, g + 1))
        starts[n++] = slab_start(s, g);
    if (n == 0)
        return;
    /* Never touched: the markers go in without a call to drop pages, all in one call. */
    if (sm_region_guard_untouched_many(starts, n, s->slab_bytes) < n)
        sm_harden_note_guard_failure("a guard slab could not be installed "
                                     "(vm.max_map_count reached?)");
}

/* Populates the slabs (not the guards) of the run [from, to) that commit_slabs just
 * committed, once the class has taken SM_POPULATE_FRESH_AFTER_BYTES of its region (guards
 * included): its slabs are then likely to be used whole, and on a virtual machine pages
 * populated by one call for the run cost less than half the faults their first touches
 * would take (see docs/architecture.md). A class's first slabs stay lazy, so that a program
 * using a few objects of many classes does not pay memory for them, and a hot class holds at
 * most one batch it may not use. Slots larger than a page are populated only where freeing
 * zeroes them whole (SM_ZERO_ON_FREE): otherwise the pages of a slot that the program does
 * not touch would be made resident for nothing. */
static void populate_committed_slabs(const struct sm_class_state *s, uint32_t from, uint32_t to)
{
    if ((size_t)from * s->slab_bytes < SM_POPULATE_FRESH_AFTER_BYTES)
        return;
    if (!SM_ZERO_ON_FREE && s->info.slot_size > SM_PAGE_SIZE)
        return;
    void *starts[SLABS_PER_COMMIT_MAX];
    size_t n = 0;
    for (uint32_t i = from; i < to && n < SLABS_PER_COMMIT_MAX; i++) {
        if (!is_guard_index(i))
            starts[n++] = slab_start(s, i);
    }
    sm_region_populate_many(starts, n, s->slab_bytes);
}

/* Commits fresh slab `index` and, while it costs nothing more, the next ones: up to the
 * next guard slab, or with guard markers across guard slabs too (guarded at once by markers,
 * so that the class region stays one mapping). When the kernel refuses
 * (commit charge, or vm.max_map_count because guards split the mapping), retries one slab,
 * then one slab merged with the guard before it: the guard is lost, which is counted and
 * reported, but allocation goes on. */
static bool commit_slabs(struct sm_class_state *s, uint32_t index)
{
    uint32_t batch = (uint32_t)(SM_SLAB_COMMIT_BYTES / s->slab_bytes);
    uint32_t run_end = sm_region_guard_markers() ? s->max_slabs : next_guard_index(s, index);
    if (batch == 0)
        batch = 1;
    if (batch > run_end - index)
        batch = run_end - index;
    /* With markers a guard slab right after the run is committed (and guarded) with it, so
     * that the run and the next one join into one mapping. */
    if (sm_region_guard_markers() && index + batch < s->max_slabs && is_guard_index(index + batch))
        batch++;
    if (sm_region_commit(slab_start(s, index), batch * s->slab_bytes)) {
        guard_committed_guards(s, index, index + batch);
        populate_committed_slabs(s, index, index + batch);
        s->slabs_committed = index + batch;
        return true;
    }
    s->commit_failures++;
    if (!sm_region_commit(slab_start(s, index), s->slab_bytes)) {
        if (index == 0 || !is_guard_index(index - 1) ||
            !sm_region_commit(slab_start(s, index - 1), 2 * s->slab_bytes))
            return false;
        sm_harden_note_guard_failure("a guard slab was dropped: the kernel refused a mapping "
                                     "(vm.max_map_count reached?)");
    }
    s->slabs_committed = index + 1;
    return true;
}

/* `fresh`: the slab's memory was never handed out (a slab taken from the unused end of the
 * class region), so no dangling pointer can reach it and its slots are zero until claimed. */
static void init_slab(struct sm_class_state *s, uint32_t index, bool fresh)
{
    reset_slab(s, index);
    if (fresh)
        sm_slab_mark_fresh(&s->slabs[index]);
    if (SM_CANARIES)
        s->slabs[index].secret = sm_random_u64(&s->rng);
}

static uint32_t take_fresh_slab(struct sm_class_state *s)
{
    for (;;) {
        uint32_t index = s->fresh_next;
        if (index >= s->max_slabs)
            return SM_SLAB_NIL;
        if (index >= s->meta_committed && !commit_metadata(s, index))
            return SM_SLAB_NIL;
        if (is_guard_index(index)) {
            /* Guarded by markers when committed with the slabs around it (commit_slabs);
             * otherwise never committed: the reservation's PROT_NONE is the guard. */
            reset_slab(s, index);
            s->slabs[index].state = SM_SLAB_GUARD;
            __atomic_store_n(&s->fresh_next, index + 1, __ATOMIC_RELEASE);
            continue;
        }
        if (index >= s->slabs_committed && !commit_slabs(s, index))
            return SM_SLAB_NIL;
        init_slab(s, index, true);
        __atomic_store_n(&s->fresh_next, index + 1, __ATOMIC_RELEASE);
        return index;
    }
}

/* Makes `count` slabs that went back to the kernel (starts[i]) usable again; returns how
 * many, from the first. */
static size_t take_back_slabs(const struct sm_class_state *s, void *const *starts, size_t count)
{
    if (!SM_SLAB_QUARANTINE) {
        sm_region_reuse_purged(count * s->slab_bytes);
        return count;
    }
    size_t done = sm_region_unguard_many(starts, count, s->slab_bytes);
    /* The write-after-free check reads each slot before the user writes it: without this,
     * each page would fault twice (a read maps the zero page, the write copies it). */
    if (SM_WRITE_AFTER_FREE_CHECK)
        sm_region_populate_many(starts, done, s->slab_bytes);
    return done;
}

/* A slab that went back to the kernel, committed and reset; or SM_SLAB_NIL. With slab
 * quarantine, where each slab taken back costs system calls, up to s->empty_slabs_kept of
 * them are taken back at once (one or two calls for all): the others join the empty list. */
static uint32_t reuse_decommitted_slab(struct sm_class_state *s, enum sm_slab_state from)
{
    enum { BATCH_MAX = 64 };
    uint32_t batch =
        SM_SLAB_QUARANTINE != 0 && from == SM_SLAB_DECOMMITTED ? s->empty_slabs_kept : 1;
    if (batch > BATCH_MAX)
        batch = BATCH_MAX;
    uint32_t indices[BATCH_MAX];
    void *starts[BATCH_MAX];
    size_t n = 0;
    uint32_t index;
    while (n < batch && (index = sm_slab_list_last(&s->lists, s->slabs, from)) != SM_SLAB_NIL) {
        sm_slab_set_state(&s->lists, s->slabs, index, SM_SLAB_UNUSED);
        indices[n] = index;
        starts[n] = slab_start(s, index);
        n++;
    }
    if (n == 0)
        return SM_SLAB_NIL;
    size_t done = take_back_slabs(s, starts, n); /* at most n */
    if (done > n)
        done = n;                     /* (for the static analyser, which cannot see that) */
    for (size_t i = done; i < n; i++) /* still given back */
        sm_slab_set_state(&s->lists, s->slabs, indices[i], from);
    if (done == 0) {
        s->commit_failures++;
        return SM_SLAB_NIL;
    }
    for (size_t i = 0; i < done; i++)
        init_slab(s, indices[i], false);
    for (size_t i = 1; i < done; i++)
        sm_slab_set_state(&s->lists, s->slabs, indices[i], SM_SLAB_EMPTY);
    return indices[0];
}

/* ---- retained empty slabs (SM_RETAIN_EMPTY_SLABS) ---------------------------------- */

/* Empty slabs retained beyond the kept ones (SM_RETAIN_EMPTY_SLABS: no slab quarantine and a
 * decay period; see sm_arena_give_back_retained), all accessed atomically: their bytes (the
 * sum of the states' retained_counted x slab_bytes), the bytes of the slabs in use (partial or
 * full), the bytes of new memory taken since the last settle_retained while more was
 * retained than allowed, when the next decay step is due, and the state where the next
 * give-back starts. */
static struct {
    size_t bytes;
    size_t live;
    size_t demand;
    uint64_t next_decay_ms;
    size_t cursor;
} retained;

/* Retained bytes allowed beyond the bytes of slabs in use, before new memory makes them go. */
static const size_t RETAINED_FLOOR_BYTES = (size_t)8 << 20;

static size_t give_back_empty_slabs(struct sm_class_state *s, uint32_t keep,
                                    enum sm_slab_state retired);

static uint32_t retained_excess(const struct sm_class_state *s)
{
    uint32_t empty = s->lists.by_state[SM_SLAB_EMPTY].count;
    return empty > s->empty_slabs_kept ? empty - s->empty_slabs_kept : 0;
}

/* Brings the global count of retained bytes up to date with s's empty list (lock held). */
static void count_retained(struct sm_class_state *s)
{
    if (!SM_RETAIN_EMPTY_SLABS)
        return;
    uint32_t excess = retained_excess(s);
    uint32_t counted = s->retained_counted;
    if (excess == counted)
        return;
    if (excess > counted)
        __atomic_fetch_add(&retained.bytes, (size_t)(excess - counted) * s->slab_bytes,
                           __ATOMIC_RELAXED);
    else
        __atomic_fetch_sub(&retained.bytes, (size_t)(counted - excess) * s->slab_bytes,
                           __ATOMIC_RELAXED);
    __atomic_store_n(&s->retained_counted, excess, __ATOMIC_RELAXED);
    /* Slabs reused since the last decay step were not idle for the whole period. */
    if (s->retained_at_decay > excess)
        s->retained_at_decay = excess;
}

/* A slab of s started (+1) or stopped (-1) being in use (lock held). */
static void count_live(const struct sm_class_state *s, int sign)
{
    if (!SM_RETAIN_EMPTY_SLABS)
        return;
    if (sign > 0)
        __atomic_fetch_add(&retained.live, s->slab_bytes, __ATOMIC_RELAXED);
    else
        __atomic_fetch_sub(&retained.live, s->slab_bytes, __ATOMIC_RELAXED);
}

/* The retained bytes beyond what is allowed: as many as the slabs in use hold, plus
 * RETAINED_FLOOR_BYTES. */
static size_t retained_over_allowance(void)
{
    size_t bytes = __atomic_load_n(&retained.bytes, __ATOMIC_RELAXED);
    size_t allowed = __atomic_load_n(&retained.live, __ATOMIC_RELAXED) + RETAINED_FLOOR_BYTES;
    return bytes > allowed ? bytes - allowed : 0;
}

/* `bytes` of new memory were taken from the kernel: while more is retained than allowed, as
 * many retained bytes are to go back (settle_retained; no lock needed). */
static void note_new_memory(size_t bytes)
{
    if (SM_RETAIN_EMPTY_SLABS && retained_over_allowance() != 0)
        __atomic_fetch_add(&retained.demand, bytes, __ATOMIC_RELAXED);
}

/* Gives back up to `count` of s's retained slabs, the oldest (lock held); returns bytes. */
static size_t give_back_oldest_retained(struct sm_class_state *s, uint32_t count)
{
    uint32_t excess = retained_excess(s);
    if (count > excess)
        count = excess;
    if (count == 0)
        return 0;
    uint32_t keep = s->lists.by_state[SM_SLAB_EMPTY].count - count;
    size_t bytes = give_back_empty_slabs(s, keep, SM_SLAB_DECOMMITTED) * s->slab_bytes;
    count_retained(s);
    return bytes;
}

size_t sm_arena_give_back_retained(size_t bytes)
{
    if (!SM_RETAIN_EMPTY_SLABS || __atomic_load_n(&retained.bytes, __ATOMIC_RELAXED) == 0)
        return 0;
    const size_t states = (size_t)SM_ARENAS * SM_NB_CLASSES;
    size_t start = __atomic_load_n(&retained.cursor, __ATOMIC_RELAXED) % states;
    size_t done = 0, i = 0;
    for (; i < states && done < bytes; i++) {
        struct sm_class_state *s = &sm_layout.states[(start + i) % states];
        if (__atomic_load_n(&s->retained_counted, __ATOMIC_RELAXED) == 0)
            continue;
        sm_lock_acquire(&s->lock);
        size_t slabs = (bytes - done + s->slab_bytes - 1) / s->slab_bytes;
        done += give_back_oldest_retained(s, slabs > UINT32_MAX ? UINT32_MAX : (uint32_t)slabs);
        sm_lock_release(&s->lock);
    }
    /* The next give-back starts with the state after the last one this one visited. */
    __atomic_store_n(&retained.cursor, (start + i) % states, __ATOMIC_RELAXED);
    return done;
}

size_t sm_arena_retained_bytes(void)
{
    return __atomic_load_n(&retained.bytes, __ATOMIC_RELAXED);
}

size_t sm_arena_decay_retained(void)
{
    if (!SM_RETAIN_EMPTY_SLABS || !sm_layout.states)
        return 0;
    size_t bytes = 0;
    for (size_t i = 0; i < (size_t)SM_ARENAS * SM_NB_CLASSES; i++) {
        struct sm_class_state *s = &sm_layout.states[i];
        if (__atomic_load_n(&s->retained_counted, __ATOMIC_RELAXED) == 0)
            continue; /* then retained_at_decay is 0 too */
        sm_lock_acquire(&s->lock);
        bytes += give_back_oldest_retained(s, s->retained_at_decay);
        s->retained_at_decay = retained_excess(s);
        sm_lock_release(&s->lock);
    }
    return bytes;
}

static uint64_t now_ms(void)
{
    struct timespec t;
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &t) != 0)
        return 0;
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* Runs a decay step when one is due; of racing threads, one runs it. */
static void decay_when_due(void)
{
    uint64_t now = now_ms();
    uint64_t due = __atomic_load_n(&retained.next_decay_ms, __ATOMIC_RELAXED);
    if (now < due ||
        !__atomic_compare_exchange_n(&retained.next_decay_ms, &due, now + SM_RETAINED_DECAY_MS,
                                     false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return;
    sm_arena_decay_retained();
}

void sm_arena_settle_retained(void)
{
    if (!SM_RETAIN_EMPTY_SLABS || __atomic_load_n(&retained.bytes, __ATOMIC_RELAXED) == 0)
        return;
    size_t demand = __atomic_exchange_n(&retained.demand, 0, __ATOMIC_RELAXED);
    if (demand != 0) {
        size_t over = retained_over_allowance();
        sm_arena_give_back_retained(demand < over ? demand : over);
    }
    decay_when_due();
}

void sm_arena_note_new_memory(size_t bytes)
{
    note_new_memory(bytes);
    sm_arena_settle_retained();
}

/* A slab with a free slot when the partial list is empty: a retained empty slab, then one
 * given back to the kernel, then a fresh one, and only when the class region is exhausted,
 * the oldest quarantined slab. */
static uint32_t refill_partial(struct sm_class_state *s)
{
    uint32_t index = sm_slab_list_first(&s->lists, SM_SLAB_EMPTY);
    if (index != SM_SLAB_NIL) {
        sm_slab_set_state(&s->lists, s->slabs, index, SM_SLAB_PARTIAL);
        count_retained(s);
        count_live(s, +1);
        return index;
    }
    index = reuse_decommitted_slab(s, SM_SLAB_DECOMMITTED);
    if (index == SM_SLAB_NIL)
        index = take_fresh_slab(s);
    if (index == SM_SLAB_NIL)
        index = reuse_decommitted_slab(s, SM_SLAB_QUARANTINED);
    if (index == SM_SLAB_NIL)
        return SM_SLAB_NIL;
    sm_slab_set_state(&s->lists, s->slabs, index, SM_SLAB_PARTIAL);
    count_live(s, +1);
    note_new_memory(s->slab_bytes);
    return index;
}

/* Gives the oldest empty slabs back to the kernel until `keep` are left, with one or two
 * system calls per 64 of them (sm_region_purge_many, sm_region_guard_many). On the test VM
 * a page given back costs about 6 us in a madvise of its own and 1.2 us in a batch, and a
 * guard marker put on a slab that still has its pages about 30 us: the calls, not the
 * pages, were most of the cost. Without slab quarantine the slabs only lose their pages
 * (MADV_DONTNEED) and stay accessible, so taking them back needs no system call; with it
 * they are guarded (a read through a dangling pointer traps; with guard markers the class
 * region does not split into a mapping per retired slab). They go to the `retired` list:
 * decommitted (reusable at once) or quarantined, where each waits behind
 * SM_SLAB_QUARANTINE others (the oldest then become reusable). Returns the slabs given back;
 * stops early only when the kernel refuses. */
static size_t give_back_empty_slabs(struct sm_class_state *s, uint32_t keep,
                                    enum sm_slab_state retired)
{
    enum { BATCH_MAX = 64 };
    uint32_t indices[BATCH_MAX];
    void *starts[BATCH_MAX];
    size_t total = 0;
    while (s->lists.by_state[SM_SLAB_EMPTY].count > keep) {
        size_t n = 0;
        while (n < BATCH_MAX && s->lists.by_state[SM_SLAB_EMPTY].count > keep) {
            uint32_t index = sm_slab_list_last(&s->lists, s->slabs, SM_SLAB_EMPTY);
            sm_slab_set_state(&s->lists, s->slabs, index, retired); /* oldest first */
            indices[n] = index;
            starts[n] = slab_start(s, index);
            n++;
        }
        size_t done = SM_SLAB_QUARANTINE ? sm_region_guard_many(starts, n, s->slab_bytes)
                                         : sm_region_purge_many(starts, n, s->slab_bytes);
        for (size_t i = done; i < n; i++) /* still committed: empty, not given back */
            sm_slab_set_state(&s->lists, s->slabs, indices[i], SM_SLAB_EMPTY);
        while (retired == SM_SLAB_QUARANTINED &&
               s->lists.by_state[SM_SLAB_QUARANTINED].count > SM_SLAB_QUARANTINE) {
            uint32_t oldest = sm_slab_list_last(&s->lists, s->slabs, SM_SLAB_QUARANTINED);
            sm_slab_set_state(&s->lists, s->slabs, oldest, SM_SLAB_DECOMMITTED);
        }
        total += done;
        if (done < n) {
            sm_harden_note_guard_failure("an empty slab could not be returned to the kernel "
                                         "(vm.max_map_count reached?)");
            break;
        }
    }
    return total;
}

/* Once more than twice s->empty_slabs_kept slabs are empty, the oldest go back to the
 * kernel, down to s->empty_slabs_kept (the hysteresis that keeps alloc/free loops away from
 * system calls, and lets the slabs go in batches); with SM_RETAIN_EMPTY_SLABS they stay,
 * retained (sm_arena_give_back_retained). */
static void retire_empty_slabs(struct sm_class_state *s)
{
    if (SM_RETAIN_EMPTY_SLABS) {
        count_retained(s); /* retained: given back on demand, by decay or at trim */
        return;
    }
    if (s->lists.by_state[SM_SLAB_EMPTY].count > 2 * s->empty_slabs_kept)
        give_back_empty_slabs(s, s->empty_slabs_kept,
                              SM_SLAB_QUARANTINE ? SM_SLAB_QUARANTINED : SM_SLAB_DECOMMITTED);
}

static void make_empty(struct sm_class_state *s, uint32_t index)
{
    sm_slab_set_state(&s->lists, s->slabs, index, SM_SLAB_EMPTY);
    count_live(s, -1);
    retire_empty_slabs(s);
}

/* State changes after slot(s) of slab `index` became free. The partial list's head stays
 * put even when empty, so that an alloc/free loop at a slab boundary does not move it
 * between lists every time; it becomes an empty slab as soon as another slab takes its
 * place at the head. */
static void slab_after_release(struct sm_class_state *s, uint32_t index)
{
    struct sm_slab *slab = &s->slabs[index];
    uint32_t head = sm_slab_list_first(&s->lists, SM_SLAB_PARTIAL);
    if (sm_slab_is_empty(slab) && head != index) {
        make_empty(s, index);
    } else if (slab->state == SM_SLAB_FULL) {
        sm_slab_set_state(&s->lists, s->slabs, index, SM_SLAB_PARTIAL);
        if (head != SM_SLAB_NIL && sm_slab_is_empty(&s->slabs[head]))
            make_empty(s, head);
    }
}

/* ---- slot quarantine --------------------------------------------------------------- */

/* Quarantine entries are the slots' allocated-byte indices: the thread caches have them at
 * hand, and a slot leaving the quarantine for a cache needs only its address (one shift). */
void sm_arena_release_index_locked(struct sm_class_state *s, uint32_t index)
{
    size_t in_region = (size_t)index << s->allocated_shift;
    uint32_t slab = sm_arena_slab_at(s, in_region);
    sm_arena_release_deferred_locked(s, slab, sm_arena_slot_at(s, in_region, slab));
}

/* Holds `entry` back: it replaces a random entry of the random stage, which moves to the
 * FIFO stage; when that stage is full its oldest entry leaves the quarantine and is
 * returned (still deferred), else SM_QUARANTINE_NONE. */
static uint32_t quarantine_push(struct sm_class_state *s, uint32_t entry)
{
    /* Fields in locals: the stages are uint32_t arrays, which the compiler must otherwise
     * assume may alias the counters, reloading them after every store. */
    uint32_t capacity = s->quarantine_capacity;
    uint32_t place = sm_random_below(&s->rng, capacity);
    uint32_t evicted = s->quarantine_random[place];
    s->quarantine_random[place] = entry;
    if (evicted == SM_QUARANTINE_NONE) {
        s->quarantined++;
        return SM_QUARANTINE_NONE;
    }
    uint32_t head = s->fifo_head;
    uint32_t count = s->fifo_count;
    if (count == capacity) { /* the steady state: one in, the oldest out */
        uint32_t oldest = s->quarantine_fifo[head];
        s->quarantine_fifo[head] = evicted;
        s->fifo_head = head + 1 == capacity ? 0 : head + 1;
        return oldest;
    }
    uint32_t tail = head + count; /* < 2 * capacity */
    s->quarantine_fifo[tail < capacity ? tail : tail - capacity] = evicted;
    s->fifo_count = count + 1;
    s->quarantined++;
    return SM_QUARANTINE_NONE;
}

/* Releases every quarantined slot: the last resort when the class region is exhausted (out
 * of memory, the quarantine's delay gives way rather than the allocation failing). */
static bool quarantine_drain(struct sm_class_state *s)
{
    if (s->quarantined == 0)
        return false;
    for (uint32_t i = 0; i < s->quarantine_capacity; i++) {
        if (s->quarantine_random[i] != SM_QUARANTINE_NONE)
            sm_arena_release_index_locked(s, s->quarantine_random[i]);
        s->quarantine_random[i] = SM_QUARANTINE_NONE;
    }
    for (uint32_t i = 0, at = s->fifo_head; i < s->fifo_count; i++) {
        sm_arena_release_index_locked(s, s->quarantine_fifo[at]);
        at = at + 1 == s->quarantine_capacity ? 0 : at + 1;
    }
    s->fifo_head = 0;
    s->fifo_count = 0;
    s->quarantined = 0;
    return true;
}

void sm_arena_state_init_policies(struct sm_class_state *s, uint64_t stream)
{
    sm_random_init(&s->rng, stream);
    /* Per stage at most SM_SLOT_QUARANTINE entries and about SM_SLOT_QUARANTINE pages. */
    uint32_t capacity = (uint32_t)((uint64_t)SM_SLOT_QUARANTINE * SM_PAGE_SIZE / s->info.slot_size);
    if (capacity > SM_QUARANTINE_ENTRIES)
        capacity = SM_QUARANTINE_ENTRIES;
    s->quarantine_capacity = capacity ? capacity : 1;
    for (uint32_t i = 0; i < SM_QUARANTINE_ENTRIES; i++) {
        s->quarantine_random[i] = SM_QUARANTINE_NONE;
        s->quarantine_fifo[i] = SM_QUARANTINE_NONE;
    }
}

/* ---- allocation and free ----------------------------------------------------------- */

/* Claims one slot (lowest, or random with SM_RANDOMIZE_SLOTS) of the state's partial head,
 * refilling the partial list when needed; returns its address, or NULL. *fresh tells whether
 * the slot was never handed out since its slab came fresh from the kernel (tracked only for
 * the write-after-free check, which such a slot does not need). Lock held. */
static char *claim_one(struct sm_class_state *s, uint64_t *secret, uint32_t *slab_index,
                       uint32_t *slot_index, bool *fresh)
{
    uint32_t index = sm_slab_list_first(&s->lists, SM_SLAB_PARTIAL);
    if (__builtin_expect(index == SM_SLAB_NIL, 0)) {
        index = refill_partial(s);
        if (index == SM_SLAB_NIL && quarantine_drain(s))
            index = sm_slab_list_first(&s->lists, SM_SLAB_PARTIAL);
        if (index == SM_SLAB_NIL)
            index = refill_partial(s);
        if (index == SM_SLAB_NIL)
            return NULL;
    }
    struct sm_slab *slab = &s->slabs[index];
    int slot = SM_RANDOMIZE_SLOTS
                   ? sm_slab_claim_slot_from(slab, sm_random_below(&s->rng, slab->slots))
                   : sm_slab_claim_slot(slab);
    if (sm_slab_is_full(slab))
        sm_slab_set_state(&s->lists, s->slabs, index, SM_SLAB_FULL);
    s->slots_in_use++;
    *fresh = SM_WRITE_AFTER_FREE_CHECK && sm_slab_claim_first(slab, (unsigned)slot);
    *secret = slab->secret;
    *slab_index = index;
    *slot_index = (uint32_t)slot;
    return slab_start(s, index) + (size_t)slot * s->info.slot_size;
}

void *sm_arena_alloc(unsigned arena, unsigned cls, int *zeroed)
{
    struct sm_class_state *s = sm_arena_state(arena, cls);
    uint64_t secret;
    uint32_t slab, slot;
    bool fresh;
    sm_lock_acquire(&s->lock);
    char *p = claim_one(s, &secret, &slab, &slot, &fresh);
    sm_lock_release(&s->lock);
    sm_arena_settle_retained();
    if (p)
        *zeroed = fresh ? sm_harden_on_alloc_fresh(p, s->info.slot_size, secret)
                        : sm_harden_on_alloc(p, s->info.slot_size, secret);
    return p;
}

uint32_t sm_arena_claim_batch(struct sm_class_state *s, uint32_t count, void **slots,
                              uint64_t *secrets, uint32_t *allocated_indices, uint8_t *fresh)
{
    uint32_t n = 0;
    uint64_t secret;
    sm_lock_acquire(&s->lock);
    for (; n < count; n++) {
        uint32_t slab, slot;
        bool first;
        char *p = claim_one(s, &secret, &slab, &slot, &first);
        if (!p)
            break;
        sm_slab_defer_slot(&s->slabs[slab], slot);
        /* Cached slots are handed out last-in first-out: the first claimed goes on top. */
        slots[count - 1 - n] = p;
        secrets[count - 1 - n] = secret;
        allocated_indices[count - 1 - n] = sm_arena_allocated_index(s, p);
        fresh[count - 1 - n] = first;
    }
    sm_lock_release(&s->lock);
    sm_arena_settle_retained();
    for (uint32_t i = 0; n < count && i < n; i++) { /* move the claimed ones to the bottom */
        slots[i] = slots[count - n + i];
        secrets[i] = secrets[count - n + i];
        allocated_indices[i] = allocated_indices[count - n + i];
        fresh[i] = fresh[count - n + i];
    }
    return n;
}

enum sm_locate_result sm_arena_locate(const void *p, struct sm_slot_ref *ref)
{
    return sm_arena_locate_inline(p, ref);
}

/* The slab's metadata when the slab has ever held slots, else NULL. Safe without the lock:
 * fresh_next only grows, after the slab's metadata is committed and initialised. */
static struct sm_slab *slab_with_slots(struct sm_class_state *s, uint32_t index)
{
    if (index >= __atomic_load_n(&s->fresh_next, __ATOMIC_ACQUIRE))
        return NULL;
    struct sm_slab *slab = &s->slabs[index];
    uint8_t state = __atomic_load_n(&slab->state, __ATOMIC_RELAXED);
    if (state == SM_SLAB_UNUSED || state == SM_SLAB_GUARD)
        return NULL;
    return slab;
}

bool sm_arena_locate_set_up(const void *p, struct sm_slot_ref *ref)
{
    return sm_arena_locate_inline(p, ref) == SM_LOCATE_OK &&
           ref->slab < __atomic_load_n(&ref->owner->fresh_next, __ATOMIC_ACQUIRE);
}

bool sm_arena_slab_holds_slots(const struct sm_slab *slab)
{
    uint8_t state = __atomic_load_n(&slab->state, __ATOMIC_RELAXED);
    return state != SM_SLAB_UNUSED && state != SM_SLAB_GUARD;
}

void sm_arena_release_deferred_locked(struct sm_class_state *s, uint32_t slab, uint32_t slot)
{
    sm_slab_release_deferred(&s->slabs[slab], slot);
    s->slots_in_use--;
    slab_after_release(s, slab);
}

bool sm_arena_quarantine_locked(struct sm_class_state *s, uint32_t index, uint32_t *out_index)
{
    uint32_t left = quarantine_push(s, index);
    if (left == SM_QUARANTINE_NONE)
        return false;
    *out_index = left;
    return true;
}

static _Noreturn void unlock_and_fail(struct sm_class_state *s, const char *what, const void *p)
{
    sm_lock_release(&s->lock);
    sm_fatal(what, p);
}

void sm_arena_free(void *p)
{
    struct sm_slot_ref ref;
    if (sm_arena_locate(p, &ref) != SM_LOCATE_OK)
        sm_fatal("invalid free", p);
    struct sm_class_state *s = ref.owner;
    sm_lock_acquire(&s->lock);
    struct sm_slab *slab = slab_with_slots(s, ref.slab);
    if (!slab)
        unlock_and_fail(s, "invalid free", p);
    /* Deferred at once, as on the cached path: of two racing frees of p one fails here. */
    if (sm_slab_defer_slot(slab, ref.slot) != SM_SLAB_RELEASED)
        unlock_and_fail(s, "double free", p);
    if (!sm_harden_on_free(p, ref.slot_size, slab->secret))
        unlock_and_fail(s, "canary corrupted", p);
    if (SM_SLOT_QUARANTINE) {
        uint32_t left = quarantine_push(s, sm_arena_allocated_index(s, p));
        if (left != SM_QUARANTINE_NONE)
            sm_arena_release_index_locked(s, left);
    } else {
        sm_arena_release_deferred_locked(s, ref.slab, ref.slot);
    }
    sm_lock_release(&s->lock);
    sm_arena_settle_retained();
}

/* sm_arena_slot_status for a p whose allocated byte is not 1: the full diagnosis. */
static enum sm_slot_status slot_status_slow(const void *p, size_t *usable)
{
    struct sm_slot_ref ref;
    if (sm_arena_locate(p, &ref) != SM_LOCATE_OK)
        return SM_SLOT_INVALID;
    /* No lock: the bitmaps are read atomically, and the bits of a slot the caller owns do not
     * change under it (only a racing misuse of the same pointer could blur the diagnosis). */
    struct sm_slab *slab = slab_with_slots(ref.owner, ref.slab);
    enum sm_slot_status status = SM_SLOT_INVALID;
    if (slab && !sm_slab_slot_allocated(slab, ref.slot))
        status = SM_SLOT_FREE;
    else if (slab)
        status = sm_harden_canary_intact(p, ref.slot_size, slab->secret) ? SM_SLOT_IN_USE
                                                                         : SM_SLOT_CANARY_CORRUPTED;
    if (status == SM_SLOT_IN_USE)
        *usable = ref.slot_size - SM_CANARY_BYTES;
    return status;
}

/* The common case first, found as free finds it (sm_arena_allocated_lookup): only the
 * allocated byte of a slot in use is 1, so the slab's state need not be read, nor, without
 * canaries, the slab's metadata at all. */
enum sm_slot_status sm_arena_slot_status(const void *p, size_t *usable)
{
    struct sm_class_state *owner;
    size_t index;
    if (!sm_arena_allocated_lookup(p, &owner, &index) ||
        __atomic_load_n(owner->allocated_bytes + index, __ATOMIC_RELAXED) != 1)
        return slot_status_slow(p, usable);
    uint64_t secret = SM_CANARIES ? sm_arena_slab_of(owner, p)->secret : 0;
    if (!sm_harden_canary_intact(p, owner->info.slot_size, secret))
        return SM_SLOT_CANARY_CORRUPTED;
    *usable = owner->info.slot_size - SM_CANARY_BYTES;
    return SM_SLOT_IN_USE;
}

/* ---- fork, trim, statistics -------------------------------------------------------- */

void sm_arena_fork_prepare(void)
{
    for (size_t i = 0; i < (size_t)SM_ARENAS * SM_NB_CLASSES; i++)
        sm_lock_acquire(&sm_layout.states[i].lock);
    sm_tcache_fork_prepare();
}

void sm_arena_fork_parent(void)
{
    sm_tcache_fork_parent();
    for (size_t i = (size_t)SM_ARENAS * SM_NB_CLASSES; i-- > 0;)
        sm_lock_release(&sm_layout.states[i].lock);
}

void sm_arena_fork_child(void)
{
    /* The child has one thread: nobody can be waiting, so the locks are simply reset. */
    for (size_t i = 0; i < (size_t)SM_ARENAS * SM_NB_CLASSES; i++)
        sm_lock_reset(&sm_layout.states[i].lock);
    sm_tcache_fork_child();
    sm_random_reseed();
}

static size_t trim_class(struct sm_class_state *s)
{
    sm_lock_acquire(&s->lock);
    uint32_t index = sm_slab_list_first(&s->lists, SM_SLAB_PARTIAL);
    if (index != SM_SLAB_NIL && sm_slab_is_empty(&s->slabs[index])) {
        sm_slab_set_state(&s->lists, s->slabs, index, SM_SLAB_EMPTY);
        count_live(s, -1);
    }
    /* Trimmed slabs skip the slab quarantine: reusable at once. */
    size_t bytes = give_back_empty_slabs(s, 0, SM_SLAB_DECOMMITTED) * s->slab_bytes;
    count_retained(s);
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
    struct sm_class_state *s = sm_arena_state(arena, cls);
    sm_lock_acquire(&s->lock);
    out->slots_in_use = s->slots_in_use;
    out->slots_quarantined = s->quarantined;
    out->slabs_partial = s->lists.by_state[SM_SLAB_PARTIAL].count;
    out->slabs_full = s->lists.by_state[SM_SLAB_FULL].count;
    out->slabs_empty = s->lists.by_state[SM_SLAB_EMPTY].count;
    out->slabs_quarantined = s->lists.by_state[SM_SLAB_QUARANTINED].count;
    out->slabs_decommitted = s->lists.by_state[SM_SLAB_DECOMMITTED].count;
    out->slabs_used = s->fresh_next;
    out->commit_failures = s->commit_failures;
    sm_lock_release(&s->lock);
}

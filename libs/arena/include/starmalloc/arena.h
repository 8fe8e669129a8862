/* starmalloc/arena.h: the small-object heap. Threads -> arenas, per-(arena, class) state
 * and locks, the slab region's layout, and the fork handlers.
 *
 * Layout: one reservation holds SM_ARENAS x SM_NB_CLASSES class regions of equal
 * power-of-two size; class region i (= arena * SM_NB_CLASSES + class) is carved into
 * slabs of its class, committed on first use. A pointer maps to (arena, class, slab, slot)
 * by arithmetic alone. Slab metadata and the per-(arena, class) headers live in a second,
 * separate reservation. */
#ifndef STARMALLOC_ARENA_H
#define STARMALLOC_ARENA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "starmalloc/config.h"
#include "starmalloc/hardening.h"
#include "starmalloc/sizeclass.h"
#include "starmalloc/slab.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A small lock: compare-and-swap when free, brief spinning, then futex sleep.
 * Needs no initialisation beyond zero and no allocation. */
struct sm_lock {
    int state; /* 0 free, 1 held, 2 held with possible sleepers; only accessed atomically */
};
void sm_lock_acquire(struct sm_lock *lock);
void sm_lock_release(struct sm_lock *lock);
/* Makes the lock free, whoever held it: only where no other thread can exist (fork child). */
void sm_lock_reset(struct sm_lock *lock);
/* Whether the lock is held (for tests and assertions). */
int sm_lock_is_held(const struct sm_lock *lock);

/* Policy constants derived from the configuration. */
enum {
    /* Entries per slot-quarantine stage; the arrays need at least one element. */
    SM_QUARANTINE_ENTRIES = SM_SLOT_QUARANTINE != 0 ? SM_SLOT_QUARANTINE : 1,
    /* Empty slabs kept committed per (arena, class) before older ones go back to the kernel:
     * about SM_EMPTY_BYTES_KEPT bytes of them, and at least SM_EMPTY_SLABS_KEPT_MIN. */
    SM_EMPTY_BYTES_KEPT = 64 << 10,
    SM_EMPTY_SLABS_KEPT_MIN = SM_SLAB_QUARANTINE != 0 ? 1 : 8,
    /* Without slab quarantine and with a decay period (SM_RETAINED_DECAY_MS, config.h), the
     * empty slabs beyond those kept are retained too (see sm_arena_give_back_retained);
     * otherwise the oldest go back to the kernel once twice as many as kept are empty. */
    SM_RETAIN_EMPTY_SLABS = SM_SLAB_QUARANTINE == 0 && SM_RETAINED_DECAY_MS != 0,
    /* Fresh slabs are committed in runs of about SM_SLAB_COMMIT_BYTES. Once a class has taken
     * SM_POPULATE_FRESH_AFTER_BYTES of its region (guard slabs included), each further run is
     * populated as it is committed (MADV_POPULATE_WRITE): classes of slots up to a page,
     * and every class when freeing zeroes whole slots (SM_ZERO_ON_FREE). */
    SM_SLAB_COMMIT_BYTES = 256 << 10,
    SM_POPULATE_FRESH_AFTER_BYTES = 1 << 20,
};

/* Everything about one (arena, class) pair; guarded by its lock. */
struct sm_class_state {
    struct sm_lock lock;
    uint32_t class_index;
    struct sm_sizeclass_info info; /* a copy of the class geometry, next to the lock */
    size_t slab_bytes;
    uint32_t fresh_next;          /* slabs [fresh_next, max_slabs) were never used */
    uint32_t max_slabs;           /* slabs that fit in the class region */
    uint32_t slabs_committed;     /* fresh slabs below this are committed (or guards) */
    uint32_t meta_committed;      /* metadata entries [0, meta_committed) are committed */
    size_t slabs_bytes_committed; /* bytes of `slabs` committed (whole pages) */
    /* What free's lookup reads, in one cache line: */
    size_t allocated_bytes_committed; /* bytes of `allocated_bytes` committed (whole pages);
                                         read without the lock by free */
    uint8_t *allocated_bytes;         /* the slots' allocated bytes: the byte of the slot at byte
                                         offset o of the class region is allocated_bytes[o >>
                                         allocated_shift]; the bytes in between stay 0 */
    size_t cache_bin_offset;          /* where this class's bin is in a thread cache */
    uint32_t allocated_shift;         /* one allocated byte per 2^allocated_shift bytes */
    uint32_t empty_slabs_kept;        /* empty slabs kept committed (see SM_EMPTY_BYTES_KEPT) */
    uint32_t retained_counted;        /* empty slabs beyond the kept ones, as counted in the global
                                         total (written under the lock, read without it) */
    uint32_t retained_at_decay;       /* of those, how many there were at the last decay */
    struct sm_slab_lists lists;
    char *slab_memory;     /* the class region */
    struct sm_slab *slabs; /* metadata, max_slabs entries */
    uint64_t slots_in_use; /* statistics: allocated or quarantined slots */
    uint64_t commit_failures;
    /* Slot quarantine: freed slots enter a random stage (a random entry is evicted into the
     * FIFO stage), and leave the FIFO stage oldest-first, back to their slab. Entries are
     * the slots' allocated-byte indices (their byte is allocated_bytes[entry]; the slot
     * starts at slab_memory + (entry << allocated_shift)); SM_QUARANTINE_NONE marks an empty
     * place. */
    uint32_t quarantine_capacity; /* entries per stage for this class (byte bound) */
    uint32_t quarantined;         /* entries held in both stages */
    uint32_t fifo_head;           /* oldest FIFO entry */
    uint32_t fifo_count;
    uint32_t quarantine_random[SM_QUARANTINE_ENTRIES];
    uint32_t quarantine_fifo[SM_QUARANTINE_ENTRIES];
    struct sm_random rng; /* slot order, slab secrets, quarantine eviction */
} __attribute__((aligned(128)));

enum { SM_QUARANTINE_NONE = UINT32_MAX };

/* The facts a pointer into the slab region resolves to. */
struct sm_slot_ref {
    struct sm_class_state *owner;
    uint32_t slab;
    uint32_t slot;
    uint32_t slot_size;
};

enum sm_locate_result {
    SM_LOCATE_OK = 0,
    SM_LOCATE_NOT_SLOT_START, /* inside the region but not the first byte of a slot */
};

/* Reserves the slab and metadata regions (shrinking them when the kernel or RLIMIT_AS
 * refuses the full size). Returns false, with nothing reserved, when even the smallest
 * layout cannot be reserved. Not thread-safe: call once, before any other function. */
bool sm_arena_init(void);

/* The calling thread's arena, assigned round-robin at the thread's first call. */
unsigned sm_arena_of_thread(void);

/* Claims a slot of class `cls` in `arena` (lowest free slot, or a random one with
 * SM_RANDOMIZE_SLOTS) and returns it, or NULL when the class region is exhausted or the
 * kernel refuses to commit memory. *zeroed is set to 1 when the slot's bytes are known to be
 * zero. The last SM_CANARY_BYTES bytes of the slot hold its canary. */
void *sm_arena_alloc(unsigned arena, unsigned cls, int *zeroed);

/* The calling thread's allocation of class `cls`: from its thread cache (no lock) when the
 * cache holds a slot, else refilling the cache with a batch of slots claimed under one
 * lock; NULL like sm_arena_alloc. The thread's cache is created at its first call and
 * recycled when the thread exits. */
void *sm_arena_alloc_cached(unsigned cls, int *zeroed);

/* The lock-free part of sm_arena_alloc_cached: a slot from the calling thread's cache, or
 * NULL when the thread has no cache yet or the class's cache is empty. */
void *sm_arena_cache_pop(unsigned cls, int *zeroed);

/* Frees p (in the slab region) through the calling thread's cache: the slot is marked
 * deferred at once (a second free of it is a double free) and checked like sm_arena_free;
 * it becomes reusable from this thread's cache, or — with slot quarantine — passes the
 * quarantine of its (arena, class) first. Aborts like sm_arena_free. */
void sm_arena_free_cached(void *p);

/* Returns everything the calling thread's cache holds to the slabs (or the quarantine). */
void sm_arena_flush_thread_cache(void);

/* Whether p lies in the slab region (only then may the functions below be called). */
bool sm_arena_contains(const void *p);

/* Resolves p (in the slab region) by arithmetic alone; does not lock or read metadata. */
enum sm_locate_result sm_arena_locate(const void *p, struct sm_slot_ref *ref);

/* Frees the slot at p (in the slab region): with slot quarantine the slot is held back and
 * an older one returns to its slab. Aborts with "starmalloc: fatal: ..." when p is not the
 * start of an allocated slot ("invalid free", "double free") or its canary was overwritten
 * ("canary corrupted"). */
void sm_arena_free(void *p);

enum sm_slot_status {
    SM_SLOT_IN_USE = 0,
    SM_SLOT_FREE,             /* not allocated now (already freed, possibly quarantined) */
    SM_SLOT_INVALID,          /* not the start of a slot of a slab that holds slots */
    SM_SLOT_CANARY_CORRUPTED, /* allocated, but an overflow changed its canary */
};

/* Classifies p (in the slab region); for a slot in use stores its usable size (slot size
 * less the canary) in *usable. Takes no lock (atomic loads). Never aborts: callers report
 * with the message that fits their operation. */
enum sm_slot_status sm_arena_slot_status(const void *p, size_t *usable);

/* Fork handlers: take every (arena, class) lock in index order before fork; release them
 * in the parent; in the child reset them, so a fork child of a threaded parent allocates. */
void sm_arena_fork_prepare(void);
void sm_arena_fork_parent(void);
void sm_arena_fork_child(void);

/* Returns the memory of every empty slab to the kernel (the slabs stay reusable) and
 * returns the number of bytes decommitted. Takes each (arena, class) lock in turn. Slots
 * held in thread caches keep their slabs (as glibc's malloc_trim keeps its tcache). */
size_t sm_arena_trim(void);

/* With SM_RETAIN_EMPTY_SLABS (no slab quarantine, a decay period), empty slabs beyond the few
 * kept per (arena, class) are retained (committed, reusable at once by their class) rather
 * than given back when they empty, so that a program whose allocations come and go in phases
 * does not fault its memory in again every phase. They go back to the kernel, oldest first within
 * each (arena, class):
 * - when new memory is taken (a class takes a fresh or decommitted slab, or the large path
 *   maps, re-commits or grows an object: sm_arena_note_new_memory) while the retained bytes
 *   exceed the bytes of the slabs in use plus 8 MiB: as many bytes as were taken, down to
 *   that allowance;
 * - when a whole decay period (SM_RETAINED_DECAY_MS) passed without their class reusing
 *   them: at the next allocation or free that takes a class's lock after that;
 * - at sm_arena_trim.
 * This function gives back up to `bytes` bytes of retained slabs (whole slabs, in the
 * (arena, class) pairs in turn) and returns how many bytes it gave back; 0 without
 * SM_RETAIN_EMPTY_SLABS (nothing is retained). Takes each (arena, class) lock in turn: call it
 * with none held. */
size_t sm_arena_give_back_retained(size_t bytes);

/* The caller took `bytes` of new memory from the kernel (the large path): gives back
 * retained slabs as above when more is retained than allowed. Call with no lock held. */
void sm_arena_note_new_memory(size_t bytes);

/* Bytes of empty slabs retained beyond the kept ones, in all (arena, class) pairs. */
size_t sm_arena_retained_bytes(void);

/* One decay step (what happens once per SM_RETAINED_DECAY_MS): gives back the retained slabs
 * of each (arena, class) that were already retained at the previous step and are still;
 * returns the bytes given back. Exposed for tests; takes each lock in turn. */
size_t sm_arena_decay_retained(void);

/* Statistics of one (arena, class) pair, read under its lock. */
struct sm_class_stats {
    uint64_t slots_in_use;      /* allocated or quarantined */
    uint64_t slots_quarantined; /* freed, held back by the slot quarantine */
    uint32_t slabs_partial, slabs_full, slabs_empty, slabs_quarantined, slabs_decommitted;
    uint32_t slabs_used; /* slabs ever handed out */
    uint64_t commit_failures;
};
void sm_arena_class_stats(unsigned arena, unsigned cls, struct sm_class_stats *out);

/* Size of the reserved slab region and of each class region, in bytes (0 before init). */
size_t sm_arena_slab_region_bytes(void);
size_t sm_arena_class_region_bytes(void);

#ifdef __cplusplus
}
#endif

#endif

/* starmalloc/slab.h: the slab bitmap engine.
 *
 * A slab's metadata (struct sm_slab, 128 bytes, kept out of band) records which of its up to
 * 256 slots are in use and links the slab into one of its class's state lists by index.
 * A slot is free, allocated (owned by the user), or deferred: freed by the user but not yet
 * reusable (held in a quarantine or a thread cache). A deferred slot still counts as in use.
 * Which slots are allocated is one byte per slot, in an array the caller hands to
 * sm_slab_init: allocating a deferred slot is then a plain byte store, with no atomic
 * read-modify-write on a word that other threads' frees change too. The bytes may be spread
 * out (slot i's byte at allocated[i * stride]): a caller that keeps one byte per 2^k bytes of
 * memory finds a slot's byte from its address with one shift, and the bytes in between,
 * never written, stay 0 (so a pointer into the middle of a slot finds no allocated slot).
 * The engine works only on memory it is handed: it never maps, locks or reports; callers
 * hold the lock of the (arena, class) that owns the slabs, except for the defer and undefer
 * functions (by slot or by byte) and the read-only queries, which are atomic and safe
 * without it. */
#ifndef STARMALLOC_SLAB_H
#define STARMALLOC_SLAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { SM_SLAB_NIL = UINT32_MAX }; /* "no slab" in list links */

enum sm_slab_state {
    SM_SLAB_UNUSED = 0,  /* never handed out, or reset; on no list */
    SM_SLAB_PARTIAL,     /* some slots free, some in use */
    SM_SLAB_FULL,        /* every slot in use */
    SM_SLAB_EMPTY,       /* committed, every slot free */
    SM_SLAB_QUARANTINED, /* emptied and decommitted, waiting before reuse */
    SM_SLAB_GUARD,       /* a PROT_NONE guard slab; on no list, never holds slots */
    SM_SLAB_DECOMMITTED, /* emptied and returned to the kernel; reusable after a commit */
    SM_SLAB_NB_STATES
};

struct sm_slab {
    uint64_t
        used[4]; /* bit i set = slot i in use (allocated or deferred); bits >= slots stay set */
    uint8_t *allocated; /* the caller's bytes: allocated[i * stride] = 1 when the user holds
                           slot i, else 0 */
    uint32_t prev;      /* neighbours in the state list, by slab index */
    uint32_t next;
    uint16_t in_use; /* slots in use */
    uint16_t slots;  /* slots in this slab */
    uint8_t state;   /* enum sm_slab_state */
    uint8_t reserved;
    uint16_t stride;        /* distance between two slots' allocated bytes */
    uint64_t secret;        /* per-slab random value for the hardening policies (canaries) */
    uint64_t handed_out[4]; /* bit i set = slot i was claimed since the slab was fresh */
    uint64_t spare[4];      /* keeps the size at two cache lines, so &slabs[i] is a shift */
};

/* One list per state, doubly linked through sm_slab.prev/next; slabs enter at the head,
 * so the tail is the slab that has been on the list longest. */
struct sm_slab_list {
    uint32_t head;
    uint32_t tail;
    uint32_t count;
};
struct sm_slab_lists {
    struct sm_slab_list by_state[SM_SLAB_NB_STATES];
};

enum sm_slab_release_result {
    SM_SLAB_RELEASED = 0,
    SM_SLAB_DOUBLE_FREE, /* the slot was not allocated (free or deferred): nothing changed */
};

/* Resets *slab to `slots` free slots (1..256), state UNUSED, unlinked, with slot i's
 * allocated byte at allocated[i * stride] (stride 1..65535; the (slots - 1) * stride + 1
 * bytes stay the slab's until the next sm_slab_init and are zeroed here). Every slot counts
 * as claimed before (see sm_slab_claim_first): call sm_slab_mark_fresh for a slab whose
 * memory comes fresh from the kernel. */
void sm_slab_init(struct sm_slab *slab, unsigned slots, uint8_t *allocated, unsigned stride);

/* Records that the slab's memory was never handed out: each slot's first claim from now on
 * is reported by sm_slab_claim_first. */
void sm_slab_mark_fresh(struct sm_slab *slab);

/* Records that `slot` was claimed and returns true when it is the slot's first claim since
 * sm_slab_mark_fresh: its bytes were never the user's (still as the kernel gave them). */
bool sm_slab_claim_first(struct sm_slab *slab, unsigned slot);

/* Claims the lowest free slot (it becomes allocated) and returns its index, or -1 when the
 * slab is full. */
int sm_slab_claim_slot(struct sm_slab *slab);

/* Claims the first free slot at or after `start` (wrapping around; start < 256) and returns
 * its index, or -1 when the slab is full. Used to hand out slots in random order. */
int sm_slab_claim_slot_from(struct sm_slab *slab, unsigned start);

/* Marks an allocated slot (< slab->slots) free. A slot that is free or deferred is left
 * unchanged and SM_SLAB_DOUBLE_FREE is returned. */
enum sm_slab_release_result sm_slab_release_slot(struct sm_slab *slab, unsigned slot);

/* Makes a deferred slot free (claimable). The slot must be deferred. */
void sm_slab_release_deferred(struct sm_slab *slab, unsigned slot);

/* Whether slot is in use (allocated or deferred). */
bool sm_slab_slot_in_use(const struct sm_slab *slab, unsigned slot);

static inline bool sm_slab_is_full(const struct sm_slab *slab)
{
    return slab->in_use == slab->slots;
}

static inline bool sm_slab_is_empty(const struct sm_slab *slab)
{
    return slab->in_use == 0;
}

/* Makes every state list empty. */
void sm_slab_lists_init(struct sm_slab_lists *lists);

/* Moves slab `index` of the array `slabs` from its current state's list to the head of the
 * list of `state` (UNUSED and GUARD have no list: the slab is only unlinked). */
void sm_slab_set_state(struct sm_slab_lists *lists, struct sm_slab *slabs, uint32_t index,
                       enum sm_slab_state state);

/* The first slab of `state`'s list, or SM_SLAB_NIL. */
static inline uint32_t sm_slab_list_first(const struct sm_slab_lists *lists,
                                          enum sm_slab_state state)
{
    return lists->by_state[state].head;
}

/* The last slab of `state`'s list (the one there longest), or SM_SLAB_NIL. */
static inline uint32_t sm_slab_list_last(const struct sm_slab_lists *lists,
                                         const struct sm_slab *slabs, enum sm_slab_state state)
{
    (void)slabs; /* the list keeps its tail; the array stays in the signature like its siblings */
    return lists->by_state[state].tail;
}

/* Concurrency: `used` is written only by the holder of the owning (arena, class) lock, but
 * read without it (free validates a pointer before locking anything); the allocated bytes
 * are also changed without the lock (thread caches). So every access is atomic: relaxed
 * loads and stores of `used`, and of an allocated byte a relaxed store when a deferred slot
 * is handed out (only the thread that holds it can), an exchange when it is freed (two
 * racing frees of one slot then see each other). An allocated byte is 1 only while the
 * slot's `used` bit is set. The functions below are inline: they are on the fast paths. */
static inline uint64_t sm_slab_load_bits(const uint64_t *word)
{
    return __atomic_load_n(word, __ATOMIC_RELAXED);
}

static inline uint64_t sm_slab_bit_of(unsigned slot)
{
    return UINT64_C(1) << (slot % 64);
}

/* The allocated byte of `slot` (< slab->slots). */
static inline uint8_t *sm_slab_allocated_byte(const struct sm_slab *slab, unsigned slot)
{
    return slab->allocated + (size_t)slot * slab->stride;
}

/* Whether slot is allocated: in use and not deferred. */
static inline bool sm_slab_slot_allocated(const struct sm_slab *slab, unsigned slot)
{
    return __atomic_load_n(sm_slab_allocated_byte(slab, slot), __ATOMIC_RELAXED) != 0;
}

/* Marks the allocated slot whose allocated byte is *byte deferred: freed, but not claimable
 * until sm_slab_release_deferred. A slot that is free or already deferred (or a byte between
 * two slots' bytes, always 0) is left unchanged and SM_SLAB_DOUBLE_FREE returned; of two
 * racing calls on one slot, exactly one succeeds. Safe without the owner's lock. */
static inline enum sm_slab_release_result sm_slab_defer_byte(uint8_t *byte)
{
    /* Clearing a byte that is already 0 changes nothing: a free or deferred slot stays so. */
    if (__atomic_exchange_n(byte, 0, __ATOMIC_RELAXED) != 1)
        return SM_SLAB_DOUBLE_FREE;
    return SM_SLAB_RELEASED;
}

/* sm_slab_defer_byte for `slot` of slab. */
static inline enum sm_slab_release_result sm_slab_defer_slot(struct sm_slab *slab, unsigned slot)
{
    return sm_slab_defer_byte(sm_slab_allocated_byte(slab, slot));
}

/* Makes the deferred slot whose allocated byte is *byte allocated again (a thread cache
 * handing it to the user): one plain byte store. The slot must be deferred and the caller
 * the only one holding it. Safe without the owner's lock. */
static inline void sm_slab_undefer_byte(uint8_t *byte)
{
    __atomic_store_n(byte, 1, __ATOMIC_RELAXED);
}

/* sm_slab_undefer_byte for `slot` of slab. */
static inline void sm_slab_undefer_slot(struct sm_slab *slab, unsigned slot)
{
    sm_slab_undefer_byte(sm_slab_allocated_byte(slab, slot));
}

#ifdef __cplusplus
}
#endif

#endif

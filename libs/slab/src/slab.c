/* The slab bitmap engine: slot claims and releases, and the per-class state lists. */
#include "starmalloc/slab.h"

#include <string.h>

_Static_assert(sizeof(struct sm_slab) == 128, "slab metadata is two cache lines");

static bool state_has_list(enum sm_slab_state state)
{
    return state != SM_SLAB_UNUSED && state != SM_SLAB_GUARD;
}

void sm_slab_init(struct sm_slab *slab, unsigned slots, uint8_t *allocated, unsigned stride)
{
    memset(slab, 0, sizeof(*slab));
    memset(allocated, 0, (size_t)(slots - 1) * stride + 1);
    slab->allocated = allocated;
    slab->stride = (uint16_t)stride;
    /* Slots past the end are permanently "in use" so a claim can never return them. */
    for (unsigned w = 0; w < 4; w++) {
        unsigned first = w * 64;
        if (slots <= first)
            slab->used[w] = UINT64_MAX;
        else if (slots < first + 64)
            slab->used[w] = UINT64_MAX << (slots - first);
    }
    slab->slots = (uint16_t)slots;
    memset(slab->handed_out, 0xff, sizeof(slab->handed_out));
    slab->prev = SM_SLAB_NIL;
    slab->next = SM_SLAB_NIL;
    slab->state = SM_SLAB_UNUSED;
}

void sm_slab_mark_fresh(struct sm_slab *slab)
{
    memset(slab->handed_out, 0, sizeof(slab->handed_out));
}

bool sm_slab_claim_first(struct sm_slab *slab, unsigned slot)
{
    uint64_t bit = UINT64_C(1) << (slot % 64);
    bool first = (slab->handed_out[slot / 64] & bit) == 0;
    slab->handed_out[slot / 64] |= bit;
    return first;
}

/* Concurrency: see slab.h; load_bits and bit_of come from there. */
static void store_bits(uint64_t *word, uint64_t value)
{
    __atomic_store_n(word, value, __ATOMIC_RELAXED);
}

static int claim_bit(struct sm_slab *slab, unsigned word, uint64_t free_bits)
{
    unsigned bit = (unsigned)__builtin_ctzll(free_bits);
    store_bits(&slab->used[word], sm_slab_load_bits(&slab->used[word]) | UINT64_C(1) << bit);
    slab->in_use++;
    unsigned slot = word * 64 + bit;
    /* After `used` (slab.h). */
    __atomic_store_n(sm_slab_allocated_byte(slab, slot), 1, __ATOMIC_RELAXED);
    return (int)slot;
}

int sm_slab_claim_slot(struct sm_slab *slab)
{
    for (unsigned w = 0; w < 4; w++) {
        uint64_t free_bits = ~sm_slab_load_bits(&slab->used[w]);
        if (free_bits)
            return claim_bit(slab, w, free_bits);
    }
    return -1;
}

int sm_slab_claim_slot_from(struct sm_slab *slab, unsigned start)
{
    unsigned w = (start / 64) & 3;
    /* First the start word from `start` upwards, then the other words, then its low part. */
    uint64_t free_bits = ~sm_slab_load_bits(&slab->used[w]) & (UINT64_MAX << (start % 64));
    if (free_bits)
        return claim_bit(slab, w, free_bits);
    for (unsigned i = 1; i <= 4; i++) {
        unsigned word = (w + i) & 3;
        free_bits = ~sm_slab_load_bits(&slab->used[word]);
        if (free_bits)
            return claim_bit(slab, word, free_bits);
    }
    return -1;
}

enum sm_slab_release_result sm_slab_release_slot(struct sm_slab *slab, unsigned slot)
{
    if (sm_slab_defer_slot(slab, slot) != SM_SLAB_RELEASED)
        return SM_SLAB_DOUBLE_FREE;
    sm_slab_release_deferred(slab, slot);
    return SM_SLAB_RELEASED;
}

void sm_slab_release_deferred(struct sm_slab *slab, unsigned slot)
{
    /* The allocated byte is 0 already: a racing (invalid) free finds the slot not allocated. */
    uint64_t *word = &slab->used[slot / 64];
    store_bits(word, sm_slab_load_bits(word) & ~sm_slab_bit_of(slot));
    slab->in_use--;
}

bool sm_slab_slot_in_use(const struct sm_slab *slab, unsigned slot)
{
    return (sm_slab_load_bits(&slab->used[slot / 64]) & sm_slab_bit_of(slot)) != 0;
}

void sm_slab_lists_init(struct sm_slab_lists *lists)
{
    for (unsigned s = 0; s < SM_SLAB_NB_STATES; s++) {
        lists->by_state[s].head = SM_SLAB_NIL;
        lists->by_state[s].tail = SM_SLAB_NIL;
        lists->by_state[s].count = 0;
    }
}

static void list_unlink(struct sm_slab_list *list, struct sm_slab *slabs, uint32_t index)
{
    struct sm_slab *slab = &slabs[index];
    if (slab->prev != SM_SLAB_NIL)
        slabs[slab->prev].next = slab->next;
    else
        list->head = slab->next;
    if (slab->next != SM_SLAB_NIL)
        slabs[slab->next].prev = slab->prev;
    else
        list->tail = slab->prev;
    slab->prev = SM_SLAB_NIL;
    slab->next = SM_SLAB_NIL;
    list->count--;
}

static void list_push(struct sm_slab_list *list, struct sm_slab *slabs, uint32_t index)
{
    struct sm_slab *slab = &slabs[index];
    slab->prev = SM_SLAB_NIL;
    slab->next = list->head;
    if (list->head != SM_SLAB_NIL)
        slabs[list->head].prev = index;
    else
        list->tail = index;
    list->head = index;
    list->count++;
}

void sm_slab_set_state(struct sm_slab_lists *lists, struct sm_slab *slabs, uint32_t index,
                       enum sm_slab_state state)
{
    enum sm_slab_state old = (enum sm_slab_state)slabs[index].state;
    if (state_has_list(old))
        list_unlink(&lists->by_state[old], slabs, index);
    __atomic_store_n(&slabs[index].state, (uint8_t)state, __ATOMIC_RELAXED); /* read unlocked */
    if (state_has_list(state))
        list_push(&lists->by_state[state], slabs, index);
}

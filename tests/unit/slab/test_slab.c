/* Unit tests for the slab bitmap engine (libs/slab): slot claims and releases in one slab's
 * 256-bit bitmap, and the per-class state lists linked by slab index. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <string.h>

#include "starmalloc/slab.h"

/* Slot counts that exercise one partial word, exact words, and a word boundary plus one. */
static const unsigned slot_counts[] = {1, 7, 64, 65, 200, 256};
enum { NB_SLOT_COUNTS = sizeof(slot_counts) / sizeof(slot_counts[0]) };

/* ---- helpers ---------------------------------------------------------------------------- */

/* splitmix64 with a fixed seed: failures are reproducible. */
static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static void fill(struct sm_slab *slab)
{
    for (unsigned i = 0; i < slab->slots; i++)
        assert_int_equal(sm_slab_claim_slot(slab), (int)i);
}

/* Asserts that `state`'s list holds exactly expected[0..n) from head to tail, with
 * consistent back links, count and last element. */
static void assert_list(const struct sm_slab_lists *lists, const struct sm_slab *slabs,
                        enum sm_slab_state state, const uint32_t *expected, unsigned n)
{
    assert_int_equal(lists->by_state[state].count, n);
    uint32_t index = sm_slab_list_first(lists, state);
    uint32_t prev = SM_SLAB_NIL;
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(index, expected[i]);
        assert_int_equal(slabs[index].prev, prev);
        assert_int_equal(slabs[index].state, state);
        prev = index;
        index = slabs[index].next;
    }
    assert_int_equal(index, SM_SLAB_NIL);
    assert_int_equal(sm_slab_list_last(lists, slabs, state), n ? expected[n - 1] : SM_SLAB_NIL);
}

static void assert_unlinked(const struct sm_slab *slab)
{
    assert_int_equal(slab->prev, SM_SLAB_NIL);
    assert_int_equal(slab->next, SM_SLAB_NIL);
}

enum { NB_TEST_SLABS = 8 };

/* The allocated bytes of the tests' slabs (sm_slab_init takes them from the caller). */
static uint8_t list_allocated_bytes[NB_TEST_SLABS][16];
static uint8_t test_allocated_bytes[256];

static void init_slabs(struct sm_slab_lists *lists, struct sm_slab *slabs)
{
    sm_slab_lists_init(lists);
    for (unsigned i = 0; i < NB_TEST_SLABS; i++)
        sm_slab_init(&slabs[i], 16, list_allocated_bytes[i], 1);
}

/* ---- one slab's slots ------------------------------------------------------------------- */

static void test_init_gives_an_empty_unlinked_slab(void **state)
{
    (void)state;
    for (unsigned t = 0; t < NB_SLOT_COUNTS; t++) {
        struct sm_slab slab;
        memset(&slab, 0xa5, sizeof(slab)); /* init must not depend on prior content */
        sm_slab_init(&slab, slot_counts[t], test_allocated_bytes, 1);
        assert_int_equal(slab.slots, slot_counts[t]);
        assert_int_equal(slab.in_use, 0);
        assert_int_equal(slab.state, SM_SLAB_UNUSED);
        assert_unlinked(&slab);
        assert_true(sm_slab_is_empty(&slab));
        assert_false(sm_slab_is_full(&slab));
        for (unsigned i = 0; i < slot_counts[t]; i++) {
            assert_false(sm_slab_slot_in_use(&slab, i));
            assert_false(sm_slab_slot_allocated(&slab, i));
        }
    }
}

static void test_first_claims_are_reported_only_on_fresh_slabs(void **state)
{
    (void)state;
    for (unsigned t = 0; t < NB_SLOT_COUNTS; t++) {
        unsigned slots = slot_counts[t];
        struct sm_slab slab;
        memset(&slab, 0, sizeof(slab)); /* init must set the record, whatever was there */
        sm_slab_init(&slab, slots, test_allocated_bytes, 1);
        /* A slab with a past: no slot is known to be untouched. */
        for (unsigned i = 0; i < slots; i++)
            assert_false(sm_slab_claim_first(&slab, i));
        /* Fresh: each slot's first claim is reported once, its later ones are not. */
        sm_slab_mark_fresh(&slab);
        for (unsigned i = 0; i < slots; i += 2)
            assert_true(sm_slab_claim_first(&slab, i));
        for (unsigned i = 0; i < slots; i++)
            assert_int_equal(sm_slab_claim_first(&slab, i), i % 2 == 1);
        for (unsigned i = 0; i < slots; i++)
            assert_false(sm_slab_claim_first(&slab, i));
        /* A reset (the slab's memory reused) forgets the fresh state. */
        sm_slab_init(&slab, slots, test_allocated_bytes, 1);
        assert_false(sm_slab_claim_first(&slab, slots - 1));
    }
}

static void test_claims_lowest_first_until_full(void **state)
{
    (void)state;
    for (unsigned t = 0; t < NB_SLOT_COUNTS; t++) {
        unsigned slots = slot_counts[t];
        struct sm_slab slab;
        sm_slab_init(&slab, slots, test_allocated_bytes, 1);
        for (unsigned i = 0; i < slots; i++) {
            assert_false(sm_slab_is_full(&slab));
            assert_int_equal(sm_slab_claim_slot(&slab), (int)i);
            assert_true(sm_slab_slot_in_use(&slab, i));
            assert_int_equal(slab.in_use, i + 1);
            assert_false(sm_slab_is_empty(&slab));
        }
        assert_true(sm_slab_is_full(&slab));
        assert_int_equal(sm_slab_claim_slot(&slab), -1);
        assert_int_equal(sm_slab_claim_slot_from(&slab, 0), -1);
        assert_int_equal(slab.in_use, slots);
    }
}

static void test_release_then_claim_returns_the_released_slot(void **state)
{
    (void)state;
    for (unsigned t = 0; t < NB_SLOT_COUNTS; t++) {
        unsigned slots = slot_counts[t];
        const unsigned picks[] = {0, slots / 2, slots - 1};
        for (unsigned p = 0; p < 3; p++) {
            struct sm_slab slab;
            sm_slab_init(&slab, slots, test_allocated_bytes, 1);
            fill(&slab);
            assert_int_equal(sm_slab_release_slot(&slab, picks[p]), SM_SLAB_RELEASED);
            assert_false(sm_slab_slot_in_use(&slab, picks[p]));
            assert_int_equal(slab.in_use, slots - 1);
            assert_false(sm_slab_is_full(&slab));
            assert_int_equal(sm_slab_claim_slot(&slab), (int)picks[p]);
            assert_true(sm_slab_is_full(&slab));
        }
    }
}

static void test_release_of_every_slot_empties_the_slab(void **state)
{
    (void)state;
    for (unsigned t = 0; t < NB_SLOT_COUNTS; t++) {
        struct sm_slab slab;
        sm_slab_init(&slab, slot_counts[t], test_allocated_bytes, 1);
        fill(&slab);
        /* Release in an order other than the claims': from the top down. */
        for (unsigned i = slot_counts[t]; i-- > 0;)
            assert_int_equal(sm_slab_release_slot(&slab, i), SM_SLAB_RELEASED);
        assert_true(sm_slab_is_empty(&slab));
        /* An emptied slab hands out the same slots again, lowest first. */
        fill(&slab);
        assert_int_equal(sm_slab_claim_slot(&slab), -1);
    }
}

static void test_releasing_a_free_slot_is_a_double_free_and_changes_nothing(void **state)
{
    (void)state;
    for (unsigned t = 0; t < NB_SLOT_COUNTS; t++) {
        unsigned slots = slot_counts[t];
        struct sm_slab slab;
        sm_slab_init(&slab, slots, test_allocated_bytes, 1);

        /* Never claimed. */
        struct sm_slab before = slab;
        assert_int_equal(sm_slab_release_slot(&slab, slots - 1), SM_SLAB_DOUBLE_FREE);
        assert_memory_equal(&slab, &before, sizeof(slab));

        /* Claimed, released, released again. */
        assert_int_equal(sm_slab_claim_slot(&slab), 0);
        if (slots > 1)
            assert_int_equal(sm_slab_claim_slot(&slab), 1);
        assert_int_equal(sm_slab_release_slot(&slab, 0), SM_SLAB_RELEASED);
        before = slab;
        assert_int_equal(sm_slab_release_slot(&slab, 0), SM_SLAB_DOUBLE_FREE);
        assert_memory_equal(&slab, &before, sizeof(slab));
        assert_int_equal(slab.in_use, slots > 1 ? 1 : 0);
    }
}

static void test_bits_beyond_the_slot_count_are_never_claimable(void **state)
{
    (void)state;
    for (unsigned t = 0; t < NB_SLOT_COUNTS; t++) {
        unsigned slots = slot_counts[t];
        struct sm_slab slab;
        sm_slab_init(&slab, slots, test_allocated_bytes, 1);
        /* The bitmap marks them in use from the start... */
        for (unsigned i = slots; i < 256; i++)
            assert_true(sm_slab_slot_in_use(&slab, i));
        /* ...so a start past the end wraps to the lowest real slot... */
        for (unsigned start = slots; start < 256; start++) {
            struct sm_slab copy = slab;
            assert_int_equal(sm_slab_claim_slot_from(&copy, start), 0);
        }
        /* ...and no mix of claims ever yields more than `slots` of them. */
        unsigned claimed = 0;
        for (unsigned start = 0; claimed <= slots; start = (start + 37) % 256) {
            int slot = sm_slab_claim_slot_from(&slab, start);
            if (slot < 0)
                break;
            assert_true((unsigned)slot < slots);
            claimed++;
        }
        assert_int_equal(claimed, slots);
        for (unsigned start = 0; start < 256; start++)
            assert_int_equal(sm_slab_claim_slot_from(&slab, start), -1);
        assert_int_equal(sm_slab_claim_slot(&slab), -1);
    }
}

static void test_claim_from_takes_the_first_free_slot_at_or_after_start(void **state)
{
    (void)state;
    struct sm_slab slab;
    sm_slab_init(&slab, 65, test_allocated_bytes, 1);
    assert_int_equal(sm_slab_claim_slot_from(&slab, 63), 63);
    assert_int_equal(sm_slab_claim_slot_from(&slab, 63), 64); /* across a word boundary */
    assert_int_equal(sm_slab_claim_slot_from(&slab, 63), 0);  /* 65..255 do not exist: wrap */
    assert_int_equal(sm_slab_claim_slot_from(&slab, 63), 1);
    assert_int_equal(sm_slab_claim_slot_from(&slab, 10), 10);
    assert_int_equal(slab.in_use, 5);

    sm_slab_init(&slab, 256, test_allocated_bytes, 1);
    for (unsigned i = 200; i < 256; i++)
        assert_int_equal(sm_slab_claim_slot_from(&slab, i), (int)i);
    /* Everything from 200 up is taken: the search wraps to the start. */
    assert_int_equal(sm_slab_claim_slot_from(&slab, 230), 0);

    /* Only 130 and 140 free: the part of the start word below `start` is searched last. */
    sm_slab_init(&slab, 256, test_allocated_bytes, 1);
    fill(&slab);
    assert_int_equal(sm_slab_release_slot(&slab, 130), SM_SLAB_RELEASED);
    assert_int_equal(sm_slab_release_slot(&slab, 140), SM_SLAB_RELEASED);
    assert_int_equal(sm_slab_claim_slot_from(&slab, 135), 140);
    assert_int_equal(sm_slab_claim_slot_from(&slab, 135), 130);
    assert_int_equal(sm_slab_claim_slot_from(&slab, 135), -1);
    assert_true(sm_slab_is_full(&slab));
}

/* The model of one slot. */
enum slot_model { MODEL_FREE = 0, MODEL_ALLOCATED, MODEL_DEFERRED };

/* The first free slot at or after start, wrapping, according to the model; claims it. */
static int model_claim_from(enum slot_model model[256], unsigned slots, unsigned start)
{
    for (unsigned n = 0; n < 256; n++) {
        unsigned i = (start + n) % 256;
        if (i < slots && model[i] == MODEL_FREE) {
            model[i] = MODEL_ALLOCATED;
            return (int)i;
        }
    }
    return -1;
}

static void test_claims_releases_and_deferrals_follow_a_simple_model(void **state)
{
    (void)state;
    rng_state = 42;
    for (unsigned t = 0; t < NB_SLOT_COUNTS; t++) {
        unsigned slots = slot_counts[t];
        enum slot_model model[256] = {MODEL_FREE};
        unsigned model_in_use = 0;
        struct sm_slab slab;
        sm_slab_init(&slab, slots, test_allocated_bytes, 1);
        for (unsigned step = 0; step < 20000; step++) {
            uint64_t r = rng_next();
            unsigned slot = (unsigned)(r >> 8) % slots;
            switch (r % 5) {
            case 0: { /* claim from a random start */
                unsigned start = (unsigned)(r >> 20) % 256;
                int expected = model_claim_from(model, slots, start);
                assert_int_equal(sm_slab_claim_slot_from(&slab, start), expected);
                model_in_use += expected >= 0;
                break;
            }
            case 1: { /* claim the lowest */
                int expected = model_claim_from(model, slots, 0);
                assert_int_equal(sm_slab_claim_slot(&slab), expected);
                model_in_use += expected >= 0;
                break;
            }
            case 2: /* release: only an allocated slot is released */
                assert_int_equal(sm_slab_release_slot(&slab, slot), model[slot] == MODEL_ALLOCATED
                                                                        ? SM_SLAB_RELEASED
                                                                        : SM_SLAB_DOUBLE_FREE);
                if (model[slot] == MODEL_ALLOCATED) {
                    model[slot] = MODEL_FREE;
                    model_in_use--;
                }
                break;
            case 3: /* defer: only an allocated slot is deferred */
                assert_int_equal(sm_slab_defer_slot(&slab, slot), model[slot] == MODEL_ALLOCATED
                                                                      ? SM_SLAB_RELEASED
                                                                      : SM_SLAB_DOUBLE_FREE);
                if (model[slot] == MODEL_ALLOCATED)
                    model[slot] = MODEL_DEFERRED;
                break;
            default: /* a deferred slot leaves the quarantine */
                if (model[slot] == MODEL_DEFERRED) {
                    sm_slab_release_deferred(&slab, slot);
                    model[slot] = MODEL_FREE;
                    model_in_use--;
                }
                break;
            }
            assert_int_equal(slab.in_use, model_in_use);
            assert_int_equal(sm_slab_slot_in_use(&slab, slot), model[slot] != MODEL_FREE);
            assert_int_equal(sm_slab_slot_allocated(&slab, slot), model[slot] == MODEL_ALLOCATED);
        }
        for (unsigned i = 0; i < slots; i++) {
            assert_int_equal(sm_slab_slot_in_use(&slab, i), model[i] != MODEL_FREE);
            assert_int_equal(sm_slab_slot_allocated(&slab, i), model[i] == MODEL_ALLOCATED);
        }
    }
}

static void test_a_deferred_slot_stays_in_use_but_is_not_allocated(void **state)
{
    (void)state;
    for (unsigned t = 0; t < NB_SLOT_COUNTS; t++) {
        unsigned slots = slot_counts[t];
        unsigned slot = slots - 1;
        struct sm_slab slab;
        sm_slab_init(&slab, slots, test_allocated_bytes, 1);
        fill(&slab);
        assert_true(sm_slab_slot_allocated(&slab, slot));

        /* Freed by the user into a quarantine: still in use, no longer allocated. */
        assert_int_equal(sm_slab_defer_slot(&slab, slot), SM_SLAB_RELEASED);
        assert_true(sm_slab_slot_in_use(&slab, slot));
        assert_false(sm_slab_slot_allocated(&slab, slot));
        assert_int_equal(slab.in_use, slots);
        assert_true(sm_slab_is_full(&slab));
        assert_int_equal(sm_slab_claim_slot(&slab), -1); /* not claimable */
        assert_int_equal(sm_slab_claim_slot_from(&slab, slot), -1);

        /* Freeing it again, either way, is a double free that changes nothing. */
        struct sm_slab before = slab;
        assert_int_equal(sm_slab_release_slot(&slab, slot), SM_SLAB_DOUBLE_FREE);
        assert_int_equal(sm_slab_defer_slot(&slab, slot), SM_SLAB_DOUBLE_FREE);
        assert_memory_equal(&slab, &before, sizeof(slab));

        /* Out of the quarantine it is free, and the next claim gets it. */
        sm_slab_release_deferred(&slab, slot);
        assert_false(sm_slab_slot_in_use(&slab, slot));
        assert_false(sm_slab_slot_allocated(&slab, slot));
        assert_int_equal(slab.in_use, slots - 1);
        assert_int_equal(sm_slab_claim_slot(&slab), (int)slot);
        assert_true(sm_slab_slot_allocated(&slab, slot));
    }
}

static void test_deferring_a_free_slot_is_a_double_free(void **state)
{
    (void)state;
    struct sm_slab slab;
    sm_slab_init(&slab, 64, test_allocated_bytes, 1);
    struct sm_slab before = slab;
    assert_int_equal(sm_slab_defer_slot(&slab, 5), SM_SLAB_DOUBLE_FREE);
    assert_memory_equal(&slab, &before, sizeof(slab));
    assert_int_equal(sm_slab_claim_slot(&slab), 0);
    assert_int_equal(sm_slab_release_slot(&slab, 0), SM_SLAB_RELEASED);
    before = slab;
    assert_int_equal(sm_slab_defer_slot(&slab, 0), SM_SLAB_DOUBLE_FREE);
    assert_memory_equal(&slab, &before, sizeof(slab));
}

/* Spread-out allocated bytes (stride > 1): init zeroes the slots' bytes and those between,
 * claims and frees write only slot i's byte at i * stride, and a byte between two slots'
 * bytes (what a pointer into the middle of a slot finds) never defers anything. */
static void test_strided_allocated_bytes_touch_only_slot_starts(void **state)
{
    (void)state;
    enum { SLOTS = 9, STRIDE = 5, SPAN = (SLOTS - 1) * STRIDE + 1 };
    uint8_t bytes[SPAN + 4];
    memset(bytes, 0xee, sizeof(bytes));
    struct sm_slab slab;
    sm_slab_init(&slab, SLOTS, bytes, STRIDE);
    for (unsigned i = 0; i < SPAN; i++)
        assert_int_equal(bytes[i], 0);
    assert_int_equal(bytes[SPAN], 0xee); /* nothing past the last slot's byte */
    fill(&slab);
    for (unsigned i = 0; i < SPAN; i++)
        assert_int_equal(bytes[i], i % STRIDE == 0 ? 1 : 0);
    assert_ptr_equal(sm_slab_allocated_byte(&slab, 3), &bytes[3 * STRIDE]);
    assert_int_equal(sm_slab_defer_byte(&bytes[3 * STRIDE + 1]), SM_SLAB_DOUBLE_FREE);
    assert_true(sm_slab_slot_allocated(&slab, 3));
    assert_int_equal(sm_slab_defer_byte(&bytes[3 * STRIDE]), SM_SLAB_RELEASED);
    assert_false(sm_slab_slot_allocated(&slab, 3));
    assert_int_equal(sm_slab_defer_slot(&slab, 3), SM_SLAB_DOUBLE_FREE);
    sm_slab_undefer_byte(&bytes[3 * STRIDE]);
    assert_true(sm_slab_slot_allocated(&slab, 3));
    assert_int_equal(sm_slab_release_slot(&slab, 8), SM_SLAB_RELEASED);
    assert_int_equal(bytes[8 * STRIDE], 0);
    assert_int_equal(sm_slab_claim_slot(&slab), 8);
    assert_int_equal(bytes[8 * STRIDE], 1);
}

/* The allocated bytes are the caller's array: zeroed by init, 1 exactly while the user holds
 * the slot, and a hand-out (undefer) is a store into it. */
static void test_allocated_bytes_live_in_the_callers_array(void **state)
{
    (void)state;
    uint8_t bytes[40];
    memset(bytes, 0xee, sizeof(bytes));
    struct sm_slab slab;
    sm_slab_init(&slab, 32, bytes, 1);
    for (unsigned i = 0; i < 32; i++)
        assert_int_equal(bytes[i], 0);
    assert_int_equal(bytes[32], 0xee); /* init touches `slots` bytes, no more */
    fill(&slab);
    for (unsigned i = 0; i < 32; i++)
        assert_int_equal(bytes[i], 1);
    assert_int_equal(sm_slab_defer_slot(&slab, 7), SM_SLAB_RELEASED);
    assert_int_equal(bytes[7], 0);
    sm_slab_undefer_slot(&slab, 7); /* a thread cache hands it out again */
    assert_int_equal(bytes[7], 1);
    assert_true(sm_slab_slot_allocated(&slab, 7));
    assert_int_equal(sm_slab_release_slot(&slab, 7), SM_SLAB_RELEASED);
    assert_int_equal(bytes[7], 0);
    assert_false(sm_slab_slot_in_use(&slab, 7));
}

enum { RACE_SLOTS = 256, RACE_ROUNDS = 200 };

struct race {
    struct sm_slab *slab;
    unsigned *arrived; /* both threads meet before each slot, so their frees of it collide */
    unsigned won;      /* deferrals this thread won */
};

static void *defer_every_slot(void *arg)
{
    struct race *r = arg;
    for (unsigned i = 0; i < RACE_SLOTS; i++) {
        __atomic_add_fetch(r->arrived, 1, __ATOMIC_ACQ_REL);
        for (unsigned spins = 0; __atomic_load_n(r->arrived, __ATOMIC_ACQUIRE) < 2 * (i + 1);)
            if (++spins % 4096 == 0)
                sched_yield(); /* on one CPU the other thread must get to run */
        r->won += sm_slab_defer_slot(r->slab, i) == SM_SLAB_RELEASED;
    }
    return NULL;
}

/* Two threads free every slot of a full slab at once (a racing double free of each): exactly
 * one of the two frees of each slot succeeds. */
static void test_racing_deferrals_of_one_slot_succeed_once(void **state)
{
    (void)state;
    static uint8_t bytes[RACE_SLOTS];
    for (unsigned round = 0; round < RACE_ROUNDS; round++) {
        struct sm_slab slab;
        sm_slab_init(&slab, RACE_SLOTS, bytes, 1);
        fill(&slab);
        unsigned arrived = 0;
        struct race a = {&slab, &arrived, 0}, b = {&slab, &arrived, 0};
        pthread_t ta, tb;
        assert_int_equal(pthread_create(&ta, NULL, defer_every_slot, &a), 0);
        assert_int_equal(pthread_create(&tb, NULL, defer_every_slot, &b), 0);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        assert_int_equal(a.won + b.won, RACE_SLOTS);
        for (unsigned i = 0; i < RACE_SLOTS; i++)
            assert_false(sm_slab_slot_allocated(&slab, i));
    }
}

/* ---- state lists ------------------------------------------------------------------------ */

static void test_lists_start_empty(void **state)
{
    (void)state;
    struct sm_slab_lists lists;
    struct sm_slab slabs[NB_TEST_SLABS];
    memset(&lists, 0x5a, sizeof(lists));
    init_slabs(&lists, slabs);
    for (unsigned s = 0; s < SM_SLAB_NB_STATES; s++) {
        assert_int_equal(sm_slab_list_first(&lists, (enum sm_slab_state)s), SM_SLAB_NIL);
        assert_list(&lists, slabs, (enum sm_slab_state)s, NULL, 0);
    }
}

/* Every state but UNUSED and GUARD has a list. */
static bool has_list(unsigned state)
{
    return state != SM_SLAB_UNUSED && state != SM_SLAB_GUARD;
}

static void test_set_state_pushes_at_the_head(void **state)
{
    (void)state;
    for (unsigned l = 0; l < SM_SLAB_NB_STATES; l++) {
        if (!has_list(l))
            continue;
        enum sm_slab_state listed = (enum sm_slab_state)l;
        struct sm_slab_lists lists;
        struct sm_slab slabs[NB_TEST_SLABS];
        init_slabs(&lists, slabs);
        sm_slab_set_state(&lists, slabs, 3, listed);
        assert_list(&lists, slabs, listed, (const uint32_t[]){3}, 1);
        sm_slab_set_state(&lists, slabs, 5, listed);
        sm_slab_set_state(&lists, slabs, 0, listed);
        /* Newest first; the last is the one there longest. */
        assert_list(&lists, slabs, listed, (const uint32_t[]){0, 5, 3}, 3);
        for (unsigned other = 0; other < SM_SLAB_NB_STATES; other++) {
            if (other != l)
                assert_list(&lists, slabs, (enum sm_slab_state)other, NULL, 0);
        }
    }
}

static void test_set_state_moves_between_lists(void **state)
{
    (void)state;
    struct sm_slab_lists lists;
    struct sm_slab slabs[NB_TEST_SLABS];
    init_slabs(&lists, slabs);
    for (uint32_t i = 0; i < 4; i++)
        sm_slab_set_state(&lists, slabs, i, SM_SLAB_PARTIAL);
    assert_list(&lists, slabs, SM_SLAB_PARTIAL, (const uint32_t[]){3, 2, 1, 0}, 4);

    sm_slab_set_state(&lists, slabs, 2, SM_SLAB_FULL);
    assert_list(&lists, slabs, SM_SLAB_PARTIAL, (const uint32_t[]){3, 1, 0}, 3);
    assert_list(&lists, slabs, SM_SLAB_FULL, (const uint32_t[]){2}, 1);

    sm_slab_set_state(&lists, slabs, 0, SM_SLAB_FULL);
    sm_slab_set_state(&lists, slabs, 2, SM_SLAB_EMPTY);
    sm_slab_set_state(&lists, slabs, 0, SM_SLAB_QUARANTINED);
    assert_list(&lists, slabs, SM_SLAB_QUARANTINED, (const uint32_t[]){0}, 1);
    sm_slab_set_state(&lists, slabs, 0, SM_SLAB_DECOMMITTED);
    assert_list(&lists, slabs, SM_SLAB_QUARANTINED, NULL, 0);
    assert_list(&lists, slabs, SM_SLAB_DECOMMITTED, (const uint32_t[]){0}, 1);
    sm_slab_set_state(&lists, slabs, 0, SM_SLAB_EMPTY);
    assert_list(&lists, slabs, SM_SLAB_PARTIAL, (const uint32_t[]){3, 1}, 2);
    assert_list(&lists, slabs, SM_SLAB_FULL, NULL, 0);
    assert_list(&lists, slabs, SM_SLAB_EMPTY, (const uint32_t[]){0, 2}, 2);
    assert_list(&lists, slabs, SM_SLAB_QUARANTINED, NULL, 0);
    assert_list(&lists, slabs, SM_SLAB_DECOMMITTED, NULL, 0);
}

static void test_unlink_from_middle_head_and_tail(void **state)
{
    (void)state;
    struct sm_slab_lists lists;
    struct sm_slab slabs[NB_TEST_SLABS];
    init_slabs(&lists, slabs);
    for (uint32_t i = 0; i < 5; i++)
        sm_slab_set_state(&lists, slabs, i, SM_SLAB_EMPTY);
    assert_list(&lists, slabs, SM_SLAB_EMPTY, (const uint32_t[]){4, 3, 2, 1, 0}, 5);

    sm_slab_set_state(&lists, slabs, 2, SM_SLAB_PARTIAL); /* middle */
    assert_list(&lists, slabs, SM_SLAB_EMPTY, (const uint32_t[]){4, 3, 1, 0}, 4);
    sm_slab_set_state(&lists, slabs, 4, SM_SLAB_PARTIAL); /* head */
    assert_list(&lists, slabs, SM_SLAB_EMPTY, (const uint32_t[]){3, 1, 0}, 3);
    sm_slab_set_state(&lists, slabs, 0, SM_SLAB_PARTIAL); /* tail */
    assert_list(&lists, slabs, SM_SLAB_EMPTY, (const uint32_t[]){3, 1}, 2);
    sm_slab_set_state(&lists, slabs, 1, SM_SLAB_PARTIAL);
    sm_slab_set_state(&lists, slabs, 3, SM_SLAB_PARTIAL); /* the only one */
    assert_list(&lists, slabs, SM_SLAB_EMPTY, NULL, 0);
    assert_list(&lists, slabs, SM_SLAB_PARTIAL, (const uint32_t[]){3, 1, 0, 4, 2}, 5);
}

static void test_setting_the_same_state_moves_to_the_head(void **state)
{
    (void)state;
    struct sm_slab_lists lists;
    struct sm_slab slabs[NB_TEST_SLABS];
    init_slabs(&lists, slabs);
    for (uint32_t i = 0; i < 3; i++)
        sm_slab_set_state(&lists, slabs, i, SM_SLAB_PARTIAL);
    sm_slab_set_state(&lists, slabs, 0, SM_SLAB_PARTIAL);
    assert_list(&lists, slabs, SM_SLAB_PARTIAL, (const uint32_t[]){0, 2, 1}, 3);
    sm_slab_set_state(&lists, slabs, 0, SM_SLAB_PARTIAL); /* already the head */
    assert_list(&lists, slabs, SM_SLAB_PARTIAL, (const uint32_t[]){0, 2, 1}, 3);
}

static void test_unused_and_guard_have_no_list(void **state)
{
    (void)state;
    static const enum sm_slab_state unlisted[] = {SM_SLAB_UNUSED, SM_SLAB_GUARD};
    for (unsigned u = 0; u < 2; u++) {
        struct sm_slab_lists lists;
        struct sm_slab slabs[NB_TEST_SLABS];
        init_slabs(&lists, slabs);
        for (uint32_t i = 0; i < 3; i++)
            sm_slab_set_state(&lists, slabs, i, SM_SLAB_FULL);

        sm_slab_set_state(&lists, slabs, 1, unlisted[u]);
        assert_int_equal(slabs[1].state, unlisted[u]);
        assert_unlinked(&slabs[1]);
        assert_list(&lists, slabs, SM_SLAB_FULL, (const uint32_t[]){2, 0}, 2);
        assert_list(&lists, slabs, unlisted[u], NULL, 0);

        /* A second unlisted slab, straight from UNUSED, is not linked anywhere either. */
        sm_slab_set_state(&lists, slabs, 6, unlisted[u]);
        assert_unlinked(&slabs[6]);
        assert_list(&lists, slabs, unlisted[u], NULL, 0);

        /* And an unlisted slab joins a list like any other. */
        sm_slab_set_state(&lists, slabs, 1, SM_SLAB_FULL);
        assert_list(&lists, slabs, SM_SLAB_FULL, (const uint32_t[]){1, 2, 0}, 3);
    }
}

static void test_list_last_is_the_oldest_member(void **state)
{
    (void)state;
    struct sm_slab_lists lists;
    struct sm_slab slabs[NB_TEST_SLABS];
    init_slabs(&lists, slabs);
    assert_int_equal(sm_slab_list_last(&lists, slabs, SM_SLAB_QUARANTINED), SM_SLAB_NIL);
    sm_slab_set_state(&lists, slabs, 7, SM_SLAB_QUARANTINED);
    assert_int_equal(sm_slab_list_last(&lists, slabs, SM_SLAB_QUARANTINED), 7);
    for (uint32_t i = 0; i < 5; i++)
        sm_slab_set_state(&lists, slabs, i, SM_SLAB_QUARANTINED);
    assert_int_equal(sm_slab_list_last(&lists, slabs, SM_SLAB_QUARANTINED), 7);
    /* Taking the oldest out (FIFO) exposes the next oldest. */
    sm_slab_set_state(&lists, slabs, 7, SM_SLAB_EMPTY);
    assert_int_equal(sm_slab_list_last(&lists, slabs, SM_SLAB_QUARANTINED), 0);
    sm_slab_set_state(&lists, slabs, 0, SM_SLAB_EMPTY);
    assert_int_equal(sm_slab_list_last(&lists, slabs, SM_SLAB_QUARANTINED), 1);
    assert_int_equal(sm_slab_list_last(&lists, slabs, SM_SLAB_EMPTY), 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_gives_an_empty_unlinked_slab),
        cmocka_unit_test(test_claims_lowest_first_until_full),
        cmocka_unit_test(test_release_then_claim_returns_the_released_slot),
        cmocka_unit_test(test_release_of_every_slot_empties_the_slab),
        cmocka_unit_test(test_releasing_a_free_slot_is_a_double_free_and_changes_nothing),
        cmocka_unit_test(test_bits_beyond_the_slot_count_are_never_claimable),
        cmocka_unit_test(test_claim_from_takes_the_first_free_slot_at_or_after_start),
        cmocka_unit_test(test_claims_releases_and_deferrals_follow_a_simple_model),
        cmocka_unit_test(test_a_deferred_slot_stays_in_use_but_is_not_allocated),
        cmocka_unit_test(test_deferring_a_free_slot_is_a_double_free),
        cmocka_unit_test(test_lists_start_empty),
        cmocka_unit_test(test_set_state_pushes_at_the_head),
        cmocka_unit_test(test_set_state_moves_between_lists),
        cmocka_unit_test(test_unlink_from_middle_head_and_tail),
        cmocka_unit_test(test_setting_the_same_state_moves_to_the_head),
        cmocka_unit_test(test_allocated_bytes_live_in_the_callers_array),
        cmocka_unit_test(test_strided_allocated_bytes_touch_only_slot_starts),
        cmocka_unit_test(test_racing_deferrals_of_one_slot_succeed_once),
        cmocka_unit_test(test_unused_and_guard_have_no_list),
        cmocka_unit_test(test_list_last_is_the_oldest_member),
        cmocka_unit_test(test_first_claims_are_reported_only_on_fresh_slabs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

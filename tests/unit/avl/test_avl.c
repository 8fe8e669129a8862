/* Unit tests for the AVL large-object map (libs/avl). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>

#include "starmalloc/avl.h"

/* ---- helpers ---------------------------------------------------------------------------- */

/* splitmix64: a fixed seed keeps every failure reproducible. */
static uint64_t rng_state;

static void rng_seed(uint64_t seed)
{
    rng_state = seed;
}

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static size_t rng_below(size_t bound)
{
    return (size_t)(rng_next() % bound);
}

static struct sm_avl_entry make_entry(uintptr_t addr, size_t size)
{
    /* Distinct values in every field, so that a mixed-up copy is noticed. */
    struct sm_avl_entry e = {.addr = addr,
                             .size = size,
                             .map_addr = addr - 4096,
                             .map_size = size + 8192,
                             .flags = (unsigned)(addr >> 12) ^ 0x5a5a5a5au};
    return e;
}

static bool entries_equal(const struct sm_avl_entry *a, const struct sm_avl_entry *b)
{
    return a->addr == b->addr && a->size == b->size && a->map_addr == b->map_addr &&
           a->map_size == b->map_size && a->flags == b->flags;
}

static void *map_pool(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    return p;
}

static void unmap_pool(void *p, size_t bytes)
{
    assert_int_equal(munmap(p, bytes), 0);
}

/* Collects keys visited by sm_avl_foreach. */
struct key_list {
    uintptr_t *keys;
    size_t cap;
    size_t n;
};

static void collect_key(const struct sm_avl_entry *e, void *ctx)
{
    struct key_list *list = ctx;
    /* Count past cap without writing, so that extra visits still show up as a mismatch. */
    if (list->n < list->cap)
        list->keys[list->n] = e->addr;
    list->n++;
}

/* ---- 1. empty map ----------------------------------------------------------------------- */

static void test_empty_map(void **state)
{
    (void)state;
    struct sm_avl_map map;
    struct sm_avl_entry out = make_entry(1, 1);
    uintptr_t key = 0;
    struct key_list list = {.keys = &key, .cap = 1, .n = 0};

    sm_avl_init(&map);
    assert_int_equal(sm_avl_count(&map), 0);
    assert_true(sm_avl_check(&map));
    assert_null(sm_avl_find(&map, 0));
    assert_null(sm_avl_find(&map, 0x1000));
    assert_null(sm_avl_find_containing(&map, 0));
    assert_null(sm_avl_find_containing(&map, 0x1000));
    assert_null(sm_avl_find_containing(&map, UINTPTR_MAX));
    assert_false(sm_avl_remove(&map, 0x1000, &out));
    assert_false(sm_avl_remove(&map, 0x1000, NULL));
    sm_avl_foreach(&map, collect_key, &list);
    assert_int_equal(list.n, 0);
    assert_int_equal(sm_avl_count(&map), 0);
    assert_true(sm_avl_check(&map));
}

/* ---- 2. insert, duplicates, find, find_containing --------------------------------------- */

static _Alignas(64) unsigned char small_pool[64 * 1024];

static void test_insert_find(void **state)
{
    (void)state;
    struct sm_avl_map map;
    const struct sm_avl_entry a = make_entry(0x1000, 0x100);  /* [0x1000, 0x1100) */
    const struct sm_avl_entry b = make_entry(0x3000, 0x2000); /* [0x3000, 0x5000) */
    const struct sm_avl_entry c = make_entry(0x8000, 1);      /* [0x8000, 0x8001) */

    sm_avl_init(&map);
    sm_avl_pool_add(&map, small_pool, sizeof(small_pool));
    assert_int_equal(sm_avl_insert(&map, &b), SM_AVL_OK);
    assert_int_equal(sm_avl_insert(&map, &a), SM_AVL_OK);
    assert_int_equal(sm_avl_insert(&map, &c), SM_AVL_OK);
    assert_int_equal(sm_avl_count(&map), 3);
    assert_true(sm_avl_check(&map));

    /* A duplicate key is refused and the stored entry keeps its old fields. */
    struct sm_avl_entry dup = make_entry(0x3000, 0x40);
    assert_int_equal(sm_avl_insert(&map, &dup), SM_AVL_EXISTS);
    assert_int_equal(sm_avl_count(&map), 3);
    assert_true(sm_avl_check(&map));
    assert_non_null(sm_avl_find(&map, 0x3000));
    assert_true(entries_equal(sm_avl_find(&map, 0x3000), &b));

    /* Exact lookups. */
    assert_true(entries_equal(sm_avl_find(&map, 0x1000), &a));
    assert_true(entries_equal(sm_avl_find(&map, 0x8000), &c));
    assert_null(sm_avl_find(&map, 0x1001));
    assert_null(sm_avl_find(&map, 0x2000));
    assert_null(sm_avl_find(&map, 0x9000));

    /* Containing lookups: first byte, middle, last byte, one past the end, before the first. */
    assert_ptr_equal(sm_avl_find_containing(&map, 0x1000), sm_avl_find(&map, 0x1000));
    assert_ptr_equal(sm_avl_find_containing(&map, 0x1080), sm_avl_find(&map, 0x1000));
    assert_ptr_equal(sm_avl_find_containing(&map, 0x10ff), sm_avl_find(&map, 0x1000));
    assert_null(sm_avl_find_containing(&map, 0x1100));
    assert_null(sm_avl_find_containing(&map, 0x0fff));
    assert_null(sm_avl_find_containing(&map, 0));
    assert_null(sm_avl_find_containing(&map, 0x2fff));
    assert_ptr_equal(sm_avl_find_containing(&map, 0x3000), sm_avl_find(&map, 0x3000));
    assert_ptr_equal(sm_avl_find_containing(&map, 0x4000), sm_avl_find(&map, 0x3000));
    assert_ptr_equal(sm_avl_find_containing(&map, 0x4fff), sm_avl_find(&map, 0x3000));
    assert_null(sm_avl_find_containing(&map, 0x5000));
    assert_null(sm_avl_find_containing(&map, 0x7fff));
    assert_ptr_equal(sm_avl_find_containing(&map, 0x8000), sm_avl_find(&map, 0x8000));
    assert_null(sm_avl_find_containing(&map, 0x8001));
    assert_null(sm_avl_find_containing(&map, UINTPTR_MAX));

    /* The caller may change every field but the key; lookups see the change. */
    struct sm_avl_entry *e = sm_avl_find(&map, 0x1000);
    e->size = 0x1800;
    assert_ptr_equal(sm_avl_find_containing(&map, 0x27ff), e);
    assert_null(sm_avl_find_containing(&map, 0x2800));
    assert_true(sm_avl_check(&map));
}

static void test_find_containing_top_of_address_space(void **state)
{
    (void)state;
    struct sm_avl_map map;
    const struct sm_avl_entry top = make_entry(UINTPTR_MAX - 15, 16);
    const struct sm_avl_entry low = make_entry(0, 16);

    sm_avl_init(&map);
    sm_avl_pool_add(&map, small_pool, sizeof(small_pool));
    assert_int_equal(sm_avl_insert(&map, &top), SM_AVL_OK);
    assert_int_equal(sm_avl_insert(&map, &low), SM_AVL_OK);
    /* addr + size wraps to 0 here: a naive end computation would find nothing. */
    assert_ptr_equal(sm_avl_find_containing(&map, UINTPTR_MAX), sm_avl_find(&map, top.addr));
    assert_ptr_equal(sm_avl_find_containing(&map, UINTPTR_MAX - 15), sm_avl_find(&map, top.addr));
    assert_null(sm_avl_find_containing(&map, UINTPTR_MAX - 16));
    assert_ptr_equal(sm_avl_find_containing(&map, 0), sm_avl_find(&map, 0));
    assert_ptr_equal(sm_avl_find_containing(&map, 15), sm_avl_find(&map, 0));
    assert_null(sm_avl_find_containing(&map, 16));
    assert_true(sm_avl_check(&map));
}

static void test_remove(void **state)
{
    (void)state;
    struct sm_avl_map map;
    struct sm_avl_entry out;

    sm_avl_init(&map);
    sm_avl_pool_add(&map, small_pool, sizeof(small_pool));
    for (uintptr_t i = 1; i <= 7; i++) {
        struct sm_avl_entry e = make_entry(i * 0x10000, i * 0x100);
        assert_int_equal(sm_avl_insert(&map, &e), SM_AVL_OK);
    }
    /* The root of a 7-node tree has two children: the successor-splicing path. */
    memset(&out, 0, sizeof(out));
    assert_true(sm_avl_remove(&map, 0x40000, &out));
    struct sm_avl_entry expect = make_entry(0x40000, 0x400);
    assert_true(entries_equal(&out, &expect));
    assert_int_equal(sm_avl_count(&map), 6);
    assert_true(sm_avl_check(&map));
    assert_null(sm_avl_find(&map, 0x40000));
    assert_null(sm_avl_find_containing(&map, 0x40000));

    /* A missing key leaves the map as it was. */
    assert_false(sm_avl_remove(&map, 0x40000, &out));
    assert_false(sm_avl_remove(&map, 0x40001, NULL));
    assert_int_equal(sm_avl_count(&map), 6);

    /* out may be NULL; the other entries are untouched. */
    assert_true(sm_avl_remove(&map, 0x10000, NULL));
    assert_true(sm_avl_remove(&map, 0x70000, NULL));
    assert_int_equal(sm_avl_count(&map), 4);
    assert_true(sm_avl_check(&map));
    for (uintptr_t i = 2; i <= 6; i++) {
        if (i == 4)
            continue;
        struct sm_avl_entry e = make_entry(i * 0x10000, i * 0x100);
        assert_non_null(sm_avl_find(&map, e.addr));
        assert_true(entries_equal(sm_avl_find(&map, e.addr), &e));
    }
}

/* sm_avl_check must be able to fail, or every test that relies on it proves nothing. */
static void test_check_detects_corruption(void **state)
{
    (void)state;
    struct sm_avl_map map;

    sm_avl_init(&map);
    sm_avl_pool_add(&map, small_pool, sizeof(small_pool));
    for (uintptr_t i = 1; i <= 15; i++) {
        struct sm_avl_entry e = make_entry(i * 0x1000, 0x100);
        assert_int_equal(sm_avl_insert(&map, &e), SM_AVL_OK);
    }
    assert_true(sm_avl_check(&map));

    /* Breaking the key order (which the API forbids) is caught. */
    struct sm_avl_entry *e = sm_avl_find(&map, 0x3000);
    assert_non_null(e);
    e->addr = 0x100000;
    assert_false(sm_avl_check(&map));
    e->addr = 0x4000; /* equal to its in-order successor: not strictly ascending */
    assert_false(sm_avl_check(&map));
    e->addr = 0x3000;
    assert_true(sm_avl_check(&map));

    /* So is a count that disagrees with the tree. */
    map.count++;
    assert_false(sm_avl_check(&map));
    map.count--;
    assert_true(sm_avl_check(&map));
}

/* White-box: a stored height that disagrees with the tree must be caught. The node layout is
 * private, so find a leaf through the pool instead: nodes are carved at multiples of
 * sm_avl_node_bytes() from the pool start, and in a zeroed pool a leaf's only non-zero bytes
 * outside its entry are its height of 1. */
static void test_check_detects_bad_height(void **state)
{
    (void)state;
    struct sm_avl_map map;
    const size_t nb = sm_avl_node_bytes();
    unsigned char *height_byte = NULL;

    memset(small_pool, 0, sizeof(small_pool));
    sm_avl_init(&map);
    sm_avl_pool_add(&map, small_pool, sizeof(small_pool));
    for (uintptr_t i = 1; i <= 7; i++) {
        struct sm_avl_entry e = make_entry(i * 0x1000, 0x100);
        assert_int_equal(sm_avl_insert(&map, &e), SM_AVL_OK);
    }
    for (uintptr_t i = 1; i <= 7 && height_byte == NULL; i++) {
        unsigned char *entry = (unsigned char *)sm_avl_find(&map, i * 0x1000);
        unsigned char *node = small_pool + (size_t)(entry - small_pool) / nb * nb;
        unsigned char *nonzero = NULL;
        size_t nonzero_count = 0;
        for (unsigned char *p = node; p < node + nb; p++) {
            bool in_entry = p >= entry && p < entry + sizeof(struct sm_avl_entry);
            if (!in_entry && *p != 0) {
                nonzero = p;
                nonzero_count++;
            }
        }
        if (nonzero_count == 1 && *nonzero == 1)
            height_byte = nonzero;
    }
    assert_non_null(height_byte);
    assert_true(sm_avl_check(&map));
    *height_byte = 3;
    assert_false(sm_avl_check(&map));
    *height_byte = 1;
    assert_true(sm_avl_check(&map));
}

/* ---- 3. pool exhaustion and node recycling ---------------------------------------------- */

static _Alignas(64) unsigned char exhaust_pool[16 * 1024];

static bool region_is(const unsigned char *p, size_t n, unsigned char byte)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != byte)
            return false;
    }
    return true;
}

static enum sm_avl_status insert_key(struct sm_avl_map *map, uintptr_t key)
{
    struct sm_avl_entry e = make_entry(key, 0x10);
    return sm_avl_insert(map, &e);
}

static void test_pool_exhaustion_and_recycling(void **state)
{
    (void)state;
    struct sm_avl_map map;
    const size_t nb = sm_avl_node_bytes();
    const unsigned char canary = 0xa5;

    assert_int_equal(nb % 16, 0);
    assert_true(nb >= sizeof(struct sm_avl_entry) + 2 * sizeof(void *));
    assert_true(12 * nb <= sizeof(exhaust_pool));
    memset(exhaust_pool, canary, sizeof(exhaust_pool));

    /* No pool at all, an empty pool, a pool smaller than one node. */
    sm_avl_init(&map);
    assert_int_equal(insert_key(&map, 0x1000), SM_AVL_NO_MEMORY);
    sm_avl_pool_add(&map, exhaust_pool, 0);
    assert_int_equal(insert_key(&map, 0x1000), SM_AVL_NO_MEMORY);
    sm_avl_pool_add(&map, exhaust_pool, nb - 16);
    assert_int_equal(insert_key(&map, 0x1000), SM_AVL_NO_MEMORY);
    assert_int_equal(sm_avl_count(&map), 0);
    assert_null(sm_avl_find(&map, 0x1000));
    assert_true(sm_avl_check(&map));

    /* Room for four nodes plus a fragment: the fifth insert fails and changes nothing. */
    sm_avl_pool_add(&map, exhaust_pool, 4 * nb + 16);
    for (uintptr_t k = 1; k <= 4; k++)
        assert_int_equal(insert_key(&map, k * 0x1000), SM_AVL_OK);
    assert_int_equal(insert_key(&map, 5 * 0x1000), SM_AVL_NO_MEMORY);
    assert_int_equal(sm_avl_count(&map), 4);
    assert_null(sm_avl_find(&map, 5 * 0x1000));
    assert_true(sm_avl_check(&map));
    /* A duplicate is still reported as such, not as a memory failure. */
    assert_int_equal(insert_key(&map, 2 * 0x1000), SM_AVL_EXISTS);
    /* Nothing was written past the nodes handed out. */
    assert_true(region_is(exhaust_pool + 4 * nb, sizeof(exhaust_pool) - 4 * nb, canary));

    /* More memory: the failed insert now succeeds, up to the new capacity. */
    unsigned char *second = exhaust_pool + 8 * nb;
    sm_avl_pool_add(&map, second, 2 * nb);
    assert_int_equal(insert_key(&map, 5 * 0x1000), SM_AVL_OK);
    assert_int_equal(insert_key(&map, 6 * 0x1000), SM_AVL_OK);
    assert_int_equal(insert_key(&map, 7 * 0x1000), SM_AVL_NO_MEMORY);
    assert_int_equal(sm_avl_count(&map), 6);
    assert_true(sm_avl_check(&map));
    assert_true(region_is(exhaust_pool + 4 * nb, 4 * nb, canary));
    assert_true(region_is(second + 2 * nb, sizeof(exhaust_pool) - 10 * nb, canary));

    /* A full map keeps running on recycled nodes alone: 10x the capacity of churn. */
    const size_t capacity = 6;
    uintptr_t oldest = 1;
    uintptr_t next = 7;
    for (size_t i = 0; i < 10 * capacity; i++) {
        assert_true(sm_avl_remove(&map, oldest * 0x1000, NULL));
        assert_int_equal(insert_key(&map, next * 0x1000), SM_AVL_OK);
        assert_int_equal(insert_key(&map, (next + 1) * 0x1000), SM_AVL_NO_MEMORY);
        assert_true(sm_avl_check(&map));
        oldest++;
        next++;
    }
    assert_int_equal(sm_avl_count(&map), capacity);

    /* Emptying and refilling: every node came back, and still no more than that. */
    for (uintptr_t k = oldest; k < next; k++)
        assert_true(sm_avl_remove(&map, k * 0x1000, NULL));
    assert_int_equal(sm_avl_count(&map), 0);
    for (size_t round = 0; round < 10; round++) {
        for (uintptr_t k = 0; k < capacity; k++)
            assert_int_equal(insert_key(&map, 0x100000 + k * 0x1000), SM_AVL_OK);
        assert_int_equal(insert_key(&map, 0x200000), SM_AVL_NO_MEMORY);
        assert_true(sm_avl_check(&map));
        for (uintptr_t k = 0; k < capacity; k++)
            assert_true(sm_avl_remove(&map, 0x100000 + k * 0x1000, NULL));
    }
    assert_int_equal(sm_avl_count(&map), 0);
    assert_true(region_is(exhaust_pool + 4 * nb, 4 * nb, canary));
    assert_true(region_is(second + 2 * nb, sizeof(exhaust_pool) - 10 * nb, canary));
}

/* ---- 4. randomised operations against a reference --------------------------------------- */

enum {
    RND_SLOTS = 512,
    RND_OPS = 200000,
    RND_PHASE = 10000, /* ops between switching from growing to shrinking and back */
    RND_STRIDE = 4096,
};

#define RND_BASE ((uintptr_t)0x10000000)

struct reference {
    bool present[RND_SLOTS];
    struct sm_avl_entry entry[RND_SLOTS];
    size_t count;
};

static uintptr_t slot_key(size_t slot)
{
    return RND_BASE + (uintptr_t)slot * RND_STRIDE;
}

static void rnd_insert(struct sm_avl_map *map, struct reference *ref)
{
    size_t slot = rng_below(RND_SLOTS);
    struct sm_avl_entry e = make_entry(slot_key(slot), 1 + rng_below(RND_STRIDE));
    enum sm_avl_status st = sm_avl_insert(map, &e);

    if (ref->present[slot]) {
        assert_int_equal(st, SM_AVL_EXISTS);
        assert_true(entries_equal(sm_avl_find(map, e.addr), &ref->entry[slot]));
        return;
    }
    /* The pool holds exactly RND_SLOTS nodes, so success depends on recycling. */
    assert_int_equal(st, SM_AVL_OK);
    ref->present[slot] = true;
    ref->entry[slot] = e;
    ref->count++;
}

static void rnd_remove(struct sm_avl_map *map, struct reference *ref)
{
    size_t slot = rng_below(RND_SLOTS);
    struct sm_avl_entry out;
    bool use_out = rng_below(4) != 0;
    bool removed = sm_avl_remove(map, slot_key(slot), use_out ? &out : NULL);

    assert_int_equal(removed, ref->present[slot]);
    if (!removed)
        return;
    if (use_out)
        assert_true(entries_equal(&out, &ref->entry[slot]));
    ref->present[slot] = false;
    ref->count--;
}

static void rnd_find(struct sm_avl_map *map, struct reference *ref)
{
    size_t slot = rng_below(RND_SLOTS);
    /* Sometimes look up an address inside a block: only exact keys may match. */
    uintptr_t offset = rng_below(4) == 0 ? 1 + rng_below(RND_STRIDE - 1) : 0;
    struct sm_avl_entry *e = sm_avl_find(map, slot_key(slot) + offset);

    if (!ref->present[slot] || offset != 0) {
        assert_null(e);
        return;
    }
    assert_non_null(e);
    assert_true(entries_equal(e, &ref->entry[slot]));
    /* The caller may rewrite everything but the key. */
    if (rng_below(8) == 0) {
        e->size = 1 + rng_below(RND_STRIDE);
        e->map_size = e->size + 8192;
        ref->entry[slot] = *e;
    }
}

/* The reference answer for find_containing: blocks never cross their slot's stride. */
static const struct sm_avl_entry *ref_containing(const struct reference *ref, uintptr_t addr)
{
    if (addr < RND_BASE)
        return NULL;
    size_t slot = (addr - RND_BASE) / RND_STRIDE;
    size_t offset = (addr - RND_BASE) % RND_STRIDE;
    if (slot >= RND_SLOTS || !ref->present[slot] || offset >= ref->entry[slot].size)
        return NULL;
    return &ref->entry[slot];
}

static void rnd_find_containing(struct sm_avl_map *map, struct reference *ref)
{
    /* Slot -1 and RND_SLOTS probe below the first and past the last possible key. */
    size_t probe = rng_below(RND_SLOTS + 2);
    uintptr_t addr = RND_BASE - RND_STRIDE + (uintptr_t)probe * RND_STRIDE;
    size_t slot = probe - 1;

    /* Bias towards the block edges, where off-by-one errors live. */
    if (probe >= 1 && probe <= RND_SLOTS && ref->present[slot] && rng_below(2) == 0)
        addr += ref->entry[slot].size - rng_below(2);
    else
        addr += rng_below(RND_STRIDE);
    const struct sm_avl_entry *expect = ref_containing(ref, addr);
    struct sm_avl_entry *e = sm_avl_find_containing(map, addr);

    if (expect == NULL) {
        assert_null(e);
        return;
    }
    assert_non_null(e);
    assert_true(entries_equal(e, expect));
}

static void test_random_against_reference(void **state)
{
    (void)state;
    static struct reference ref;
    static uintptr_t visited[RND_SLOTS];
    struct sm_avl_map map;
    const size_t pool_bytes = RND_SLOTS * sm_avl_node_bytes();
    void *pool = map_pool(pool_bytes);

    memset(&ref, 0, sizeof(ref));
    rng_seed(0x5eed5eed12345678u);
    sm_avl_init(&map);
    sm_avl_pool_add(&map, pool, pool_bytes);
    for (size_t op = 0; op < RND_OPS; op++) {
        /* Alternate growing and shrinking phases so that the tree both fills and drains. */
        bool growing = (op / RND_PHASE) % 2 == 0;
        size_t roll = rng_below(100);
        size_t inserts = growing ? 45 : 20;
        if (roll < inserts)
            rnd_insert(&map, &ref);
        else if (roll < 65)
            rnd_remove(&map, &ref);
        else if (roll < 80)
            rnd_find(&map, &ref);
        else
            rnd_find_containing(&map, &ref);
        assert_true(sm_avl_check(&map));
        assert_int_equal(sm_avl_count(&map), ref.count);
    }

    struct key_list list = {.keys = visited, .cap = RND_SLOTS, .n = 0};
    sm_avl_foreach(&map, collect_key, &list);
    assert_int_equal(list.n, ref.count);
    size_t i = 0;
    for (size_t slot = 0; slot < RND_SLOTS; slot++) {
        if (ref.present[slot])
            assert_int_equal(visited[i++], slot_key(slot));
    }
    assert_int_equal(i, list.n);
    unmap_pool(pool, pool_bytes);
}

/* ---- 5. sequential inserts stay balanced ------------------------------------------------ */

enum { SEQ_N = 100000 };

static uintptr_t seq_key(size_t i)
{
    return 0x100000 + (uintptr_t)i * 64;
}

/* Checks at powers of two (and at the end) keep the O(n) sm_avl_check affordable. */
static bool checkpoint(size_t done)
{
    return (done & (done - 1)) == 0 || done == SEQ_N;
}

static void assert_foreach_is_sequence(const struct sm_avl_map *map, size_t n)
{
    static uintptr_t visited[SEQ_N];
    struct key_list list = {.keys = visited, .cap = SEQ_N, .n = 0};

    sm_avl_foreach(map, collect_key, &list);
    assert_int_equal(list.n, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(visited[i], seq_key(i));
}

/* Inserts SEQ_N keys in order (ascending or descending), removes them all, then shows that
 * every node was recycled by refilling without new memory. Each step is checked by
 * sm_avl_check, whose balance-factor check bounds the height by 1.44 log2(n + 2). */
static void run_sequential(bool ascending)
{
    struct sm_avl_map map;
    const size_t pool_bytes = SEQ_N * sm_avl_node_bytes();
    void *pool = map_pool(pool_bytes);

    sm_avl_init(&map);
    sm_avl_pool_add(&map, pool, pool_bytes);
    for (size_t done = 1; done <= SEQ_N; done++) {
        size_t i = ascending ? done - 1 : SEQ_N - done;
        struct sm_avl_entry e = make_entry(seq_key(i), 64);
        assert_int_equal(sm_avl_insert(&map, &e), SM_AVL_OK);
        if (checkpoint(done))
            assert_true(sm_avl_check(&map));
    }
    assert_int_equal(sm_avl_count(&map), SEQ_N);
    assert_foreach_is_sequence(&map, SEQ_N);
    assert_ptr_equal(sm_avl_find_containing(&map, seq_key(SEQ_N / 2) + 63),
                     sm_avl_find(&map, seq_key(SEQ_N / 2)));

    /* Remove in the same direction, which keeps hitting one side of the tree. */
    for (size_t done = 1; done <= SEQ_N; done++) {
        size_t i = ascending ? done - 1 : SEQ_N - done;
        assert_true(sm_avl_remove(&map, seq_key(i), NULL));
        if (checkpoint(done))
            assert_true(sm_avl_check(&map));
    }
    assert_int_equal(sm_avl_count(&map), 0);

    for (size_t i = 0; i < SEQ_N; i++) {
        struct sm_avl_entry e = make_entry(seq_key(i), 64);
        assert_int_equal(sm_avl_insert(&map, &e), SM_AVL_OK);
    }
    struct sm_avl_entry extra = make_entry(seq_key(SEQ_N), 64);
    assert_int_equal(sm_avl_insert(&map, &extra), SM_AVL_NO_MEMORY);
    assert_true(sm_avl_check(&map));
    unmap_pool(pool, pool_bytes);
}

static void test_sequential_ascending(void **state)
{
    (void)state;
    run_sequential(true);
}

static void test_sequential_descending(void **state)
{
    (void)state;
    run_sequential(false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_map),
        cmocka_unit_test(test_insert_find),
        cmocka_unit_test(test_find_containing_top_of_address_space),
        cmocka_unit_test(test_remove),
        cmocka_unit_test(test_check_detects_corruption),
        cmocka_unit_test(test_check_detects_bad_height),
        cmocka_unit_test(test_pool_exhaustion_and_recycling),
        cmocka_unit_test(test_random_against_reference),
        cmocka_unit_test(test_sequential_ascending),
        cmocka_unit_test(test_sequential_descending),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

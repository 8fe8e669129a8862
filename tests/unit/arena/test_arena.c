/* Unit tests for the small-object heap (libs/arena): slots of every class, pointer
 * resolution, slot status, statistics, thread -> arena assignment, the lock, fork handlers,
 * and the fatal errors of a bad free.
 *
 * sm_arena_init runs once, in the group setup; the tests then share one heap. Tests that
 * count (statistics) use an (arena, class) pair no other test touches. The tests hold for
 * every hardening configuration: slots may be handed out in random order, freed slots may
 * be held in a quarantine, every other slab may be a guard, and the last SM_CANARY_BYTES
 * bytes of a slot may hold a canary (so only slot_size - SM_CANARY_BYTES bytes are written). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "starmalloc/arena.h"
#include "starmalloc/config.h"
#include "starmalloc/hardening.h"
#include "starmalloc/region.h"
#include "starmalloc/sizeclass.h"

#include "child.h"
#include "vma_flags.h"

/* The start of the slab region: class region 0 (arena 0, class 0). Set by the setup. */
static char *region_base;

/* ---- helpers ---------------------------------------------------------------------------- */

static uint32_t slot_size(unsigned cls)
{
    return sm_sizeclass_geometry(cls)->slot_size;
}

/* Bytes of a slot the user may write. */
static size_t usable_size(unsigned cls)
{
    return slot_size(cls) - SM_CANARY_BYTES;
}

static struct sm_slot_ref locate(const void *p)
{
    struct sm_slot_ref ref;
    assert_int_equal(sm_arena_locate(p, &ref), SM_LOCATE_OK);
    return ref;
}

/* The start of class region (arena, cls), by the documented layout. */
static char *class_region(unsigned arena, unsigned cls)
{
    return region_base + ((size_t)arena * SM_NB_CLASSES + cls) * sm_arena_class_region_bytes();
}

static char *slab_start(const struct sm_class_state *s, uint32_t slab)
{
    return s->slab_memory + (size_t)slab * s->slab_bytes;
}

/* Allocates from (arena, cls) and checks everything the contract says about the slot. */
static char *alloc_checked(unsigned arena, unsigned cls)
{
    int zeroed = -1;
    char *p = sm_arena_alloc(arena, cls, &zeroed);
    assert_non_null(p);
    assert_true(sm_arena_contains(p));
    assert_int_equal((uintptr_t)p % 16, 0);
    assert_true(zeroed == 0 || zeroed == 1);

    struct sm_slot_ref ref = locate(p);
    assert_int_equal(ref.slot_size, slot_size(cls));
    assert_int_equal(ref.owner->class_index, cls);
    assert_ptr_equal(ref.owner->slab_memory, class_region(arena, cls));
    assert_true(ref.slot < ref.owner->info.slots);
    assert_ptr_equal(p, slab_start(ref.owner, ref.slab) + (size_t)ref.slot * ref.slot_size);

    size_t usable = 0;
    assert_int_equal(sm_arena_slot_status(p, &usable), SM_SLOT_IN_USE);
    assert_int_equal(usable, usable_size(cls));
    if (zeroed) {
        for (size_t i = 0; i < usable; i++)
            assert_int_equal(p[i], 0);
    }
    return p;
}

static int compare_pointers(const void *a, const void *b)
{
    char *const *pa = a;
    char *const *pb = b;
    uintptr_t x = (uintptr_t)*pa;
    uintptr_t y = (uintptr_t)*pb;
    return x < y ? -1 : x > y;
}

/* Asserts that what(p) aborts after writing exactly "starmalloc: fatal: <message> at <p>\n"
 * in one write. */
static void assert_fatal(void (*what)(void *), void *p, const char *message)
{
    struct captured_stderr out;
    int status = run_in_child(what, p, &out);
    char expected[256];
    snprintf(expected, sizeof(expected), "starmalloc: fatal: %s at 0x%" PRIxPTR "\n", message,
             (uintptr_t)p);
    assert_child_wrote_once(&out, expected);
    assert_child_aborted(status);
}

static void free_in_child(void *p)
{
    sm_arena_free(p);
}

static void free_cached_in_child(void *p)
{
    sm_arena_free_cached(p);
}

/* ---- setup ------------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    if (!sm_arena_init())
        return -1;
    /* What the shim does: the fork handlers run around every fork(). */
    if (pthread_atfork(sm_arena_fork_prepare, sm_arena_fork_parent, sm_arena_fork_child) != 0)
        return -1;
    /* Class region 0 starts the slab region. */
    int zeroed;
    void *p = sm_arena_alloc(0, 0, &zeroed);
    struct sm_slot_ref ref;
    if (!p || sm_arena_locate(p, &ref) != SM_LOCATE_OK)
        return -1;
    region_base = ref.owner->slab_memory;
    sm_arena_free(p);
    return 0;
}

/* ---- layout ----------------------------------------------------------------------------- */

static void test_layout_of_the_slab_region(void **state)
{
    (void)state;
    size_t region = sm_arena_class_region_bytes();
    assert_true(region > 0);
    assert_int_equal(region & (region - 1), 0); /* a power of two */
    for (unsigned c = 0; c < SM_NB_CLASSES; c++)
        assert_true(region >= 2 * sm_sizeclass_slab_bytes(c)); /* room for several slabs */
    assert_int_equal(sm_arena_slab_region_bytes(), (size_t)SM_ARENAS * SM_NB_CLASSES * region);

    /* sm_arena_contains is exactly the slab region. */
    size_t total = sm_arena_slab_region_bytes();
    assert_true(sm_arena_contains(region_base));
    assert_true(sm_arena_contains(region_base + total / 2));
    assert_true(sm_arena_contains(region_base + total - 1));
    assert_false(sm_arena_contains(region_base - 1));
    assert_false(sm_arena_contains(region_base + total));
    int on_the_stack;
    assert_false(sm_arena_contains(&on_the_stack));
    assert_false(sm_arena_contains(NULL));
}

/* ---- slots of every class --------------------------------------------------------------- */

static void test_every_class_hands_out_distinct_writable_slots(void **state)
{
    (void)state;
    for (unsigned c = 0; c < SM_NB_CLASSES; c++) {
        /* More than two slabs' worth, so that slabs are filled and new ones taken. */
        size_t n = 2 * (size_t)sm_sizeclass_geometry(c)->slots + 1;
        char **p = calloc(n, sizeof(*p));
        assert_non_null(p);
        for (size_t i = 0; i < n; i++) {
            p[i] = alloc_checked(0, c);
            memset(p[i], (int)(i % 251) + 1, usable_size(c));
        }
        /* No two slots overlap: sorted, each ends before the next begins... */
        char **sorted = calloc(n, sizeof(*sorted));
        assert_non_null(sorted);
        memcpy(sorted, p, n * sizeof(*p));
        qsort(sorted, n, sizeof(*sorted), compare_pointers);
        for (size_t i = 0; i + 1 < n; i++)
            assert_true(sorted[i] + slot_size(c) <= sorted[i + 1]);
        /* ...and every slot still holds what was written to it. */
        for (size_t i = 0; i < n; i++) {
            for (size_t b = 0; b < usable_size(c); b++) {
                if (p[i][b] != (char)((int)(i % 251) + 1))
                    fail_msg("class %u: slot %zu byte %zu overwritten", c, i, b);
            }
            size_t usable;
            assert_int_equal(sm_arena_slot_status(p[i], &usable), SM_SLOT_IN_USE);
        }
        for (size_t i = 0; i < n; i++) {
            sm_arena_free(p[i]);
            size_t usable = 12345;
            assert_int_equal(sm_arena_slot_status(p[i], &usable), SM_SLOT_FREE);
            assert_int_equal(usable, 12345); /* only set for a slot in use */
        }
        free(sorted);
        free(p);
    }
}

static void test_zeroed_slots_are_zero(void **state)
{
    (void)state;
    /* Write, free, allocate again many times: whenever alloc says "zeroed", it is. */
    unsigned cls = sm_sizeclass_of(200);
    for (int round = 0; round < 2000; round++) {
        int zeroed;
        char *p = sm_arena_alloc(1 % SM_ARENAS, cls, &zeroed);
        assert_non_null(p);
        if (zeroed) {
            for (size_t i = 0; i < usable_size(cls); i++)
                assert_int_equal(p[i], 0);
        }
        memset(p, 0xff, usable_size(cls));
        sm_arena_free(p);
    }
}

/* ---- pointer resolution ----------------------------------------------------------------- */

static void test_locate_resolves_slot_starts_only(void **state)
{
    (void)state;
    for (unsigned c = 0; c < SM_NB_CLASSES; c++) {
        const struct sm_sizeclass_info *info = sm_sizeclass_geometry(c);
        char *p = alloc_checked(0, c);
        struct sm_slot_ref ref = locate(p);
        struct sm_slot_ref other;

        /* Interior bytes are not slot starts. */
        if (info->slot_size > 16)
            assert_int_equal(sm_arena_locate(p + 16, &other), SM_LOCATE_NOT_SLOT_START);
        else
            assert_int_equal(sm_arena_locate(p + 16, &other), SM_LOCATE_OK); /* the next slot */
        assert_int_equal(sm_arena_locate(p + 1, &other), SM_LOCATE_NOT_SLOT_START);
        assert_int_equal(sm_arena_locate(p + info->slot_size - 1, &other),
                         SM_LOCATE_NOT_SLOT_START);
        size_t usable;
        assert_int_equal(sm_arena_slot_status(p + 1, &usable), SM_SLOT_INVALID);

        /* Every slot of the slab resolves to itself; the tail past the last slot does not. */
        char *slab = slab_start(ref.owner, ref.slab);
        for (uint32_t k = 0; k < info->slots; k++) {
            assert_int_equal(sm_arena_locate(slab + (size_t)k * info->slot_size, &other),
                             SM_LOCATE_OK);
            assert_int_equal(other.slab, ref.slab);
            assert_int_equal(other.slot, k);
            assert_ptr_equal(other.owner, ref.owner);
            assert_int_equal(other.slot_size, info->slot_size);
        }
        char *tail = slab + (size_t)info->slots * info->slot_size;
        if (tail < slab + sm_sizeclass_slab_bytes(c))
            assert_int_equal(sm_arena_locate(tail, &other), SM_LOCATE_NOT_SLOT_START);
        sm_arena_free(p);
    }
}

static void test_locate_knows_every_class_region(void **state)
{
    (void)state;
    /* The first slot of slab 0 and of the last whole slab of every (arena, class) region. */
    for (unsigned a = 0; a < SM_ARENAS; a++) {
        for (unsigned c = 0; c < SM_NB_CLASSES; c++) {
            size_t slab_bytes = sm_sizeclass_slab_bytes(c);
            size_t last = sm_arena_class_region_bytes() / slab_bytes - 1;
            char *starts[] = {class_region(a, c), class_region(a, c) + last * slab_bytes};
            for (int i = 0; i < 2; i++) {
                struct sm_slot_ref ref = locate(starts[i]);
                assert_ptr_equal(ref.owner->slab_memory, class_region(a, c));
                assert_int_equal(ref.owner->class_index, c);
                assert_int_equal(ref.slab, i ? last : 0);
                assert_int_equal(ref.slot, 0);
            }
        }
    }
}

/* ---- slot status ------------------------------------------------------------------------ */

static void test_slot_status_follows_the_slot(void **state)
{
    (void)state;
    unsigned cls = sm_sizeclass_of(64);
    char *p = alloc_checked(0, cls);
    size_t usable;
    assert_int_equal(sm_arena_slot_status(p, &usable), SM_SLOT_IN_USE);
    assert_int_equal(usable, usable_size(cls));
    sm_arena_free(p);
    assert_int_equal(sm_arena_slot_status(p, &usable), SM_SLOT_FREE);

    /* A slab never used: nothing there is a slot. */
    struct sm_class_state *s = locate(p).owner;
    char *unused = slab_start(s, s->max_slabs - 1);
    assert_true(s->fresh_next < s->max_slabs - 1);
    assert_int_equal(sm_arena_slot_status(unused, &usable), SM_SLOT_INVALID);
}

static void test_an_overflow_into_the_canary_shows_in_the_status(void **state)
{
    (void)state;
    if (!SM_CANARIES)
        skip();
    unsigned cls = sm_sizeclass_of(100);
    char *p = alloc_checked(0, cls);
    size_t usable;
    p[usable_size(cls)] ^= 0x40; /* one byte past what the user owns */
    assert_int_equal(sm_arena_slot_status(p, &usable), SM_SLOT_CANARY_CORRUPTED);
    p[usable_size(cls)] ^= 0x40;
    assert_int_equal(sm_arena_slot_status(p, &usable), SM_SLOT_IN_USE);
    sm_arena_free(p);
}

static void test_guard_slabs_hold_no_slots_and_fault(void **state)
{
    (void)state;
    unsigned cls = sm_sizeclass_of(4096);
    size_t n = 6 * (size_t)sm_sizeclass_geometry(cls)->slots;
    char **p = calloc(n, sizeof(*p));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = alloc_checked(2 % SM_ARENAS, cls);

    struct sm_class_state *s = locate(p[0]).owner;
    unsigned guards = 0;
    for (uint32_t slab = 0; slab < s->fresh_next; slab++) {
        if (s->slabs[slab].state != SM_SLAB_GUARD)
            continue;
        guards++;
        char *g = slab_start(s, slab);
        size_t usable;
        assert_int_equal(sm_arena_slot_status(g, &usable), SM_SLOT_INVALID);
        /* Freeing a guard slab's first "slot" is an invalid free, on both free paths. */
        assert_fatal(free_in_child, g, "invalid free");
        assert_fatal(free_cached_in_child, g, "invalid free");
        for (size_t i = 0; i < n; i++)
            assert_true(p[i] < g || p[i] >= g + s->slab_bytes);
        /* A guard is inaccessible: touching it kills the process. */
        pid_t pid = fork();
        if (pid == 0) {
            child_setup();
            *(volatile char *)g = 1;
            _exit(0);
        }
        int status = wait_child(pid);
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), SIGSEGV);
    }
    /* One guard after every SM_GUARD_INTERVAL slabs (none when 0). */
    if (SM_GUARD_INTERVAL)
        assert_int_equal(guards, s->fresh_next / (SM_GUARD_INTERVAL + 1));
    else
        assert_int_equal(guards, 0);
    /* Guard markers keep the slabs one mapping; PROT_NONE guards split it at each guard. */
    int mappings = mappings_overlapping(slab_start(s, 0), s->fresh_next * s->slab_bytes);
    if (sm_region_guard_markers() || guards == 0)
        assert_int_equal(mappings, 1);
    else
        assert_true(mappings >= (int)guards);
    for (size_t i = 0; i < n; i++)
        sm_arena_free(p[i]);
    free(p);
}

/* ---- statistics and reuse --------------------------------------------------------------- */

/* How many of the first `used` slabs of a class region can hold slots (are not guards). */
static uint32_t slabs_holding_slots(uint32_t used)
{
    return SM_GUARD_INTERVAL ? used - used / (SM_GUARD_INTERVAL + 1) : used;
}

/* Runs first, on a pair nothing else uses: arena SM_ARENAS - 1, the class of 1 KiB. */
static void test_statistics_over_fill_and_free(void **state)
{
    (void)state;
    const unsigned arena = SM_ARENAS - 1;
    const unsigned cls = sm_sizeclass_of(1024);
    const uint32_t slots = sm_sizeclass_geometry(cls)->slots;
    const size_t n = 100 * (size_t)slots + 3; /* 100 full slabs and a partial one */
    char **p = calloc(n, sizeof(*p));
    assert_non_null(p);

    struct sm_class_stats st;
    sm_arena_class_stats(arena, cls, &st);
    assert_int_equal(st.slots_in_use, 0); /* untouched so far */
    assert_int_equal(st.slabs_used, 0);

    for (size_t i = 0; i < n; i++)
        p[i] = alloc_checked(arena, cls);
    sm_arena_class_stats(arena, cls, &st);
    assert_int_equal(st.slots_in_use, n);
    assert_int_equal(st.slots_quarantined, 0);
    assert_int_equal(st.slabs_full, 100);
    assert_int_equal(st.slabs_partial, 1);
    assert_int_equal(st.slabs_empty + st.slabs_quarantined + st.slabs_decommitted, 0);
    assert_int_equal(slabs_holding_slots(st.slabs_used), 101);

    for (size_t i = 0; i < n; i++)
        sm_arena_free(p[i]);
    sm_arena_class_stats(arena, cls, &st);
    /* Only the slot quarantine still holds freed slots back. */
    assert_int_equal(st.slots_in_use, st.slots_quarantined);
    if (SM_SLOT_QUARANTINE)
        assert_true(st.slots_quarantined <= 2 * (uint64_t)locate(p[0]).owner->quarantine_capacity);
    else
        assert_int_equal(st.slots_quarantined, 0);
    /* Every slab handed out is on some list; emptied slabs are retained, up to a bound. */
    assert_int_equal(st.slabs_partial + st.slabs_full + st.slabs_empty + st.slabs_quarantined +
                         st.slabs_decommitted,
                     101);
    uint32_t kept = locate(p[0]).owner->empty_slabs_kept;
    if (SM_SLAB_QUARANTINE) {
        /* Up to twice the kept ones between two batches; the others are quarantined. */
        assert_in_range(st.slabs_empty, 1, 2 * kept);
        assert_in_range(st.slabs_quarantined, 1, SM_SLAB_QUARANTINE);
    } else if (!SM_RETAIN_EMPTY_SLABS) {
        /* Given back in batches: down to the kept ones, never below. */
        assert_in_range(st.slabs_empty, kept, 2 * kept);
        assert_true(st.slabs_decommitted > 0);
        assert_int_equal(st.slabs_quarantined, 0);
    } else {
        /* Retained: every emptied slab stays committed (but the partial list's head, which
         * may stay put), far beyond the kept ones; none went back to the kernel. */
        assert_true(100 > 2 * kept);
        assert_in_range(st.slabs_empty, 100, 101);
        assert_int_equal(st.slabs_quarantined + st.slabs_decommitted, 0);
        assert_true(sm_arena_retained_bytes() >=
                    (st.slabs_empty - kept) * sm_sizeclass_slab_bytes(cls));
    }

    /* Allocating as much again takes every slot that is not held back (by the slot
     * quarantine, or in a quarantined slab) before it takes a fresh slab. */
    uint64_t reusable = (uint64_t)(101 - st.slabs_quarantined) * slots - st.slots_quarantined;
    uint64_t from_fresh = n > reusable ? n - reusable : 0;
    uint32_t expected_slabs = 101 + (uint32_t)((from_fresh + slots - 1) / slots);
    for (size_t i = 0; i < n; i++)
        p[i] = alloc_checked(arena, cls);
    sm_arena_class_stats(arena, cls, &st);
    assert_int_equal(st.slots_in_use - st.slots_quarantined, n);
    assert_int_equal(slabs_holding_slots(st.slabs_used), expected_slabs);
    for (size_t i = 0; i < n; i++)
        sm_arena_free(p[i]);
    free(p);
}

static void test_trim_returns_empty_slabs(void **state)
{
    (void)state;
    const unsigned arena = SM_ARENAS - 1;
    const unsigned cls = sm_sizeclass_of(1024);
    struct sm_class_stats before, after;
    sm_arena_class_stats(arena, cls, &before);
    assert_true(before.slabs_empty > 0); /* left by the previous test */
    size_t bytes = sm_arena_trim();
    assert_true(bytes >= before.slabs_empty * sm_sizeclass_slab_bytes(cls));
    sm_arena_class_stats(arena, cls, &after);
    assert_int_equal(after.slabs_empty, 0);
    /* The empty slabs, and the head of the partial list if it was empty too. */
    assert_in_range(after.slabs_decommitted, before.slabs_decommitted + before.slabs_empty,
                    before.slabs_decommitted + before.slabs_empty + 1);
    assert_int_equal(after.slots_in_use, before.slots_in_use);
    /* Trimmed slabs are still usable. */
    char *p = alloc_checked(arena, cls);
    memset(p, 1, usable_size(cls));
    sm_arena_free(p);
}

/* Fills `count` slabs of (arena, cls) and frees them all: they become empty slabs. */
static void fill_and_empty_slabs(unsigned arena, unsigned cls, size_t count)
{
    size_t n = count * sm_sizeclass_geometry(cls)->slots;
    char **p = calloc(n, sizeof(*p));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = alloc_checked(arena, cls);
    for (size_t i = 0; i < n; i++)
        sm_arena_free(p[i]);
    free(p);
}

/* Without slab quarantine (and with a decay period), emptied slabs are retained, and go back
 * to the kernel after two decay steps, for new memory while more is retained than the
 * allowance (slabs in use + 8 MiB), and at trim. Otherwise nothing is retained. */
static void test_retained_slabs_go_back(void **state)
{
    (void)state;
    const unsigned arena = SM_ARENAS - 1;
    const unsigned cls = SM_NB_CLASSES - 1; /* the largest class: few slots per slab */
    const size_t slab_bytes = sm_sizeclass_slab_bytes(cls);
    const size_t slabs = ((size_t)24 << 20) / slab_bytes; /* 24 MiB: beyond the allowance */
    char *probe = alloc_checked(arena, cls);
    const uint32_t kept = locate(probe).owner->empty_slabs_kept;
    sm_arena_free(probe);
    struct sm_class_stats st;
    fill_and_empty_slabs(arena, cls, slabs);
    sm_arena_class_stats(arena, cls, &st);
    if (!SM_RETAIN_EMPTY_SLABS) {
        assert_int_equal(sm_arena_retained_bytes(), 0);
        assert_int_equal(sm_arena_decay_retained(), 0);
        assert_int_equal(sm_arena_give_back_retained(SIZE_MAX), 0);
        assert_true(st.slabs_quarantined + st.slabs_decommitted > 0); /* not retained */
        return;
    }
    assert_in_range(st.slabs_empty, slabs - 1, slabs);
    size_t retained = (st.slabs_empty - kept) * slab_bytes;
    assert_true(sm_arena_retained_bytes() >= retained);

    /* Decay: the first step notes what is retained, the second gives it back. */
    sm_arena_decay_retained();
    assert_true(sm_arena_decay_retained() >= retained);
    sm_arena_class_stats(arena, cls, &st);
    assert_int_equal(st.slabs_empty, kept);
    assert_true(st.slabs_decommitted >= slabs - 1 - kept);

    /* New memory while more is retained than allowed: as many bytes go back. */
    fill_and_empty_slabs(arena, cls, slabs);
    size_t before = sm_arena_retained_bytes();
    sm_arena_note_new_memory((size_t)1 << 20);
    size_t after = sm_arena_retained_bytes();
    assert_true(after < before);
    assert_in_range(before - after, (size_t)1 << 20, ((size_t)1 << 20) + slab_bytes);

    /* Reusing retained slabs gives nothing back and takes them off the count. */
    char *p = alloc_checked(arena, cls);
    assert_true(sm_arena_retained_bytes() <= after);
    sm_arena_free(p);

    /* Trim gives back every empty slab. */
    sm_arena_trim();
    assert_int_equal(sm_arena_retained_bytes(), 0);
    sm_arena_class_stats(arena, cls, &st);
    assert_int_equal(st.slabs_empty, 0);
}

/* Resident pages (mincore) of the page-aligned range [p, p + bytes), at most 64 pages. */
static size_t resident_pages(const char *p, size_t bytes)
{
    unsigned char vec[64];
    size_t pages = bytes / SM_PAGE_SIZE;
    assert_true(pages <= sizeof(vec));
    assert_int_equal(mincore((void *)p, bytes, vec), 0);
    size_t n = 0;
    for (size_t i = 0; i < pages; i++)
        n += vec[i] & 1u;
    return n;
}

/* Whether the kernel gives transparent huge pages to every anonymous mapping: then one fault
 * may make a whole slab resident, and laziness cannot be seen page by page. */
static bool huge_pages_always(void)
{
    char mode[64] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f)
        return false;
    bool ok = fgets(mode, sizeof(mode), f) != NULL;
    fclose(f);
    return ok && strstr(mode, "[always]") != NULL;
}

/* A class's first fresh slabs stay lazy: a newly taken slab has no resident page beyond the
 * two its one handed-out slot may touch. Once the class has taken
 * SM_POPULATE_FRESH_AFTER_BYTES of its region, its fresh slabs are populated as they are
 * committed: every page of a newly taken slab is resident before anything is written to it
 * (slots of up to a page: in every preset). */
static void test_fresh_slabs_are_populated_once_the_class_is_busy(void **state)
{
    (void)state;
    const unsigned arena = 0;
    /* The class of slots of up to a page with the most pages per slab (1280 B: 5 pages). */
    unsigned cls = 0;
    for (unsigned c = 1; c < SM_NB_CLASSES; c++) {
        if (slot_size(c) <= SM_PAGE_SIZE &&
            sm_sizeclass_slab_bytes(c) > sm_sizeclass_slab_bytes(cls))
            cls = c;
    }
    const struct sm_sizeclass_info *info = sm_sizeclass_geometry(cls);
    const size_t slab_bytes = sm_sizeclass_slab_bytes(cls);
    const size_t slab_pages = slab_bytes / SM_PAGE_SIZE;
    assert_true(info->slot_size <= SM_PAGE_SIZE);
    /* Runs of commits are at most SM_SLAB_COMMIT_BYTES and a slab (the guard after them)
     * long: a slab at this offset was committed by a run that began past the threshold. */
    const size_t busy_offset = SM_POPULATE_FRESH_AFTER_BYTES + SM_SLAB_COMMIT_BYTES + slab_bytes;
    const size_t cap = (busy_offset / slab_bytes + 2) * info->slots;
    /* One handed-out slot touches at most two pages: laziness shows in slabs of three or more
     * (every configuration but explicit class lists without such a class). */
    const bool check_lazy = slab_pages > 2 && !huge_pages_always();

    int zeroed;
    char **p = calloc(cap, sizeof(*p));
    assert_non_null(p);
    p[0] = sm_arena_alloc(arena, cls, &zeroed);
    assert_non_null(p[0]);
    struct sm_class_state *s = locate(p[0]).owner;
    /* Slabs from here on are taken fresh by this test; earlier ones may be reused. */
    int64_t newest = (int64_t)__atomic_load_n(&s->fresh_next, __ATOMIC_ACQUIRE) - 1;
    size_t n = 1, lazy_seen = 0, busy_seen = 0;
    while (busy_seen == 0 && n < cap) {
        p[n] = sm_arena_alloc(arena, cls, &zeroed);
        assert_non_null(p[n]);
        struct sm_slot_ref ref = locate(p[n]);
        n++;
        if ((int64_t)ref.slab <= newest)
            continue;
        newest = ref.slab; /* a fresh slab, with one slot handed out */
        size_t offset = (size_t)ref.slab * slab_bytes;
        size_t resident = resident_pages(slab_start(s, ref.slab), slab_bytes);
        if (offset < SM_POPULATE_FRESH_AFTER_BYTES && check_lazy) {
            assert_true(resident <= 2);
            lazy_seen++;
        } else if (offset >= busy_offset) {
            assert_int_equal(resident, slab_pages);
            busy_seen++;
        }
    }
    assert_true(busy_seen == 1);
    assert_true(lazy_seen > 0 || !check_lazy);
    for (size_t i = 0; i < n; i++)
        sm_arena_free(p[i]);
    free(p);
}

/* ---- threads ---------------------------------------------------------------------------- */

static void *report_arena(void *arg)
{
    unsigned *out = arg;
    out[0] = sm_arena_of_thread();
    out[1] = sm_arena_of_thread();
    return NULL;
}

static void test_threads_get_arenas_round_robin(void **state)
{
    (void)state;
    unsigned mine = sm_arena_of_thread();
    assert_true(mine < SM_ARENAS);
    assert_int_equal(sm_arena_of_thread(), mine); /* fixed for the thread's life */

    /* Threads that ask one after another take consecutive arenas. */
    enum { THREADS = 8 };
    unsigned got[THREADS][2];
    for (int i = 0; i < THREADS; i++) {
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, report_arena, got[i]), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_true(got[i][0] < SM_ARENAS);
        assert_int_equal(got[i][1], got[i][0]);
        if (i > 0)
            assert_int_equal(got[i][0], (got[i - 1][0] + 1) % SM_ARENAS);
    }
    /* So any SM_ARENAS consecutive threads (up to 4) have distinct arenas. */
    unsigned distinct = SM_ARENAS < 4 ? SM_ARENAS : 4;
    for (unsigned i = 0; i < distinct; i++) {
        for (unsigned j = i + 1; j < distinct; j++)
            assert_int_not_equal(got[i][0], got[j][0]);
    }
}

struct counter {
    struct sm_lock lock;
    long value;
};

enum { LOCK_THREADS = 4, INCREMENTS = 100000 };

static void *increment(void *arg)
{
    struct counter *c = arg;
    for (int i = 0; i < INCREMENTS; i++) {
        sm_lock_acquire(&c->lock);
        c->value++; /* a plain read-modify-write: only the lock makes it safe */
        sm_lock_release(&c->lock);
    }
    return NULL;
}

static void test_lock_gives_mutual_exclusion(void **state)
{
    (void)state;
    static struct counter c; /* zero: an unlocked lock */
    pthread_t t[LOCK_THREADS];
    for (int i = 0; i < LOCK_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, increment, &c), 0);
    for (int i = 0; i < LOCK_THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(c.value, (long)LOCK_THREADS * INCREMENTS);
    assert_false(sm_lock_is_held(&c.lock)); /* released */
}

/* Thread bodies use no cmocka assertion (they would jump across threads): they return
 * what they did, and the main thread checks it. */
static void *allocate_one(void *arg)
{
    unsigned cls = *(unsigned *)arg;
    int zeroed;
    return sm_arena_alloc(sm_arena_of_thread(), cls, &zeroed);
}

static void *free_one(void *arg)
{
    sm_arena_free(arg);
    return NULL;
}

static void test_cross_thread_free(void **state)
{
    (void)state;
    unsigned cls = sm_sizeclass_of(48);
    pthread_t a, b;
    void *p;
    assert_int_equal(pthread_create(&a, NULL, allocate_one, &cls), 0);
    assert_int_equal(pthread_join(a, &p), 0);
    assert_non_null(p);
    size_t usable;
    assert_int_equal(sm_arena_slot_status(p, &usable), SM_SLOT_IN_USE);
    assert_int_equal(pthread_create(&b, NULL, free_one, p), 0);
    assert_int_equal(pthread_join(b, NULL), 0);
    assert_int_equal(sm_arena_slot_status(p, &usable), SM_SLOT_FREE);
}

/* Thread caches and other arenas' slots: thread A allocates REMOTE_SLOTS slots through its
 * cache and exits; thread B (the next arena) frees them through its own cache and reports
 * the statistics of A's (arena, class) before it exits. */
enum { REMOTE_SLOTS = 40 };
struct remote_run {
    unsigned cls;
    unsigned arena_a, arena_b;
    void *slots[REMOTE_SLOTS];
    struct sm_class_stats after_frees;
};

static void *allocate_cached(void *arg)
{
    struct remote_run *run = arg;
    run->arena_a = sm_arena_of_thread();
    for (unsigned i = 0; i < REMOTE_SLOTS; i++) {
        int zeroed;
        run->slots[i] = sm_arena_alloc_cached(run->cls, &zeroed);
    }
    return NULL;
}

static void *free_cached_elsewhere(void *arg)
{
    struct remote_run *run = arg;
    run->arena_b = sm_arena_of_thread();
    for (unsigned i = 0; i < REMOTE_SLOTS; i++)
        sm_arena_free_cached(run->slots[i]);
    sm_arena_class_stats(run->arena_a, run->cls, &run->after_frees);
    return NULL;
}

static void test_cached_frees_of_another_arena_go_back(void **state)
{
    (void)state;
    struct remote_run run = {.cls = sm_sizeclass_of(48)};
    struct sm_class_stats before, after;
    pthread_t a, b;
    assert_int_equal(pthread_create(&a, NULL, allocate_cached, &run), 0);
    assert_int_equal(pthread_join(a, NULL), 0);
    for (unsigned i = 0; i < REMOTE_SLOTS; i++)
        assert_non_null(run.slots[i]);
    sm_arena_class_stats(run.arena_a, run.cls, &before);
    assert_true(before.slots_in_use >= REMOTE_SLOTS);
    assert_int_equal(pthread_create(&b, NULL, free_cached_elsewhere, &run), 0);
    assert_int_equal(pthread_join(b, NULL), 0);
    if (SM_ARENAS > 1) {
        assert_int_not_equal(run.arena_a, run.arena_b);
        /* B gathered A's slots and gave them back once it had 32: none went to B's ready
         * stack (with slot quarantine they went to A's quarantine, and count as in use). */
        if (!SM_SLOT_QUARANTINE)
            assert_true(run.after_frees.slots_in_use <= before.slots_in_use - 32);
        else
            assert_true(run.after_frees.slots_quarantined >= 32);
    }
    /* Both threads exited: nothing of A's class is left in any cache. */
    sm_arena_class_stats(run.arena_a, run.cls, &after);
    assert_int_equal(after.slots_in_use, after.slots_quarantined);
}

/* ---- fork ------------------------------------------------------------------------------- */

static atomic_bool stop_workers;

/* Allocates and frees in every arena and a few classes, as fast as it can. */
static void *churn(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    void *held[16] = {NULL};
    while (!atomic_load(&stop_workers)) {
        seed = seed * 1103515245u + 12345u;
        unsigned i = (seed >> 8) % 16;
        if (held[i]) {
            sm_arena_free(held[i]);
            held[i] = NULL;
        } else {
            int zeroed;
            held[i] =
                sm_arena_alloc((seed >> 16) % SM_ARENAS,
                               (seed >> 20) % (SM_NB_CLASSES < 8 ? SM_NB_CLASSES : 8), &zeroed);
            if (!held[i])
                abort();
        }
    }
    for (unsigned i = 0; i < 16; i++) {
        if (held[i])
            sm_arena_free(held[i]);
    }
    return NULL;
}

static void test_fork_while_other_threads_allocate(void **state)
{
    (void)state;
    enum { WORKERS = 3, FORKS = 50 };
    _Static_assert((SM_ARENAS + 7) / 8 <= FORKS, "the forks' arena sets must cover every arena");
    pthread_t workers[WORKERS];
    atomic_store(&stop_workers, false);
    for (uintptr_t i = 0; i < WORKERS; i++)
        assert_int_equal(pthread_create(&workers[i], NULL, churn, (void *)(i + 1)), 0);

    int failed_fork = -1, failed_status = 0;
    for (int f = 0; f < FORKS && failed_fork < 0; f++) {
        pid_t pid = fork();
        if (pid == 0) {
            /* One thread now, whatever locks the workers held: allocating must work. Each
             * child tries at most eight arenas, a different set each fork (with many arenas,
             * committing a slab in every one is slow); the forks together cover them all. */
            child_setup();
            const unsigned stride = (SM_ARENAS + 7) / 8;
            for (unsigned a = (unsigned)f % stride; a < SM_ARENAS; a += stride) {
                for (unsigned c = 0; c < SM_NB_CLASSES && c < 8; c++) {
                    int zeroed;
                    char *p = sm_arena_alloc(a, c, &zeroed);
                    if (!p)
                        _exit(2);
                    memset(p, 0x33, usable_size(c));
                    sm_arena_free(p);
                }
            }
            _exit(0);
        }
        int status = wait_child(pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            failed_fork = f;
            failed_status = status;
        }
    }
    atomic_store(&stop_workers, true);
    for (int i = 0; i < WORKERS; i++)
        assert_int_equal(pthread_join(workers[i], NULL), 0);
    if (failed_fork >= 0)
        fail_msg("fork %d: the child did not exit cleanly (wait status 0x%x; SIGALRM = deadlock)",
                 failed_fork, (unsigned)failed_status);
}

/* ---- bad frees -------------------------------------------------------------------------- */

static void test_double_free_aborts(void **state)
{
    (void)state;
    unsigned cls = sm_sizeclass_of(32);
    char *p = alloc_checked(0, cls);
    sm_arena_free(p);
    assert_fatal(free_in_child, p, "double free");
    assert_fatal(free_cached_in_child, p, "double free");
}

static void test_double_free_of_a_reused_slab_aborts(void **state)
{
    (void)state;
    /* Freed long ago: the slot quarantine has let go of it, it is plainly free. */
    unsigned cls = sm_sizeclass_of(32);
    char *p = alloc_checked(0, cls);
    sm_arena_free(p);
    for (int i = 0; i < 5000; i++) {
        char *q = alloc_checked(0, cls); /* the same (arena, class): the same quarantine */
        sm_arena_free(q);
    }
    assert_fatal(free_in_child, p, "double free");
}

static void test_invalid_frees_abort(void **state)
{
    (void)state;
    unsigned cls = sm_sizeclass_of(256);
    char *p = alloc_checked(0, cls);
    /* Inside a slot. */
    assert_fatal(free_in_child, p + 16, "invalid free");
    assert_fatal(free_in_child, p + 1, "invalid free");
    /* A slot start in a slab that never held slots. */
    struct sm_class_state *s = locate(p).owner;
    assert_fatal(free_in_child, slab_start(s, s->max_slabs - 1), "invalid free");
    assert_fatal(free_cached_in_child, slab_start(s, s->max_slabs - 1), "invalid free");
    assert_fatal(free_cached_in_child, p + 16, "invalid free");
    /* The pointer itself is still fine afterwards: the children's aborts changed nothing. */
    size_t usable;
    assert_int_equal(sm_arena_slot_status(p, &usable), SM_SLOT_IN_USE);
    sm_arena_free(p);
}

/* The first class whose slots are spaced wider than its allocated bytes (one byte per
 * 2^allocated_shift bytes) and whose slabs end with a tail no slot uses, at a multiple of
 * that spacing; SM_NB_CLASSES when the class list has none. */
static unsigned class_with_bytes_between_slots(void)
{
    for (unsigned c = 0; c < SM_NB_CLASSES; c++) {
        const struct sm_sizeclass_info *info = sm_sizeclass_geometry(c);
        char *p = alloc_checked(0, c);
        size_t spacing = (size_t)1 << locate(p).owner->allocated_shift;
        sm_arena_free(p);
        size_t used = (size_t)info->slots * info->slot_size;
        if (spacing < info->slot_size && used < sm_sizeclass_slab_bytes(c) && used % spacing == 0)
            return c;
    }
    return SM_NB_CLASSES;
}

/* Pointers whose allocated byte exists but belongs to no slot (free's fast lookup finds one
 * byte per 2^allocated_shift bytes; only slot starts' bytes are ever 1): inside a slot at a
 * multiple of the spacing, and in the slab's unused tail. Both free paths abort. */
static void test_invalid_frees_between_slot_bytes_abort(void **state)
{
    (void)state;
    unsigned cls = class_with_bytes_between_slots();
    assert_int_not_equal(cls, SM_NB_CLASSES); /* the default class list has such classes */
    char *p = alloc_checked(0, cls);
    struct sm_class_state *s = locate(p).owner;
    size_t spacing = (size_t)1 << s->allocated_shift;
    char *tail = slab_start(s, locate(p).slab) + (size_t)s->info.slots * s->info.slot_size;
    assert_fatal(free_cached_in_child, p + spacing, "invalid free");
    assert_fatal(free_in_child, p + spacing, "invalid free");
    assert_fatal(free_cached_in_child, tail, "invalid free");
    assert_fatal(free_in_child, tail, "invalid free");
    size_t usable;
    assert_int_equal(sm_arena_slot_status(p, &usable), SM_SLOT_IN_USE);
    sm_arena_free_cached(p);
    assert_fatal(free_cached_in_child, p, "double free");
}

static void test_canary_corruption_aborts_on_free(void **state)
{
    (void)state;
    if (!SM_CANARIES)
        skip();
    unsigned cls = sm_sizeclass_of(100);
    char *p = alloc_checked(0, cls);
    char saved = p[usable_size(cls)];
    memset(p, 'A', usable_size(cls) + 1); /* an off-by-one overflow */
    assert_fatal(free_in_child, p, "canary corrupted");
    p[usable_size(cls)] = saved; /* repaired, the slot can be freed */
    sm_arena_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_of_the_slab_region),
        cmocka_unit_test(test_statistics_over_fill_and_free),
        cmocka_unit_test(test_trim_returns_empty_slabs),
        cmocka_unit_test(test_retained_slabs_go_back),
        cmocka_unit_test(test_fresh_slabs_are_populated_once_the_class_is_busy),
        cmocka_unit_test(test_every_class_hands_out_distinct_writable_slots),
        cmocka_unit_test(test_zeroed_slots_are_zero),
        cmocka_unit_test(test_locate_resolves_slot_starts_only),
        cmocka_unit_test(test_locate_knows_every_class_region),
        cmocka_unit_test(test_slot_status_follows_the_slot),
        cmocka_unit_test(test_an_overflow_into_the_canary_shows_in_the_status),
        cmocka_unit_test(test_guard_slabs_hold_no_slots_and_fault),
        cmocka_unit_test(test_threads_get_arenas_round_robin),
        cmocka_unit_test(test_lock_gives_mutual_exclusion),
        cmocka_unit_test(test_cross_thread_free),
        cmocka_unit_test(test_cached_frees_of_another_arena_go_back),
        cmocka_unit_test(test_fork_while_other_threads_allocate),
        cmocka_unit_test(test_double_free_aborts),
        cmocka_unit_test(test_double_free_of_a_reused_slab_aborts),
        cmocka_unit_test(test_invalid_frees_abort),
        cmocka_unit_test(test_invalid_frees_between_slot_bytes_abort),
        cmocka_unit_test(test_canary_corruption_aborts_on_free),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}

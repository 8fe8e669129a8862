/* ABI conformance of the C allocation functions (C17/C23, POSIX, glibc semantics).
 *
 * One source, two programs:
 *   test_abi_prefixed (-DSM_ABI_PREFIXED): calls starmalloc_malloc & co., links starmalloc_core;
 *   test_abi_override: calls plain malloc & co., links libstarmalloc.so, which overrides them
 *                      (so cmocka's own allocations run through StarMalloc as well). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <starmalloc.h>

#include "starmalloc/config.h"

#include "abi_select.h"
#include "opaque.h"
#include "residency.h"
#include "vma_flags.h"
#include "child.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define SMALL_MAX ((size_t)128 * KiB) /* the largest small class of the default table */

/* ---- helpers ---------------------------------------------------------------------------- */

static bool is_aligned(const void *p, size_t align)
{
    return ((uintptr_t)opaque((void *)(uintptr_t)p) & (align - 1)) == 0;
}

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

static unsigned char pattern_byte(unsigned seed, size_t i)
{
    return (unsigned char)((i * 131u + seed * 7u + (i >> 9)) ^ (seed >> 3));
}

static void fill(void *p, size_t n, unsigned seed)
{
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        b[i] = pattern_byte(seed, i);
}

/* Index of the first byte that differs from the pattern, or n. */
static size_t check_fill(const void *p, size_t n, unsigned seed)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != pattern_byte(seed, i))
            return i;
    return n;
}

static bool all_zero(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != 0)
            return false;
    return true;
}

/* Allocates size bytes with malloc and checks the basic contract; returns the block. */
static void *checked_malloc(size_t size)
{
    void *p = ABI(malloc)(opaque_size(size));
    assert_non_null(p);
    assert_true(is_aligned(p, 16));
    assert_true(ABI(malloc_usable_size)(p) >= size);
    return p;
}

/* Sizes around powers of two from 4 KiB to 4 MiB. */
static size_t large_sweep(size_t out[], size_t cap)
{
    size_t n = 0;
    for (size_t s = 4 * KiB; s <= 4 * MiB; s <<= 1) {
        size_t around[] = {s - 1, s, s + 1};
        for (size_t i = 0; i < 3 && n < cap; i++)
            out[n++] = around[i];
    }
    return n;
}

/* ---- malloc ----------------------------------------------------------------------------- */

static void malloc_every_small_size(void **state)
{
    (void)state;
    enum { N = 4097 };
    /* The program's calloc: StarMalloc's when overridden. */
    void **blocks = calloc(N, sizeof(void *));
    assert_non_null(blocks);
    for (size_t size = 0; size < N; size++) {
        blocks[size] = checked_malloc(size);
        memset(blocks[size], 0xa5, size);
        fill(blocks[size], size, (unsigned)size);
    }
    /* All blocks live at once: no overlap, contents survive the other allocations. */
    for (size_t size = 0; size < N; size++) {
        assert_int_equal(check_fill(blocks[size], size, (unsigned)size), size);
        ABI(free)(blocks[size]);
    }
    free(blocks);
}

static void malloc_large_sizes(void **state)
{
    (void)state;
    size_t sizes[64];
    size_t n = large_sweep(sizes, 64);
    void *blocks[64];
    for (size_t i = 0; i < n; i++) {
        blocks[i] = checked_malloc(sizes[i]);
        fill(blocks[i], sizes[i], (unsigned)i);
    }
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(check_fill(blocks[i], sizes[i], (unsigned)i), sizes[i]);
        ABI(free)(blocks[i]);
    }
}

/* With STARMALLOC_LARGE_HUGE_PAGES, a large object of at least 2 MiB starts on a 2 MiB
 * boundary and its mapping asks for transparent huge pages, whether it is new, reused after
 * a free, or moved by realloc; a smaller one never asks. Without the option none asks. */
static void expect_huge_advice(const char *what, void *p, size_t size)
{
    bool wanted = SM_LARGE_HUGE_PAGES && size >= 2 * MiB;
    if (wanted && !is_aligned(p, 2 * MiB))
        fail_msg("%s: %zu bytes at %p: not on a 2 MiB boundary", what, size, p);
    bool advised = vma_has_flag(p, "hg");
    if (advised != (wanted && thp_usable()))
        fail_msg("%s: %zu bytes at %p: huge page advice %s", what, size, p,
                 advised ? "given" : "missing");
}

static void large_objects_ask_for_huge_pages(void **state)
{
    (void)state;
    const size_t sizes[] = {1 * MiB, 2 * MiB, 5 * MiB + 123, 9 * MiB};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char *p = checked_malloc(sizes[i]);
        expect_huge_advice("new", p, sizes[i]);
        fill(p, sizes[i], 1);
        ABI(free)(p);
        p = checked_malloc(sizes[i]); /* may reuse the freed mapping */
        expect_huge_advice("after a free", p, sizes[i]);
        ABI(free)(p);
    }
    char *p = checked_malloc(3 * MiB);
    fill(p, 3 * MiB, 2);
    p = ABI(realloc)(p, 9 * MiB);
    assert_non_null(p);
    assert_int_equal(check_fill(p, 3 * MiB, 2), 3 * MiB);
    expect_huge_advice("grown by realloc", p, 9 * MiB);
    ABI(free)(p);
    if (!thp_usable())
        print_message("no transparent huge pages here: only the alignment is checked\n");
}

/* A freed large object keeps its small pages, so that reusing it faults in none (zeroed,
 * PROT_NONE while large quarantine holds it, or as it was in preset none), while a byte
 * budget allows, and trim gives them back, from kept and quarantined objects alike; where it
 * was on transparent huge pages and is zeroed on free, its huge pages go back at once. */
static void trim_gives_back_freed_large_pages(void **state)
{
    (void)state;
    /* Not rounded up to whole huge pages (that would add more than a quarter of 4 MiB). */
    const size_t huge_part = 2 * MiB, small_part = 768 * KiB, size = huge_part + small_part;
    bool huge_back = SM_LARGE_HUGE_PAGES && SM_ZERO_ON_FREE && thp_usable();
    size_t back_at_free = huge_back ? huge_part : 0;
    starmalloc_trim(0); /* earlier tests' freed objects out of the budget */
    char *p = checked_malloc(size);
    fill(p, size, 3);
    struct starmalloc_stats live, freed, trimmed;
    starmalloc_stats_get(&live);
    ABI(free)(p);
    starmalloc_stats_get(&freed);
    assert_true(freed.committed_bytes <= live.committed_bytes);
    size_t dropped = live.committed_bytes - freed.committed_bytes;
    if (dropped > back_at_free + small_part / 2 || dropped + small_part / 2 < back_at_free)
        fail_msg("freeing a %zu-byte large object gave back %zu bytes, expected %zu", size, dropped,
                 back_at_free);
    assert_int_equal(starmalloc_trim(0), 1);
    starmalloc_stats_get(&trimmed);
    if (trimmed.committed_bytes + (size - back_at_free) > freed.committed_bytes)
        fail_msg("trim kept the pages of a freed %zu-byte large object (committed %zu -> %zu)",
                 size, freed.committed_bytes, trimmed.committed_bytes);
}

/* Freed large objects keep at most as many bytes of pages as the program had live at once
 * since the last trim (four times as many with dirty keeping, preset none). After a trim,
 * with L0 bytes in other live large objects: a 256 KiB object freed keeps its pages; a
 * 1 MiB object freed next (the peak is now L0 + 1 MiB) keeps its own too where the budget
 * has room for both; else, without large quarantine, the older kept object gives way to it
 * (a program whose sizes moved on keeps the pages it will reuse), and with large quarantine
 * the 1 MiB object gives its pages back. */
static void freed_large_pages_stay_under_peak_live_bytes(void **state)
{
    (void)state;
    const size_t small = 256 * KiB, big = MiB;
    const size_t per_live = !SM_ZERO_ON_FREE && !SM_LARGE_QUARANTINE ? 4 : 1;
    struct starmalloc_stats before, live, freed;
    starmalloc_trim(0); /* kept pages out; the peak restarts from what is live */
    starmalloc_stats_get(&before);
    size_t budget = per_live * (before.large_bytes + big);
    size_t expected = small + big <= budget ? small + big : SM_LARGE_QUARANTINE ? small : big;
    char *p = checked_malloc(small);
    fill(p, small, 1);
    starmalloc_stats_get(&live);
    size_t committed_before = live.committed_bytes;
    ABI(free)(p);
    char *q = checked_malloc(big);
    fill(q, big, 2);
    ABI(free)(q);
    starmalloc_stats_get(&freed);
    /* Committed bytes: the small object's (kept or not) plus the big one's, less what the
     * frees gave back. */
    size_t kept = freed.committed_bytes + small - committed_before;
    if (kept + 64 * KiB < expected || kept > expected + 64 * KiB)
        fail_msg("freed objects of %zu and %zu bytes kept %zu bytes of pages (other live large "
                 "objects: %zu bytes); expected %zu",
                 small, big, kept, before.large_bytes, expected);
    starmalloc_trim(0);
}

/* Pages of [p, p + bytes) (page-aligned p) that are resident, by mincore. */
static size_t resident_pages_of(const void *p, size_t bytes)
{
    assert_int_equal(bytes % page_size(), 0);
    size_t resident = resident_pages(p, bytes);
    assert_true(resident != SIZE_MAX);
    return resident;
}

/* Rounds of 40 large objects of `size` bytes, live together, each written whole, then
 * freed: more objects than StarMalloc keeps freed mappings (32), so that some are new each
 * round. */
static void large_rounds_written_whole(size_t size)
{
    enum { ROUNDS = 3, COUNT = 40 };
    char *p[COUNT];
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < COUNT; i++) {
            p[i] = checked_malloc(size);
            memset(p[i], 1, size);
        }
        for (int i = 0; i < COUNT; i++)
            ABI(free)(p[i]);
    }
}

/* Makes StarMalloc see large objects used for one page each, whatever it saw before: 128 new
 * objects live together (no freed mapping to reuse after the trim), freed. While objects are
 * populated only one in 32 is left lazy and measured at its free: four of them bring the
 * average from "written whole" well below the populating threshold. */
static void forget_objects_written_whole(void)
{
    enum { COUNT = 128 };
    const size_t size = 256 << 10;
    char *p[COUNT];
    starmalloc_trim(0);
    for (int i = 0; i < COUNT; i++) {
        p[i] = checked_malloc(size);
        p[i][0] = 1;
    }
    for (int i = 0; i < COUNT; i++)
        ABI(free)(p[i]);
    starmalloc_trim(0);
}

/* Large objects come with their small pages populated only while the program is seen to
 * write the objects it frees nearly whole (mincore at free; one object in 32 is left lazy to
 * keep learning): after objects used for one page each, a new one (once trim has dropped the
 * pages that freed mappings keep without large quarantine) has none resident; after objects
 * written whole, one of two new ones at least is resident whole before it is touched
 * (populated, or without large quarantine a freed mapping that kept its pages). */
static void large_pages_follow_what_the_program_writes(void **state)
{
    (void)state;
    const size_t size = 1 * MiB; /* below 2 MiB: no transparent huge page */
    const size_t pages = size / page_size();
    forget_objects_written_whole();
    char *sparse = checked_malloc(size);
    assert_int_equal((uintptr_t)sparse % page_size(), 0);
    size_t resident = resident_pages_of(sparse, size);
    if (resident > 0)
        fail_msg("after objects used for one page, a new %zu-byte one has %zu of %zu pages "
                 "resident",
                 size, resident, pages);
    ABI(free)(sparse);

    large_rounds_written_whole(size);
    char *a = checked_malloc(size);
    char *b = checked_malloc(size);
    size_t resident_a = resident_pages_of(a, size), resident_b = resident_pages_of(b, size);
    if (resident_a < pages && resident_b < pages)
        fail_msg("after objects written whole, two new %zu-byte ones have %zu and %zu of %zu "
                 "pages resident",
                 size, resident_a, resident_b, pages);
    ABI(free)(a);
    ABI(free)(b);
}

/* A freed mapping reused with the pages it kept (presets without large quarantine) is
 * resident whole whatever the new object's user writes: its free must not count as an object
 * written whole. After one object written whole and then reused a hundred times for one page
 * each, two new objects (the kept mapping is taken by a third) have no pages populated. In
 * presets with large quarantine the reused mapping has no pages: the same holds. */
static void kept_pages_do_not_count_as_written(void **state)
{
    (void)state;
    const size_t size = 1 * MiB; /* below 2 MiB: no transparent huge page */
    forget_objects_written_whole();
    char *whole = checked_malloc(size);
    memset(whole, 1, size);
    ABI(free)(whole); /* kept with its pages, where freed objects keep them */
    for (int i = 0; i < 100; i++) {
        char *p = checked_malloc(size);
        p[0] = 1;
        ABI(free)(p);
    }
    char *reused = checked_malloc(size);
    char *b = checked_malloc(size);
    char *c = checked_malloc(size);
    size_t resident_b = resident_pages_of(b, size), resident_c = resident_pages_of(c, size);
    if (resident_b > 0 || resident_c > 0)
        fail_msg("after one object written whole, then reused for one page at a time, two new "
                 "%zu-byte objects have %zu and %zu of %zu pages resident",
                 size, resident_b, resident_c, size / page_size());
    ABI(free)(reused);
    ABI(free)(b);
    ABI(free)(c);
}

/* With transparent huge pages (STARMALLOC_LARGE_HUGE_PAGES, and usable here), a large object
 * that the program is expected to write whole (the objects it freed were, and it is not one
 * of the lazy probes, one in 32) is rounded up to whole 2 MiB pages when that adds at most a
 * quarter of the rounded size: its last 2 MiB then fault in as one huge page.
 * malloc_usable_size says so.
 * After objects written whole: of two new 3.5 MiB objects, one at least has 4 MiB; a
 * 2.5 MiB one keeps its size (4 MiB would add 1.5 MiB). After objects used for one page, a
 * 3.5 MiB one keeps its size. */
static void large_objects_written_whole_fill_their_huge_pages(void **state)
{
    (void)state;
    bool rounds = SM_LARGE_HUGE_PAGES && thp_usable();
    const size_t size = 3 * MiB + MiB / 2, rounded = 4 * MiB, unrounded = 2 * MiB + MiB / 2;
    starmalloc_trim(0); /* no freed mapping to reuse whole, whatever its size */
    large_rounds_written_whole(MiB);
    char *a = checked_malloc(size);
    char *b = checked_malloc(size);
    char *c = checked_malloc(unrounded);
    size_t usable_a = ABI(malloc_usable_size)(a), usable_b = ABI(malloc_usable_size)(b);
    bool a_ok = usable_a == size || (rounds && usable_a == rounded);
    bool b_ok = usable_b == size || (rounds && usable_b == rounded);
    if (!a_ok || !b_ok || (rounds && usable_a != rounded && usable_b != rounded))
        fail_msg("after objects written whole, two new %zu-byte objects have %zu and %zu usable "
                 "bytes (rounded up to huge pages: %s)",
                 size, usable_a, usable_b, rounds ? "expected" : "not expected");
    assert_int_equal(ABI(malloc_usable_size)(c), unrounded);
    memset(a, 1, usable_a); /* all of it is the object's */
    memset(b, 1, usable_b);
    ABI(free)(a);
    ABI(free)(b);
    ABI(free)(c);

    forget_objects_written_whole();
    char *d = checked_malloc(size);
    assert_int_equal(ABI(malloc_usable_size)(d), size);
    ABI(free)(d);
}

/* Grows the large object p, whose first `filled` bytes hold 5, to `size` bytes with realloc,
 * checks that they still do and that its usable size is `expected`, and fills it with 5. */
static char *grow_checked(char *p, size_t filled, size_t size, size_t expected)
{
    p = ABI(realloc)(p, size);
    assert_non_null(p);
    size_t usable = ABI(malloc_usable_size)(p);
    if (usable != expected)
        fail_msg("grown from %zu to %zu bytes, the object has %zu usable, %zu expected", filled,
                 size, usable, expected);
    for (size_t at = 0; at < filled; at += 4 * KiB)
        assert_int_equal(p[at], 5);
    memset(p, 5, usable); /* every usable byte is the object's */
    return p;
}

/* With transparent huge pages, a large object grown by realloc ends on a huge page when
 * that adds at most a quarter of the rounded size, whatever the program wrote before: each
 * 2 MiB that a buffer grown by appends takes then starts on a fresh huge page. After objects
 * used for one page (no other reason to round), an object malloc'd with 2 MiB (no room after
 * it: each growth moves it) grown by 4 KiB keeps that size (4 MiB would add almost half);
 * another grown to 3.5 MiB has 4 MiB, and grown again to 5.5 MiB, in the room its move left
 * after it, 6 MiB. */
static void realloc_growth_ends_on_a_huge_page(void **state)
{
    (void)state;
    bool rounds = SM_LARGE_HUGE_PAGES && thp_usable();
    forget_objects_written_whole();
    char *p = checked_malloc(2 * MiB);
    memset(p, 5, 2 * MiB);
    p = grow_checked(p, 2 * MiB, 2 * MiB + 4 * KiB, 2 * MiB + 4 * KiB);
    ABI(free)(p);

    const size_t moved = 3 * MiB + MiB / 2, in_place = 5 * MiB + MiB / 2;
    p = checked_malloc(2 * MiB);
    memset(p, 5, 2 * MiB);
    p = grow_checked(p, 2 * MiB, moved, rounds ? 4 * MiB : moved);
    char *before = p;
    p = grow_checked(p, ABI(malloc_usable_size)(p), in_place, rounds ? 6 * MiB : in_place);
    assert_ptr_equal(p, before);
    ABI(free)(p);
}

/* A freed large object kept for reuse (presets without large quarantine) is reused whole
 * only for a request of at least half its size, counted before any rounding up to huge pages:
 * a new object never has more than twice the bytes asked plus two pages usable. Two 12 MiB
 * objects written whole are freed; two 5.67 MiB requests (6 MiB when rounded up, which one
 * of them at least is, the program writing its objects whole) must not get them. */
static void reused_mapping_holds_at_most_twice_the_request(void **state)
{
    (void)state;
    const size_t kept = 12 * MiB, size = 5943432;
    starmalloc_trim(0);
    large_rounds_written_whole(MiB);
    char *old[2];
    for (int i = 0; i < 2; i++) {
        old[i] = checked_malloc(kept);
        memset(old[i], 1, kept);
    }
    for (int i = 0; i < 2; i++)
        ABI(free)(old[i]);
    char *p[2];
    for (int i = 0; i < 2; i++) {
        p[i] = checked_malloc(size);
        size_t usable = ABI(malloc_usable_size)(p[i]);
        if (usable < size || usable > 2 * size + 2 * 4 * KiB)
            fail_msg("malloc(%zu) has %zu usable bytes", size, usable);
    }
    for (int i = 0; i < 2; i++)
        ABI(free)(p[i]);
}

/* Under the kernel's default overcommit heuristic (vm.overcommit_memory 0) one object of
 * more than RAM + swap is refused, as the heuristic refuses glibc's mapping for it: malloc
 * and calloc return NULL with ENOMEM, and so does realloc, which leaves the block as it was.
 * With 2 (strict) the kernel refuses such a request itself; with 1 it refuses nothing, and
 * the request succeeds (its pages come when used). */
static void request_beyond_memory_fails(void **state)
{
    (void)state;
    char mode = '0';
    FILE *f = fopen("/proc/sys/vm/overcommit_memory", "r");
    if (f) {
        mode = (char)fgetc(f);
        fclose(f);
    }
    struct sysinfo info;
    assert_int_equal(sysinfo(&info), 0);
    size_t unit = info.mem_unit ? info.mem_unit : 1;
    size_t size = opaque_size(((size_t)info.totalram + info.totalswap) * unit + 4 * KiB);
    errno = 0;
    void *p = ABI(malloc)(size);
    if (mode == '1') {
        print_message("vm.overcommit_memory is 1: nothing is refused, %zu bytes neither\n", size);
        assert_non_null(p);
        ABI(free)(p);
        return;
    }
    assert_null(p);
    assert_int_equal(errno, ENOMEM);
    errno = 0;
    assert_null(ABI(calloc)(1, size));
    assert_int_equal(errno, ENOMEM);
    char *q = checked_malloc(MiB);
    memset(q, 9, MiB);
    errno = 0;
    assert_null(ABI(realloc)(q, size));
    assert_int_equal(errno, ENOMEM);
    for (size_t at = 0; at < MiB; at += 4 * KiB)
        assert_int_equal(q[at], 9);
    ABI(free)(q);
}

/* A large object grown by realloc twice: the first growth, to twice its size, moves it (more
 * than its guard after it can hold) with as much room again after it, the second grows it in
 * place. Returns its usable size before and after the second growth, and whether the pages
 * that growth added were resident before anything touched them. */
static bool large_growth_in_place(size_t size, size_t *before, size_t *after)
{
    char *p = checked_malloc(size);
    memset(p, 1, size);
    p = ABI(realloc)(p, 2 * size);
    assert_non_null(p);
    *before = ABI(malloc_usable_size)(p);
    p = ABI(realloc)(p, *before + 1);
    assert_non_null(p);
    *after = ABI(malloc_usable_size)(p);
    assert_true(*after > *before);
    size_t added = *after - *before;
    bool resident = resident_pages_of(p + *before, added) == added / page_size();
    ABI(free)(p);
    return resident;
}

/* realloc growing a large object in place: while the program writes its large objects whole,
 * with the new pages populated, and with large quarantine by an eighth of the object at least
 * (one of two growths at least: one decision in 32 is a lazy probe); otherwise by the pages
 * asked for, which fault in as the program touches them. */
static void large_growth_follows_what_the_program_writes(void **state)
{
    (void)state;
    const size_t size = 256 * KiB;
    size_t before = 0, after = 0;
    large_rounds_written_whole(MiB);
    bool ahead = false;
    for (int i = 0; i < 2 && !ahead; i++) {
        bool resident = large_growth_in_place(size, &before, &after);
        ahead = resident && (SM_LARGE_QUARANTINE != 0 ? after >= before + before / 8
                                                      : after == before + page_size());
    }
    if (!ahead)
        fail_msg("after objects written whole, a %zu-byte large object grew in place to %zu "
                 "bytes (%s populated expected)",
                 before, after, SM_LARGE_QUARANTINE != 0 ? "an eighth more" : "one page");

    forget_objects_written_whole();
    bool resident = large_growth_in_place(size, &before, &after);
    if (after != before + page_size() || resident)
        fail_msg("after objects used for one page, a %zu-byte large object grew in place to %zu "
                 "bytes, %s (one lazy page expected)",
                 before, after, resident ? "resident" : "not resident");
}

/* A large object that realloc moves keeps its pages, whatever its size: they move with it
 * (mremap), not copied. An untouched object of 3 MiB and a page (2 MiB-aligned: its first
 * 2 MiB may be advised for huge pages, the rest not) grown to 16 MiB has none of its old pages
 * resident at its new place; a copy would have written them all. (With the advice on the
 * huge part only, the object was two mappings that mremap refuses to move together, and
 * every such growth copied.) After objects used for one page, so that nothing is populated. */
static void large_move_takes_the_pages_along(void **state)
{
    (void)state;
    const size_t size = 3 * MiB + 4 * KiB, larger = 16 * MiB, slack = 16;
    forget_objects_written_whole();
    char *p = checked_malloc(size);
    char *moved = ABI(realloc)(p, larger);
    assert_non_null(moved);
    size_t resident = resident_pages_of(moved, size);
    if (resident > slack)
        fail_msg("an untouched %zu-byte object grown to %zu bytes by realloc has %zu of its "
                 "%zu old pages resident (copied, not moved)",
                 size, larger, resident, size / page_size());
    ABI(free)(moved);
}

/* However whole the program writes its large objects, a growth in place populates no more than
 * a large object may keep (16 MiB of small pages; huge pages fault in whole at first touch): a
 * buffer grown from 40 to 64 MiB does not have its 24 new MiB resident before anything touches
 * them. (Populating every growth whole, a fuzzer's reallocs to hundreds of MiB took gigabytes
 * of RSS.) Two buffers, as one populate decision in 32 is a lazy probe. */
static void large_growth_populates_no_huge_buffer(void **state)
{
    (void)state;
    const size_t small = 64 * KiB, size = 40 * MiB, larger = 64 * MiB;
    const size_t added = (larger - size) / page_size(), slack = 2 * MiB / page_size();
    large_rounds_written_whole(MiB);
    for (int i = 0; i < 2; i++) {
        char *p = ABI(realloc)(checked_malloc(small), size);
        assert_non_null(p);
        char *grown = ABI(realloc)(p, larger);
        assert_non_null(grown);
        if (grown != p)
            fail_msg("a %zu-byte buffer grown to %zu bytes by realloc moved", size, larger);
        size_t resident = resident_pages_of(grown + size, larger - size);
        if (resident > slack)
            fail_msg("a %zu-byte buffer grown to %zu bytes in place has %zu of its %zu new pages "
                     "resident before any touch",
                     size, larger, resident, added);
        ABI(free)(grown);
    }
}

/* A buffer that realloc grows out of the small classes becomes a large object with room after
 * it (inaccessible address space), so that its next growth stays in place instead of moving it:
 * for a buffer grown by appends, one mprotect per growth rather than a move (mmap, mremap and the
 * unmapping of the old guards). */
static void realloc_out_of_small_classes_leaves_room(void **state)
{
    (void)state;
    const size_t small = 64 * KiB, large = 192 * KiB, larger = 256 * KiB;
    starmalloc_trim(0); /* no kept mapping that the buffer could take whole, without room */
    char *p = checked_malloc(small);
    fill(p, small, 11);
    char *grown = ABI(realloc)(p, large);
    assert_non_null(grown);
    char *again = ABI(realloc)(grown, larger);
    assert_non_null(again);
    if (again != grown)
        fail_msg("a buffer grown by realloc from %zu to %zu bytes moved at its growth to %zu",
                 small, large, larger);
    assert_int_equal(check_fill(again, small, 11), small);
    ABI(free)(again);
}

static void *allocate_once(void *arg)
{
    (void)arg;
    ABI(free)(checked_malloc(64)); /* a new thread's first allocation refills its cache */
    return NULL;
}

/* Emptied slabs: with slab quarantine, or without a decay period
 * (STARMALLOC_RETAINED_DECAY_MS=0), all but a few per (arena, class) go back to the kernel (into
 * the quarantine) as they empty. Otherwise they are retained for reuse by their class; a large
 * object allocated while they exceed the allowance (slabs in use + 8 MiB) takes their place, and
 * the rest go back once unused for a decay period (1 s), at a later allocation that takes a class
 * lock: here a new thread's first allocation after each pause. */
static void emptied_slabs_go_back_after_decay(void **state)
{
    (void)state;
    enum { COUNT = 32768, SIZE = 1000 }; /* 32 MiB of 1 KiB slots */
    const size_t large = 8 * MiB;
    starmalloc_trim(0);
    char **p = checked_malloc(COUNT * sizeof(*p));
    for (size_t i = 0; i < COUNT; i++) {
        p[i] = checked_malloc(SIZE);
        fill(p[i], SIZE, 5);
    }
    struct starmalloc_stats live, freed, with_large, later;
    starmalloc_stats_get(&live);
    for (size_t i = 0; i < COUNT; i++)
        ABI(free)(p[i]);
    ABI(free)(p);
    starmalloc_stats_get(&freed);
    assert_true(freed.committed_bytes <= live.committed_bytes);
    size_t at_free = live.committed_bytes - freed.committed_bytes;
    bool retains = SM_SLAB_QUARANTINE == 0 && SM_RETAINED_DECAY_MS != 0;
    if (!retains) {
        if (at_free < 28 * MiB)
            fail_msg("without retention (slab quarantine, or STARMALLOC_RETAINED_DECAY_MS=0), "
                     "freeing 32 MiB of slots gave back %zu bytes",
                     at_free);
        return;
    }
    if (at_free > 1 * MiB)
        fail_msg("without slab quarantine the emptied slabs should be retained, yet freeing 32 "
                 "MiB of slots gave back %zu bytes at once",
                 at_free);

    char *big = checked_malloc(large);
    fill(big, large, 6);
    starmalloc_stats_get(&with_large);
    if (with_large.committed_bytes > freed.committed_bytes + 2 * MiB)
        fail_msg("a %zu-byte large object did not take the place of retained slabs (committed "
                 "%zu -> %zu)",
                 large, freed.committed_bytes, with_large.committed_bytes);
    ABI(free)(big);
    starmalloc_stats_get(&freed); /* the large object's pages may be kept for reuse */

    size_t gone = 0;
    for (int step = 0; step < 4 && gone < 16 * MiB; step++) {
        struct timespec pause = {1, 50 * 1000 * 1000};
        nanosleep(&pause, NULL);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, allocate_once, NULL), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
        starmalloc_stats_get(&later);
        gone = later.committed_bytes < freed.committed_bytes
                   ? freed.committed_bytes - later.committed_bytes
                   : 0;
    }
    if (gone < 16 * MiB)
        fail_msg("the retained slabs of 24 MiB of freed slots were still committed after four "
                 "decay periods (%zu bytes went back)",
                 gone);
}

/* In a locked address space (mlockall) the kernel refuses to drop pages (MADV_DONTNEED):
 * freed large objects still come back zero and the committed count does not drift (a kept
 * object whose huge pages could not go back would count them twice). In a child, since the
 * lock is for the whole process. */
static void freed_large_objects_in_locked_memory(void **state)
{
    (void)state;
    const size_t size = (5 << 20) + 4096;
    pid_t pid = fork();
    if (pid == 0) {
        child_setup();
        if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0)
            _exit(2);
        struct starmalloc_stats start, end;
        starmalloc_stats_get(&start);
        for (int round = 0; round < 20; round++) {
            unsigned char *p = ABI(malloc)(size);
            if (!p)
                _exit(3);
            memset(p, 0xff, size);
            ABI(free)(p);
            p = ABI(calloc)(size, 1);
            if (!p || !all_zero(p, size))
                _exit(4);
            ABI(free)(p);
        }
        starmalloc_stats_get(&end);
        _exit(end.committed_bytes > start.committed_bytes + 2 * size ? 5 : 0);
    }
    int status = wait_child(pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 2) {
        print_message("mlockall refused (RLIMIT_MEMLOCK): locked memory not exercised\n");
        return;
    }
    assert_int_equal(WEXITSTATUS(status), 0);
}

static int compare_pointers(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

static void malloc_zero_distinct(void **state)
{
    (void)state;
    enum { N = 1000 };
    uintptr_t *ptrs = calloc(N, sizeof(uintptr_t));
    assert_non_null(ptrs);
    for (size_t i = 0; i < N; i++) {
        void *p = ABI(malloc)(opaque_size(0));
        assert_non_null(p);
        assert_true(is_aligned(p, 16));
        ptrs[i] = (uintptr_t)p;
    }
    qsort(ptrs, N, sizeof(uintptr_t), compare_pointers);
    for (size_t i = 1; i < N; i++)
        assert_true(ptrs[i - 1] != ptrs[i]);
    for (size_t i = 0; i < N; i++)
        ABI(free)((void *)ptrs[i]);
    free(ptrs);
}

static void malloc_too_large(void **state)
{
    (void)state;
    const size_t sizes[] = {SIZE_MAX, (size_t)PTRDIFF_MAX + 1, (size_t)PTRDIFF_MAX,
                            SIZE_MAX - 4096};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        errno = 0;
        void *p = ABI(malloc)(opaque_size(sizes[i]));
        assert_null(p);
        assert_int_equal(errno, ENOMEM);
    }
}

/* ---- calloc ----------------------------------------------------------------------------- */

static void calloc_zeroed(void **state)
{
    (void)state;
    size_t sizes[64];
    size_t n = large_sweep(sizes, 64);
    for (size_t size = 0; size <= 2048; size += 7) {
        unsigned char *p = ABI(calloc)(1, opaque_size(size));
        assert_non_null(p);
        assert_true(is_aligned(p, 16));
        assert_true(all_zero(p, size));
        ABI(free)(p);
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char *p = ABI(calloc)(opaque_size(sizes[i]), 1);
        assert_non_null(p);
        assert_true(all_zero(p, sizes[i]));
        ABI(free)(p);
    }
    /* count * size, not just one of them. */
    unsigned char *p = ABI(calloc)(opaque_size(1000), opaque_size(300));
    assert_non_null(p);
    assert_true(all_zero(p, 300000));
    ABI(free)(p);
}

static void calloc_zeroed_after_reuse(void **state)
{
    (void)state;
    const size_t sizes[] = {
        1,    16,    17,    100,    112,    500,
        4096, 10000, 65536, 131072, 200000, (5 << 20) + 4096 /* huge pages and 4 KiB ones */};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t size = sizes[i];
        for (int round = 0; round < 50; round++) {
            /* Dirty a few blocks of this size, give them back, then calloc them again. */
            void *dirty[4];
            for (int k = 0; k < 4; k++) {
                dirty[k] = ABI(malloc)(opaque_size(size));
                assert_non_null(dirty[k]);
                memset(dirty[k], 0xff, ABI(malloc_usable_size)(dirty[k]));
            }
            for (int k = 0; k < 4; k++)
                ABI(free)(dirty[k]);
            void *clean[4];
            for (int k = 0; k < 4; k++) {
                clean[k] = ABI(calloc)(opaque_size(size), 1);
                assert_non_null(clean[k]);
                assert_true(all_zero(clean[k], size));
            }
            for (int k = 0; k < 4; k++)
                ABI(free)(clean[k]);
        }
    }
}

static void calloc_overflow(void **state)
{
    (void)state;
    const size_t half = SIZE_MAX / 2 + 1;
    const size_t pairs[][2] = {
        {half, 2}, {2, half}, {SIZE_MAX, SIZE_MAX}, {(size_t)1 << 32, (size_t)1 << 32}};
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        errno = 0;
        void *p = ABI(calloc)(opaque_size(pairs[i][0]), opaque_size(pairs[i][1]));
        assert_null(p);
        assert_int_equal(errno, ENOMEM);
    }
    /* No overflow, but above PTRDIFF_MAX. */
    errno = 0;
    assert_null(ABI(calloc)(opaque_size(half / 2), opaque_size(2)));
    assert_int_equal(errno, ENOMEM);
}

static void calloc_zero_count(void **state)
{
    (void)state;
    void *a = ABI(calloc)(opaque_size(0), opaque_size(5));
    void *b = ABI(calloc)(opaque_size(5), opaque_size(0));
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    ABI(free)(a);
    ABI(free)(b);
}

/* ---- realloc ---------------------------------------------------------------------------- */

static void realloc_null_is_malloc(void **state)
{
    (void)state;
    void *p = ABI(realloc)(NULL, opaque_size(100));
    assert_non_null(p);
    assert_true(is_aligned(p, 16));
    assert_true(ABI(malloc_usable_size)(p) >= 100);
    memset(p, 1, 100);
    ABI(free)(p);
    p = ABI(realloc)(NULL, opaque_size(300 * KiB));
    assert_non_null(p);
    assert_true(ABI(malloc_usable_size)(p) >= 300 * KiB);
    memset(p, 1, 300 * KiB);
    ABI(free)(p);
}

/* Moves a block through a sequence of sizes, checking that the common prefix survives. */
static void realloc_chain(const size_t *sizes, size_t n)
{
    unsigned seed = (unsigned)sizes[0];
    void *p = checked_malloc(sizes[0]);
    fill(p, sizes[0], seed);
    for (size_t i = 1; i < n; i++) {
        void *q = ABI(realloc)(p, opaque_size(sizes[i]));
        assert_non_null(q);
        assert_true(is_aligned(q, 16));
        assert_true(ABI(malloc_usable_size)(q) >= sizes[i]);
        size_t kept = sizes[i - 1] < sizes[i] ? sizes[i - 1] : sizes[i];
        assert_int_equal(check_fill(q, kept, seed), kept);
        seed++;
        fill(q, sizes[i], seed);
        p = q;
    }
    ABI(free)(p);
}

static void realloc_keeps_content(void **state)
{
    (void)state;
    const size_t small_small[] = {20, 200, 1000, 5000, 64, 16, 100000, 7};
    const size_t small_large[] = {1000, 200 * KiB, 130 * KiB, SMALL_MAX + 1};
    const size_t large_large[] = {200 * KiB, MiB, 3 * MiB + 5, 512 * KiB, 4 * MiB};
    const size_t large_small[] = {MiB, 100, 2 * MiB, SMALL_MAX, SMALL_MAX + 1, 1};
    realloc_chain(small_small, sizeof(small_small) / sizeof(small_small[0]));
    realloc_chain(small_large, sizeof(small_large) / sizeof(small_large[0]));
    realloc_chain(large_large, sizeof(large_large) / sizeof(large_large[0]));
    realloc_chain(large_small, sizeof(large_small) / sizeof(large_small[0]));
}

static void realloc_in_place(void **state)
{
    (void)state;
    /* Growing within the usable size keeps the size class, so the block stays put: with
     * the default table 100 and 110 are both in the 112-byte class (less a canary, if any);
     * a large block keeps its place while its page count does not change. */
    const size_t sizes[] = {1, 24, 100, 1000, 5000, 100000, 200000, MiB + 1};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        void *p = checked_malloc(sizes[i]);
        size_t usable = ABI(malloc_usable_size)(p);
        fill(p, sizes[i], (unsigned)i);
        for (size_t n = sizes[i]; n <= usable; n++) {
            void *q = ABI(realloc)(p, opaque_size(n));
            assert_ptr_equal(q, p);
            assert_int_equal(ABI(malloc_usable_size)(q), usable);
        }
        assert_int_equal(check_fill(p, sizes[i], (unsigned)i), sizes[i]);
        ABI(free)(p);
    }
}

/* Whether writing the byte at p kills a forked child with SIGSEGV. */
static bool write_faults(char *p)
{
    pid_t pid = fork();
    if (pid == 0) {
        child_setup();
        *(volatile char *)p = 1;
        _exit(0);
    }
    int status = wait_child(pid);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV;
}

/* A large block grown a page at a time mostly stays where it is (once moved, it has room to
 * grow into), keeps its content, and with large guards has a guard right after its end. */
static void realloc_grows_large_blocks_in_place(void **state)
{
    (void)state;
    size_t size = 200 * KiB;
    char *p = checked_malloc(size);
    fill(p, size, 7);
    unsigned in_place = 0, steps = 64;
    for (unsigned i = 0; i < steps; i++) {
        char *q = ABI(realloc)(p, size + page_size());
        assert_non_null(q);
        in_place += q == p;
        assert_int_equal(check_fill(q, size, 7), size);
        memset(q + size, 0, page_size());
        fill(q, size += page_size(), 7);
        p = q;
    }
    if (in_place < steps / 2)
        fail_msg("only %u of %u one-page growths stayed in place", in_place, steps);
    if (SM_LARGE_GUARDS && !write_faults(p + ABI(malloc_usable_size)(p)))
        fail_msg("no guard after a large block grown in place");
    ABI(free)(p);
}

/* realloc shrinking a large block to less than half of it (and still above the small
 * classes) keeps it where it is, with its content: its end gives its pages back to the kernel
 * and becomes inaccessible (a write past the new end traps, in every preset), instead of a
 * copy into a new block (which wrote every page of the kept part). */
static void realloc_shrinks_large_blocks_in_place(void **state)
{
    (void)state;
    const size_t size = 8 * MiB + 5 * KiB, smaller = MiB + 3;
    forget_objects_written_whole(); /* nothing populated: what is resident was written or copied */
    char *p = checked_malloc(size);
    fill(p, size, 9);
    char *q = ABI(realloc)(p, smaller);
    if (q != p)
        fail_msg("a %zu-byte block shrunk by realloc to %zu bytes moved", size, smaller);
    size_t usable = ABI(malloc_usable_size)(q);
    assert_true(usable >= smaller && usable < smaller + page_size());
    assert_int_equal(check_fill(q, smaller, 9), smaller);
    if (!write_faults(q + usable))
        fail_msg("the end given back by a %zu-byte block shrunk to %zu bytes is accessible", size,
                 smaller);
    /* Grown back in place, then moved by a growth its room cannot hold: the move takes the
     * pages along (the end given back and taken again is one mapping with the rest, which
     * mremap can move), so of the first 4 MiB only the written part is resident after it,
     * where a copy would have written all 1024 pages. */
    char *again = ABI(realloc)(q, 4 * MiB);
    assert_non_null(again);
    char *moved = ABI(realloc)(again, 64 * MiB);
    assert_non_null(moved);
    assert_int_equal(check_fill(moved, smaller, 9), smaller);
    size_t resident = resident_pages_of(moved, 4 * MiB);
    if (resident >= 4 * MiB / page_size() / 2)
        fail_msg("a block shrunk, grown back and moved by realloc has %zu of its first %zu "
                 "pages resident (copied, not moved)",
                 resident, 4 * MiB / page_size());
    ABI(free)(moved);
}

static void realloc_zero_frees(void **state)
{
    (void)state;
    const size_t sizes[] = {1, 100, 4096, 100000, MiB};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        void *p = checked_malloc(sizes[i]);
        memset(p, 3, sizes[i]);
        assert_null(ABI(realloc)(p, opaque_size(0)));
    }
}

static void realloc_failure_keeps_block(void **state)
{
    (void)state;
    const size_t sizes[] = {100, 100000, MiB};
    /* Above PTRDIFF_MAX, and sizes that pass that check but cannot be mapped. */
    const size_t huge[] = {SIZE_MAX, (size_t)PTRDIFF_MAX + 1, SIZE_MAX - 4096, (size_t)PTRDIFF_MAX,
                           (size_t)1 << 62};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        for (size_t j = 0; j < sizeof(huge) / sizeof(huge[0]); j++) {
            void *p = checked_malloc(sizes[i]);
            fill(p, sizes[i], (unsigned)(i + j));
            errno = 0;
            /* opaque(p): gcc must not treat p as dead after a realloc that failed. */
            void *q = ABI(realloc)(opaque(p), opaque_size(huge[j]));
            assert_null(q);
            assert_int_equal(errno, ENOMEM);
            assert_true(ABI(malloc_usable_size)(p) >= sizes[i]);
            assert_int_equal(check_fill(p, sizes[i], (unsigned)(i + j)), sizes[i]);
            ABI(free)(p);
        }
    }
}

/* ---- reallocarray ----------------------------------------------------------------------- */

static void reallocarray_works(void **state)
{
    (void)state;
    int *a = ABI(reallocarray)(NULL, opaque_size(10), sizeof(int));
    assert_non_null(a);
    for (int i = 0; i < 10; i++)
        a[i] = i * 3;
    int *b = ABI(reallocarray)(a, opaque_size(100000), sizeof(int));
    assert_non_null(b);
    assert_true(ABI(malloc_usable_size)(b) >= 100000 * sizeof(int));
    for (int i = 0; i < 10; i++)
        assert_int_equal(b[i], i * 3);
    b[99999] = 7;
    ABI(free)(b);
}

static void reallocarray_overflow(void **state)
{
    (void)state;
    void *p = checked_malloc(256);
    fill(p, 256, 9);
    const size_t pairs[][2] = {
        {SIZE_MAX / 2 + 1, 2}, {2, SIZE_MAX / 2 + 1}, {SIZE_MAX, SIZE_MAX}, {(size_t)1 << 61, 2}};
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        errno = 0;
        void *q = ABI(reallocarray)(opaque(p), opaque_size(pairs[i][0]), opaque_size(pairs[i][1]));
        assert_null(q);
        assert_int_equal(errno, ENOMEM);
        assert_int_equal(check_fill(p, 256, 9), 256);
    }
    ABI(free)(p);
}

/* ---- aligned allocation ----------------------------------------------------------------- */

static void aligned_alloc_powers_of_two(void **state)
{
    (void)state;
    for (size_t align = 1; align <= 4 * MiB; align <<= 1) {
        if (align > MiB && align != 2 * MiB && align != 4 * MiB)
            continue;
        const size_t sizes[] = {1, 16, 100, align - 1, align, align + 1, 3 * align, 200000};
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            size_t size = sizes[i];
            errno = 0;
            void *p = ABI(aligned_alloc)(opaque_size(align), opaque_size(size));
            assert_non_null(p);
            assert_true(is_aligned(p, align));
            assert_true(is_aligned(p, 16));
            assert_true(ABI(malloc_usable_size)(p) >= size);
            memset(p, 0x5a, size);
            ABI(free)(p);
        }
    }
}

static void aligned_alloc_bad_alignment(void **state)
{
    (void)state;
    const size_t aligns[] = {0, 3, 24, 48, 100, 4097, SIZE_MAX};
    for (size_t i = 0; i < sizeof(aligns) / sizeof(aligns[0]); i++) {
        errno = 0;
        assert_null(ABI(aligned_alloc)(opaque_size(aligns[i]), opaque_size(64)));
        assert_int_equal(errno, EINVAL);
    }
}

static void aligned_alloc_huge_alignment(void **state)
{
    (void)state;
    /* Valid alignments that no address space can satisfy: ENOMEM, not a crash. */
    const size_t aligns[] = {(size_t)1 << 62, (size_t)1 << 63};
    for (size_t i = 0; i < sizeof(aligns) / sizeof(aligns[0]); i++) {
        errno = 0;
        assert_null(ABI(aligned_alloc)(opaque_size(aligns[i]), opaque_size(1)));
        assert_int_equal(errno, ENOMEM);
        errno = 0;
        assert_null(ABI(memalign)(opaque_size(aligns[i]), opaque_size(1)));
        assert_int_equal(errno, ENOMEM);
        void *out = NULL;
        errno = 12345;
        assert_int_equal(ABI(posix_memalign)(&out, opaque_size(aligns[i]), opaque_size(1)), ENOMEM);
        assert_int_equal(errno, 12345);
        assert_null(out);
    }
    /* glibc memalign: an alignment above the largest power of two is EINVAL. */
    errno = 0;
    assert_null(ABI(memalign)(opaque_size(SIZE_MAX), opaque_size(1)));
    assert_int_equal(errno, EINVAL);
}

static void realloc_aligned_blocks(void **state)
{
    (void)state;
    /* Over-aligned blocks resize like any other: content kept, 16-byte alignment at least. */
    const size_t aligns[] = {64, 4096, 65536, 2 * MiB};
    const size_t sizes[] = {100, 4000, 5000, 300000, 50};
    for (size_t i = 0; i < sizeof(aligns) / sizeof(aligns[0]); i++) {
        void *p = ABI(aligned_alloc)(opaque_size(aligns[i]), opaque_size(sizes[0]));
        assert_non_null(p);
        assert_true(is_aligned(p, aligns[i]));
        fill(p, sizes[0], (unsigned)i);
        for (size_t j = 1; j < sizeof(sizes) / sizeof(sizes[0]); j++) {
            void *q = ABI(realloc)(p, opaque_size(sizes[j]));
            assert_non_null(q);
            assert_true(is_aligned(q, 16));
            assert_true(ABI(malloc_usable_size)(q) >= sizes[j]);
            size_t kept = sizes[j - 1] < sizes[j] ? sizes[j - 1] : sizes[j];
            assert_int_equal(check_fill(q, kept, (unsigned)(i + j - 1)), kept);
            fill(q, sizes[j], (unsigned)(i + j));
            p = q;
        }
        ABI(free)(p);
    }
}

static void posix_memalign_works(void **state)
{
    (void)state;
    const size_t sizes[] = {0, 1, 100, 5000, 200000};
    for (size_t align = sizeof(void *); align <= MiB; align <<= 1) {
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            void *p = NULL;
            assert_int_equal(ABI(posix_memalign)(&p, opaque_size(align), opaque_size(sizes[i])), 0);
            assert_non_null(p);
            assert_true(is_aligned(p, align));
            assert_true(ABI(malloc_usable_size)(p) >= sizes[i]);
            memset(p, 0x11, sizes[i]);
            ABI(free)(p);
        }
    }
}

static void posix_memalign_errors(void **state)
{
    (void)state;
    void *const sentinel = (void *)(uintptr_t)0xdeadbee0;
    const size_t bad[] = {0, 1, 2, 4, 24, 3 * sizeof(void *), sizeof(void *) + 1, 4097};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (bad[i] >= sizeof(void *) && (bad[i] & (bad[i] - 1)) == 0)
            continue; /* a valid alignment on this ABI */
        void *out = sentinel;
        errno = 12345;
        assert_int_equal(ABI(posix_memalign)(&out, opaque_size(bad[i]), opaque_size(64)), EINVAL);
        assert_int_equal(errno, 12345);
        assert_ptr_equal(out, sentinel);
    }
    const size_t huge[] = {SIZE_MAX, (size_t)PTRDIFF_MAX + 1, SIZE_MAX - 4096};
    const size_t aligns[] = {16, 4096, 2 * MiB};
    for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
        for (size_t j = 0; j < sizeof(aligns) / sizeof(aligns[0]); j++) {
            void *out = sentinel;
            errno = 12345;
            assert_int_equal(
                ABI(posix_memalign)(&out, opaque_size(aligns[j]), opaque_size(huge[i])), ENOMEM);
            assert_int_equal(errno, 12345);
            assert_ptr_equal(out, sentinel);
        }
    }
}

static void memalign_works(void **state)
{
    (void)state;
    for (size_t align = 1; align <= MiB; align <<= 1) {
        void *p = ABI(memalign)(opaque_size(align), opaque_size(100));
        assert_non_null(p);
        assert_true(is_aligned(p, align));
        assert_true(is_aligned(p, 16));
        assert_true(ABI(malloc_usable_size)(p) >= 100);
        memset(p, 0x22, 100);
        ABI(free)(p);
    }
    /* glibc: an alignment that is not a power of two is rounded up to one. */
    const size_t odd[][2] = {{24, 32}, {100, 128}, {3, 16}, {5000, 8192}, {0, 16}};
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
        void *p = ABI(memalign)(opaque_size(odd[i][0]), opaque_size(40));
        assert_non_null(p);
        assert_true(is_aligned(p, odd[i][1]));
        memset(p, 0x23, 40);
        ABI(free)(p);
    }
}

static void valloc_pvalloc(void **state)
{
    (void)state;
    const size_t page = page_size();
    const size_t sizes[] = {1, 100, 4095, 4096, 4097, 100000, 300000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t size = sizes[i];
        void *p = ABI(valloc)(opaque_size(size));
        assert_non_null(p);
        assert_true(is_aligned(p, page));
        assert_true(ABI(malloc_usable_size)(p) >= size);
        memset(p, 0x33, size);
        ABI(free)(p);

        size_t rounded = (size + page - 1) / page * page;
        p = ABI(pvalloc)(opaque_size(size));
        assert_non_null(p);
        assert_true(is_aligned(p, page));
        assert_true(ABI(malloc_usable_size)(p) >= rounded);
        memset(p, 0x34, rounded);
        ABI(free)(p);
    }
    void *p = ABI(valloc)(opaque_size(0));
    assert_non_null(p);
    assert_true(is_aligned(p, page));
    ABI(free)(p);
    p = ABI(pvalloc)(opaque_size(0));
    assert_non_null(p);
    assert_true(is_aligned(p, page));
    assert_true(ABI(malloc_usable_size)(p) >= page);
    memset(p, 0x35, page);
    ABI(free)(p);

    errno = 0;
    assert_null(ABI(pvalloc)(opaque_size(SIZE_MAX)));
    assert_int_equal(errno, ENOMEM);
    errno = 0;
    assert_null(ABI(valloc)(opaque_size(SIZE_MAX)));
    assert_int_equal(errno, ENOMEM);
}

/* ---- malloc_usable_size, free, free_sized ----------------------------------------------- */

static void usable_size_writable(void **state)
{
    (void)state;
    assert_int_equal(ABI(malloc_usable_size)(NULL), 0);
    for (size_t size = 0; size <= 3 * SMALL_MAX; size = size < 64 ? size + 1 : size * 5 / 4) {
        void *p = checked_malloc(size);
        size_t usable = ABI(malloc_usable_size)(p);
        assert_true(usable >= size);
        memset(p, 0x44, usable);
        /* The usable size is a property of the block: it does not change. */
        assert_int_equal(ABI(malloc_usable_size)(p), usable);
        ABI(free)(p);
    }
}

static void free_null_and_sized(void **state)
{
    (void)state;
    ABI(free)(NULL);
    ABI(free_sized)(NULL, opaque_size(0));
    ABI(free_sized)(NULL, opaque_size(100));
    ABI(free_aligned_sized)(NULL, opaque_size(64), opaque_size(100));

    const size_t sizes[] = {0, 1, 16, 100, 112, 4096, 100000, SMALL_MAX, SMALL_MAX + 1, MiB + 3};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        void *p = checked_malloc(sizes[i]);
        memset(p, 0x55, sizes[i]);
        ABI(free_sized)(p, opaque_size(sizes[i]));
        /* calloc's size is count * size. */
        p = ABI(calloc)(opaque_size(3), opaque_size(sizes[i]));
        assert_non_null(p);
        ABI(free_sized)(p, opaque_size(3 * sizes[i]));
    }
    for (size_t align = 1; align <= 2 * MiB; align <<= 2) {
        const size_t asizes[] = {1, align, 3 * align, 200000};
        for (size_t i = 0; i < sizeof(asizes) / sizeof(asizes[0]); i++) {
            void *p = ABI(aligned_alloc)(opaque_size(align), opaque_size(asizes[i]));
            assert_non_null(p);
            memset(p, 0x66, asizes[i]);
            ABI(free_aligned_sized)(p, opaque_size(align), opaque_size(asizes[i]));
        }
    }
}

/* ---- threads ---------------------------------------------------------------------------- */

enum { THREADS = 8, THREAD_OPS = 4000, THREAD_LIVE = 64 };

struct thread_job {
    unsigned id;
    unsigned failures;
};

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void *thread_main(void *arg)
{
    struct thread_job *job = arg;
    uint64_t rng = 0x9e3779b97f4a7c15u * (job->id + 1);
    void *live[THREAD_LIVE] = {0};
    size_t sizes[THREAD_LIVE] = {0};
    unsigned seeds[THREAD_LIVE] = {0};
    for (unsigned op = 0; op < THREAD_OPS; op++) {
        unsigned i = (unsigned)(xorshift(&rng) % THREAD_LIVE);
        if (live[i]) {
            if (check_fill(live[i], sizes[i], seeds[i]) != sizes[i])
                job->failures++;
            ABI(free)(live[i]);
            live[i] = NULL;
            continue;
        }
        uint64_t r = xorshift(&rng);
        size_t size = r % 100 == 0 ? (size_t)(r >> 8) % (512 * KiB) : (size_t)(r >> 8) % 2048;
        void *p = (r >> 40) % 4 == 0 ? ABI(calloc)(1, size) : ABI(malloc)(size);
        if (!p || !is_aligned(p, 16) || ABI(malloc_usable_size)(p) < size) {
            job->failures++;
            continue;
        }
        live[i] = p;
        sizes[i] = size;
        seeds[i] = job->id * THREAD_OPS + op;
        fill(p, size, seeds[i]);
    }
    for (unsigned i = 0; i < THREAD_LIVE; i++) {
        if (live[i] && check_fill(live[i], sizes[i], seeds[i]) != sizes[i])
            job->failures++;
        ABI(free)(live[i]);
    }
    return NULL;
}

static void threads_malloc_free(void **state)
{
    (void)state;
    pthread_t tids[THREADS];
    struct thread_job jobs[THREADS];
    for (unsigned t = 0; t < THREADS; t++) {
        jobs[t] = (struct thread_job){t, 0};
        assert_int_equal(pthread_create(&tids[t], NULL, thread_main, &jobs[t]), 0);
    }
    for (unsigned t = 0; t < THREADS; t++) {
        assert_int_equal(pthread_join(tids[t], NULL), 0);
        assert_int_equal(jobs[t].failures, 0);
    }
}

/* A thread's last allocations, in a thread-specific-data destructor: StarMalloc's own
 * destructor (its key is older, so it runs first) has taken the thread's cache away, so these
 * take the paths of a thread without a cache. Blocks from the thread's life are freed there
 * too; glibc calls the destructor again while it sets its value again (two rounds). */
struct exiting_thread {
    pthread_key_t key;
    void *kept[64]; /* allocated while the thread still had its cache */
    unsigned rounds;
    unsigned failures;
};

static void allocate_in_destructor(void *arg)
{
    struct exiting_thread *t = arg;
    void *live[64];
    for (unsigned i = 0; i < 64; i++) {
        size_t size = (size_t)16 << (i % 9); /* 16 B .. 4 KiB */
        live[i] = i % 2 ? ABI(calloc)(1, size) : ABI(malloc)(size);
        if (!live[i]) {
            t->failures++;
            continue;
        }
        fill(live[i], size, 1000 + i);
    }
    for (unsigned i = 0; i < 64; i++) {
        size_t size = (size_t)16 << (i % 9);
        if (live[i] && check_fill(live[i], size, 1000 + i) != size)
            t->failures++;
        ABI(free)(live[i]);
        if (t->kept[i] && check_fill(t->kept[i], 100 + i, i) != 100 + i)
            t->failures++;
        ABI(free)(t->kept[i]);
        t->kept[i] = NULL;
    }
    void *large = ABI(realloc)(ABI(malloc)(100), 256 * KiB);
    if (!large)
        t->failures++;
    ABI(free)(large);
    if (++t->rounds < 2 && pthread_setspecific(t->key, t) != 0)
        t->failures++;
}

static void *exiting_thread_main(void *arg)
{
    struct exiting_thread *t = arg;
    for (unsigned i = 0; i < 64; i++) {
        t->kept[i] = ABI(malloc)(100 + i);
        if (t->kept[i])
            fill(t->kept[i], 100 + i, i);
    }
    if (pthread_setspecific(t->key, t) != 0)
        t->failures++;
    return NULL;
}

static void allocation_after_thread_cache_is_gone(void **state)
{
    (void)state;
    ABI(free)(checked_malloc(16)); /* the allocator's key exists before the test's */
    struct exiting_thread t = {0};
    assert_int_equal(pthread_key_create(&t.key, allocate_in_destructor), 0);
    for (unsigned round = 0; round < 8; round++) {
        t.rounds = 0;
        pthread_t tid;
        assert_int_equal(pthread_create(&tid, NULL, exiting_thread_main, &t), 0);
        assert_int_equal(pthread_join(tid, NULL), 0);
        assert_int_equal(t.rounds, 2);
        assert_int_equal(t.failures, 0);
    }
    assert_int_equal(pthread_key_delete(t.key), 0);
}

/* ---- the override ----------------------------------------------------------------------- */

#ifndef SM_ABI_PREFIXED
static void override_in_effect(void **state)
{
    (void)state;
    /* starmalloc_malloc_usable_size aborts on a pointer StarMalloc did not hand out, and a
     * block from malloc has the usable size of StarMalloc's (112 with the default table and
     * no canary). */
    void *ref = starmalloc_malloc(opaque_size(100));
    assert_non_null(ref);
    size_t usable = starmalloc_malloc_usable_size(ref);
    assert_true(usable >= 100 && usable <= 128);
    void *p = malloc(opaque_size(100));
    assert_non_null(p);
    assert_int_equal(starmalloc_malloc_usable_size(p), usable);
    assert_int_equal(malloc_usable_size(p), usable);
    free(p);

    /* Allocations made inside libc go through StarMalloc as well. */
    char *s = strdup("override"); /* 9 bytes */
    assert_non_null(s);
    assert_int_equal(starmalloc_malloc_usable_size(s), malloc_usable_size(s));
    assert_true(starmalloc_malloc_usable_size(s) >= 9);
    free(s);

    p = calloc(opaque_size(10), opaque_size(10));
    assert_int_equal(starmalloc_malloc_usable_size(p), usable);
    starmalloc_free(ref);
    p = realloc(p, opaque_size(1000));
    assert_true(starmalloc_malloc_usable_size(p) >= 1000);
    free(p);
}

static void override_mixed_free(void **state)
{
    (void)state;
    const size_t sizes[] = {0, 100, 5000, 100000, MiB};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        void *a = malloc(opaque_size(sizes[i]));
        void *b = starmalloc_malloc(opaque_size(sizes[i]));
        assert_non_null(a);
        assert_non_null(b);
        assert_int_equal(starmalloc_malloc_usable_size(a), malloc_usable_size(a));
        assert_int_equal(malloc_usable_size(b), starmalloc_malloc_usable_size(b));
        starmalloc_free(a);
        free(b);
        a = starmalloc_realloc(malloc(opaque_size(sizes[i])), opaque_size(sizes[i] + 50));
        b = realloc(starmalloc_malloc(opaque_size(sizes[i])), opaque_size(sizes[i] + 50));
        assert_non_null(a);
        assert_non_null(b);
        free(a);
        starmalloc_free(b);
    }
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
#ifndef SM_ABI_PREFIXED
        cmocka_unit_test(override_in_effect),
        cmocka_unit_test(override_mixed_free),
#endif
        cmocka_unit_test(malloc_every_small_size),
        cmocka_unit_test(malloc_large_sizes),
        cmocka_unit_test(large_objects_ask_for_huge_pages),
        cmocka_unit_test(trim_gives_back_freed_large_pages),
        cmocka_unit_test(freed_large_pages_stay_under_peak_live_bytes),
        cmocka_unit_test(large_pages_follow_what_the_program_writes),
        cmocka_unit_test(kept_pages_do_not_count_as_written),
        cmocka_unit_test(large_objects_written_whole_fill_their_huge_pages),
        cmocka_unit_test(realloc_growth_ends_on_a_huge_page),
        cmocka_unit_test(reused_mapping_holds_at_most_twice_the_request),
        cmocka_unit_test(request_beyond_memory_fails),
        cmocka_unit_test(large_growth_follows_what_the_program_writes),
        cmocka_unit_test(large_move_takes_the_pages_along),
        cmocka_unit_test(large_growth_populates_no_huge_buffer),
        cmocka_unit_test(realloc_out_of_small_classes_leaves_room),
        cmocka_unit_test(freed_large_objects_in_locked_memory),
        cmocka_unit_test(emptied_slabs_go_back_after_decay),
        cmocka_unit_test(malloc_zero_distinct),
        cmocka_unit_test(malloc_too_large),
        cmocka_unit_test(calloc_zeroed),
        cmocka_unit_test(calloc_zeroed_after_reuse),
        cmocka_unit_test(calloc_overflow),
        cmocka_unit_test(calloc_zero_count),
        cmocka_unit_test(realloc_null_is_malloc),
        cmocka_unit_test(realloc_keeps_content),
        cmocka_unit_test(realloc_in_place),
        cmocka_unit_test(realloc_grows_large_blocks_in_place),
        cmocka_unit_test(realloc_shrinks_large_blocks_in_place),
        cmocka_unit_test(realloc_zero_frees),
        cmocka_unit_test(realloc_failure_keeps_block),
        cmocka_unit_test(reallocarray_works),
        cmocka_unit_test(reallocarray_overflow),
        cmocka_unit_test(aligned_alloc_powers_of_two),
        cmocka_unit_test(aligned_alloc_bad_alignment),
        cmocka_unit_test(aligned_alloc_huge_alignment),
        cmocka_unit_test(realloc_aligned_blocks),
        cmocka_unit_test(posix_memalign_works),
        cmocka_unit_test(posix_memalign_errors),
        cmocka_unit_test(memalign_works),
        cmocka_unit_test(valloc_pvalloc),
        cmocka_unit_test(usable_size_writable),
        cmocka_unit_test(free_null_and_sized),
        cmocka_unit_test(threads_malloc_free),
        cmocka_unit_test(allocation_after_thread_cache_is_gone),
    };
#ifdef SM_ABI_PREFIXED
    return cmocka_run_group_tests_name("abi.prefixed", tests, NULL, NULL);
#else
    return cmocka_run_group_tests_name("abi.override", tests, NULL, NULL);
#endif
}

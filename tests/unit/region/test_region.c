/* Unit tests for the virtual-memory layer (libs/region): reservations are inaccessible until
 * committed, decommitted pages come back zeroed, protected pages keep their content, and
 * reserve_shrinking adapts to an address-space limit.
 *
 * Whether an access faults is observed in a forked child that touches the memory and must
 * die by SIGSEGV. Residency is observed with mincore(2). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "starmalloc/config.h"
#include "starmalloc/region.h"
#include "child.h"
#include "vma_flags.h"

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)

enum { PAGE = SM_PAGE_SIZE };

/* ---- helpers ---------------------------------------------------------------------------- */

/* A failed check in a child: report the line on stderr and exit with status 1. */
#define CHILD_CHECK(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: child check failed: %s\n", __FILE__, __LINE__, #cond);         \
            _exit(1);                                                                              \
        }                                                                                          \
    } while (0)

static void assert_exited_cleanly(int status)
{
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* Whether reading (or writing) the byte at p in a child process kills it by SIGSEGV. */
static bool access_faults(void *p, bool write)
{
    pid_t pid = fork();
    if (pid == 0) {
        child_setup();
        volatile char *byte = p;
        if (write)
            *byte = 1;
        else
            (void)*byte;
        _exit(0);
    }
    int status = wait_child(pid);
    if (WIFSIGNALED(status)) {
        assert_int_equal(WTERMSIG(status), SIGSEGV);
        return true;
    }
    assert_exited_cleanly(status);
    return false;
}

/* Whether no byte of [p, p + bytes) can be read or written. Samples first, middle, last page. */
static bool range_faults(char *p, size_t bytes)
{
    char *probes[] = {p, p + (bytes / 2 / PAGE) * PAGE, p + bytes - 1};
    for (size_t i = 0; i < 3; i++) {
        if (!access_faults(probes[i], false) || !access_faults(probes[i], true))
            return false;
    }
    return true;
}

/* How many pages of [p, p + bytes) are resident; -1 when part of the range is unmapped. */
static long resident_pages(void *p, size_t bytes)
{
    unsigned char vec[2048];
    size_t pages = bytes / PAGE;
    assert_true(pages <= sizeof(vec));
    if (mincore(p, bytes, vec) != 0) {
        assert_int_equal(errno, ENOMEM);
        return -1;
    }
    long resident = 0;
    for (size_t i = 0; i < pages; i++)
        resident += vec[i] & 1;
    return resident;
}

static bool all_bytes_equal(const char *p, size_t bytes, char value)
{
    for (size_t i = 0; i < bytes; i++) {
        if (p[i] != value)
            return false;
    }
    return true;
}

static char pattern_byte(size_t i)
{
    return (char)(i * 7 + 3);
}

static void fill_pattern(char *p, size_t bytes)
{
    for (size_t i = 0; i < bytes; i++)
        p[i] = pattern_byte(i);
}

/* A reserved range of `bytes` bytes, committed and filled with fill_pattern. */
static char *committed_with_pattern(size_t bytes)
{
    char *p = sm_region_reserve(bytes, PAGE);
    assert_non_null(p);
    assert_true(sm_region_commit(p, bytes));
    fill_pattern(p, bytes);
    return p;
}

/* Whether p[from, to) still holds what fill_pattern(p, ...) wrote there. */
static bool pattern_intact(const char *p, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        if (p[i] != pattern_byte(i))
            return false;
    }
    return true;
}

/* The process's virtual size in bytes, from /proc/self/status. */
static size_t virtual_size(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    assert_non_null(f);
    char line[256];
    size_t kib = 0;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "VmSize: %zu kB", &kib) == 1)
            break;
    }
    fclose(f);
    assert_true(kib > 0);
    return kib * KiB;
}

/* ---- reserve, commit, decommit, protect, release ---------------------------------------- */

static void test_reserve_is_aligned_and_inaccessible(void **state)
{
    (void)state;
    const size_t aligns[] = {PAGE, 64 * KiB, 1 * MiB, 2 * MiB, 1 * GiB};
    for (size_t i = 0; i < sizeof(aligns) / sizeof(aligns[0]); i++) {
        size_t bytes = 16 * PAGE;
        char *p = sm_region_reserve(bytes, aligns[i]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % aligns[i], 0);
        /* Mapped (mincore answers), nothing resident, and every access faults. */
        assert_int_equal(resident_pages(p, bytes), 0);
        assert_true(range_faults(p, bytes));
        assert_true(sm_region_release(p, bytes));
        assert_int_equal(resident_pages(p, bytes), -1); /* released: no mapping there */
    }
}

static void test_reserve_takes_address_space_only(void **state)
{
    (void)state;
    /* 64 GiB is more than this machine commits, but as address space it is granted. */
    size_t bytes = 64 * GiB;
    if (sm_region_address_space_limit() < 2 * bytes)
        skip(); /* this environment caps the address space */
    char *p = sm_region_reserve(bytes, PAGE);
    assert_non_null(p);
    assert_true(access_faults(p + bytes - 1, false));
    assert_true(sm_region_release(p, bytes));
}

static void test_commit_makes_pages_readable_and_writable(void **state)
{
    (void)state;
    size_t bytes = 16 * PAGE;
    char *p = sm_region_reserve(bytes, PAGE);
    assert_non_null(p);
    /* Commit the middle: the rest stays inaccessible. */
    assert_true(sm_region_commit(p + 4 * PAGE, 8 * PAGE));
    assert_true(all_bytes_equal(p + 4 * PAGE, 8 * PAGE, 0));
    fill_pattern(p + 4 * PAGE, 8 * PAGE);
    assert_true(pattern_intact(p + 4 * PAGE, 0, 8 * PAGE));
    assert_int_equal(resident_pages(p + 4 * PAGE, 8 * PAGE), 8);
    assert_true(access_faults(p + 4 * PAGE - 1, false));
    assert_true(access_faults(p + 12 * PAGE, false));
    assert_false(access_faults(p + 4 * PAGE, true));
    assert_false(access_faults(p + 12 * PAGE - 1, true));
    assert_true(sm_region_unmap(p, bytes, 8 * PAGE));
}

static void test_decommit_drops_content_and_access(void **state)
{
    (void)state;
    size_t bytes = 8 * PAGE;
    char *p = committed_with_pattern(bytes);

    assert_true(sm_region_decommit(p, bytes));
    assert_true(range_faults(p, bytes));
    assert_int_equal(resident_pages(p, bytes), 0); /* the memory went back to the kernel */

    /* Committed again, the pages are fresh zero pages. */
    assert_true(sm_region_commit(p, bytes));
    assert_true(all_bytes_equal(p, bytes, 0));
    assert_true(sm_region_unmap(p, bytes, bytes));
}

static void test_decommit_of_part_leaves_the_rest(void **state)
{
    (void)state;
    size_t bytes = 8 * PAGE;
    char *p = committed_with_pattern(bytes);
    assert_true(sm_region_decommit(p + 2 * PAGE, 2 * PAGE));
    assert_true(range_faults(p + 2 * PAGE, 2 * PAGE));
    assert_true(pattern_intact(p, 0, 2 * PAGE));
    assert_true(pattern_intact(p, 4 * PAGE, bytes));
    assert_true(sm_region_unmap(p, bytes, 6 * PAGE));
}

/* ---- purge many ------------------------------------------------------------------------- */

enum { PURGE_SLOTS = 150, PURGE_RANGES = PURGE_SLOTS / 3 * 2, RANGE = 2 * PAGE };
static const size_t range = RANGE, bytes_for_many = PURGE_SLOTS * RANGE;

/* A committed mapping of PURGE_SLOTS ranges of 2 pages, on 4 KiB pages, never touched;
 * ranges[] gets two of every three ranges, more than one batch. NULL when the kernel
 * refuses. */
static char *untouched_mapping_for_many(void *ranges[PURGE_RANGES])
{
    char *p = sm_region_reserve(bytes_for_many, PAGE);
    if (!p || !sm_region_commit(p, bytes_for_many))
        return NULL;
    (void)madvise(p, bytes_for_many, MADV_NOHUGEPAGE);
    for (size_t i = 0, n = 0; i < PURGE_SLOTS; i++)
        if (i % 3 != 1)
            ranges[n++] = p + i * range;
    return p;
}

/* The same mapping with every byte 0x5a (the ranges not in ranges[] keep it). */
static char *mapping_for_many(void *ranges[PURGE_RANGES])
{
    char *p = untouched_mapping_for_many(ranges);
    if (p)
        memset(p, 0x5a, bytes_for_many);
    return p;
}

/* Purges two of every three 2-page ranges of a committed, touched mapping (more ranges than
 * one batch holds) and checks the result: the purged pages are gone and read as zero, the
 * others keep their content, the committed count drops by the purged bytes. Returns false
 * (in a child: exits 1) at the first difference. */
static bool purge_many_purges_exactly_those_ranges(void)
{
    void *ranges[PURGE_RANGES];
    char *p = mapping_for_many(ranges);
    if (!p)
        return false;
    const size_t n = PURGE_RANGES;
    size_t before = sm_region_committed_bytes();
    if (sm_region_purge_many(ranges, n, range) != n)
        return false;
    if (sm_region_committed_bytes() != before - n * range)
        return false;
    for (size_t i = 0; i < PURGE_SLOTS; i++) {
        char *r = p + i * range;
        bool purged = i % 3 != 1;
        if (resident_pages(r, range) != (purged ? 0 : 2))
            return false;
        if (r[0] != (purged ? 0 : 0x5a) || r[range - 1] != (purged ? 0 : 0x5a))
            return false;
    }
    return sm_region_unmap(p, bytes_for_many, bytes_for_many - n * range);
}

static void test_purge_many_gives_back_exactly_those_ranges(void **state)
{
    (void)state;
    assert_true(purge_many_purges_exactly_those_ranges());
}

/* The same where process_madvise(2) does not exist (older kernels, seccomp filters): in a
 * child whose seccomp filter makes it fail with ENOSYS, the ranges are purged one by one. */
static void test_purge_many_works_without_process_madvise(void **state)
{
    (void)state;
#ifdef SYS_process_madvise
    pid_t pid = fork();
    if (pid == 0) {
        child_setup();
        struct sock_filter filter[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_process_madvise, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog program = {sizeof(filter) / sizeof(filter[0]), filter};
        CHILD_CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0);
        CHILD_CHECK(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) == 0);
        errno = 0;
        CHILD_CHECK(syscall(SYS_process_madvise, -10000, NULL, 0, MADV_DONTNEED, 0) == -1 &&
                    errno == ENOSYS);
        CHILD_CHECK(purge_many_purges_exactly_those_ranges());
        _exit(0);
    }
    assert_exited_cleanly(wait_child(pid));
#else
    skip(); /* no such system call in these headers: sm_region_purge_many never tries it */
#endif
}

static void test_guard_many_and_unguard_many(void **state)
{
    (void)state;
    void *ranges[PURGE_RANGES];
    char *p = mapping_for_many(ranges);
    assert_non_null(p);
    const size_t n = PURGE_RANGES;
    size_t before = sm_region_committed_bytes();
    assert_int_equal(sm_region_guard_many(ranges, n, range), n);
    assert_int_equal(sm_region_committed_bytes(), before - n * range);
    for (size_t i = 0; i < PURGE_SLOTS; i++) {
        char *r = p + i * range;
        if (i % 3 == 1) {
            assert_int_equal(resident_pages(r, range), 2);
            assert_true(all_bytes_equal(r, range, 0x5a));
        } else if (i % 10 == 0) { /* a sample: each probe forks twice */
            assert_true(range_faults(r, range));
        }
    }
    /* Back in one batch: counted, accessible, zero; populated: resident again. */
    assert_int_equal(sm_region_unguard_many(ranges, n, range), n);
    assert_int_equal(sm_region_committed_bytes(), before);
    sm_region_populate_many(ranges, n, range);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(resident_pages(ranges[i], range), 2);
        assert_true(all_bytes_equal(ranges[i], range, 0));
        memset(ranges[i], 0x33, range);
    }
    assert_true(sm_region_unmap(p, bytes_for_many, bytes_for_many));
}

/* Ranges of a committed mapping that were never touched (fresh slabs' guard slabs): guarded
 * in batches (more ranges than one batch), counted, and every access to them traps, while
 * the ranges between stay usable. */
static void test_guard_untouched_many(void **state)
{
    (void)state;
    void *ranges[PURGE_RANGES];
    char *p = untouched_mapping_for_many(ranges);
    assert_non_null(p);
    const size_t n = PURGE_RANGES;
    size_t before = sm_region_committed_bytes();
    assert_int_equal(sm_region_guard_untouched_many(ranges, n, range), n);
    assert_int_equal(sm_region_committed_bytes(), before - n * range);
    for (size_t i = 0; i < PURGE_SLOTS; i++) {
        char *r = p + i * range;
        if (i % 3 == 1) {
            memset(r, 0x44, range);
            assert_true(all_bytes_equal(r, range, 0x44));
        } else if (i % 10 == 0) { /* a sample: each probe forks twice */
            assert_true(range_faults(r, range));
        }
    }
    assert_true(sm_region_unmap(p, bytes_for_many, bytes_for_many - n * range));
}

/* ---- clear ------------------------------------------------------------------------------ */

static size_t bytes_zeroed_by_clear;

static void zero_and_count(void *addr, size_t bytes)
{
    memset(addr, 0, bytes);
    bytes_zeroed_by_clear += bytes;
}

/* Three of clear's mincore windows (512 pages each), committed, touched here and there: at
 * the start, alone, on both sides of a window boundary, at the end. */
enum { SPARSE_PAGES = 1100 };
static const size_t sparse_touched[] = {0, 1, 2, 100, 510, 511, 512, 513, 1024, SPARSE_PAGES - 1};
enum { SPARSE_TOUCHED = sizeof(sparse_touched) / sizeof(sparse_touched[0]) };

static char *sparsely_touched_mapping(void)
{
    size_t bytes = SPARSE_PAGES * PAGE;
    char *p = sm_region_reserve(bytes, PAGE);
    assert_non_null(p);
    assert_true(sm_region_commit(p, bytes));
    (void)madvise(p, bytes, MADV_NOHUGEPAGE); /* one touch = one page, whatever THP says */
    for (size_t i = 0; i < SPARSE_TOUCHED; i++)
        fill_pattern(p + sparse_touched[i] * PAGE, PAGE);
    assert_int_equal(resident_pages(p, bytes), SPARSE_TOUCHED);
    return p;
}

static void test_clear_zeroes_resident_pages_and_faults_in_no_other(void **state)
{
    (void)state;
    size_t bytes = SPARSE_PAGES * PAGE;
    char *p = sparsely_touched_mapping();
    bytes_zeroed_by_clear = 0;
    sm_region_clear(p, bytes, zero_and_count);
    assert_int_equal(bytes_zeroed_by_clear, SPARSE_TOUCHED * PAGE); /* the resident pages only */
    assert_int_equal(resident_pages(p, bytes), SPARSE_TOUCHED);     /* nothing else faulted in */
    assert_true(all_bytes_equal(p, bytes, 0));
    assert_true(sm_region_unmap(p, bytes, bytes));
}

static void test_resident_bytes_counts_touched_pages(void **state)
{
    (void)state;
    size_t bytes = SPARSE_PAGES * PAGE;
    char *p = sparsely_touched_mapping();
    assert_int_equal(sm_region_resident_bytes(p, bytes), SPARSE_TOUCHED * PAGE);
    assert_int_equal(sm_region_resident_bytes(p + PAGE, 2 * PAGE), 2 * PAGE); /* pages 1, 2 */
    assert_int_equal(sm_region_resident_bytes(p + 3 * PAGE, 97 * PAGE), 0);
    /* Where mincore refuses (not on a page boundary, or not mapped): SIZE_MAX. */
    assert_int_equal(sm_region_resident_bytes(p + 16, PAGE), SIZE_MAX);
    sm_region_populate(p, bytes);
    assert_int_equal(sm_region_resident_bytes(p, bytes), bytes);
    assert_true(sm_region_unmap(p, bytes, bytes));
    assert_int_equal(sm_region_resident_bytes(p, bytes), SIZE_MAX);
}

static void test_clear_zeroes_whole_what_mincore_refuses(void **state)
{
    (void)state;
    /* A range mincore refuses (it does not start on a page) is zeroed whole. */
    size_t bytes = 8 * PAGE;
    char *p = committed_with_pattern(bytes);
    bytes_zeroed_by_clear = 0;
    sm_region_clear(p + 16, bytes - 16, zero_and_count);
    assert_int_equal(bytes_zeroed_by_clear, bytes - 16);
    assert_true(pattern_intact(p, 0, 16));
    assert_true(all_bytes_equal(p + 16, bytes - 16, 0));
    assert_true(sm_region_unmap(p, bytes, bytes));
}

static void test_protect_none_keeps_content(void **state)
{
    (void)state;
    size_t bytes = 8 * PAGE;
    char *p = committed_with_pattern(bytes);

    assert_true(sm_region_protect_none(p, bytes));
    assert_true(range_faults(p, bytes));
    assert_int_equal(resident_pages(p, bytes), 8); /* unlike decommit, the pages stay */

    /* Made accessible again by a commit, the content is still there. */
    assert_true(sm_region_commit(p, bytes));
    assert_true(pattern_intact(p, 0, bytes));
    /* The accounting counted that second commit of committed pages again (the allocator
     * never does this): hand back both counts. */
    assert_true(sm_region_unmap(p, bytes, 2 * bytes));
}

/* ---- guard, unguard --------------------------------------------------------------------- */

/* An unguarded range reads as zero and takes writes. */
static void assert_zero_and_writable(char *p, size_t bytes)
{
    assert_true(all_bytes_equal(p, bytes, 0));
    memset(p, 'w', bytes);
    assert_true(all_bytes_equal(p, bytes, 'w'));
}

static void test_guard_markers_match_the_kernel(void **state)
{
    (void)state;
    bool expected = guard_markers_expected(SM_GUARD_MARKERS);
    printf("guard markers: %s (built %s, kernel 6.13+: %s, overcommit mode %d)\n",
           sm_region_guard_markers() ? "used" : "not used", SM_GUARD_MARKERS ? "with" : "without",
           kernel_at_least(6, 13) ? "yes" : "no", overcommit_mode());
    assert_int_equal(sm_region_guard_markers(), expected);
}

static void test_guard_drops_content_and_access(void **state)
{
    (void)state;
    size_t bytes = 8 * PAGE;
    char *p = committed_with_pattern(bytes);
    size_t before = sm_region_committed_bytes();

    assert_true(sm_region_guard(p + 2 * PAGE, 3 * PAGE));
    assert_int_equal(sm_region_committed_bytes(), before - 3 * PAGE);
    /* Every access traps, also in a forked child (range_faults forks). */
    assert_true(range_faults(p + 2 * PAGE, 3 * PAGE));
    assert_int_equal(resident_pages(p + 2 * PAGE, 3 * PAGE), 0); /* the memory went back */
    assert_true(pattern_intact(p, 0, 2 * PAGE));
    assert_true(pattern_intact(p, 5 * PAGE, bytes));
    /* With markers the mapping stays whole; without, the range became a mapping of its own. */
    assert_int_equal(mappings_overlapping(p, bytes), sm_region_guard_markers() ? 1 : 3);

    assert_true(sm_region_unguard(p + 2 * PAGE, 3 * PAGE));
    assert_int_equal(sm_region_committed_bytes(), before);
    assert_zero_and_writable(p + 2 * PAGE, 3 * PAGE);
    assert_true(sm_region_unmap(p, bytes, bytes));
}

/* The kernel refuses markers in a locked mapping: the guard then falls back to a PROT_NONE
 * mapping, and unguarding it must make it writable again. */
static void test_guard_falls_back_in_a_locked_mapping(void **state)
{
    (void)state;
    size_t bytes = 4 * PAGE;
    char *p = sm_region_map(bytes, PAGE);
    assert_non_null(p);
    bool locked = mlock(p, bytes) == 0;
    if (!locked) /* RLIMIT_MEMLOCK below 16 KiB: say so, then check the plain path once more */
        printf("mlock refused (%s): the fallback is not exercised here\n", strerror(errno));
    fill_pattern(p, bytes);
    assert_true(sm_region_guard(p + PAGE, PAGE));
    assert_true(access_faults(p + PAGE, false));
    if (locked) /* the fallback: a PROT_NONE mapping of its own */
        assert_int_equal(mappings_overlapping(p, bytes), 3);
    assert_true(pattern_intact(p, 0, PAGE));
    assert_true(pattern_intact(p, 2 * PAGE, bytes));
    assert_true(sm_region_unguard(p + PAGE, PAGE));
    assert_zero_and_writable(p + PAGE, PAGE);
    assert_true(sm_region_unmap(p, bytes, bytes));
}

static void test_unmap_gives_the_range_back(void **state)
{
    (void)state;
    size_t bytes = 8 * PAGE;
    char *p = sm_region_reserve(bytes, PAGE);
    assert_non_null(p);
    assert_true(sm_region_commit(p, 4 * PAGE));
    assert_true(sm_region_unmap(p, bytes, 4 * PAGE));
    assert_int_equal(resident_pages(p, bytes), -1); /* no mapping there any more */
    assert_true(access_faults(p, false));
    /* Nothing is mapped there now, so there is nothing to commit. */
    assert_false(sm_region_commit(p, PAGE));
}

static void test_failures_are_reported(void **state)
{
    (void)state;
    char *p = sm_region_reserve(4 * PAGE, PAGE);
    assert_non_null(p);
    /* Addresses must be page-aligned: the kernel refuses, and the functions say so. */
    assert_false(sm_region_commit(p + 1, PAGE));
    assert_false(sm_region_protect_none(p + 1, PAGE));
    assert_false(sm_region_release(p + 1, PAGE));
    assert_false(sm_region_decommit(p + 1, PAGE));
    /* Refused calls changed nothing. */
    assert_true(range_faults(p, 4 * PAGE));
    assert_true(sm_region_release(p, 4 * PAGE));
    /* Sizes the address space cannot hold. */
    assert_null(sm_region_reserve(SIZE_MAX - PAGE + 1, PAGE));
    assert_null(sm_region_map(SIZE_MAX - PAGE + 1, PAGE));
}

/* ---- map -------------------------------------------------------------------------------- */

static void test_map_gives_zeroed_aligned_writable_memory(void **state)
{
    (void)state;
    const size_t sizes[] = {PAGE, 3 * PAGE, 64 * PAGE};
    for (size_t align = PAGE; align <= 1 * MiB; align *= 2) {
        for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
            char *p = sm_region_map(sizes[s], align);
            assert_non_null(p);
            assert_int_equal((uintptr_t)p % align, 0);
            assert_true(all_bytes_equal(p, sizes[s], 0));
            fill_pattern(p, sizes[s]);
            assert_true(pattern_intact(p, 0, sizes[s]));
            assert_true(sm_region_unmap(p, sizes[s], sizes[s]));
        }
    }
}

static void test_aligned_calls_leave_no_slack_behind(void **state)
{
    (void)state;
    /* An aligned mapping over-maps by align - page and must give the excess back: a thousand
     * map/release and reserve/release rounds leave the virtual size where it was (a leaked
     * slack would add about 1 GiB per round). */
    size_t before = virtual_size();
    for (int i = 0; i < 1000; i++) {
        char *p = sm_region_map(4 * PAGE, 1 * MiB);
        assert_non_null(p);
        assert_true(sm_region_unmap(p, 4 * PAGE, 4 * PAGE));
        p = sm_region_reserve(4 * PAGE, 1 * GiB);
        assert_non_null(p);
        assert_true(sm_region_release(p, 4 * PAGE));
    }
    assert_true(virtual_size() < before + 64 * MiB);
}

/* ---- accounting ------------------------------------------------------------------------- */

/* The advice covers the whole of a range that holds an aligned 2 MiB, its unaligned ends
 * too (one mapping, which mremap can move), and nothing of a range that holds none; the pages
 * stay usable. */
static void test_advise_huge_marks_a_range_with_huge_pages(void **state)
{
    (void)state;
    const size_t huge = SM_REGION_HUGE_PAGE_SIZE;
    char *p = sm_region_reserve(4 * huge, huge);
    assert_non_null(p);
    assert_true(sm_region_commit(p, 4 * huge));
    sm_region_advise_huge(p + PAGE, 3 * huge - 2 * PAGE); /* holds [p + huge, p + 2 huge) */
    sm_region_advise_huge(p + 3 * huge, huge - PAGE);     /* no aligned 2 MiB inside */
    bool thp = kernel_has_thp();
    assert_false(vma_has_flag(p, "hg"));
    assert_int_equal(vma_has_flag(p + PAGE, "hg"), thp);
    assert_int_equal(vma_has_flag(p + huge, "hg"), thp);
    assert_int_equal(vma_has_flag(p + 3 * huge - 2 * PAGE, "hg"), thp);
    assert_false(vma_has_flag(p + 3 * huge - PAGE, "hg"));
    assert_false(vma_has_flag(p + 3 * huge, "hg"));
    if (!thp)
        print_message("no transparent huge pages in this kernel: the advice must be a no-op\n");
    memset(p, 0x5a, 4 * huge);
    assert_int_equal(p[3 * huge + 7], 0x5a);
    assert_true(sm_region_unmap(p, 4 * huge, 4 * huge));
}

/* sm_region_huge_pages_enabled agrees with the system's THP mode and sees a process that
 * disabled THP (checked in a child first: the answer is read once per process). */
static void test_huge_pages_enabled_follows_the_system(void **state)
{
    (void)state;
    pid_t pid = fork();
    if (pid == 0) {
        child_setup();
        bool disabled = prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0;
        _exit(disabled && sm_region_huge_pages_enabled() ? 1 : 0);
    }
    int status = wait_child(pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(sm_region_huge_pages_enabled(), thp_usable());
    assert_int_equal(sm_region_huge_pages_enabled(), thp_usable()); /* the cached answer */
}

static void test_committed_bytes_follow_commit_and_decommit(void **state)
{
    (void)state;
    size_t bytes = 16 * PAGE;
    char *p = sm_region_reserve(bytes, PAGE);
    assert_non_null(p);
    size_t base = sm_region_committed_bytes(); /* other tests' leftovers: count from here */
    assert_int_equal(sm_region_committed_bytes(), base); /* a reservation is not committed */

    assert_true(sm_region_commit(p, 8 * PAGE));
    assert_int_equal(sm_region_committed_bytes(), base + 8 * PAGE);
    assert_true(sm_region_commit(p + 8 * PAGE, 2 * PAGE));
    assert_int_equal(sm_region_committed_bytes(), base + 10 * PAGE);

    /* A refused commit counts nothing. */
    assert_false(sm_region_commit(p + 1, PAGE));
    assert_int_equal(sm_region_committed_bytes(), base + 10 * PAGE);

    /* Protecting keeps the pages: still committed. */
    assert_true(sm_region_protect_none(p + 8 * PAGE, 2 * PAGE));
    assert_int_equal(sm_region_committed_bytes(), base + 10 * PAGE);

    assert_true(sm_region_decommit(p, 8 * PAGE));
    assert_int_equal(sm_region_committed_bytes(), base + 2 * PAGE);
    assert_true(sm_region_decommit(p + 8 * PAGE, 2 * PAGE));
    assert_int_equal(sm_region_committed_bytes(), base);

    /* Releasing a reservation changes nothing. */
    assert_true(sm_region_release(p, bytes));
    assert_int_equal(sm_region_committed_bytes(), base);
}

static void test_committed_bytes_follow_map_and_unmap(void **state)
{
    (void)state;
    size_t base = sm_region_committed_bytes();
    char *p = sm_region_map(6 * PAGE, 64 * KiB);
    assert_non_null(p);
    assert_int_equal(sm_region_committed_bytes(), base + 6 * PAGE);

    /* A mapping whose first and last pages were made guards: 4 pages remain committed. */
    assert_true(sm_region_protect_none(p, PAGE));
    assert_true(sm_region_protect_none(p + 5 * PAGE, PAGE));
    assert_true(sm_region_decommit(p, PAGE));
    assert_true(sm_region_decommit(p + 5 * PAGE, PAGE));
    assert_int_equal(sm_region_committed_bytes(), base + 4 * PAGE);
    assert_true(sm_region_unmap(p, 6 * PAGE, 4 * PAGE));
    assert_int_equal(sm_region_committed_bytes(), base);

    /* A failed unmap counts nothing. */
    char *q = sm_region_map(PAGE, PAGE);
    assert_non_null(q);
    assert_false(sm_region_unmap(q + 1, PAGE, PAGE));
    assert_int_equal(sm_region_committed_bytes(), base + PAGE);
    assert_true(sm_region_unmap(q, PAGE, PAGE));
    assert_int_equal(sm_region_committed_bytes(), base);
}

static void test_peak_committed_bytes_is_the_high_water_mark(void **state)
{
    (void)state;
    size_t base = sm_region_committed_bytes();
    size_t peak = sm_region_peak_committed_bytes();
    assert_true(peak >= base);

    /* Go past the old peak: the peak follows. */
    size_t bytes = peak - base + 32 * PAGE;
    char *p = sm_region_reserve(bytes, PAGE);
    assert_non_null(p);
    assert_true(sm_region_commit(p, bytes));
    assert_int_equal(sm_region_peak_committed_bytes(), base + bytes);

    /* Coming back down leaves the peak where it was. */
    assert_true(sm_region_decommit(p, bytes));
    assert_int_equal(sm_region_committed_bytes(), base);
    assert_int_equal(sm_region_peak_committed_bytes(), base + bytes);

    /* Below the peak, it does not move. */
    assert_true(sm_region_commit(p, PAGE));
    assert_int_equal(sm_region_peak_committed_bytes(), base + bytes);
    assert_true(sm_region_decommit(p, PAGE));
    assert_true(sm_region_release(p, bytes));
}

/* ---- sizes and limits ------------------------------------------------------------------- */

static void test_kernel_page_size(void **state)
{
    (void)state;
    assert_int_equal(sm_region_kernel_page_size(), (size_t)sysconf(_SC_PAGESIZE));
}

static void test_address_space_limit_matches_getrlimit(void **state)
{
    (void)state;
    struct rlimit limit;
    assert_int_equal(getrlimit(RLIMIT_AS, &limit), 0);
    if (limit.rlim_cur == RLIM_INFINITY)
        assert_int_equal(sm_region_address_space_limit(), SIZE_MAX);
    else
        assert_int_equal(sm_region_address_space_limit(), (size_t)limit.rlim_cur);
}

/* The RLIMIT_AS the reserve_shrinking tests run under (in a child). */
#define LOW_LIMIT (256 * MiB)

static void lower_address_space_limit(void)
{
    struct rlimit limit;
    CHILD_CHECK(getrlimit(RLIMIT_AS, &limit) == 0);
    limit.rlim_cur = LOW_LIMIT;
    CHILD_CHECK(setrlimit(RLIMIT_AS, &limit) == 0);
    CHILD_CHECK(sm_region_address_space_limit() == LOW_LIMIT);
}

static void test_reserve_shrinking_halves_under_a_low_limit(void **state)
{
    (void)state;
    pid_t pid = fork();
    if (pid == 0) {
        child_setup();
        lower_address_space_limit();
        size_t want = 64 * GiB;
        CHILD_CHECK(sm_region_reserve(want, PAGE) == NULL); /* the full size is refused */

        size_t bytes = want;
        char *p = sm_region_reserve_shrinking(&bytes, 1 * MiB, PAGE);
        CHILD_CHECK(p != NULL);
        CHILD_CHECK(bytes >= 1 * MiB && bytes < LOW_LIMIT);
        size_t halved = want;
        while (halved > bytes)
            halved /= 2;
        CHILD_CHECK(halved == bytes); /* want / 2^k */
        CHILD_CHECK(sm_region_commit(p + bytes - PAGE, PAGE));
        p[bytes - 1] = 1;
        CHILD_CHECK(sm_region_unmap(p, bytes, PAGE));
        /* It is the largest that fits: twice as much is still refused. */
        CHILD_CHECK(sm_region_reserve(bytes * 2, PAGE) == NULL);

        /* With alignment too. */
        bytes = want;
        p = sm_region_reserve_shrinking(&bytes, 1 * MiB, 2 * MiB);
        CHILD_CHECK(p != NULL && (uintptr_t)p % (2 * MiB) == 0 && bytes < LOW_LIMIT);
        CHILD_CHECK(sm_region_release(p, bytes));
        _exit(0);
    }
    assert_exited_cleanly(wait_child(pid));
}

static void test_reserve_shrinking_fails_above_the_limit(void **state)
{
    (void)state;
    pid_t pid = fork();
    if (pid == 0) {
        child_setup();
        lower_address_space_limit();
        size_t bytes = 4 * GiB;
        CHILD_CHECK(sm_region_reserve_shrinking(&bytes, 2 * LOW_LIMIT, PAGE) == NULL);
        CHILD_CHECK(bytes == 4 * GiB); /* unchanged */
        bytes = LOW_LIMIT;
        CHILD_CHECK(sm_region_reserve_shrinking(&bytes, LOW_LIMIT, PAGE) == NULL);
        CHILD_CHECK(bytes == LOW_LIMIT);
        _exit(0);
    }
    assert_exited_cleanly(wait_child(pid));
}

static void test_reserve_shrinking_takes_the_full_size_when_it_fits(void **state)
{
    (void)state;
    size_t bytes = 64 * MiB;
    char *p = sm_region_reserve_shrinking(&bytes, 1 * MiB, 1 * MiB);
    assert_non_null(p);
    assert_int_equal(bytes, 64 * MiB);
    assert_int_equal((uintptr_t)p % MiB, 0);
    assert_true(access_faults(p, false)); /* a reservation like any other */
    assert_true(sm_region_release(p, bytes));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reserve_is_aligned_and_inaccessible),
        cmocka_unit_test(test_reserve_takes_address_space_only),
        cmocka_unit_test(test_commit_makes_pages_readable_and_writable),
        cmocka_unit_test(test_decommit_drops_content_and_access),
        cmocka_unit_test(test_decommit_of_part_leaves_the_rest),
        cmocka_unit_test(test_purge_many_gives_back_exactly_those_ranges),
        cmocka_unit_test(test_purge_many_works_without_process_madvise),
        cmocka_unit_test(test_guard_many_and_unguard_many),
        cmocka_unit_test(test_guard_untouched_many),
        cmocka_unit_test(test_clear_zeroes_resident_pages_and_faults_in_no_other),
        cmocka_unit_test(test_clear_zeroes_whole_what_mincore_refuses),
        cmocka_unit_test(test_resident_bytes_counts_touched_pages),
        cmocka_unit_test(test_protect_none_keeps_content),
        cmocka_unit_test(test_guard_markers_match_the_kernel),
        cmocka_unit_test(test_guard_drops_content_and_access),
        cmocka_unit_test(test_guard_falls_back_in_a_locked_mapping),
        cmocka_unit_test(test_unmap_gives_the_range_back),
        cmocka_unit_test(test_failures_are_reported),
        cmocka_unit_test(test_map_gives_zeroed_aligned_writable_memory),
        cmocka_unit_test(test_aligned_calls_leave_no_slack_behind),
        cmocka_unit_test(test_advise_huge_marks_a_range_with_huge_pages),
        cmocka_unit_test(test_huge_pages_enabled_follows_the_system),
        cmocka_unit_test(test_committed_bytes_follow_commit_and_decommit),
        cmocka_unit_test(test_committed_bytes_follow_map_and_unmap),
        cmocka_unit_test(test_peak_committed_bytes_is_the_high_water_mark),
        cmocka_unit_test(test_kernel_page_size),
        cmocka_unit_test(test_address_space_limit_matches_getrlimit),
        cmocka_unit_test(test_reserve_shrinking_halves_under_a_low_limit),
        cmocka_unit_test(test_reserve_shrinking_fails_above_the_limit),
        cmocka_unit_test(test_reserve_shrinking_takes_the_full_size_when_it_fits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

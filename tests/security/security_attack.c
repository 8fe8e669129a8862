/* security_attack <scenario>: performs one attack on the heap and reports how StarMalloc
 * reacted. One scenario per attack; tests/security/CMakeLists.txt runs each as the CTest test
 * security.<scenario> and decides, from the same SM_POLICY_* values that generate
 * starmalloc/config.h, which outcome the build must show:
 *
 *   - abort with "starmalloc: fatal: <what> at <address>" (checked by tests/expect-fatal.sh;
 *     the driver first prints "expect-fatal: address 0x...", the address the report must name);
 *   - death by SIGSEGV from a guard or PROT_NONE page (checked by expect-signal.sh; the driver
 *     prints "expect-signal: faulting access at 0x... next" just before the faulting access, so
 *     that a crash anywhere else does not pass);
 *   - exit status 0 when the policy is off in this build: the driver then asserts the behaviour
 *     docs/security.md documents for "off" (e.g. the freed slot is handed out again) and says
 *     on stdout which policy is off and what that means.
 *
 * Exit status: 0 as above, 1 when an assertion about the allocator failed, 2 for a usage error
 * or a broken precondition of the test itself, 3 when an attack that this build must catch
 * went unnoticed. Core dumps are disabled: the expected deaths are not worth a core file.
 *
 * Compiled with -fno-builtin so that the compiler cannot remove or merge malloc/free pairs, and
 * every pointer that is misused on purpose goes through opaque() first, so that the compiler
 * neither reasons about it nor warns (-Wuse-after-free, -Wfree-nonheap-object). */
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <starmalloc.h>

#include "starmalloc/config.h"
#include "starmalloc/sizeclass.h"

#include "opaque.h"
#include "residency.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* Bytes of a slot taken by its canary (libs/hardening/include/starmalloc/hardening.h,
 * SM_CANARY_BYTES); checked at run time against malloc_usable_size. */
enum { CANARY_BYTES = SM_CANARIES ? 8 : 0 };

/* The largest number of objects one scenario keeps in an array. */
enum { MAX_OBJECTS = 1024 };

static const char *scenario_name = "?";

/* ---- reporting ------------------------------------------------------------------------ */

static void vreport(const char *prefix, const char *fmt, va_list ap)
{
    fprintf(stderr, "security.%s: %s", scenario_name, prefix);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

/* An assertion about the allocator's behaviour failed. */
static _Noreturn __attribute__((format(printf, 1, 2))) void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport("FAIL: ", fmt, ap);
    va_end(ap);
    exit(1);
}

/* The test itself could not set up what it needs (not a verdict on the allocator). */
static _Noreturn __attribute__((format(printf, 1, 2))) void broken(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport("TEST PRECONDITION FAILED: ", fmt, ap);
    va_end(ap);
    exit(2);
}

/* The attack went through although this build's policies must catch it. */
static _Noreturn __attribute__((format(printf, 1, 2))) void not_detected(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport("NOT DETECTED: ", fmt, ap);
    va_end(ap);
    exit(3);
}

/* The policy is off in this build and its documented "off" behaviour was observed. */
static __attribute__((format(printf, 2, 3))) void report_off(const char *policy, const char *fmt,
                                                             ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("security.%s: policy off in this build (%s): ", scenario_name, policy);
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
}

static __attribute__((format(printf, 1, 2))) void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("security.%s: ", scenario_name);
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
}

/* The address the fatal report must name (tests/expect-fatal.sh compares them). */
static void expect_fatal_at(const void *p)
{
    printf("expect-fatal: address 0x%" PRIxPTR "\n", (uintptr_t)p);
}

/* The next memory access must kill the process with SIGSEGV (expect-signal.sh). */
static void expect_fault_at(const volatile void *p)
{
    printf("expect-signal: faulting access at 0x%" PRIxPTR " next\n", (uintptr_t)p);
}

/* ---- helpers -------------------------------------------------------------------------- */

static char *xmalloc(size_t size)
{
    char *p = malloc(opaque_size(size));
    if (!p)
        broken("malloc(%zu) failed", size);
    return opaque(p);
}

static size_t page_round(size_t n)
{
    return (n + SM_PAGE_SIZE - 1) & ~(size_t)(SM_PAGE_SIZE - 1);
}

static int compare_addresses(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (char *const *)a;
    uintptr_t y = (uintptr_t) * (char *const *)b;
    return x < y ? -1 : x > y;
}

static void sort_addresses(char **objects, size_t n)
{
    qsort(objects, n, sizeof(*objects), compare_addresses);
}

static bool contains(char *const *objects, size_t n, const char *p)
{
    for (size_t i = 0; i < n; i++)
        if (objects[i] == p)
            return true;
    return false;
}

/* A size class as a test sees it: requests of `request` bytes land in class `cls`. */
struct geometry {
    size_t request;
    unsigned cls;
    size_t slot_size;
    size_t slab_bytes;
    unsigned slots;
};

/* The class that serves malloc(request) in this build (request <= the largest class). */
static struct geometry geometry_for(size_t request)
{
    struct geometry g;
    g.request = request;
    g.cls = sm_sizeclass_of(request + CANARY_BYTES);
    const struct sm_sizeclass_info *info = sm_sizeclass_geometry(g.cls);
    g.slot_size = info->slot_size;
    g.slab_bytes = (size_t)info->slab_pages * SM_PAGE_SIZE;
    g.slots = info->slots;
    return g;
}

/* The geometry of the class whose slots are `slot_size`-ish: the request fills the slot up to
 * its canary, so that the byte after the request is the canary's first byte (or, without
 * canaries, the first of the slot's last 8 bytes). */
static struct geometry geometry_filling_slot(size_t approximate_request)
{
    struct geometry g = geometry_for(approximate_request);
    g.request = g.slot_size - 8;
    if (sm_sizeclass_of(g.request + CANARY_BYTES) != g.cls)
        broken("a request of %zu bytes does not land in the class of %zu-byte slots", g.request,
               g.slot_size);
    return g;
}

/* Checks that the allocator reports the usable size this build promises for g's class. */
static void check_usable_size(const struct geometry *g, char *p)
{
    size_t usable = malloc_usable_size(p);
    if (usable != g->slot_size - CANARY_BYTES)
        fail("malloc_usable_size(%zu-byte request) = %zu; this build (SM_CANARIES=%d) promises %zu",
             g->request, usable, (int)SM_CANARIES, g->slot_size - CANARY_BYTES);
}

/* Allocates exactly one slab's worth of objects of a class this process has not used before,
 * checks that they fill one slab (contiguous slots, whatever the order they came in), and
 * returns them sorted by address. With every other slot of the slab live, the slab never
 * becomes empty, so it is never decommitted, and after one free its only free slot is the one
 * just freed. */
static void fill_one_slab(const struct geometry *g, char **objects)
{
    if (g->slots > MAX_OBJECTS)
        broken("%u slots per slab exceed the test's array", g->slots);
    for (unsigned i = 0; i < g->slots; i++)
        objects[i] = xmalloc(g->request);
    sort_addresses(objects, g->slots);
    for (unsigned i = 1; i < g->slots; i++)
        if ((size_t)(objects[i] - objects[i - 1]) != g->slot_size)
            broken("%u allocations of %zu bytes do not fill one slab of %zu-byte slots (was the "
                   "class used before?)",
                   g->slots, g->request, g->slot_size);
    check_usable_size(g, objects[0]);
}

/* Entries per slot-quarantine stage for a class (libs/arena/src/arena.c: at most
 * SM_SLOT_QUARANTINE entries and SM_SLOT_QUARANTINE pages' worth of slots, at least 1). */
static size_t slot_quarantine_capacity(size_t slot_size)
{
    if (!SM_SLOT_QUARANTINE)
        return 0;
    size_t capacity = (size_t)SM_SLOT_QUARANTINE * SM_PAGE_SIZE / slot_size;
    if (capacity > SM_SLOT_QUARANTINE)
        capacity = SM_SLOT_QUARANTINE;
    return capacity ? capacity : 1;
}

static void check_no_guard_failures(void)
{
    struct starmalloc_stats stats;
    starmalloc_stats_get(&stats);
    if (stats.guard_failures != 0)
        broken("the kernel refused %zu guard(s) or protection change(s) (vm.max_map_count?): "
               "this run cannot show what a guard does",
               stats.guard_failures);
}

/* ---- double and invalid frees: detected in every preset ------------------------------- */

static void double_free(size_t size)
{
    char *p = xmalloc(size);
    expect_fatal_at(p);
    free(p);
    free(opaque(p));
    not_detected("free(p); free(p) of a %zu-byte object returned", size);
}

static void scenario_double_free_small(void)
{
    double_free(100);
}

static void scenario_double_free_large(void)
{
    double_free(MiB);
}

/* free(p), then allocations of the same size kept live, then free(p) again. With slot
 * quarantine p is still held (allocations never release quarantined slots), so the second
 * free is a double free; without it the next allocation took p's slot back, and the second
 * free silently frees that new object. */
static void scenario_double_free_delayed(void)
{
    struct geometry g = geometry_for(200);
    char *pins[MAX_OBJECTS];
    fill_one_slab(&g, pins);
    char *p = pins[0];
    free(p);
    size_t k = 2 * (size_t)g.slots;
    if (k > MAX_OBJECTS)
        k = MAX_OBJECTS;
    char *later[MAX_OBJECTS];
    for (size_t i = 0; i < k; i++)
        later[i] = xmalloc(g.request);
    if (SM_SLOT_QUARANTINE) {
        if (contains(later, k, p))
            fail("a slot held in the slot quarantine was handed out again by an allocation");
        expect_fatal_at(p);
        free(opaque(p));
        not_detected("the second free of a slot held in quarantine (after %zu allocations) "
                     "returned",
                     k);
    }
    if (later[0] != p)
        fail("without slot quarantine, the next allocation must reuse the slot just freed (the "
             "only free slot of its slab): got %p, freed %p",
             (void *)later[0], (void *)p);
    free(opaque(p)); /* frees later[0], which the program still believes live */
    report_off("SM_SLOT_QUARANTINE=0", "the freed slot was reused by the next allocation, so the "
                                       "delayed second free(p) freed that new object unreported");
}

/* Large objects: free(p), K large allocations of the same size kept live, free(p) again. */
static void scenario_double_free_large_delayed(void)
{
    enum { K = 4 };
    const size_t size = MiB;
    char *p = xmalloc(size);
    free(p);
    char *later[K];
    for (size_t i = 0; i < K; i++)
        later[i] = xmalloc(size);
    if (SM_LARGE_QUARANTINE) {
        if (contains(later, K, p))
            not_detected("a freed large object's address was handed out again while it should "
                         "be held in the large quarantine");
        expect_fatal_at(p);
        free(opaque(p));
        not_detected("the second free of a large object held in quarantine returned");
    }
    if (!contains(later, K, p)) {
        report_off("SM_LARGE_QUARANTINE=0",
                   "the kernel did not hand the freed mapping out again this time, so the attack "
                   "could not be set up; a second free would still be named by the ring of "
                   "recently freed large addresses");
        return;
    }
    free(opaque(p)); /* frees the new object mapped at p's address */
    report_off("SM_LARGE_QUARANTINE=0", "the freed mapping's address was reused by a later "
                                        "allocation, so the delayed second free(p) freed that "
                                        "new object unreported");
}

static void invalid_free(char *p, size_t offset)
{
    expect_fatal_at(p + offset);
    free(opaque(p + offset));
    not_detected("free of a pointer %zu bytes into an object returned", offset);
}

static void scenario_invalid_free_interior_small(void)
{
    invalid_free(xmalloc(100), 16);
}

static void scenario_invalid_free_interior_large(void)
{
    invalid_free(xmalloc(MiB), SM_PAGE_SIZE);
}

static void scenario_invalid_free_unaligned_small(void)
{
    invalid_free(xmalloc(100), 1);
}

static void scenario_invalid_free_unaligned_large(void)
{
    invalid_free(xmalloc(MiB), 1);
}

static void scenario_invalid_free_stack(void)
{
    char local[64];
    memset(local, 1, sizeof(local));
    free(xmalloc(16)); /* the heap exists: the pointer is looked up, not merely rejected */
    expect_fatal_at(local);
    free(opaque(local));
    not_detected("free of a stack address returned");
}

static void scenario_invalid_free_foreign_mmap(void)
{
    free(xmalloc(16));
    char *page =
        mmap(NULL, SM_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        broken("mmap of one page failed");
    expect_fatal_at(page);
    free(opaque(page));
    not_detected("free of a page StarMalloc never mapped returned");
}

static void scenario_invalid_free_wild(void)
{
    free(xmalloc(16));
    char *wild = (char *)(uintptr_t)0x10000; /* nobody's memory */
    expect_fatal_at(wild);
    free(opaque(wild));
    not_detected("free of a wild pointer returned");
}

/* ---- realloc and malloc_usable_size of freed or invalid pointers ---------------------- */

static void scenario_realloc_freed_small(void)
{
    char *p = xmalloc(100);
    free(p);
    expect_fatal_at(p);
    void *q = realloc(opaque(p), opaque_size(200));
    not_detected("realloc of a freed small object returned %p", q);
}

static void scenario_realloc_freed_large(void)
{
    char *p = xmalloc(MiB);
    free(p);
    expect_fatal_at(p);
    void *q = realloc(opaque(p), opaque_size(2 * MiB));
    not_detected("realloc of a freed large object returned %p", q);
}

static void scenario_realloc_invalid(void)
{
    char local[64];
    memset(local, 1, sizeof(local));
    free(xmalloc(16));
    expect_fatal_at(local);
    void *q = realloc(opaque(local), opaque_size(100));
    not_detected("realloc of a stack address returned %p", q);
}

static void scenario_usable_size_freed_small(void)
{
    char *p = xmalloc(100);
    free(p);
    expect_fatal_at(p);
    size_t n = malloc_usable_size(opaque(p));
    not_detected("malloc_usable_size of a freed small object returned %zu", n);
}

static void scenario_usable_size_freed_large(void)
{
    char *p = xmalloc(MiB);
    free(p);
    expect_fatal_at(p);
    size_t n = malloc_usable_size(opaque(p));
    not_detected("malloc_usable_size of a freed large object returned %zu", n);
}

static void scenario_usable_size_invalid(void)
{
    char local[64];
    memset(local, 1, sizeof(local));
    free(xmalloc(16));
    expect_fatal_at(local);
    size_t n = malloc_usable_size(opaque(local));
    not_detected("malloc_usable_size of a stack address returned %zu", n);
}

/* ---- overflows into the canary (the slot's last 8 bytes) ------------------------------ */

/* An object whose request ends where the slot's last 8 bytes (the canary) begin. */
static char *overflow_victim(struct geometry *g)
{
    *g = geometry_filling_slot(120);
    char *p = xmalloc(g->request);
    memset(p, 'x', g->request);
    check_usable_size(g, p);
    return p;
}

static void overflow_then(size_t bytes, unsigned char value, bool by_realloc)
{
    struct geometry g;
    char *p = overflow_victim(&g);
    volatile char *v = (volatile char *)opaque(p);
    for (size_t i = 0; i < bytes; i++)
        v[g.request + i] = (char)value;
    if (SM_CANARIES) {
        expect_fatal_at(p);
        if (by_realloc) {
            void *q = realloc(p, opaque_size(4 * g.request));
            not_detected("realloc after a %zu-byte overflow into the canary returned %p", bytes, q);
        }
        free(p);
        not_detected("free after a %zu-byte overflow into the canary returned", bytes);
    }
    if (by_realloc) {
        char *q = realloc(p, opaque_size(4 * g.request));
        if (!q)
            broken("realloc failed");
        if (memcmp(q, "xxxxxxxx", 8) != 0)
            fail("realloc lost the object's content");
        p = q;
    }
    free(p);
    report_off("SM_CANARIES=0",
               "an overflow of %zu byte(s) past a %zu-byte request into the "
               "last 8 bytes of its %zu-byte slot is not reported",
               bytes, g.request, g.slot_size);
}

static void scenario_overflow_canary_1_byte(void)
{
    overflow_then(1, 'A', false);
}

static void scenario_overflow_canary_8_bytes(void)
{
    overflow_then(8, 'B', false);
}

static void scenario_overflow_canary_realloc(void)
{
    overflow_then(8, 'C', true);
}

/* A documented limit, in every preset: the canary's first byte is zero (it terminates C
 * strings that run past their buffer), so a single NUL byte written past the request, the
 * classic off-by-one of string copies, leaves the canary intact and is not reported. */
static void scenario_overflow_nul_byte_not_detected(void)
{
    struct geometry g;
    char *p = overflow_victim(&g);
    volatile char *v = (volatile char *)opaque(p);
    v[g.request] = '\0';
    if (malloc_usable_size(p) != g.slot_size - CANARY_BYTES)
        fail("malloc_usable_size changed after a NUL byte past the request");
    free(p);
    note("a single NUL byte written past the request is not reported (documented limit: the "
         "canary's first byte is zero%s)",
         SM_CANARIES ? "" : "; canaries are off in this build anyway");
}

/* ---- guard slabs ---------------------------------------------------------------------- */

/* A linear overflow from the last slot of a run of slabs towards the next slab. With guard
 * slabs (one after every SM_GUARD_INTERVAL slabs) the run's first SM_GUARD_INTERVAL slabs end
 * at a guard, and the first byte written into it faults. Without guards the overflow runs into
 * the next slab's first slot, which it silently corrupts. */
static void scenario_guard_slab_overflow(void)
{
    struct geometry g = geometry_for(1000);
    size_t slabs = SM_GUARD_INTERVAL ? SM_GUARD_INTERVAL : 2;
    size_t n = slabs * g.slots;
    if (n > MAX_OBJECTS)
        broken("%zu objects exceed the test's array", n);
    char *objects[MAX_OBJECTS];
    for (size_t i = 0; i < n; i++)
        objects[i] = xmalloc(g.request);
    sort_addresses(objects, n);
    char *first = objects[0];
    if ((size_t)(objects[n - 1] - first) !=
        (slabs - 1) * g.slab_bytes + (g.slots - 1) * g.slot_size)
        broken("%zu allocations of %zu bytes do not fill %zu adjacent fresh slabs", n, g.request,
               slabs);
    char *victim = objects[n - 1]; /* the run's last slot */
    char *run_end = first + slabs * g.slab_bytes;
    volatile char *v = (volatile char *)opaque(victim);
    size_t reach = (size_t)(run_end - victim); /* bytes up to the next slab */
    if (SM_GUARD_INTERVAL) {
        check_no_guard_failures();
        for (size_t i = g.request; i < reach; i++) /* the slot's slack and the slab's tail */
            v[i] = 'G';
        expect_fault_at(v + reach);
        v[reach] = 'G';
        not_detected("a linear overflow ran from the last slot of slab %zu into the guard slab "
                     "after it",
                     slabs - 1);
    }
    /* Without guards the run's end is the first slot of the next slab: objects[g.slots]. */
    char *neighbour = objects[g.slots];
    if (neighbour != first + g.slab_bytes)
        broken("the second slab does not follow the first");
    memset(neighbour, 'n', g.request);
    v = (volatile char *)opaque(objects[g.slots - 1]);
    reach = (size_t)(neighbour - objects[g.slots - 1]);
    for (size_t i = g.request; i <= reach; i++)
        v[i] = 'G';
    if (neighbour[0] != 'G')
        fail("the overflow did not reach the next slab's first object");
    report_off("SM_GUARD_INTERVAL=0", "a linear overflow from a slab's last slot silently "
                                      "corrupted the first object of the next slab");
}

/* ---- large objects: guard pages, quarantine ------------------------------------------ */

enum { LARGE_SIZE = 256 * 1024 + 100 };

static void large_guard(bool overflow)
{
    const size_t rounded = page_round(LARGE_SIZE);
    char *p = xmalloc(LARGE_SIZE);
    memset(p, 'l', LARGE_SIZE);
    if (malloc_usable_size(p) != rounded)
        fail("malloc_usable_size of a %d-byte large object is %zu, not %zu", LARGE_SIZE,
             malloc_usable_size(p), rounded);
    volatile char *v = (volatile char *)opaque(p);
    if (SM_LARGE_GUARDS) {
        check_no_guard_failures();
        v[rounded - 1] = 'L'; /* the object's last usable byte is writable */
        v[0] = 'L';
        volatile char *target = overflow ? v + rounded : v - 1;
        expect_fault_at(target);
        *target = 'X';
        not_detected("a write %s a large object did not fault",
                     overflow ? "just past" : "just before");
    }
    /* Without guards the neighbour is whatever the kernel mapped next to the object: when
     * it maps the next large object right next to this one, the overflow corrupts it. */
    char *q = xmalloc(LARGE_SIZE);
    memset(q, 'q', LARGE_SIZE);
    char *low = p < q ? p : q;
    char *high = p < q ? q : p;
    if (low + rounded != high) {
        report_off("SM_LARGE_GUARDS=0",
                   "nothing separates a large object from its neighbours "
                   "(this time the kernel did not map two of them side by "
                   "side, so the %s was not attempted)",
                   overflow ? "overflow" : "underflow");
        return;
    }
    if (overflow) {
        ((volatile char *)opaque(low))[rounded] = 'X';
        if (high[0] != 'X')
            fail("an overflow past a large object did not land in the adjacent one");
    } else {
        ((volatile char *)opaque(high))[-1] = 'X';
        if (low[rounded - 1] != 'X')
            fail("an underflow before a large object did not land in the adjacent one");
    }
    report_off("SM_LARGE_GUARDS=0",
               "a 1-byte %s of a large object silently corrupted the "
               "adjacent large object",
               overflow ? "overflow" : "underflow");
}

static void scenario_large_guard_overflow(void)
{
    large_guard(true);
}

static void scenario_large_guard_underflow(void)
{
    large_guard(false);
}

/* free(p) of a large object, then a new allocation of the same size, then an access through
 * the stale pointer. With large quarantine the mapping is held PROT_NONE (so the new object
 * is elsewhere) and the access faults; without it the address may be reused at once. The
 * quarantined object keeps its pages (zeroed; it is all the program has had live, which
 * the budget of kept pages allows), the case checked: a decommitted one traps the same way. */
static void large_use_after_free(bool write)
{
    const size_t size = MiB;
    char *p = xmalloc(size);
    memset(p, 'p', size);
    free(p);
    char *q = xmalloc(size);
    memset(q, 'q', size);
    volatile char *stale = (volatile char *)opaque(p);
    if (SM_LARGE_QUARANTINE) {
        if (q == p)
            not_detected("the freed large object's address was handed out again at once: it "
                         "should be held in the large quarantine");
        check_no_guard_failures();
        size_t resident = resident_pages(p, size);
        if (resident == SIZE_MAX)
            broken("mincore failed on the freed large object at %p", (void *)p);
        if (resident == 0)
            fail("the freed large object gave its pages back: this preset keeps them, "
                 "inaccessible, for a later reuse, the case this test is for");
        note("the freed object kept %zu of its %zu pages, inaccessible", resident,
             size / (size_t)sysconf(_SC_PAGESIZE));
        expect_fault_at(stale);
        if (write)
            stale[0] = 'W';
        char value = write ? 'W' : stale[0];
        not_detected("a %s through a pointer to a freed large object did not fault (byte %d)",
                     write ? "write" : "read", value);
    }
    if (q != p) {
        report_off("SM_LARGE_QUARANTINE=0",
                   "a freed large object is unmapped at once; this time its address was not "
                   "reused, so the stale pointer points to unmapped memory (not accessed)");
        return;
    }
    if (write) {
        stale[0] = 'W';
        if (q[0] != 'W')
            fail("a write through the stale pointer did not reach the new object");
    } else if (stale[0] != 'q') {
        fail("a read through the stale pointer did not see the new object");
    }
    report_off("SM_LARGE_QUARANTINE=0",
               "the freed large object's address was reused by the "
               "next allocation, so a %s through the stale pointer "
               "silently %s the new object",
               write ? "write" : "read", write ? "corrupted" : "read");
}

static void scenario_large_use_after_free_read(void)
{
    large_use_after_free(false);
}

static void scenario_large_use_after_free_write(void)
{
    large_use_after_free(true);
}

/* ---- slab quarantine ------------------------------------------------------------------ */

/* Fills several slabs of the largest class (few slots per slab, few slot-quarantine
 * entries), frees every object in address order (so the first slab is emptied first), then
 * allocates as many objects again and touches an object of the first slab. With slab
 * quarantine the first slab, once empty, was decommitted and is held PROT_NONE behind fresh
 * slabs, so the second round does not take it back and the access faults. Without it the
 * emptied slabs are reused first and the stale pointer reaches a live object again. */
/* How many empty slabs of g's class libs/arena keeps committed (mirrors layout.c). */
static size_t empty_slabs_kept(const struct geometry *g)
{
    size_t kept = (64 << 10) / g->slab_bytes;
    size_t min = SM_SLAB_QUARANTINE ? 1 : 8;
    return kept > min ? kept : min;
}

static void slab_use_after_free(bool write)
{
    struct geometry g = geometry_for(SM_MAX_SMALL_SIZE - CANARY_BYTES);
    /* How many slabs. Of those emptied, libs/arena keeps the partial list's head and one empty
     * or more slabs committed (64 KiB of empty slabs, at least 1, with slab quarantine: see
     * empty_slabs_kept; up to twice as many, as it retires them in batches once twice as many
     * are empty) and retires the others, oldest first, into the slab quarantine, which holds the
     * last SM_SLAB_QUARANTINE retired. Slots still in the slot quarantine (2 stages of `capacity`
     * entries, each entry possibly in another slab) keep up to 2 * capacity more slabs in use, and
     * the first slab's own slots leave it only after enough later frees: the random stage keeps an
     * entry through k more frees with probability (1 - 1/capacity)^k, so 30 * capacity later frees
     * make a failure of the setup less likely than 1e-12. Hence at least `needed` slabs; and for
     * the first slab to be still held when the second round allocates, at most SM_SLAB_QUARANTINE +
     * 1 + kept slabs, as then at most SM_SLAB_QUARANTINE slabs are retired. */
    size_t capacity = slot_quarantine_capacity(g.slot_size);
    size_t needed = 2 * capacity + 3;
    size_t flush = (30 * capacity + g.slots - 1) / g.slots + 1;
    if (needed < flush)
        needed = flush;
    size_t slabs = needed > 16 ? needed : 16;
    bool second_round_too = true;
    if (SM_SLAB_QUARANTINE) {
        slabs = (size_t)SM_SLAB_QUARANTINE + 1 + empty_slabs_kept(&g);
        if (slabs > MAX_OBJECTS / g.slots)
            slabs = MAX_OBJECTS / g.slots;
        if (slabs < needed) {
            /* A slab quarantine this small next to the slot quarantine: the first slab may
             * have left it before the second round, so only the trap itself is checked. */
            slabs = needed;
            second_round_too = false;
            note("SM_SLAB_QUARANTINE=%d is too small next to the slot quarantine (%zu entries per "
                 "stage) to show delayed reuse; checking only that the emptied slab traps",
                 (int)SM_SLAB_QUARANTINE, capacity);
        }
    }
    size_t n = slabs * g.slots;
    if (n > MAX_OBJECTS)
        broken("%zu objects exceed the test's array", n);
    char *first_round[MAX_OBJECTS];
    char *second_round[MAX_OBJECTS];
    for (size_t i = 0; i < n; i++)
        first_round[i] = xmalloc(g.request);
    sort_addresses(first_round, n);
    char *victim = first_round[0];
    memset(victim, 'v', g.request);
    for (size_t i = 0; i < n; i++)
        free(first_round[i]);
    size_t again = second_round_too ? n : 0;
    for (size_t i = 0; i < again; i++)
        second_round[i] = xmalloc(g.request);
    volatile char *stale = (volatile char *)opaque(victim);
    if (SM_SLAB_QUARANTINE) {
        if (contains(second_round, again, victim))
            not_detected("a slot of the first of %zu emptied slabs was handed out again by the "
                         "next %zu allocations: the slab should be held in the slab quarantine",
                         slabs, again);
        check_no_guard_failures();
        expect_fault_at(stale);
        if (write)
            stale[0] = 'W';
        char value = write ? 'W' : stale[0];
        not_detected("a %s through a pointer into a quarantined slab did not fault (byte %d)",
                     write ? "write" : "read", value);
    }
    if (!contains(second_round, again, victim))
        fail("without slab quarantine, allocating as many objects again must reuse the emptied "
             "slabs, the first one included");
    if (write) {
        stale[0] = 'W';
        if (victim[0] != 'W')
            fail("a write through the stale pointer did not land");
    } else {
        note("read %d", stale[0]);
    }
    report_off("SM_SLAB_QUARANTINE=0",
               "the emptied slabs were reused before fresh ones, so a %s "
               "through a stale pointer into the first slab reached a "
               "live object",
               write ? "write" : "read");
}

static void scenario_slab_use_after_free_read(void)
{
    slab_use_after_free(false);
}

static void scenario_slab_use_after_free_write(void)
{
    slab_use_after_free(true);
}

/* ---- write and read after free of a small object -------------------------------------- */

/* free(p), write one byte into p, then allocate and free the same size until p's slot comes
 * back: with the write-after-free check the allocation that hands the slot out again aborts;
 * without it the new object starts with the stale byte. */
static void scenario_write_after_free_small(void)
{
    struct geometry g = geometry_for(200);
    char *pins[MAX_OBJECTS];
    fill_one_slab(&g, pins);
    char *p = pins[0];
    free(p);
    ((volatile char *)opaque(p))[0] = 'W';
    if (SM_WRITE_AFTER_FREE_CHECK)
        expect_fatal_at(p);
    for (long i = 0; i < 200000; i++) {
        char *q = xmalloc(g.request);
        if (q == p) {
            if (SM_WRITE_AFTER_FREE_CHECK)
                not_detected("the slot written after free was handed out again without a report");
            if (q[0] != 'W')
                fail("the stale write is not in the reused slot (got %d)", q[0]);
            report_off("SM_WRITE_AFTER_FREE_CHECK=0",
                       "the slot written after free was handed "
                       "out again after %ld allocation(s), with "
                       "the stale byte in it, unreported",
                       i + 1);
            return;
        }
        free(q);
    }
    fail("the freed slot never came back in 200000 allocate/free cycles");
}

/* free(p) and read p: zero-on-free leaves zeros, otherwise the old content is still there. */
static void scenario_read_after_free_small(void)
{
    struct geometry g = geometry_for(200);
    char *pins[MAX_OBJECTS];
    fill_one_slab(&g, pins);
    char *p = pins[0];
    memset(p, 0xa5, g.request);
    free(p);
    volatile unsigned char *stale = (volatile unsigned char *)opaque(p);
    for (size_t i = 0; i < g.request; i++) {
        unsigned expected = SM_ZERO_ON_FREE ? 0 : 0xa5;
        if (stale[i] != expected)
            fail("byte %zu of a freed object is 0x%02x, expected 0x%02x (SM_ZERO_ON_FREE=%d)", i,
                 stale[i], expected, (int)SM_ZERO_ON_FREE);
    }
    if (SM_ZERO_ON_FREE)
        note("a read after free finds only zeros: the freed object's data is gone");
    else
        report_off("SM_ZERO_ON_FREE=0", "a read after free still finds the object's old data");
}

/* ---- reuse and layout ---------------------------------------------------------------- */

/* free(p): with slot quarantine p is not handed out again during at least `capacity` further
 * frees of its class (the FIFO stage alone holds that many); without it the next allocation
 * takes it back. */
static void scenario_delayed_reuse(void)
{
    struct geometry g = geometry_for(200);
    char *pins[MAX_OBJECTS];
    fill_one_slab(&g, pins);
    char *p = pins[0];
    free(p);
    if (SM_SLOT_QUARANTINE) {
        size_t capacity = slot_quarantine_capacity(g.slot_size);
        for (size_t i = 0; i <= capacity; i++) {
            char *q = xmalloc(g.request);
            if (q == p)
                fail("a freed slot came back after %zu further free(s); slot quarantine holds "
                     "it for at least %zu",
                     i, capacity);
            if (i < capacity)
                free(q);
        }
        note("a freed %zu-byte slot was not reused during %zu further allocate/free cycles",
             g.slot_size, capacity);
        return;
    }
    char *q = xmalloc(g.request);
    if (q != p)
        fail("without slot quarantine the next allocation must reuse the slot just freed");
    report_off("SM_SLOT_QUARANTINE=0", "the next allocation of the same size got the freed slot "
                                       "back at once");
}

/* 64 objects of a class this process has not used: with slot randomisation they are not
 * handed out in ascending address order; without it they are, slot after slot. */
static void scenario_randomized_slot_order(void)
{
    enum { N = 64 };
    struct geometry g = geometry_for(700);
    char *objects[N];
    for (size_t i = 0; i < N; i++)
        objects[i] = xmalloc(g.request);
    size_t ascending = 0;
    for (size_t i = 1; i < N; i++)
        ascending += objects[i] > objects[i - 1];
    if (SM_RANDOMIZE_SLOTS) {
        if (ascending == N - 1)
            fail("%d allocations of %zu bytes came in ascending address order", N, g.request);
        note("%d allocations of %zu bytes: %zu of %d steps ascending (random order)", N, g.request,
             ascending, N - 1);
        return;
    }
    for (size_t i = 1; i < N; i++) {
        bool next_slot = (size_t)(objects[i] - objects[i - 1]) == g.slot_size;
        if (i % g.slots != 0 && !next_slot)
            fail("without randomisation allocation %zu must take the next slot of its slab", i);
        if (objects[i] <= objects[i - 1])
            fail("without randomisation allocations must come in ascending address order");
    }
    report_off("SM_RANDOMIZE_SLOTS=0", "a fresh slab hands out its slots in ascending address "
                                       "order, so the next address is predictable");
}

/* malloc(0) returns distinct, aligned, freeable blocks. */
static void scenario_malloc_zero_distinct(void)
{
    enum { N = 1000 };
    char *objects[N];
    for (size_t i = 0; i < N; i++) {
        objects[i] = xmalloc(0);
        if ((uintptr_t)objects[i] % SM_MIN_ALIGN != 0)
            fail("malloc(0) returned %p, not %d-byte aligned", (void *)objects[i], SM_MIN_ALIGN);
    }
    char *sorted[N];
    memcpy(sorted, objects, sizeof(sorted));
    sort_addresses(sorted, N);
    for (size_t i = 1; i < N; i++)
        if (sorted[i] == sorted[i - 1])
            fail("malloc(0) returned %p twice among %d live blocks", (void *)sorted[i], N);
    for (size_t i = 0; i < N; i++)
        free(objects[i]);
    note("%d live malloc(0) blocks are distinct, aligned and freeable", N);
}

/* ---- controls for expect-signal.sh ---------------------------------------------------- */

/* Dies by SIGSEGV before announcing the access: expect-signal.sh must reject it. */
static void scenario_control_segv_without_marker(void)
{
    raise(SIGSEGV);
}

/* Returns normally: expect-signal.sh must reject it. */
static void scenario_control_ok(void)
{
    free(xmalloc(100));
}

/* -------------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    void (*run)(void);
} scenarios[] = {
#define SCENARIO(name)                                                                             \
    {                                                                                              \
#name, scenario_##name                                                                     \
    }
    SCENARIO(double_free_small),
    SCENARIO(double_free_large),
    SCENARIO(double_free_delayed),
    SCENARIO(double_free_large_delayed),
    SCENARIO(invalid_free_interior_small),
    SCENARIO(invalid_free_interior_large),
    SCENARIO(invalid_free_unaligned_small),
    SCENARIO(invalid_free_unaligned_large),
    SCENARIO(invalid_free_stack),
    SCENARIO(invalid_free_foreign_mmap),
    SCENARIO(invalid_free_wild),
    SCENARIO(realloc_freed_small),
    SCENARIO(realloc_freed_large),
    SCENARIO(realloc_invalid),
    SCENARIO(usable_size_freed_small),
    SCENARIO(usable_size_freed_large),
    SCENARIO(usable_size_invalid),
    SCENARIO(overflow_canary_1_byte),
    SCENARIO(overflow_canary_8_bytes),
    SCENARIO(overflow_canary_realloc),
    SCENARIO(overflow_nul_byte_not_detected),
    SCENARIO(guard_slab_overflow),
    SCENARIO(large_guard_overflow),
    SCENARIO(large_guard_underflow),
    SCENARIO(large_use_after_free_read),
    SCENARIO(large_use_after_free_write),
    SCENARIO(slab_use_after_free_read),
    SCENARIO(slab_use_after_free_write),
    SCENARIO(write_after_free_small),
    SCENARIO(read_after_free_small),
    SCENARIO(delayed_reuse),
    SCENARIO(randomized_slot_order),
    SCENARIO(malloc_zero_distinct),
    SCENARIO(control_segv_without_marker),
    SCENARIO(control_ok),
#undef SCENARIO
};

int main(int argc, char **argv)
{
    /* Expected deaths leave no core file; stdout is unbuffered so that every line written
     * before a crash reaches the checking script (and stdio allocates no buffer). */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc == 2) {
        for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
            if (strcmp(argv[1], scenarios[i].name) == 0) {
                scenario_name = scenarios[i].name;
                scenarios[i].run();
                return 0;
            }
        }
    }
    fprintf(stderr, "usage: %s <scenario>\nscenarios:", argv[0]);
    for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
        fprintf(stderr, " %s", scenarios[i].name);
    fputc('\n', stderr);
    return 2;
}

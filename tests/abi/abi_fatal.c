/* abi_fatal <scenario>: performs one invalid operation, which StarMalloc must detect and report
 * with "starmalloc: fatal: <what> at <address>" before aborting (checked by
 * tests/expect-fatal.sh). Built twice: abi_fatal_prefixed (-DSM_ABI_PREFIXED, calls
 * starmalloc_free & co., links starmalloc_core) and abi_fatal_override (plain free & co.,
 * links libstarmalloc.so).
 *
 * Before the bad operation the driver prints "expect-fatal: address 0x..." on stdout, the
 * address the report must name. Exit status: 0 for the harmless scenario "ok", 2 for a usage
 * error, 3 when the bad operation returned instead of aborting. */
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <starmalloc.h>

#include "abi_select.h"
#include "opaque.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

static void *alloc(size_t size)
{
    void *p = ABI(malloc)(opaque_size(size));
    if (!p) {
        fprintf(stderr, "abi_fatal: malloc(%zu) failed\n", size);
        exit(2);
    }
    memset(p, 0x5a, size);
    return opaque(p);
}

/* Announces the address the fatal report must name; flushed, since abort() loses buffers. */
static void expect_address(const void *p)
{
    printf("expect-fatal: address 0x%" PRIxPTR "\n", (uintptr_t)p);
    fflush(stdout);
}

static void double_free(size_t size)
{
    void *p = alloc(size);
    void *again = opaque(p);
    expect_address(p);
    ABI(free)(p);
    ABI(free)(again);
}

static void scenario_ok(void)
{
    void *p = alloc(100);
    void *q = alloc(MiB);
    ABI(free)(p);
    ABI(free)(q);
}

static void scenario_double_free_16(void)
{
    double_free(16);
}

static void scenario_double_free_100(void)
{
    double_free(100);
}

static void scenario_double_free_4096(void)
{
    double_free(4096);
}

static void scenario_double_free_100000(void)
{
    double_free(100000);
}

static void scenario_double_free_large(void)
{
    double_free(MiB);
}

static void scenario_realloc_zero_then_free(void)
{
    void *p = alloc(100);
    void *again = opaque(p);
    expect_address(p);
    if (ABI(realloc)(p, opaque_size(0)) != NULL)
        return;
    ABI(free)(again);
}

static void interior_free(size_t size, size_t offset)
{
    char *p = alloc(size);
    expect_address(p + offset);
    ABI(free)(opaque(p + offset));
}

static void scenario_interior_small(void)
{
    interior_free(100, 16);
}

static void scenario_interior_large(void)
{
    interior_free(MiB, 4096);
}

static void scenario_unaligned_small(void)
{
    interior_free(100, 1);
}

static void scenario_unaligned_large(void)
{
    interior_free(MiB, 1);
}

static void scenario_stack(void)
{
    char local[64];
    memset(local, 1, sizeof(local));
    ABI(free)(alloc(16)); /* the heap is initialised: the pointer is looked up, not just rejected */
    expect_address(local);
    ABI(free)(opaque(local));
}

static void scenario_foreign_mmap(void)
{
    ABI(free)(alloc(16));
    void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) {
        perror("abi_fatal: mmap");
        exit(2);
    }
    expect_address(page);
    ABI(free)(opaque(page));
}

static void scenario_wild(void)
{
    ABI(free)(alloc(16));
    void *wild = (void *)(uintptr_t)0x12345678;
    expect_address(wild);
    ABI(free)(opaque(wild));
}

/* A slot-aligned address in a part of the slab region that never held a slab: the 16-byte
 * class has one-page slabs of 256 slots, so every 16-byte-aligned address is a slot start;
 * a fresh process has used only the first few slabs of its class region, and a class region
 * is at least 1 MiB, so 256 KiB further is in the same region, never used. */
static void scenario_unused_slab(void)
{
    char *p = alloc(16);
    expect_address(p + 256 * KiB);
    ABI(free)(opaque(p + 256 * KiB));
}

static void scenario_realloc_freed_small(void)
{
    void *p = alloc(100);
    void *again = opaque(p);
    expect_address(p);
    ABI(free)(p);
    void *q = ABI(realloc)(again, opaque_size(200));
    fprintf(stderr, "abi_fatal: realloc returned %p\n", q);
}

static void scenario_realloc_freed_large(void)
{
    void *p = alloc(MiB);
    void *again = opaque(p);
    expect_address(p);
    ABI(free)(p);
    void *q = ABI(realloc)(again, opaque_size(2 * MiB));
    fprintf(stderr, "abi_fatal: realloc returned %p\n", q);
}

static void scenario_realloc_invalid(void)
{
    char *p = alloc(100);
    expect_address(p + 16);
    void *q = ABI(realloc)(opaque(p + 16), opaque_size(200));
    fprintf(stderr, "abi_fatal: realloc returned %p\n", q);
}

static void scenario_realloc_wild(void)
{
    ABI(free)(alloc(16));
    void *wild = (void *)(uintptr_t)0x12345678;
    expect_address(wild);
    void *q = ABI(realloc)(opaque(wild), opaque_size(200));
    fprintf(stderr, "abi_fatal: realloc returned %p\n", q);
}

static void scenario_usable_size_freed_small(void)
{
    void *p = alloc(100);
    void *again = opaque(p);
    expect_address(p);
    ABI(free)(p);
    size_t n = ABI(malloc_usable_size)(again);
    fprintf(stderr, "abi_fatal: malloc_usable_size returned %zu\n", n);
}

static void scenario_usable_size_freed_large(void)
{
    void *p = alloc(MiB);
    void *again = opaque(p);
    expect_address(p);
    ABI(free)(p);
    size_t n = ABI(malloc_usable_size)(again);
    fprintf(stderr, "abi_fatal: malloc_usable_size returned %zu\n", n);
}

static void scenario_usable_size_invalid(void)
{
    char *p = alloc(100);
    expect_address(p + 16);
    size_t n = ABI(malloc_usable_size)(opaque(p + 16));
    fprintf(stderr, "abi_fatal: malloc_usable_size returned %zu\n", n);
}

static void scenario_free_sized_too_large_small(void)
{
    void *p = alloc(100); /* a 112-byte slot */
    expect_address(p);
    ABI(free_sized)(p, opaque_size(113));
}

static void scenario_free_sized_too_large_large(void)
{
    void *p = alloc(MiB);
    expect_address(p);
    ABI(free_sized)(p, opaque_size(MiB + 4097));
}

static void scenario_free_aligned_sized_misaligned(void)
{
    /* p is aligned to exactly its lowest set bit: claim twice that. */
    char *p = alloc(100);
    uintptr_t align = ((uintptr_t)p & -(uintptr_t)p) << 1;
    expect_address(p);
    ABI(free_aligned_sized)(p, opaque_size(align), opaque_size(100));
}

static void scenario_free_aligned_sized_bad_alignment(void)
{
    void *p = alloc(16);
    expect_address(p);
    ABI(free_aligned_sized)(p, opaque_size(24), opaque_size(16));
}

/* A double free in a thread-specific-data destructor that runs after StarMalloc's own has
 * taken the thread's cache away (its key is older): the path of a thread without a cache. */
static void double_free_in_destructor(void *arg)
{
    (void)arg;
    double_free(100);
}

static void *set_exiting_value(void *key)
{
    ABI(free)(alloc(100)); /* the thread has a cache until it exits */
    pthread_setspecific(*(pthread_key_t *)key, key);
    return NULL;
}

static void scenario_double_free_exiting_thread(void)
{
    ABI(free)(alloc(16)); /* the allocator's key exists before this one */
    static pthread_key_t key;
    pthread_t tid;
    if (pthread_key_create(&key, double_free_in_destructor) != 0 ||
        pthread_create(&tid, NULL, set_exiting_value, &key) != 0) {
        fprintf(stderr, "abi_fatal: cannot start the thread\n");
        exit(2);
    }
    pthread_join(tid, NULL);
}

static const struct {
    const char *name;
    void (*run)(void);
} scenarios[] = {
    {"double_free_exiting_thread", scenario_double_free_exiting_thread},
    {"ok", scenario_ok},
    {"double_free_16", scenario_double_free_16},
    {"double_free_100", scenario_double_free_100},
    {"double_free_4096", scenario_double_free_4096},
    {"double_free_100000", scenario_double_free_100000},
    {"double_free_large", scenario_double_free_large},
    {"realloc_zero_then_free", scenario_realloc_zero_then_free},
    {"interior_small", scenario_interior_small},
    {"interior_large", scenario_interior_large},
    {"unaligned_small", scenario_unaligned_small},
    {"unaligned_large", scenario_unaligned_large},
    {"stack", scenario_stack},
    {"foreign_mmap", scenario_foreign_mmap},
    {"wild", scenario_wild},
    {"unused_slab", scenario_unused_slab},
    {"realloc_freed_small", scenario_realloc_freed_small},
    {"realloc_freed_large", scenario_realloc_freed_large},
    {"realloc_invalid", scenario_realloc_invalid},
    {"realloc_wild", scenario_realloc_wild},
    {"usable_size_freed_small", scenario_usable_size_freed_small},
    {"usable_size_freed_large", scenario_usable_size_freed_large},
    {"usable_size_invalid", scenario_usable_size_invalid},
    {"free_sized_too_large_small", scenario_free_sized_too_large_small},
    {"free_sized_too_large_large", scenario_free_sized_too_large_large},
    {"free_aligned_sized_misaligned", scenario_free_aligned_sized_misaligned},
    {"free_aligned_sized_bad_alignment", scenario_free_aligned_sized_bad_alignment},
};

int main(int argc, char **argv)
{
    enum { N = sizeof(scenarios) / sizeof(scenarios[0]) };
    if (argc != 2) {
        fprintf(stderr, "usage: %s <scenario>\nscenarios:", argv[0]);
        for (size_t i = 0; i < N; i++)
            fprintf(stderr, " %s", scenarios[i].name);
        fprintf(stderr, "\n");
        return 2;
    }
    /* The abort is expected: no core file, so that the test stays fast. */
    struct rlimit no_core = {0, 0};
    if (setrlimit(RLIMIT_CORE, &no_core) != 0)
        perror("abi_fatal: setrlimit(RLIMIT_CORE)");
    for (size_t i = 0; i < N; i++) {
        if (strcmp(argv[1], scenarios[i].name) != 0)
            continue;
        scenarios[i].run();
        if (strcmp(argv[1], "ok") == 0)
            return 0;
        fprintf(stderr, "abi_fatal: scenario %s returned instead of aborting\n", argv[1]);
        return 3;
    }
    fprintf(stderr, "abi_fatal: unknown scenario '%s'\n", argv[1]);
    return 2;
}

/* rel_oom: out of memory is an error, never an abort.
 *
 * Linked against the overriding library. Usage: rel_oom [limit-MiB=1024]
 * The driver runs each scenario in a child process that sets RLIMIT_AS (as `ulimit -v` does)
 * and then execs this program again, so StarMalloc initialises under the limit from the
 * process's first allocation. A scenario fails when its child dies by a signal (an abort
 * included) or exits non-zero.
 *   large    large objects until the address space is gone: NULL + ENOMEM from every call
 *            (malloc, calloc, realloc, reallocarray, aligned_alloc, posix_memalign, memalign,
 *            valloc), realloc keeps its block, small allocations still work, and freeing one
 *            block makes the same allocation succeed again.
 *   class    one size class until its region is exhausted: NULL + ENOMEM, other classes still
 *            allocate, and after freeing, the class allocates again (a small and a big class).
 *   threads  four threads exhaust memory together with mixed sizes; all see ENOMEM, none
 *            crashes or deadlocks, and after everything is freed all allocate again.
 *   tiny     a limit just above what the process uses: initialisation cannot reserve its
 *            regions, so every call fails with ENOMEM (nothing aborts); once the limit is
 *            lifted, the next call initialises and succeeds.
 *   sweep    limits of 512, 256, 128 and 64 MiB: whatever each allows, allocations either
 *            succeed (and hold their contents) or fail with ENOMEM. */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "rel_common.h"
#include "starmalloc.h"
#include "starmalloc/config.h"

#define MIB ((size_t)1 << 20)

enum {
    SCENARIO_TIMEOUT = 60, /* seconds before a scenario counts as hung */
    LARGE_BLOCK_MIB = 8,
    MAX_LARGE_BLOCKS = 4096,
};

static void *large_blocks[MAX_LARGE_BLOCKS];

/* ---- helpers ------------------------------------------------------------------------- */

static void expect_enomem(void *p, const char *what)
{
    REL_CHECK(p == NULL, "%s succeeded (%p) although memory is exhausted", what, p);
    REL_CHECK(errno == ENOMEM, "%s failed with errno %d instead of ENOMEM", what, errno);
}

/* The same pointer, which the compiler can no longer follow: a failed realloc leaves its
 * block valid, but gcc's -Wuse-after-free assumes every realloc frees its argument. */
static char *opaque(char *p)
{
    __asm__ volatile("" : "+r"(p));
    return p;
}

/* Touches the first and last page of a block (commits them, not the whole block). */
static void touch(void *p, size_t size, unsigned char value)
{
    unsigned char *b = p;
    b[0] = value;
    b[size - 1] = value;
}

static void check_touched(const void *p, size_t size, unsigned char value)
{
    const unsigned char *b = p;
    REL_CHECK(b[0] == value && b[size - 1] == value, "block %p lost its content", p);
}

/* Allocates LARGE_BLOCK_MIB blocks until malloc fails; returns how many it got. */
static unsigned exhaust_with_large_blocks(void)
{
    const size_t size = LARGE_BLOCK_MIB * MIB;
    unsigned n = 0;
    for (;;) {
        REL_CHECK(n < MAX_LARGE_BLOCKS, "%u blocks of %zu MiB and still no ENOMEM under the limit",
                  n, size / MIB);
        errno = 0;
        void *p = malloc(size);
        if (!p) {
            REL_CHECK(errno == ENOMEM, "malloc(%zu) failed with errno %d", size, errno);
            return n;
        }
        touch(p, size, (unsigned char)n);
        large_blocks[n++] = p;
    }
}

static void free_large_blocks(unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (large_blocks[i]) {
            check_touched(large_blocks[i], LARGE_BLOCK_MIB * MIB, (unsigned char)i);
            free(large_blocks[i]);
            large_blocks[i] = NULL;
        }
    }
}

static size_t rlimit_as(void)
{
    struct rlimit rl;
    REL_CHECK(getrlimit(RLIMIT_AS, &rl) == 0, "getrlimit failed");
    return rl.rlim_cur == RLIM_INFINITY ? SIZE_MAX : (size_t)rl.rlim_cur;
}

/* ---- scenario: large ----------------------------------------------------------------- */

static void scenario_large(void)
{
    size_t limit = rlimit_as();
    char *first = malloc(100);
    REL_CHECK(first != NULL,
              "the first malloc under a %zu MiB limit failed (errno %d): "
              "initialisation must succeed",
              limit / MIB, errno);
    memset(first, 0x5a, 100);

    unsigned n = exhaust_with_large_blocks();
    /* The slab region takes at most a quarter of the limit (docs/architecture.md): large
     * objects must get a good part of the rest. */
    REL_CHECK((size_t)n * LARGE_BLOCK_MIB * MIB >= limit / 4,
              "only %u blocks of %d MiB fit under a %zu MiB limit", n, LARGE_BLOCK_MIB,
              limit / MIB);

    /* Every call reports the exhaustion the same way. */
    const size_t big = LARGE_BLOCK_MIB * MIB;
    errno = 0;
    expect_enomem(calloc(1, big), "calloc");
    errno = 0;
    expect_enomem(aligned_alloc(MIB, big), "aligned_alloc");
    errno = 0;
    expect_enomem(memalign(64 * 1024, big), "memalign");
    errno = 0;
    expect_enomem(valloc(big), "valloc");
    errno = 0;
    expect_enomem(pvalloc(big), "pvalloc");
    void *out = &out;
    errno = 77;
    int rc = posix_memalign(&out, 4096, big);
    REL_CHECK(rc == ENOMEM && errno == 77 && out == &out,
              "posix_memalign under exhaustion: rc %d, errno %d", rc, errno);
    errno = 0;
    expect_enomem(realloc(opaque(first), big), "realloc");
    errno = 0;
    expect_enomem(reallocarray(opaque(first), 2, big / 2), "reallocarray");
    for (int i = 0; i < 100; i++)
        REL_CHECK(first[i] == 0x5a, "a failed realloc changed its block");

    /* The small path has its address space reserved already: it keeps working. */
    void *smalls[64];
    for (int i = 0; i < 64; i++) {
        smalls[i] = malloc((size_t)16 << (i % 13));
        REL_CHECK(smalls[i] != NULL, "malloc(%zu) failed while only large objects are exhausted",
                  (size_t)16 << (i % 13));
        memset(smalls[i], i, (size_t)16 << (i % 13));
    }
    for (int i = 0; i < 64; i++)
        free(smalls[i]);

    /* Freeing one block makes room for one more, whatever the large quarantine holds. */
    for (int round = 0; round < 8; round++) {
        unsigned victim = (unsigned)round * 3 % n;
        check_touched(large_blocks[victim], big, (unsigned char)victim);
        free(large_blocks[victim]);
        large_blocks[victim] = malloc(big);
        REL_CHECK(large_blocks[victim] != NULL,
                  "malloc(%zu) failed right after a block of that size was freed (errno %d)", big,
                  errno);
        touch(large_blocks[victim], big, (unsigned char)victim);
    }
    free_large_blocks(n);
    free(first);

    /* Everything freed: the whole space is usable again. */
    unsigned again = exhaust_with_large_blocks();
    REL_CHECK(again + 2 >= n, "after freeing everything only %u of %u blocks fit again", again, n);
    free_large_blocks(again);
    rel_say("large: %u blocks of %d MiB under %zu MiB, then ENOMEM; recovered", n, LARGE_BLOCK_MIB,
            limit / MIB);
}

/* ---- scenario: class ----------------------------------------------------------------- */

/* Blocks of one class, chained through their own first word. */
struct chained {
    struct chained *next;
    uint64_t id;
};

/* Allocates `size`-byte blocks until malloc fails (at most `cap`); returns the chain. */
static struct chained *exhaust_class(size_t size, size_t cap, size_t *count)
{
    struct chained *head = NULL;
    size_t n = 0;
    for (;;) {
        REL_CHECK(n < cap, "%zu blocks of %zu bytes and the class region is not exhausted", n,
                  size);
        errno = 0;
        struct chained *c = malloc(size);
        if (!c) {
            REL_CHECK(errno == ENOMEM, "malloc(%zu) failed with errno %d", size, errno);
            break;
        }
        c->next = head;
        c->id = n++;
        head = c;
    }
    *count = n;
    return head;
}

static void free_chain(struct chained *head, size_t count)
{
    size_t expect = count;
    while (head) {
        struct chained *next = head->next;
        REL_CHECK(head->id == --expect, "block %p holds id %llu, expected %zu", (void *)head,
                  (unsigned long long)head->id, expect);
        free(head);
        head = next;
    }
    REL_CHECK(expect == 0, "the chain lost %zu blocks", expect);
}

static void exhaust_one_class(size_t size, size_t other_size)
{
    size_t limit = rlimit_as();
    size_t count = 0;
    /* With a limit the class regions are at most a quarter of it in all; a region can hold
     * no more blocks than that. */
    size_t cap = limit / 4 / size + 1;
    struct chained *chain = exhaust_class(size, cap, &count);
    REL_CHECK(count > 0, "no block of %zu bytes at all", size);

    errno = 0;
    expect_enomem(malloc(size), "malloc of the exhausted class");
    /* Other classes are other regions. */
    void *other = malloc(other_size);
    REL_CHECK(other != NULL, "malloc(%zu) failed while only the %zu-byte class is exhausted",
              other_size, size);
    memset(other, 0x33, other_size);
    free(other);

    free_chain(chain, count);
    /* Freed slots come back (after the slot quarantine lets them go). */
    size_t again = 0;
    chain = exhaust_class(size, cap, &again);
    /* What may legitimately stay held: the slot quarantine's two stages for this class
     * (docs/configuration.md: at most SLOT_QUARANTINE entries and about as many pages each),
     * and a thread cache's few freed slots on their way into it. */
    size_t stage = SM_SLOT_QUARANTINE * (size_t)SM_PAGE_SIZE / size;
    stage = stage < 1 ? 1 : stage > SM_SLOT_QUARANTINE ? SM_SLOT_QUARANTINE : stage;
    size_t held = SM_SLOT_QUARANTINE != 0 ? 2 * stage + 8 : 0;
    REL_CHECK(again > 0 && again + held >= count,
              "after freeing all %zu blocks of %zu bytes only %zu fit again (at most %zu may be "
              "held back)",
              count, size, again, held);
    free_chain(chain, again);
    rel_say("class: %zu blocks of %zu bytes, then ENOMEM; after freeing, %zu again", count, size,
            again);
}

static void scenario_class(void)
{
    exhaust_one_class(64, 1000);
    exhaust_one_class(100 * 1024, 64);
}

/* ---- scenario: threads ---------------------------------------------------------------- */

enum { OOM_THREADS = 4, THREAD_BLOCKS = 200000 };

static atomic_uint threads_at_enomem;
static pthread_barrier_t oom_barrier;

struct oom_worker {
    unsigned id;
    struct chained *chain;
    size_t count;
    size_t enomem;
};

static void *oom_thread(void *arg)
{
    struct oom_worker *w = arg;
    struct rel_rng rng = {w->id + 1};
    bool reported = false;
    /* Every thread exists (its stack mapped) before any of them starts exhausting memory. */
    pthread_barrier_wait(&oom_barrier);
    /* Allocate mixed sizes until the limit stops this thread a few hundred times. */
    for (size_t i = 0; i < THREAD_BLOCKS && w->enomem < 300; i++) {
        size_t size =
            rel_below(&rng, 8) == 0 ? (1 + rel_below(&rng, 4)) * MIB : 16 + rel_below(&rng, 4000);
        errno = 0;
        struct chained *c = malloc(size);
        if (!c) {
            REL_CHECK(errno == ENOMEM, "thread %u: malloc(%zu) failed with errno %d", w->id, size,
                      errno);
            w->enomem++;
            if (!reported) {
                atomic_fetch_add(&threads_at_enomem, 1);
                reported = true;
            }
            continue;
        }
        c->next = w->chain;
        c->id = w->count++;
        w->chain = c;
    }
    pthread_barrier_wait(&oom_barrier);
    free_chain(w->chain, w->count);
    w->chain = NULL;
    pthread_barrier_wait(&oom_barrier);
    /* Everything is free again: every thread can allocate. */
    void *p = malloc(4 * MIB);
    void *q = malloc(100);
    REL_CHECK(p && q, "thread %u cannot allocate after everything was freed", w->id);
    free(p);
    free(q);
    return NULL;
}

static void scenario_threads(void)
{
    pthread_t threads[OOM_THREADS];
    struct oom_worker workers[OOM_THREADS];
    pthread_attr_t attr;
    REL_CHECK(pthread_attr_init(&attr) == 0 && pthread_attr_setstacksize(&attr, 256 * 1024) == 0,
              "pthread attributes");
    REL_CHECK(pthread_barrier_init(&oom_barrier, NULL, OOM_THREADS) == 0, "barrier");
    for (unsigned i = 0; i < OOM_THREADS; i++) {
        workers[i] = (struct oom_worker){.id = i};
        REL_CHECK(pthread_create(&threads[i], &attr, oom_thread, &workers[i]) == 0,
                  "pthread_create failed");
    }
    pthread_attr_destroy(&attr);
    size_t total = 0;
    for (unsigned i = 0; i < OOM_THREADS; i++) {
        pthread_join(threads[i], NULL);
        total += workers[i].count;
    }
    REL_CHECK(atomic_load(&threads_at_enomem) > 0, "no thread ever reached ENOMEM");
    rel_say("threads: %u threads, %zu blocks, %u of them hit ENOMEM; recovered", OOM_THREADS, total,
            atomic_load(&threads_at_enomem));
}

/* ---- scenario: tiny ------------------------------------------------------------------- */

static size_t vm_size_bytes(void)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    REL_CHECK(fd >= 0, "cannot open /proc/self/statm");
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    REL_CHECK(n > 0, "cannot read /proc/self/statm");
    buf[n] = '\0';
    size_t pages = 0;
    for (const char *c = buf; *c >= '0' && *c <= '9'; c++)
        pages = pages * 10 + (size_t)(*c - '0');
    return pages * (size_t)sysconf(_SC_PAGESIZE);
}

static void scenario_tiny(void)
{
    size_t vm = vm_size_bytes();
    /* More than 64 GiB mapped already: something allocated before main and StarMalloc
     * reserved its regions without a limit; the scenario cannot be set up. */
    REL_CHECK(vm < ((size_t)64 << 30), "%zu MiB mapped before the first allocation", vm / MIB);
    struct rlimit rl;
    REL_CHECK(getrlimit(RLIMIT_AS, &rl) == 0, "getrlimit");
    rl.rlim_cur = vm + 16 * MIB;
    REL_CHECK(setrlimit(RLIMIT_AS, &rl) == 0, "setrlimit");

    for (int attempt = 0; attempt < 3; attempt++) {
        errno = 0;
        expect_enomem(malloc(16), "malloc with no room for the allocator's regions");
        errno = 0;
        expect_enomem(calloc(4, 4), "calloc with no room for the allocator's regions");
        errno = 0;
        expect_enomem(realloc(NULL, 32), "realloc with no room for the allocator's regions");
        errno = 0;
        expect_enomem(aligned_alloc(64, 64), "aligned_alloc with no room for the regions");
        void *out = NULL;
        REL_CHECK(posix_memalign(&out, 64, 64) == ENOMEM, "posix_memalign did not fail");
        free(NULL);
        REL_CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL)");
    }
    struct starmalloc_stats st;
    starmalloc_stats_get(&st); /* must not crash either */
    REL_CHECK(st.committed_bytes == 0 && st.large_objects == 0,
              "statistics claim memory although nothing could be reserved");

    rl.rlim_cur = rl.rlim_max; /* lifted: the next call initialises */
    REL_CHECK(setrlimit(RLIMIT_AS, &rl) == 0, "setrlimit");
    void *p = malloc(16);
    void *q = malloc(MIB);
    REL_CHECK(p && q, "malloc still fails after the limit was lifted (errno %d)", errno);
    memset(p, 1, 16);
    memset(q, 2, MIB);
    free(p);
    free(q);
    rel_say("tiny: under %zu MiB every call failed with ENOMEM; after lifting it, allocation "
            "works",
            (vm + 16 * MIB) / MIB);
}

/* ---- scenario: sweep (one limit per child) --------------------------------------------- */

static void scenario_sweep(void)
{
    size_t limit = rlimit_as();
    struct rel_rng rng = {limit};
    struct chained *chain = NULL;
    size_t count = 0, failures = 0;
    for (int i = 0; i < 20000; i++) {
        size_t size = rel_below(&rng, 16) == 0 ? rel_below(&rng, 4 * MIB) : rel_below(&rng, 2048);
        if (size < sizeof(struct chained))
            size = sizeof(struct chained);
        errno = 0;
        struct chained *c = malloc(size);
        if (!c) {
            REL_CHECK(errno == ENOMEM, "malloc(%zu) under %zu MiB: errno %d", size, limit / MIB,
                      errno);
            failures++;
            continue;
        }
        c->next = chain;
        c->id = count++;
        chain = c;
    }
    free_chain(chain, count);
    rel_say("sweep: under %zu MiB: %zu allocations succeeded, %zu failed with ENOMEM", limit / MIB,
            count, failures);
}

/* ---- driver ------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    void (*run)(void);
} scenarios[] = {
    {"large", scenario_large}, {"class", scenario_class}, {"threads", scenario_threads},
    {"tiny", scenario_tiny},   {"sweep", scenario_sweep},
};

/* Runs `name` in a child under RLIMIT_AS = limit_mib (0: none); true when it exits 0. */
static bool run_child(const char *name, size_t limit_mib)
{
    pid_t pid = fork();
    REL_CHECK(pid >= 0, "fork failed");
    if (pid == 0) {
        if (limit_mib) {
            struct rlimit rl = {limit_mib * MIB, limit_mib * MIB};
            struct rlimit old;
            getrlimit(RLIMIT_AS, &old);
            rl.rlim_max = old.rlim_max;
            if (setrlimit(RLIMIT_AS, &rl) != 0)
                _exit(3);
        }
        alarm(SCENARIO_TIMEOUT); /* survives exec: a hang becomes SIGALRM */
        char *args[] = {(char *)"rel_oom", (char *)"--scenario", (char *)name, NULL};
        execv("/proc/self/exe", args);
        _exit(4);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return true;
    if (WIFSIGNALED(status))
        rel_say("FAIL: scenario %s under %zu MiB died by signal %d (%s)", name, limit_mib,
                WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        rel_say("FAIL: scenario %s under %zu MiB exited with status %d", name, limit_mib,
                WEXITSTATUS(status));
    return false;
}

int main(int argc, char **argv)
{
    rel_program = "rel_oom";
    if (argc == 3 && strcmp(argv[1], "--scenario") == 0) {
        for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
            if (strcmp(argv[2], scenarios[i].name) == 0) {
                scenarios[i].run();
                return 0;
            }
        }
        rel_say("unknown scenario %s", argv[2]);
        return 2;
    }
    size_t limit_mib = rel_arg(argc, argv, 1, 1024, 64, 1 << 20);
    unsigned failed = 0;
    failed += !run_child("large", limit_mib);
    failed += !run_child("class", limit_mib);
    failed += !run_child("threads", limit_mib);
    failed += !run_child("tiny", 0);
    static const size_t sweep_limits[] = {512, 256, 128, 64};
    for (size_t i = 0; i < sizeof(sweep_limits) / sizeof(sweep_limits[0]); i++)
        failed += !run_child("sweep", sweep_limits[i]);
    if (failed) {
        rel_say("FAIL: %u scenario(s) failed", failed);
        return 1;
    }
    rel_say("every out-of-memory scenario passed");
    return 0;
}

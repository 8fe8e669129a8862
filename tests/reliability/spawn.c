/* rel_spawn: vfork, fork from several threads at once, and posix_spawn, while other threads
 * allocate.
 *
 * Linked against the overriding library. Usage: rel_spawn [rounds=150] [seed=1]
 * (tests/stress/stress_fork covers fork and posix_spawn from the main thread; this program adds
 * vfork and concurrent forks.) Three worker threads allocate, fill, verify and free blocks
 * (small and large) without pause. Meanwhile, every round:
 *   - the main thread vforks twice: one child allocates, writes, checks and frees a few blocks
 *     (sharing the parent's memory and, on Linux, the calling thread's TLS) and _exits; the
 *     other execs /bin/true at once (the usual vfork use);
 *   - two forker threads fork at the same moment: each child checks and frees blocks its
 *     parent thread allocated before the fork, allocates and frees a few hundred more, and
 *     leaves with exit(0) (atexit handlers and all);
 *   - every fifth round a forker thread also posix_spawns /bin/true.
 * Children get an alarm: a deadlock becomes SIGALRM, which fails the test like any non-zero
 * exit or signal. The parent then checks its own blocks and that no large object leaked. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>

#include "rel_common.h"
#include "starmalloc.h"

#define KIB ((size_t)1024)

extern char **environ;

enum {
    WORKERS = 3,
    FORKERS = 2,
    WORKER_SLOTS = 64,
    PARENT_BLOCKS = 24, /* allocated by a forker before its fork, freed in both processes */
    CHILD_BLOCKS = 200,
    CHILD_TIMEOUT = 10, /* seconds before a child counts as deadlocked */
};

struct block {
    unsigned char *p;
    size_t size;
    uint64_t tag;
};

static atomic_bool stop;
static atomic_uint children;
static pthread_barrier_t round_start, round_end;
static unsigned rounds;
static uint64_t seed;

static size_t random_size(struct rel_rng *rng)
{
    return rel_below(rng, 32) == 0 ? 128 * KIB + rel_below(rng, 512 * KIB)
                                   : 1 + rel_below(rng, 2 * KIB);
}

static void fill(struct block *b)
{
    size_t len = b->size < 128 ? b->size : 128;
    rel_fill(b->p, len, b->tag);
}

static bool intact(const struct block *b)
{
    size_t len = b->size < 128 ? b->size : 128;
    return rel_mismatch(b->p, len, b->tag) == len;
}

/* Allocates `n` blocks into b[]; false if any allocation fails. */
static bool allocate(struct block *b, size_t n, struct rel_rng *rng)
{
    for (size_t i = 0; i < n; i++) {
        size_t size = random_size(rng);
        b[i] = (struct block){malloc(size), size, rel_next(rng)};
        if (!b[i].p)
            return false;
        fill(&b[i]);
    }
    return true;
}

/* Checks and frees n blocks; false at the first block whose content changed. */
static bool release(struct block *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!intact(&b[i]))
            return false;
        free(b[i].p);
        b[i].p = NULL;
    }
    return true;
}

/* Waits for a child; fails the test unless it exited with status 0. */
static void reap(pid_t pid, const char *what)
{
    int status = 0;
    pid_t r;
    while ((r = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
        ;
    REL_CHECK(r == pid, "waitpid for the %s child failed (errno %d)", what, errno);
    if (WIFSIGNALED(status))
        REL_FAIL("%s child died by signal %d (%s)%s", what, WTERMSIG(status),
                 strsignal(WTERMSIG(status)), WTERMSIG(status) == SIGALRM ? ": it deadlocked" : "");
    REL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s child exited with status %d", what,
              WEXITSTATUS(status));
    atomic_fetch_add(&children, 1);
}

/* ---- workers ----------------------------------------------------------------------------- */

static void *worker(void *arg)
{
    struct rel_rng rng = {seed * 7919 + (uintptr_t)arg};
    struct block slots[WORKER_SLOTS] = {{0}};
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        struct block *b = &slots[rel_below(&rng, WORKER_SLOTS)];
        if (b->p) {
            REL_CHECK(intact(b), "worker: block %p changed while live", (void *)b->p);
            free(b->p);
            b->p = NULL;
        } else {
            REL_CHECK(allocate(b, 1, &rng), "worker: malloc failed (errno %d)", errno);
        }
    }
    for (size_t i = 0; i < WORKER_SLOTS; i++) {
        if (slots[i].p) {
            REL_CHECK(intact(&slots[i]), "worker: block %p changed while live", (void *)slots[i].p);
            free(slots[i].p);
        }
    }
    return NULL;
}

/* ---- vfork ------------------------------------------------------------------------------- */

/* The vfork child runs on this function's frame: it must not return from it, and the function
 * keeps no state across the call that the child could clobber. */
static __attribute__((noinline)) pid_t vfork_allocating_child(size_t size)
{
    pid_t pid = vfork();
    if (pid == 0) {
        unsigned char *a = malloc(size);
        unsigned char *b = calloc(1, 100);
        unsigned char *c = malloc(200 * KIB); /* a large object: its own mapping */
        if (!a || !b || !c)
            _exit(10);
        memset(a, 0xa5, size);
        memset(c, 0x5a, 200 * KIB);
        if (b[99] != 0 || a[size - 1] != 0xa5 || c[200 * KIB - 1] != 0x5a)
            _exit(11);
        a = realloc(a, size * 3);
        if (!a || a[size - 1] != 0xa5)
            _exit(12);
        free(a);
        free(b);
        free(c);
        _exit(0);
    }
    return pid;
}

static __attribute__((noinline)) pid_t vfork_exec_child(void)
{
    static char *const args[] = {(char *)"true", NULL};
    pid_t pid = vfork();
    if (pid == 0) {
        execve("/bin/true", args, environ);
        _exit(127);
    }
    return pid;
}

static void vfork_round(struct rel_rng *rng)
{
    /* The child's allocations land in the parent's heap (shared memory): freed by the child,
     * they must not show up in the parent afterwards. */
    pid_t pid = vfork_allocating_child(1 + rel_below(rng, 4 * KIB));
    REL_CHECK(pid > 0, "vfork failed (errno %d)", errno);
    reap(pid, "vfork (allocating)");
    pid = vfork_exec_child();
    REL_CHECK(pid > 0, "vfork failed (errno %d)", errno);
    reap(pid, "vfork + exec");
}

/* ---- forkers ----------------------------------------------------------------------------- */

static _Noreturn void forked_child(struct block *parent_blocks, uint64_t child_seed)
{
    alarm(CHILD_TIMEOUT);
    struct rel_rng rng = {child_seed};
    static struct block mine[CHILD_BLOCKS]; /* per-process copy: this child is single-threaded */
    if (!release(parent_blocks, PARENT_BLOCKS))
        _exit(20);
    if (!allocate(mine, CHILD_BLOCKS, &rng))
        _exit(21);
    for (size_t i = 0; i < CHILD_BLOCKS; i += 3) { /* realloc a third, keeping the prefix */
        size_t keep = mine[i].size < 128 ? mine[i].size : 128;
        unsigned char *p = realloc(mine[i].p, mine[i].size * 2 + 1);
        if (!p || rel_mismatch(p, keep, mine[i].tag) != keep)
            _exit(22);
        mine[i].p = p;
    }
    if (!release(mine, CHILD_BLOCKS))
        _exit(23);
    exit(0); /* runs atexit handlers and flushes stdio, as a real program's child would */
}

static void *forker(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    struct rel_rng rng = {seed * 104729 + id};
    struct block parent_blocks[PARENT_BLOCKS];
    static char *const args[] = {(char *)"true", NULL};
    for (unsigned r = 0; r < rounds; r++) {
        REL_CHECK(allocate(parent_blocks, PARENT_BLOCKS, &rng), "forker: malloc failed");
        pthread_barrier_wait(&round_start); /* both forkers fork at the same moment */
        pid_t pid = fork();
        REL_CHECK(pid >= 0, "fork failed (errno %d)", errno);
        if (pid == 0)
            forked_child(parent_blocks, rel_next(&rng));
        REL_CHECK(release(parent_blocks, PARENT_BLOCKS), "parent blocks changed across fork");
        reap(pid, "fork");
        if (r % 5 == id) {
            pid_t spawned;
            int rc = posix_spawn(&spawned, "/bin/true", NULL, NULL, args, environ);
            REL_CHECK(rc == 0, "posix_spawn failed: %d", rc);
            reap(spawned, "posix_spawn");
        }
        pthread_barrier_wait(&round_end);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    rel_program = "rel_spawn";
    rounds = (unsigned)rel_arg(argc, argv, 1, 150, 1, 100000);
    seed = rel_arg(argc, argv, 2, 1, 0, ~0ul);
    double start = rel_now();
    REL_CHECK(pthread_barrier_init(&round_start, NULL, FORKERS + 1) == 0, "barrier");
    REL_CHECK(pthread_barrier_init(&round_end, NULL, FORKERS + 1) == 0, "barrier");

    pthread_t workers[WORKERS], forkers[FORKERS];
    for (uintptr_t i = 0; i < WORKERS; i++)
        REL_CHECK(pthread_create(&workers[i], NULL, worker, (void *)i) == 0, "pthread_create");
    for (uintptr_t i = 0; i < FORKERS; i++)
        REL_CHECK(pthread_create(&forkers[i], NULL, forker, (void *)i) == 0, "pthread_create");

    struct rel_rng rng = {seed};
    for (unsigned r = 0; r < rounds; r++) {
        pthread_barrier_wait(&round_start);
        vfork_round(&rng); /* while the forkers fork */
        pthread_barrier_wait(&round_end);
    }
    for (size_t i = 0; i < FORKERS; i++)
        pthread_join(forkers[i], NULL);
    atomic_store(&stop, true);
    for (size_t i = 0; i < WORKERS; i++)
        pthread_join(workers[i], NULL);

    struct starmalloc_stats st;
    starmalloc_stats_get(&st);
    REL_CHECK(st.large_objects == 0,
              "%zu large objects left in the parent: a vfork child's frees were lost",
              st.large_objects);
    rel_say("%u rounds, %u children exited cleanly (%.1f s)", rounds, atomic_load(&children),
            rel_now() - start);
    return 0;
}

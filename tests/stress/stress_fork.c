/* stress_fork: fork() and posix_spawn() from a parent whose other threads keep allocating.
 *
 * Linked against the shared starmalloc library. Usage: stress_fork [forks=200] [spawns=20]
 *
 * Four worker threads allocate, fill, verify and free blocks (small and large) without pause.
 * Meanwhile the main thread forks repeatedly: each child (one thread, whichever allocator locks
 * the workers held at fork time) checks and frees blocks the parent allocated before the fork,
 * then allocates, verifies and frees a few hundred blocks of various sizes, and _exit(0)s. An
 * alarm() in the child turns a deadlock into SIGALRM, which the parent reports as a failure.
 * Every tenth fork is followed by a posix_spawn of /bin/true. */
#define _GNU_SOURCE /* asprintf */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "splitmix.h"

#include "starmalloc.h"

extern char **environ;

enum {
    WORKERS = 4,
    WORKER_SLOTS = 48,
    PARENT_BLOCKS = 32, /* allocated by main before each fork, freed in both processes */
    CHILD_BLOCKS = 300,
    CHILD_TIMEOUT = 10,   /* seconds before a child is considered deadlocked */
    PARENT_TIMEOUT = 240, /* seconds for the whole test */
};

#define KIB ((size_t)1024)

struct block {
    unsigned char *p;
    size_t size;
    uint64_t id;
};

static atomic_bool stop;
static atomic_uint_fast64_t worker_ops;

/* ---- helpers (async-signal-safe reporting for the child) -------------------------------- */

static void say(const char *s)
{
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

__attribute__((noreturn)) static void die(const char *who, const char *what)
{
    say("stress_fork: FAIL: ");
    say(who);
    say(": ");
    say(what);
    say("\n");
    abort();
}

static size_t random_size(uint64_t *rng)
{
    unsigned r = (unsigned)(splitmix64(rng) % 1000);
    if (r < 800)
        return 1 + (size_t)(splitmix64(rng) % 1024);
    if (r < 970)
        return 1025 + (size_t)(splitmix64(rng) % (63 * KIB));
    return 128 * KIB + (size_t)(splitmix64(rng) % (512 * KIB)); /* large path */
}

static uint64_t pattern_word(uint64_t id, size_t j)
{
    uint64_t x = (id + 1) * 0xD6E8FEB86659FD93ull + (uint64_t)j * 0x9E3779B97F4A7C15ull;
    return x ^ (x >> 31);
}

/* Whole words first, then the tail bytes of one more word: cheap enough for megabytes. */
static void fill(const struct block *b)
{
    size_t words = b->size / 8;
    uint64_t *wp = (uint64_t *)(void *)b->p;
    for (size_t j = 0; j < words; j++)
        wp[j] = pattern_word(b->id, j);
    uint64_t tail = pattern_word(b->id, words);
    memcpy(b->p + words * 8, &tail, b->size % 8);
}

static void check(const struct block *b, const char *who)
{
    if (((uintptr_t)b->p & 15) != 0)
        die(who, "pointer not 16-byte aligned");
    size_t words = b->size / 8;
    const uint64_t *wp = (const uint64_t *)(const void *)b->p;
    for (size_t j = 0; j < words; j++)
        if (wp[j] != pattern_word(b->id, j))
            die(who, "block content corrupted");
    uint64_t tail = pattern_word(b->id, words);
    if (memcmp(b->p + words * 8, &tail, b->size % 8) != 0)
        die(who, "block content corrupted (tail)");
}

static void alloc_block(struct block *b, size_t size, uint64_t id, const char *who)
{
    b->p = malloc(size);
    if (!b->p)
        die(who, "malloc returned NULL");
    b->size = size;
    b->id = id;
    fill(b);
}

/* ---- worker threads --------------------------------------------------------------------- */

static void *worker_main(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg * 0x1234567ull + 99;
    struct block slots[WORKER_SLOTS] = {{0}};
    uint64_t id = (uint64_t)(uintptr_t)arg << 40;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        struct block *b = &slots[splitmix64(&rng) % WORKER_SLOTS];
        if (b->p) {
            check(b, "worker thread");
            free(b->p);
            b->p = NULL;
        } else {
            size_t size = random_size(&rng);
            if (size > 64 * KIB)
                size = 64 * KIB + size % (64 * KIB); /* keep the fill cheap */
            if (splitmix64(&rng) % 16 == 0)
                size = 200 * KIB; /* but keep hitting the large path and its lock */
            alloc_block(b, size, id++, "worker thread");
        }
        atomic_fetch_add_explicit(&worker_ops, 1, memory_order_relaxed);
    }
    for (unsigned i = 0; i < WORKER_SLOTS; i++)
        if (slots[i].p) {
            check(&slots[i], "worker thread at exit");
            free(slots[i].p);
        }
    return NULL;
}

/* ---- the child -------------------------------------------------------------------------- */

__attribute__((noreturn)) static void child_main(struct block *inherited, unsigned n, uint64_t seed)
{
    alarm(CHILD_TIMEOUT);
    /* Blocks the parent allocated before fork: still intact, and freeable here. */
    for (unsigned i = 0; i < n; i++) {
        check(&inherited[i], "fork child (inherited block)");
        if (i % 2 == 0) {
            free(inherited[i].p);
            inherited[i].p = NULL;
        }
    }
    static struct block blocks[CHILD_BLOCKS];
    uint64_t rng = seed;
    for (unsigned i = 0; i < CHILD_BLOCKS; i++) {
        size_t size = random_size(&rng);
        if (i % 50 == 0)
            size = (1 + i / 50 % 3) * 256 * KIB; /* some large ones for sure */
        alloc_block(&blocks[i], size, 1000000 + i, "fork child");
        if (i % 3 == 0) { /* free some as we go, so slots get reused within the child */
            unsigned j = (unsigned)(splitmix64(&rng) % (i + 1));
            if (blocks[j].p) {
                check(&blocks[j], "fork child");
                free(blocks[j].p);
                blocks[j].p = NULL;
            }
        }
    }
    for (unsigned i = 0; i < CHILD_BLOCKS; i++)
        if (blocks[i].p) {
            check(&blocks[i], "fork child");
            if (starmalloc_malloc_usable_size(blocks[i].p) < blocks[i].size)
                die("fork child", "malloc_usable_size smaller than requested");
            free(blocks[i].p);
        }
    for (unsigned i = 0; i < n; i++)
        if (inherited[i].p)
            free(inherited[i].p);
    /* stdio in the child, too: its buffers come from malloc. */
    char *s = NULL;
    if (asprintf(&s, "child %d ok", (int)getpid()) < 0 || !s)
        die("fork child", "asprintf failed");
    free(s);
    _exit(0);
}

static void describe_status(char *buf, size_t len, const char *what, int round, int status)
{
    if (WIFSIGNALED(status))
        snprintf(buf, len, "%s %d killed by signal %d (%s)%s", what, round, WTERMSIG(status),
                 strsignal(WTERMSIG(status)),
                 WTERMSIG(status) == SIGALRM ? ": deadlock (timed out) in the child" : "");
    else
        snprintf(buf, len, "%s %d exited with status %d", what, round, WEXITSTATUS(status));
}

static const char *true_path(void)
{
    return access("/bin/true", X_OK) == 0 ? "/bin/true" : "/usr/bin/true";
}

static int parse(const char *s, int lo, int hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || end == s || v < lo || v > hi) {
        fprintf(stderr, "usage: stress_fork [forks %d..%d] [spawns]\n", lo, hi);
        exit(2);
    }
    return (int)v;
}

int main(int argc, char **argv)
{
    int forks = argc > 1 ? parse(argv[1], 0, 100000) : 200;
    int spawns = argc > 2 ? parse(argv[2], 0, 100000) : 20;
    int spawn_every = spawns ? (forks / spawns > 0 ? forks / spawns : 1) : 0;
    alarm(PARENT_TIMEOUT);

    void *probe = malloc(24);
    if (!probe || starmalloc_malloc_usable_size(probe) < 24)
        die("main", "malloc is not StarMalloc's");
    free(probe);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t threads[WORKERS];
    for (uintptr_t i = 0; i < WORKERS; i++)
        if (pthread_create(&threads[i], NULL, worker_main, (void *)(i + 1)) != 0)
            die("main", "pthread_create failed");

    uint64_t rng = 7;
    int spawned = 0;
    char msg[256];
    for (int round = 0; round < forks || spawned < spawns; round++) {
        if (round < forks) {
            struct block parent_blocks[PARENT_BLOCKS];
            for (unsigned i = 0; i < PARENT_BLOCKS; i++)
                alloc_block(&parent_blocks[i], random_size(&rng), (uint64_t)round * 100 + i,
                            "parent");
            pid_t pid = fork();
            if (pid < 0) {
                perror("stress_fork: fork");
                return 1;
            }
            if (pid == 0)
                child_main(parent_blocks, PARENT_BLOCKS, splitmix64(&rng));
            for (unsigned i = 0; i < PARENT_BLOCKS; i++) {
                check(&parent_blocks[i], "parent after fork");
                free(parent_blocks[i].p);
            }
            int status;
            if (waitpid(pid, &status, 0) != pid) {
                perror("stress_fork: waitpid");
                return 1;
            }
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                describe_status(msg, sizeof msg, "fork child", round, status);
                fprintf(stderr, "stress_fork: FAIL: %s\n", msg);
                return 1;
            }
        }
        if (spawned < spawns && (round >= forks || (spawn_every && round % spawn_every == 0))) {
            pid_t pid;
            char *args[] = {(char *)"true", NULL};
            int err = posix_spawn(&pid, true_path(), NULL, NULL, args, environ);
            if (err) {
                fprintf(stderr, "stress_fork: FAIL: posix_spawn(%s): %s\n", true_path(),
                        strerror(err));
                return 1;
            }
            int status;
            if (waitpid(pid, &status, 0) != pid) {
                perror("stress_fork: waitpid");
                return 1;
            }
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                describe_status(msg, sizeof msg, "posix_spawn child", spawned, status);
                fprintf(stderr, "stress_fork: FAIL: %s\n", msg);
                return 1;
            }
            spawned++;
        }
    }

    atomic_store(&stop, true);
    for (unsigned i = 0; i < WORKERS; i++)
        pthread_join(threads[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("stress_fork: %d forks and %d posix_spawns with %d busy threads (%" PRIuFAST64
           " worker operations), %.2f s: ok\n",
           forks, spawned, WORKERS, atomic_load(&worker_ops), secs);
    return 0;
}

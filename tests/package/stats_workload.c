/* The statistics as a user sees them, linked against libstarmalloc.so (so malloc is
 * StarMalloc's). One scenario per run: stats_workload <scenario>.
 *
 *   exit      allocates known amounts and keeps them: 1000 blocks of 100 bytes (size class 112)
 *             and 10 large objects of 1 MiB. Run with STARMALLOC_STATS=1, check-stats-exit.cmake
 *             reads the table printed at exit; without it, nothing may be printed.
 *   pipe      starmalloc_stats_print() to a pipe, and glibc's malloc_stats() with stderr on a
 *             pipe: the table is there, and printing it allocated nothing.
 *   mallinfo  mallinfo2() and mallinfo() move by exactly what was allocated and freed.
 *   trim      64 MiB of small blocks allocated, touched and freed: malloc_trim(0) returns 1, the
 *             committed count, mallinfo2().arena and the resident set drop; a second
 *             malloc_trim(0) finds nothing left and returns 0.
 * Exits 0 when every check holds, else prints what failed and exits 1. */
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "starmalloc.h"

static int failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "stats_workload: check failed at line %d: %s\n", __LINE__, #cond);     \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

enum { MiB = 1 << 20 };

/* Makes p escape, so that the compiler cannot drop a malloc whose block is only freed. */
static void keep(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

static int scenario_exit(void)
{
    /* Kept until exit: the table printed then must show them. */
    for (int i = 0; i < 1000; i++) {
        char *p = malloc(100);
        keep(p);
        CHECK(p != NULL);
        memset(p, 1, 100);
    }
    for (int i = 0; i < 10; i++) {
        char *p = malloc(MiB);
        keep(p);
        CHECK(p != NULL);
        p[0] = 1;
    }
    printf("stats_workload: exit scenario allocated 1000 x 100 B and 10 x 1 MiB\n");
    return 0;
}

/* Reads everything available on fd (non-blocking) into buf (NUL-terminated). */
static size_t drain(int fd, char *buf, size_t size)
{
    size_t len = 0;
    ssize_t n;
    while (len < size - 1 && (n = read(fd, buf + len, size - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    return len;
}

static void check_table(const char *text, const char *who)
{
    char header[64];
    snprintf(header, sizeof(header), "starmalloc: statistics of process %d (", (int)getpid());
    if (!strstr(text, header) || !strstr(text, starmalloc_build_info()) ||
        !strstr(text, "   class        slabs   slots in use") || !strstr(text, "\n     112 ") ||
        !strstr(text, "\n   total ") ||
        !strstr(text, "\nlarge objects: 3, 3145728 bytes (3.0 MiB)\n") ||
        !strstr(text, "\nguard failures: ") || !strstr(text, "\ncommitted memory: ") ||
        !strstr(text, " at peak\n")) {
        fprintf(stderr, "stats_workload: %s printed an unexpected table:\n%s\n", who, text);
        failures++;
    }
}

static int scenario_pipe(void)
{
    char *small[50], *large[3];
    for (int i = 0; i < 50; i++)
        keep(small[i] = malloc(100));
    for (int i = 0; i < 3; i++)
        keep(large[i] = malloc(MiB));

    int fds[2];
    CHECK(pipe(fds) == 0);
    CHECK(fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0);
    static char text[1 << 16];

    struct starmalloc_stats before, after;
    starmalloc_stats_get(&before);
    starmalloc_stats_print(fds[1]);
    starmalloc_stats_get(&after);
    /* Printing allocated nothing and committed nothing. */
    CHECK(after.small_slots_in_use == before.small_slots_in_use);
    CHECK(after.large_objects == before.large_objects);
    CHECK(after.committed_bytes == before.committed_bytes);
    drain(fds[0], text, sizeof(text));
    check_table(text, "starmalloc_stats_print");

    /* glibc's malloc_stats() prints StarMalloc's table on stderr. */
    fflush(stderr);
    int saved_stderr = dup(2);
    CHECK(saved_stderr >= 0 && dup2(fds[1], 2) == 2);
    malloc_stats();
    CHECK(dup2(saved_stderr, 2) == 2);
    close(saved_stderr);
    drain(fds[0], text, sizeof(text));
    check_table(text, "malloc_stats");

    close(fds[0]);
    close(fds[1]);
    for (int i = 0; i < 50; i++)
        free(small[i]);
    for (int i = 0; i < 3; i++)
        free(large[i]);
    return 0;
}

static int scenario_mallinfo(void)
{
    enum {
        LARGE = 5,
        LARGE_BYTES = 50 * 4096 /* above the largest class */,
        SMALL = 500,
        SMALL_BYTES = 48
    };
    struct mallinfo2 m0 = mallinfo2();
    char *large[LARGE], *small[SMALL];
    for (int i = 0; i < LARGE; i++)
        keep(large[i] = malloc(LARGE_BYTES));
    for (int i = 0; i < SMALL; i++)
        keep(small[i] = malloc(SMALL_BYTES));
    struct mallinfo2 m1 = mallinfo2();
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations" /* the old interface, on purpose */
    struct mallinfo m1_old = mallinfo();
#pragma GCC diagnostic pop
    struct starmalloc_stats st;
    starmalloc_stats_get(&st);

    CHECK(m1.hblks == m0.hblks + LARGE);
    CHECK(m1.hblkhd == m0.hblkhd + LARGE * LARGE_BYTES);
    CHECK(m1.uordblks >= m0.uordblks + SMALL * SMALL_BYTES);
    CHECK(m1.arena >= m1.uordblks);
    CHECK(m1.fordblks == m1.arena - m1.uordblks);
    CHECK(m1.usmblks >= m1.arena + m1.hblkhd); /* the peak is at least what is committed now */
    CHECK(m1.keepcost == 0 && m1.smblks == 0 && m1.fsmblks == 0);
    /* The same numbers as the prefixed statistics. */
    CHECK(m1.hblks == st.large_objects && m1.hblkhd == st.large_bytes);
    CHECK(m1.uordblks == st.small_bytes_in_use && m1.arena == st.small_committed_bytes);
    CHECK(m1.arena + m1.hblkhd == st.committed_bytes);
    /* The old int interface agrees while the numbers fit. */
    CHECK((size_t)m1_old.hblks == m1.hblks && (size_t)m1_old.hblkhd == m1.hblkhd);
    CHECK((size_t)m1_old.uordblks == m1.uordblks && (size_t)m1_old.arena == m1.arena);

    for (int i = 0; i < LARGE; i++)
        free(large[i]);
    for (int i = 0; i < SMALL; i++)
        free(small[i]);
    struct mallinfo2 m2 = mallinfo2();
    CHECK(m2.hblks == m0.hblks && m2.hblkhd == m0.hblkhd);
    CHECK(m2.uordblks < m1.uordblks);
    return 0;
}

/* Resident pages of this process, from /proc/self/statm. */
static size_t resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (!f || fscanf(f, "%lu %lu", &size, &resident) != 2)
        resident = 0;
    if (f)
        fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

static int scenario_trim(void)
{
    enum { COUNT = 65536, SIZE = 1000 }; /* class 1024: 64 MiB of slots */
    char **blocks = malloc(COUNT * sizeof(*blocks));
    CHECK(blocks != NULL);
    struct starmalloc_stats s0, s1, s2, s3;
    starmalloc_stats_get(&s0);
    for (int i = 0; i < COUNT; i++) {
        keep(blocks[i] = malloc(SIZE));
        CHECK(blocks[i] != NULL);
        memset(blocks[i], 0x5a, SIZE); /* make the pages resident */
    }
    starmalloc_stats_get(&s1);
    size_t rss1 = resident_bytes();
    struct mallinfo2 m1 = mallinfo2();
    for (int i = 0; i < COUNT; i++)
        free(blocks[i]);
    starmalloc_stats_get(&s2);
    int released = malloc_trim(0);
    starmalloc_stats_get(&s3);
    size_t rss3 = resident_bytes();
    struct mallinfo2 m3 = mallinfo2();
    int released_again = malloc_trim(0);

    printf("trim: committed %zu -> %zu (after free %zu, after trim %zu), peak %zu; "
           "resident %zu -> %zu; malloc_trim returned %d then %d\n",
           s0.committed_bytes, s1.committed_bytes, s2.committed_bytes, s3.committed_bytes,
           s3.peak_committed_bytes, rss1, rss3, released, released_again);
    CHECK(s1.committed_bytes >= s0.committed_bytes + 64 * (size_t)MiB);
    CHECK(s3.peak_committed_bytes >= s1.committed_bytes);
    /* Trimming released something (empty slabs were still committed after the frees)... */
    CHECK(released == 1);
    CHECK(s3.committed_bytes < s2.committed_bytes);
    /* ... and afterwards most of the 64 MiB is gone: by the count, by mallinfo2 and by RSS
     * (the remainder: slots held in quarantine, metadata, guard slabs). */
    CHECK(s3.committed_bytes + 48 * (size_t)MiB <= s1.committed_bytes);
    CHECK(m3.arena + 48 * (size_t)MiB <= m1.arena);
    CHECK(rss3 + 48 * (size_t)MiB <= rss1);
    /* Nothing left to release. */
    CHECK(released_again == 0);
    free(blocks);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: stats_workload exit|pipe|mallinfo|trim\n");
        return 2;
    }
    if (strcmp(argv[1], "exit") == 0)
        scenario_exit();
    else if (strcmp(argv[1], "pipe") == 0)
        scenario_pipe();
    else if (strcmp(argv[1], "mallinfo") == 0)
        scenario_mallinfo();
    else if (strcmp(argv[1], "trim") == 0)
        scenario_trim();
    else
        return 2;
    if (failures) {
        fprintf(stderr, "stats_workload %s: %d check(s) failed\n", argv[1], failures);
        return 1;
    }
    printf("stats_workload %s: ok\n", argv[1]);
    return 0;
}

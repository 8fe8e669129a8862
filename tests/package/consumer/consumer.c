/* A program that uses StarMalloc the way its users do: it calls plain malloc & co. and checks,
 * from the inside, that they were StarMalloc's.
 *
 * Proofs, each independent of the others:
 *   - starmalloc_malloc_usable_size() aborts on a block StarMalloc did not allocate: it is called
 *     on blocks from malloc, calloc, realloc and from strdup (malloc called inside the C
 *     library, which only goes to StarMalloc when the override took effect process-wide);
 *   - StarMalloc's own statistics grow by what this program allocated, and shrink again;
 *   - mallinfo2() (glibc's name, StarMalloc's answer) agrees with those statistics.
 * With EXPECT_* macros defined (from the CMake package variables), it also checks that
 * starmalloc_build_info() describes the build that the package said it was. Built with
 * CONSUMER_STATIC, it checks that libstarmalloc.so is not mapped (the allocator is inside the
 * executable); without, that it is.
 * Prints "consumer: ok (<build info>)" and exits 0, or says what failed and exits 1. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <starmalloc.h>

static int failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "consumer: check failed at line %d: %s\n", __LINE__, #cond);           \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* Whether libstarmalloc.so is mapped in this process: it must be for the shared target, and
 * must not be for the static one (whose allocator is inside the executable). */
static int shared_library_mapped(void)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps)
        return -1;
    char line[4096];
    int found = 0;
    while (fgets(line, sizeof(line), maps))
        if (strstr(line, "/libstarmalloc.so"))
            found = 1;
    fclose(maps);
    return found;
}

static void check_build_info(void)
{
    const char *info = starmalloc_build_info();
    CHECK(strncmp(info, "StarMalloc ", 11) == 0);
    CHECK(starmalloc_version() == STARMALLOC_VERSION);
#ifdef EXPECT_VERSION
    CHECK(strncmp(info + 11, EXPECT_VERSION " ", strlen(EXPECT_VERSION) + 1) == 0);
#endif
#ifdef EXPECT_HARDENING
    CHECK(strstr(info, " hardening=" EXPECT_HARDENING " ") != NULL);
#endif
#ifdef EXPECT_ARENAS
    CHECK(strstr(info, " arenas=" EXPECT_ARENAS " ") != NULL);
#endif
}

int main(void)
{
    check_build_info();
#ifdef CONSUMER_STATIC
    CHECK(shared_library_mapped() == 0);
#else
    CHECK(shared_library_mapped() == 1);
#endif

    struct starmalloc_stats before, during, after;
    starmalloc_stats_get(&before);

    enum { COUNT = 1000, SIZE = 200 };
    static char *blocks[COUNT];
    for (int i = 0; i < COUNT; i++) {
        blocks[i] = malloc(SIZE);
        CHECK(blocks[i] != NULL);
        memset(blocks[i], i & 0xff, SIZE);
        CHECK(starmalloc_malloc_usable_size(blocks[i]) >= SIZE); /* aborts if not ours */
    }
    char *zeroed = calloc(100, 10);
    CHECK(zeroed && zeroed[999] == 0 && starmalloc_malloc_usable_size(zeroed) >= 1000);
    char *big = realloc(NULL, 1 << 20); /* a large object */
    CHECK(big && starmalloc_malloc_usable_size(big) >= 1 << 20);
    char *copy = strdup("allocated inside the C library");
    CHECK(copy && starmalloc_malloc_usable_size(copy) >= 31);

    starmalloc_stats_get(&during);
    CHECK(during.small_slots_in_use >= before.small_slots_in_use + COUNT + 2);
    CHECK(during.small_bytes_in_use >= before.small_bytes_in_use + COUNT * SIZE);
    CHECK(during.large_objects == before.large_objects + 1);
    CHECK(during.large_bytes >= before.large_bytes + (1 << 20));
    CHECK(during.committed_bytes >= during.small_bytes_in_use + during.large_bytes);
    CHECK(during.peak_committed_bytes >= during.committed_bytes);

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    struct mallinfo2 mi = mallinfo2();
    CHECK(mi.hblks == during.large_objects);
    CHECK(mi.hblkhd == during.large_bytes);
    CHECK(mi.uordblks >= COUNT * SIZE);
    CHECK(mi.arena >= mi.uordblks && mi.fordblks == mi.arena - mi.uordblks);
    CHECK(mi.usmblks >= mi.arena + mi.hblkhd);
#endif

    for (int i = 0; i < COUNT; i++) {
        for (int j = 0; j < SIZE; j++)
            if (blocks[i][j] != (char)(i & 0xff)) {
                CHECK(!"block content changed");
                break;
            }
        free(blocks[i]);
    }
    free(zeroed);
    free(big);
    free(copy);
    starmalloc_stats_get(&after);
    CHECK(after.large_objects == before.large_objects);
    /* Slot quarantine may hold a few freed blocks back (they still count), never a thousand. */
    CHECK(after.small_slots_in_use < during.small_slots_in_use);

    if (failures) {
        fprintf(stderr, "consumer: %d check(s) failed\n", failures);
        return 1;
    }
    printf("consumer: ok (%s)\n", starmalloc_build_info());
    return 0;
}

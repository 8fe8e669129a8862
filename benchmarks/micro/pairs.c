/* starmalloc-pairs: a fixed number of malloc/free pairs of one size, for instruction counts.
 *
 *   starmalloc-pairs <pairs> <size>
 *
 * Run under `valgrind --tool=callgrind` with an allocator preloaded (or none for glibc):
 * instructions per pair = (Ir(pairs) - Ir(0)) / pairs. One warm-up pair runs in both cases,
 * so that the allocator's initialisation and first slab fall into the baseline. Plain C,
 * never linked with StarMalloc. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: starmalloc-pairs <pairs> <size>\n");
        return 2;
    }
    long pairs = strtol(argv[1], NULL, 10);
    long size = strtol(argv[2], NULL, 10);
    if (pairs < 0 || size < 1) {
        fprintf(stderr, "starmalloc-pairs: bad arguments\n");
        return 2;
    }
    char *warm = malloc((size_t)size);
    if (!warm)
        return 1;
    warm[0] = 1;
    free(warm);
    for (long i = 0; i < pairs; i++) {
        char *p = malloc((size_t)size);
        if (!p)
            return 1;
        /* A use the compiler cannot see through, so the pair is not optimised away. */
        __asm__ volatile("" : : "r"(p) : "memory");
        p[0] = (char)i;
        free(p);
    }
    return 0;
}

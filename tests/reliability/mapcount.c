/* rel_mapcount: the kernel's mapping limit (vm.max_map_count) reached.
 *
 * Linked against the overriding library. Usage: rel_mapcount
 * Lowering vm.max_map_count needs root and would disturb every other process of the machine,
 * so the test fills the process's own mapping table instead: it maps one inaccessible range and
 * makes every other page of it readable, one mprotect at a time, until the kernel refuses
 * (each call splits a mapping in three). At that point any new mapping, guard page or
 * protection change that splits a mapping is refused. Then, with 0, 1, 2, ... mappings of room
 * given back, it allocates large objects (mapped with guard pages) and many small blocks of
 * classes whose slab runs end at guard slabs, frees and reallocates, and checks:
 *   - nothing crashes or aborts, and every allocation either succeeds (its contents then stay
 *     intact until it is freed) or fails with NULL + ENOMEM;
 *   - no guard is lost silently: a large object whose neighbouring page is readable was
 *     counted as a guard failure by the very call that returned it, and with guards
 *     configured the statistics report guard failures (starmalloc_stats_get) at all;
 *   - the warning "starmalloc: warning: ..." appears on stderr exactly once when anything was
 *     counted (never when nothing was);
 *   - once the room is given back, allocation works normally again.
 * Exits 77 (skipped) when vm.max_map_count is too large to fill quickly. */
#define _GNU_SOURCE /* memfd_create */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "rel_common.h"
#include "starmalloc.h"
#include "starmalloc/config.h"

enum {
    MAX_MAP_COUNT_TESTED = 1 << 20, /* above this, filling the table takes too long: skip */
    SKIPPED = 77,
    ROOM_STEPS = 12, /* rounds, each with one more mapping of room */
    LIVE_MAX = 20000,
};

static const size_t PAGE = 4096;

struct live_block {
    unsigned char *p;
    size_t size;
    uint64_t tag;
};

static struct live_block live[LIVE_MAX];
static size_t nlive;
static int probe_pipe[2];
static size_t succeeded, refused, unguarded_seen;

/* ---- the mapping table ------------------------------------------------------------------- */

static unsigned char *filler;
static size_t filler_pages;
static size_t filler_splits; /* pages made readable: pages 1, 3, 5, ... below 2 * splits */

static size_t read_max_map_count(void)
{
    char buf[32];
    int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return (size_t)strtoul(buf, NULL, 10);
}

/* Splits the filler mapping until the kernel refuses: the process is at its mapping limit. */
static void fill_mapping_table(size_t max_map_count)
{
    filler_pages = 2 * max_map_count + 16;
    filler = mmap(NULL, filler_pages * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                  -1, 0);
    REL_CHECK(filler != MAP_FAILED, "cannot map the filler range");
    for (filler_splits = 0; 2 * filler_splits + 1 < filler_pages; filler_splits++) {
        if (mprotect(filler + (2 * filler_splits + 1) * PAGE, PAGE, PROT_READ) != 0) {
            REL_CHECK(errno == ENOMEM, "mprotect failed with errno %d", errno);
            return;
        }
    }
    REL_FAIL("%zu mprotect splits and the kernel never refused one", filler_splits);
}

/* Gives back room for about `mappings` more mappings (merging readable pages back). */
static void give_back_mappings(size_t mappings)
{
    for (size_t i = 0; i < (mappings + 1) / 2 && filler_splits > 0; i++) {
        filler_splits--;
        REL_CHECK(mprotect(filler + (2 * filler_splits + 1) * PAGE, PAGE, PROT_NONE) == 0,
                  "merging a filler page back failed (errno %d)", errno);
    }
}

/* Whether the byte at p can be read (write(2) from an unreadable address fails with EFAULT). */
static __attribute__((noinline)) bool readable(uintptr_t addr)
{
    if (write(probe_pipe[1], (const void *)addr, 1) != 1)
        return false;
    char c;
    REL_CHECK(read(probe_pipe[0], &c, 1) == 1, "probe pipe");
    return true;
}

/* ---- allocations under the limit --------------------------------------------------------- */

static uint64_t guard_failures(void)
{
    struct starmalloc_stats st;
    starmalloc_stats_get(&st);
    return st.guard_failures;
}

static void keep(void *p, size_t size)
{
    REL_CHECK(nlive < LIVE_MAX, "too many live blocks");
    struct live_block *b = &live[nlive++];
    b->p = p;
    b->size = size;
    b->tag = (uint64_t)(uintptr_t)p ^ size;
    size_t len = size < 512 ? size : 512;
    rel_fill(p, len, b->tag);
    if (size > len)
        b->p[size - 1] = (unsigned char)b->tag;
}

static void check_and_free(size_t index)
{
    struct live_block *b = &live[index];
    size_t len = b->size < 512 ? b->size : 512;
    REL_CHECK(rel_mismatch(b->p, len, b->tag) == len &&
                  (b->size == len || b->p[b->size - 1] == (unsigned char)b->tag),
              "block %p (%zu bytes) changed while live", (void *)b->p, b->size);
    free(b->p);
    *b = live[--nlive];
}

/* One allocation that may succeed or fail with ENOMEM; large ones are checked for guards. */
static void try_alloc(size_t size)
{
    uint64_t failures_before = guard_failures();
    errno = 0;
    unsigned char *p = malloc(size);
    if (!p) {
        REL_CHECK(errno == ENOMEM, "malloc(%zu) at the mapping limit: errno %d, not ENOMEM", size,
                  errno);
        refused++;
        return;
    }
    succeeded++;
    if (SM_LARGE_GUARDS != 0 && size > SM_MAX_SMALL_SIZE) {
        size_t usable = malloc_usable_size(p);
        uintptr_t start = (uintptr_t)p, end = start + ((usable + PAGE - 1) & ~(PAGE - 1));
        bool exposed = readable(start - 1) || readable(end);
        if (exposed) {
            unguarded_seen++;
            REL_CHECK(guard_failures() > failures_before,
                      "large object %p (%zu bytes) has a readable neighbour page, yet no guard "
                      "failure was counted: a guard was lost silently",
                      (void *)p, size);
        }
    }
    keep(p, size);
}

static void workload(struct rel_rng *rng)
{
    /* Large objects: each one a mapping with guards. */
    for (int i = 0; i < 6; i++)
        try_alloc(SM_MAX_SMALL_SIZE + 1 + rel_below(rng, 3u << 20));
    /* Small blocks of classes already in use: their runs end at guard slabs. */
    static const size_t sizes[] = {16, 64, 200, 1000, 3000, 12000};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
        for (int i = 0; i < 300; i++)
            try_alloc(sizes[s]);
    /* Free a random third: slabs empty out, large objects go to quarantine. */
    for (size_t i = nlive / 3; i > 0 && nlive > 0; i--)
        check_and_free(rel_below(rng, nlive));
}

/* ---- stderr capture ------------------------------------------------------------------------ */

static int saved_stderr = -1;
static int capture_fd = -1;

static void capture_stderr(void)
{
    capture_fd = memfd_create("rel_mapcount-stderr", MFD_CLOEXEC);
    REL_CHECK(capture_fd >= 0, "memfd_create failed");
    saved_stderr = dup(STDERR_FILENO);
    REL_CHECK(saved_stderr >= 0 && dup2(capture_fd, STDERR_FILENO) >= 0, "dup2 failed");
    rel_report_fd = saved_stderr;
}

/* Restores stderr, copies the captured text to it, and returns its warning lines. */
static unsigned release_stderr(void)
{
    REL_CHECK(dup2(saved_stderr, STDERR_FILENO) >= 0, "dup2 failed");
    rel_report_fd = STDERR_FILENO;
    static char text[1 << 16];
    ssize_t n = pread(capture_fd, text, sizeof(text) - 1, 0);
    REL_CHECK(n >= 0, "cannot read the captured stderr");
    text[n] = '\0';
    rel_write_all(STDERR_FILENO, text, (size_t)n);
    unsigned warnings = 0;
    static const char prefix[] = "starmalloc: warning: ";
    for (const char *line = text; *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : "")
        warnings += strncmp(line, prefix, sizeof(prefix) - 1) == 0;
    return warnings;
}

int main(void)
{
    rel_program = "rel_mapcount";
    size_t max_map_count = read_max_map_count();
    if (max_map_count == 0 || max_map_count > MAX_MAP_COUNT_TESTED) {
        rel_say("skipped: vm.max_map_count is %zu", max_map_count);
        return SKIPPED;
    }
    REL_CHECK(pipe2(probe_pipe, O_CLOEXEC) == 0, "pipe2 failed");
    capture_stderr();

    /* Warm up: the heap is initialised, and each class used below has a committed slab run
     * and metadata, so that at the limit its next slab lies behind a guard slab. */
    struct rel_rng rng = {42};
    for (int i = 0; i < 2; i++)
        workload(&rng);
    while (nlive > 0)
        check_and_free(nlive - 1);
    REL_CHECK(guard_failures() == 0, "guard failures before the mapping table was full");

    fill_mapping_table(max_map_count);
    for (size_t room = 0; room < ROOM_STEPS; room++) {
        workload(&rng);
        give_back_mappings(room == 0 ? 0 : 2);
    }
    while (nlive > 0)
        check_and_free(rel_below(&rng, nlive));
    uint64_t failures = guard_failures();

    /* Room again: everything works as usual. */
    REL_CHECK(munmap(filler, filler_pages * PAGE) == 0, "munmap of the filler failed");
    size_t refused_at_limit = refused;
    refused = 0;
    for (int i = 0; i < 4; i++)
        workload(&rng);
    REL_CHECK(refused == 0, "%zu allocations failed after the mapping table was emptied", refused);
    while (nlive > 0)
        check_and_free(nlive - 1);

    unsigned warnings = release_stderr();
    rel_say("%zu splits filled the table; %zu allocations succeeded, %zu were refused with "
            "ENOMEM; %zu large objects lost a guard; guard failures: %llu; warnings: %u",
            filler_splits, succeeded, refused_at_limit, unguarded_seen,
            (unsigned long long)failures, warnings);
    /* fill_mapping_table stopped at the kernel's refusal, so the table was full. Whether an
     * allocation had to be refused depends on the preset: without guards and quarantines
     * (none) the heap reuses its mappings and may never need a new one. With guards, each
     * new guard is a split, and the statistics must show the ones the kernel refused. */
    if (SM_LARGE_GUARDS != 0 || SM_GUARD_INTERVAL != 0)
        REL_CHECK(failures > 0, "guards are configured, yet no guard failure was counted at the "
                                "mapping limit");
    REL_CHECK(warnings == (failures > 0 ? 1u : 0u),
              "%u 'starmalloc: warning:' lines for %llu guard failures: expected exactly one",
              warnings, (unsigned long long)failures);
    return 0;
}

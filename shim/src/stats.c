/* Statistics: gathered on demand from the arenas' per-class counters, the large-object map
 * and the region's committed-bytes accounting, so the allocation paths pay nothing for them.
 * Everything here runs without allocating (it may run inside malloc_stats, at exit, or while
 * the heap is exhausted): numbers are formatted by hand into a stack buffer and written with
 * write(2). */
#include "stats.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "heap.h"
#include "sm_build_info.h" /* generated: SM_BUILD_INFO */
#include "starmalloc.h"
#include "starmalloc/arena.h"
#include "starmalloc/config.h"
#include "starmalloc/hardening.h"
#include "starmalloc/region.h"
#include "starmalloc/sizeclass.h"

_Static_assert(STARMALLOC_VERSION_MAJOR * 10000 + STARMALLOC_VERSION_MINOR * 100 +
                       STARMALLOC_VERSION_PATCH ==
                   SM_BUILD_VERSION_NUMBER,
               "starmalloc.h's STARMALLOC_VERSION_* must match project(VERSION)");

void sm_stats_note_guard_failure(const char *what)
{
    sm_harden_note_guard_failure(what);
}

uint64_t sm_stats_guard_failures(void)
{
    return sm_harden_guard_failures();
}

int starmalloc_version(void)
{
    return STARMALLOC_VERSION;
}

const char *starmalloc_build_info(void)
{
    return SM_BUILD_INFO;
}

/* The per-class state exists once the heap is initialised. Statistics asked for before the
 * first allocation initialise it (which reserves address space and commits the class
 * headers) rather than race with a first allocation in another thread. */
static bool small_heap_ready(void)
{
    return sm_heap_ready();
}

/* One size class summed over every arena. */
struct class_totals {
    uint64_t slots_in_use;
    uint64_t slabs; /* partial + full + empty: slabs that hold committed slots */
    uint64_t slabs_empty;
    uint64_t slabs_decommitted;
    uint64_t slabs_quarantined;
    uint64_t slabs_used;
};

static void class_totals(unsigned cls, struct class_totals *t)
{
    *t = (struct class_totals){0};
    for (unsigned a = 0; a < SM_ARENAS; a++) {
        struct sm_class_stats s;
        sm_arena_class_stats(a, cls, &s);
        t->slots_in_use += s.slots_in_use;
        t->slabs += (uint64_t)s.slabs_partial + s.slabs_full + s.slabs_empty;
        t->slabs_empty += s.slabs_empty;
        t->slabs_decommitted += s.slabs_decommitted;
        t->slabs_quarantined += s.slabs_quarantined;
        t->slabs_used += s.slabs_used;
    }
}

void starmalloc_stats_get(struct starmalloc_stats *out)
{
    *out = (struct starmalloc_stats){0};
    if (small_heap_ready()) {
        for (unsigned c = 0; c < SM_NB_CLASSES; c++) {
            struct class_totals t;
            class_totals(c, &t);
            out->small_slots_in_use += t.slots_in_use;
            out->small_bytes_in_use += t.slots_in_use * sm_sizeclass_geometry(c)->slot_size;
            out->small_slabs += t.slabs;
        }
    }
    sm_large_stats(&out->large_objects, &out->large_bytes);
    out->committed_bytes = sm_region_committed_bytes();
    out->peak_committed_bytes = sm_region_peak_committed_bytes();
    /* Read separately from the large map: another thread may have mapped a large object in
     * between, so clamp rather than wrap. */
    out->small_committed_bytes =
        out->committed_bytes > out->large_bytes ? out->committed_bytes - out->large_bytes : 0;
    out->guard_failures = (size_t)sm_stats_guard_failures();
}

int starmalloc_trim(size_t pad)
{
    (void)pad; /* no heap top to keep padding at: every slab is trimmed alike */
    size_t released = sm_arena_trim();
    released += sm_large_trim();
    return released > 0 ? 1 : 0;
}

/* --- Formatting without stdio ------------------------------------------------------------ */

/* A line-buffered writer to one file descriptor; output is written whenever the buffer
 * fills and at the end. */
struct out {
    int fd;
    size_t len;
    char buf[2048];
};

static void out_flush(struct out *o)
{
    size_t done = 0;
    while (done < o->len) {
        ssize_t n = write(o->fd, o->buf + done, o->len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* nowhere to report a failed report: drop it */
        done += (size_t)n;
    }
    o->len = 0;
}

static void out_char(struct out *o, char c)
{
    if (o->len == sizeof(o->buf))
        out_flush(o);
    o->buf[o->len++] = c;
}

static void out_str(struct out *o, const char *s)
{
    while (*s)
        out_char(o, *s++);
}

/* value in decimal into buf (at least 21 bytes); returns the length. */
static size_t format_decimal(char *buf, uint64_t value)
{
    char reversed[20];
    size_t n = 0;
    do {
        reversed[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    for (size_t i = 0; i < n; i++)
        buf[i] = reversed[n - 1 - i];
    buf[n] = '\0';
    return n;
}

/* value in decimal, right-aligned in a field of `width` characters. */
static void out_dec(struct out *o, uint64_t value, size_t width)
{
    char digits[21];
    size_t n = format_decimal(digits, value);
    for (; width > n; width--)
        out_char(o, ' ');
    out_str(o, digits);
}

/* bytes in binary units with one decimal, e.g. "64.0 MiB" (plain "B" below 1 KiB). */
static void out_size(struct out *o, uint64_t bytes)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024) {
        out_dec(o, bytes, 0);
        out_str(o, " B");
        return;
    }
    unsigned u = 0;
    while (u + 1 < sizeof(units) / sizeof(units[0]) && (bytes >> (10 * (u + 2))) != 0)
        u++;
    unsigned shift = 10 * (u + 1);
    uint64_t whole = bytes >> shift;
    uint64_t tenths = ((bytes & ((UINT64_C(1) << shift) - 1)) * 10) >> shift;
    out_dec(o, whole, 0);
    out_char(o, '.');
    out_dec(o, tenths, 0);
    out_char(o, ' ');
    out_str(o, units[u]);
}

/* "<bytes> bytes (<human>)" */
static void out_bytes(struct out *o, uint64_t bytes)
{
    out_dec(o, bytes, 0);
    out_str(o, " bytes (");
    out_size(o, bytes);
    out_char(o, ')');
}

enum { COLUMN = 13 };

static void out_class_row(struct out *o, const char *label, uint64_t slot_size,
                          const struct class_totals *t, uint64_t bytes)
{
    if (label)
        out_str(o, label); /* 8 characters, as the size column */
    else
        out_dec(o, slot_size, 8);
    out_dec(o, t->slabs, COLUMN);
    out_dec(o, t->slots_in_use, COLUMN + 2);
    out_dec(o, bytes, COLUMN + 4);
    out_dec(o, t->slabs_empty, COLUMN);
    out_dec(o, t->slabs_decommitted, COLUMN);
    out_dec(o, t->slabs_quarantined, COLUMN);
    out_char(o, '\n');
}

void starmalloc_stats_print(int fd)
{
    struct out o = {.fd = fd};
    char pid[21];
    format_decimal(pid, (uint64_t)getpid());
    out_str(&o, "starmalloc: statistics of process ");
    out_str(&o, pid);
    out_str(&o, " (" SM_BUILD_INFO ")\n");

    struct starmalloc_stats st;
    starmalloc_stats_get(&st);

    out_str(&o, "small objects by size class (classes never used are not shown):\n");
    out_str(&o, "   class        slabs   slots in use       bytes in use  empty slabs"
                "  decommitted  quarantined\n");
    struct class_totals sum = {0};
    uint64_t sum_bytes = 0;
    if (small_heap_ready()) {
        for (unsigned c = 0; c < SM_NB_CLASSES; c++) {
            struct class_totals t;
            class_totals(c, &t);
            if (t.slabs_used == 0 && t.slots_in_use == 0)
                continue;
            uint64_t slot_size = sm_sizeclass_geometry(c)->slot_size;
            uint64_t bytes = t.slots_in_use * slot_size;
            out_class_row(&o, NULL, slot_size, &t, bytes);
            sum.slabs += t.slabs;
            sum.slots_in_use += t.slots_in_use;
            sum.slabs_empty += t.slabs_empty;
            sum.slabs_decommitted += t.slabs_decommitted;
            sum.slabs_quarantined += t.slabs_quarantined;
            sum_bytes += bytes;
        }
    }
    out_class_row(&o, "   total", 0, &sum, sum_bytes);

    out_str(&o, "large objects: ");
    out_dec(&o, st.large_objects, 0);
    out_str(&o, ", ");
    out_bytes(&o, st.large_bytes);
    out_str(&o, "\nguard failures: ");
    out_dec(&o, st.guard_failures, 0);
    out_str(&o, sm_region_guard_markers() ? "\nslab guards: guard markers"
                                          : "\nslab guards: PROT_NONE mappings");
    out_str(&o, "\ncommitted memory: ");
    out_bytes(&o, st.committed_bytes);
    out_str(&o, " now, ");
    out_bytes(&o, st.peak_committed_bytes);
    out_str(&o, " at peak\n");
    out_flush(&o);
}

/* --- STARMALLOC_STATS=1: the table on stderr at exit -------------------------------------- */

static bool stats_at_exit;

/* Read once when the library is loaded; getenv neither allocates nor locks. A destructor
 * rather than atexit(), which may allocate in glibc. */
__attribute__((constructor)) static void stats_read_environment(void)
{
    const char *value = getenv("STARMALLOC_STATS");
    stats_at_exit = value && value[0] != '\0' && !(value[0] == '0' && value[1] == '\0');
}

__attribute__((destructor)) static void stats_print_at_exit(void)
{
    if (stats_at_exit)
        starmalloc_stats_print(STDERR_FILENO);
}

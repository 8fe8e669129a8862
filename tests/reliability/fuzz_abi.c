/* fuzz_abi.c: a libFuzzer harness that drives every call of StarMalloc's prefixed ABI with
 * random operation sequences and checks each result against a shadow model.
 *
 * The input is a byte stream of operations: an opcode byte, then the operation's arguments
 * (slot number, size, alignment, ...) decoded from the next bytes (missing bytes read as 0).
 * The model keeps up to SLOTS live blocks with what the caller may rely on: the requested size,
 * the alignment promised, the usable size reported at allocation, and a pattern tag. The
 * harness fills every live block's whole usable size with its pattern and fails (abort) on:
 *   - a NULL for a request that must succeed, a block for one that must fail, or a wrong errno
 *     (ENOMEM, EINVAL) or posix_memalign return value / errno change;
 *   - a misaligned block, a usable size smaller than requested or changing while the block
 *     lives, a block overlapping another live block;
 *   - contents that change while live (checked before every free/realloc, after every trim and
 *     at the end of each input), calloc memory that is not zero, realloc not keeping the prefix;
 *   - after every input has freed all its blocks: large objects left in the statistics.
 * Invalid operations (double free, ...) are not generated: they abort by design and have their
 * own tests (tests/abi, tests/security).
 *
 * It calls the prefixed API (starmalloc_core), so libFuzzer's own allocations are glibc's. Built
 * with -fsanitize=fuzzer under clang; fuzz_replay.c gives it a main() for any compiler (CTest
 * replays the seed corpus and a batch of generated inputs with it). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "rel_common.h"
#include "starmalloc.h"
#include "starmalloc/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
    SLOTS = 48,
    MAX_OPS = 4096, /* operations per input */
    /* A block's pattern covers its first HEAD_BYTES and last TAIL_BYTES usable bytes: enough
     * to see a large block moved, truncated or unmapped without writing megabytes per call. */
    HEAD_BYTES = 4096,
    TAIL_BYTES = 256,
};

/* Requests at or above this many bytes (or alignments) cannot be served on any machine
 * (above the 47-bit user address space): they must fail with ENOMEM. Requests up to
 * ALWAYS_SERVABLE bytes must succeed; between the two (products of calloc and reallocarray)
 * the answer depends on the machine's memory and overcommit policy, so either a block or
 * NULL + ENOMEM is right. */
static const size_t UNSERVABLE = (size_t)1 << 48;
static const size_t ALWAYS_SERVABLE = (size_t)256 << 20;

static const size_t class_sizes[] = {SM_SIZE_CLASS_LIST};
enum { NB_CLASS_SIZES = sizeof(class_sizes) / sizeof(class_sizes[0]) };

enum how { BY_MALLOC, BY_ALIGNED_ALLOC, BY_OTHER };

struct block {
    unsigned char *p;
    size_t size;   /* requested bytes */
    size_t usable; /* malloc_usable_size when allocated */
    size_t align;  /* alignment promised */
    uint64_t tag;  /* its pattern */
    enum how how;
};

static struct block live[SLOTS];
static uint64_t next_tag = 1;

/* ---- input decoding ---------------------------------------------------------------- */

struct input {
    const uint8_t *data;
    size_t size;
    size_t pos;
};

static unsigned take8(struct input *in)
{
    return in->pos < in->size ? in->data[in->pos++] : 0;
}

static size_t take16(struct input *in)
{
    return take8(in) | (size_t)take8(in) << 8;
}

static size_t take24(struct input *in)
{
    return take16(in) | (size_t)take8(in) << 16;
}

static size_t clamp_sub(size_t a, size_t b)
{
    return a > b ? a - b : 0;
}

/* A request size: mostly small, class boundaries, pages, large objects, and unservable. */
static size_t take_size(struct input *in)
{
    static const size_t huge[] = {
        PTRDIFF_MAX,     (size_t)PTRDIFF_MAX + 1, SIZE_MAX,        SIZE_MAX - 1,
        SIZE_MAX - 4096, SIZE_MAX - 4095,         (size_t)1 << 48, ((size_t)1 << 62) + 17,
    };
    switch (take8(in) % 12) {
    case 0:
        return take8(in) % 17;
    case 1:
    case 2:
        return take8(in);
    case 3:
        return take16(in) % 4097;
    case 4:
    case 5: { /* just around a class size, canary bytes included */
        size_t cls = class_sizes[take8(in) % NB_CLASS_SIZES];
        return clamp_sub(cls + 2, take8(in) % 12);
    }
    case 6:
        return take24(in) % (SM_MAX_SMALL_SIZE + 1);
    case 7: /* large objects, up to 2 MiB past the largest class */
        return SM_MAX_SMALL_SIZE - 16 + take24(in) % (2u << 20);
    case 8: /* around whole pages */
        return clamp_sub((take8(in) % 65) * (size_t)SM_PAGE_SIZE + 1, take8(in) % 3);
    case 9:
        return huge[take8(in) % (sizeof(huge) / sizeof(huge[0]))];
    default:
        return take8(in) % 129;
    }
}

/* An alignment: powers of two up to 4 MiB, non-powers, zero, and unservable ones. */
static size_t take_align(struct input *in)
{
    switch (take8(in) % 10) {
    case 0:
        return (size_t)1 << (take8(in) % 5); /* 1..16 */
    case 1:
    case 2:
        return (size_t)1 << (take8(in) % 13); /* up to a page */
    case 3:
        return (size_t)1 << (12 + take8(in) % 11); /* a page to 4 MiB */
    case 4:
        return take16(in) | 3; /* odd: never a power of two above 2 */
    case 5:
        return (size_t)(take8(in) % 7 + 3) * sizeof(void *); /* e.g. 24, 40: not powers */
    case 6:
        return take8(in) % 2 ? 0 : SIZE_MAX;
    case 7:
        return (size_t)1 << (48 + take8(in) % 16); /* a power of two nobody can serve */
    default:
        return 16;
    }
}

/* ---- the model --------------------------------------------------------------------- */

static bool is_power_of_two(size_t x)
{
    return x != 0 && (x & (x - 1)) == 0;
}

/* The byte ranges of a block that hold its pattern: [0, *head) and [*tail, usable). */
REL_NO_COVERAGE static void pattern_ranges(size_t usable, size_t *head, size_t *tail)
{
    *head = usable < HEAD_BYTES ? usable : HEAD_BYTES;
    *tail = usable - *head > TAIL_BYTES ? usable - TAIL_BYTES : *head;
}

/* The first offset of [from, to) where p differs from the pattern of tag, or `to`. */
REL_NO_COVERAGE static size_t mismatch_range(const unsigned char *p, size_t from, size_t to,
                                             uint64_t tag)
{
    for (size_t i = from; i < to; i++)
        if (p[i] != rel_pattern_byte(tag, i))
            return i;
    return to;
}

/* Whether the first `len` bytes of p (as far as the pattern covers them) hold tag's pattern. */
REL_NO_COVERAGE static size_t mismatch_prefix(const unsigned char *p, size_t usable, size_t len,
                                              uint64_t tag)
{
    size_t head, tail;
    pattern_ranges(usable, &head, &tail);
    size_t at = mismatch_range(p, 0, head < len ? head : len, tag);
    if (at < (head < len ? head : len))
        return at;
    if (len > tail && (at = mismatch_range(p, tail, len, tag)) < len)
        return at;
    return len;
}

static void verify(const struct block *b, const char *when)
{
    size_t at = mismatch_prefix(b->p, b->usable, b->usable, b->tag);
    REL_CHECK(at == b->usable, "%s: block %p (size %zu, usable %zu) changed at offset %zu", when,
              (void *)b->p, b->size, b->usable, at);
}

REL_NO_COVERAGE static void write_pattern(struct block *b)
{
    size_t head, tail;
    b->tag = next_tag++;
    pattern_ranges(b->usable, &head, &tail);
    for (size_t i = 0; i < head; i++)
        b->p[i] = rel_pattern_byte(b->tag, i);
    for (size_t i = tail; i < b->usable; i++)
        b->p[i] = rel_pattern_byte(b->tag, i);
}

/* Whether the requested bytes of a fresh calloc block read as zero (head and tail). */
REL_NO_COVERAGE static bool zeroed(const unsigned char *p, size_t size)
{
    size_t head, tail;
    pattern_ranges(size, &head, &tail);
    return rel_all_zero(p, head) && rel_all_zero(p + tail, size - tail);
}

/* A block just returned for `size` bytes aligned to `align`: checks it and records it. */
static void record(unsigned slot, void *p, size_t size, size_t align, enum how how,
                   const char *call)
{
    REL_CHECK(p != NULL, "%s(size %zu, align %zu) failed: errno %d", call, size, align, errno);
    uintptr_t addr = (uintptr_t)p;
    size_t min_align = align > SM_MIN_ALIGN ? align : SM_MIN_ALIGN;
    REL_CHECK(addr % min_align == 0, "%s(size %zu, align %zu) gave %p: misaligned", call, size,
              align, p);
    size_t usable = starmalloc_malloc_usable_size(p);
    REL_CHECK(usable >= size, "%s(size %zu) gave %p with usable size %zu", call, size, p, usable);
    size_t bound = (size > align ? size : align) * 2 + 2 * (size_t)SM_PAGE_SIZE;
    REL_CHECK(usable <= bound, "%s(size %zu, align %zu): usable size %zu is absurd", call, size,
              align, usable);
    size_t span = usable ? usable : 1;
    for (unsigned i = 0; i < SLOTS; i++) {
        const struct block *o = &live[i];
        if (!o->p || i == slot)
            continue;
        uintptr_t o_start = (uintptr_t)o->p;
        uintptr_t o_end = o_start + (o->usable ? o->usable : 1);
        REL_CHECK(addr + span <= o_start || addr >= o_end,
                  "%s gave %p (+%zu), which overlaps live block %p (+%zu)", call, p, usable,
                  (void *)o->p, o->usable);
    }
    live[slot] = (struct block){p, size, usable, min_align, 0, how};
    write_pattern(&live[slot]);
}

static void expect_failure(void *p, int want_errno, const char *call, size_t size, size_t align)
{
    REL_CHECK(p == NULL, "%s(size %zu, align %zu) returned %p instead of failing", call, size,
              align, p);
    REL_CHECK(errno == want_errno, "%s(size %zu, align %zu): errno %d, expected %d", call, size,
              align, errno, want_errno);
}

static void release(unsigned slot)
{
    struct block *b = &live[slot];
    if (!b->p)
        return;
    verify(b, "before free");
    starmalloc_free(b->p);
    *b = (struct block){0};
}

static void release_all(void)
{
    for (unsigned i = 0; i < SLOTS; i++)
        release(i);
}

static void verify_all(const char *when)
{
    for (unsigned i = 0; i < SLOTS; i++)
        if (live[i].p)
            verify(&live[i], when);
}

/* ---- operations ------------------------------------------------------------------------ */

static void op_malloc(struct input *in, unsigned slot)
{
    size_t size = take_size(in);
    release(slot);
    errno = 0;
    void *p = starmalloc_malloc(size);
    if (size >= UNSERVABLE)
        expect_failure(p, ENOMEM, "malloc", size, 0);
    else
        record(slot, p, size, SM_MIN_ALIGN, BY_MALLOC, "malloc");
}

static void op_calloc(struct input *in, unsigned slot)
{
    size_t count = take8(in) % 8 == 0 ? take_size(in) : take8(in) % 17;
    size_t size = take_size(in);
    release(slot);
    errno = 0;
    void *p = starmalloc_calloc(count, size);
    size_t total;
    if (__builtin_mul_overflow(count, size, &total) || total >= UNSERVABLE ||
        (!p && total > ALWAYS_SERVABLE)) {
        expect_failure(p, ENOMEM, "calloc", total, 0);
        return;
    }
    REL_CHECK(p != NULL, "calloc(%zu, %zu) failed", count, size);
    REL_CHECK(zeroed(p, total), "calloc(%zu, %zu) = %p is not zeroed", count, size, p);
    record(slot, p, total, SM_MIN_ALIGN, BY_MALLOC, "calloc");
}

/* realloc and reallocarray: the prefix [0, min(old usable, new size)) must survive a move. */
static void op_realloc(struct input *in, unsigned slot, bool array)
{
    size_t count = array ? (take8(in) % 8 == 0 ? take_size(in) : take8(in) % 5) : 1;
    size_t size = take_size(in);
    const char *call = array ? "reallocarray" : "realloc";
    struct block old = live[slot];
    if (old.p)
        verify(&old, "before realloc");
    size_t total;
    bool overflow = __builtin_mul_overflow(count, size, &total);
    errno = 0;
    void *p = array ? starmalloc_reallocarray(old.p, count, size) : starmalloc_realloc(old.p, size);
    if (overflow || total >= UNSERVABLE || (!p && total > ALWAYS_SERVABLE)) {
        expect_failure(p, ENOMEM, call, total, 0);
        if (old.p)
            verify(&old, "after a failed realloc"); /* still live, unchanged */
        return;
    }
    if (old.p && total == 0) { /* glibc: frees and returns NULL */
        REL_CHECK(p == NULL, "%s(%p, 0) returned %p instead of freeing", call, (void *)old.p, p);
        live[slot] = (struct block){0};
        return;
    }
    REL_CHECK(p != NULL, "%s(%p, %zu) failed: errno %d", call, (void *)old.p, total, errno);
    if (old.p) {
        size_t keep = old.usable < total ? old.usable : total;
        size_t at = mismatch_prefix(p, old.usable, keep, old.tag);
        REL_CHECK(at == keep, "%s(%p, %zu) = %p lost the content at offset %zu of %zu", call,
                  (void *)old.p, total, p, at, keep);
    }
    live[slot] = (struct block){0};
    record(slot, p, total, SM_MIN_ALIGN, BY_OTHER, call);
}

static void op_aligned_alloc(struct input *in, unsigned slot)
{
    size_t align = take_align(in);
    size_t size = take_size(in);
    release(slot);
    errno = 0;
    void *p = starmalloc_aligned_alloc(align, size);
    if (!is_power_of_two(align))
        expect_failure(p, EINVAL, "aligned_alloc", size, align);
    else if (size >= UNSERVABLE || align >= UNSERVABLE)
        expect_failure(p, ENOMEM, "aligned_alloc", size, align);
    else
        record(slot, p, size, align, BY_ALIGNED_ALLOC, "aligned_alloc");
}

static void op_posix_memalign(struct input *in, unsigned slot)
{
    size_t align = take_align(in);
    size_t size = take_size(in);
    release(slot);
    void *sentinel = &live[slot];
    void *p = sentinel;
    errno = 12345;
    int rc = starmalloc_posix_memalign(&p, align, size);
    REL_CHECK(errno == 12345, "posix_memalign(%zu, %zu) changed errno to %d", align, size, errno);
    int want = !is_power_of_two(align) || align % sizeof(void *) ? EINVAL
               : size >= UNSERVABLE || align >= UNSERVABLE       ? ENOMEM
                                                                 : 0;
    REL_CHECK(rc == want, "posix_memalign(%zu, %zu) returned %d, expected %d", align, size, rc,
              want);
    if (want) {
        REL_CHECK(p == sentinel, "a failed posix_memalign(%zu, %zu) changed *out", align, size);
        return;
    }
    record(slot, p, size, align, BY_OTHER, "posix_memalign");
}

static void op_memalign(struct input *in, unsigned slot)
{
    size_t align = take_align(in);
    size_t size = take_size(in);
    release(slot);
    errno = 0;
    void *p = starmalloc_memalign(align, size);
    if (align > SIZE_MAX / 2 + 1) {
        expect_failure(p, EINVAL, "memalign", size, align);
        return;
    }
    size_t pow2 = 1;
    while (pow2 < align)
        pow2 <<= 1; /* glibc rounds a non-power of two up */
    if (size >= UNSERVABLE || pow2 >= UNSERVABLE)
        expect_failure(p, ENOMEM, "memalign", size, align);
    else
        record(slot, p, size, pow2, BY_OTHER, "memalign");
}

static void op_valloc(struct input *in, unsigned slot, bool pvalloc)
{
    size_t size = take_size(in);
    release(slot);
    errno = 0;
    void *p = pvalloc ? starmalloc_pvalloc(size) : starmalloc_valloc(size);
    const char *call = pvalloc ? "pvalloc" : "valloc";
    if (size >= UNSERVABLE) {
        expect_failure(p, ENOMEM, call, size, SM_PAGE_SIZE);
        return;
    }
    size_t want = size;
    if (pvalloc) /* whole pages, at least one */
        want = size ? (size + SM_PAGE_SIZE - 1) & ~(size_t)(SM_PAGE_SIZE - 1) : SM_PAGE_SIZE;
    record(slot, p, want, SM_PAGE_SIZE, BY_OTHER, call);
}

static void op_free(struct input *in, unsigned slot)
{
    unsigned how = take8(in) % 4;
    struct block *b = &live[slot];
    if (!b->p) {
        /* Every free accepts NULL. */
        starmalloc_free(NULL);
        starmalloc_free_sized(NULL, take_size(in));
        starmalloc_free_aligned_sized(NULL, 64, 64);
        return;
    }
    verify(b, "before free");
    if (how == 1) {
        starmalloc_free_sized(b->p, b->size);
    } else if (how == 2) {
        starmalloc_free_sized(b->p, b->usable); /* any size the block can hold */
    } else if (how == 3 && b->how == BY_ALIGNED_ALLOC) {
        starmalloc_free_aligned_sized(b->p, b->align, b->size);
    } else {
        starmalloc_free(b->p);
    }
    *b = (struct block){0};
}

static void op_usable_size(unsigned slot)
{
    REL_CHECK(starmalloc_malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) != 0");
    const struct block *b = &live[slot];
    if (!b->p)
        return;
    size_t usable = starmalloc_malloc_usable_size(b->p);
    REL_CHECK(usable == b->usable, "usable size of %p changed from %zu to %zu", (void *)b->p,
              b->usable, usable);
    verify(b, "after malloc_usable_size");
}

static void op_stats(void)
{
    struct starmalloc_stats st;
    starmalloc_stats_get(&st);
    unsigned nlive = 0;
    for (unsigned i = 0; i < SLOTS; i++)
        nlive += live[i].p != NULL;
    REL_CHECK(st.large_objects <= nlive, "%zu large objects but only %u live blocks",
              st.large_objects, nlive);
    REL_CHECK(st.committed_bytes >= st.large_bytes, "committed %zu < large bytes %zu",
              st.committed_bytes, st.large_bytes);
    REL_CHECK(st.peak_committed_bytes >= st.committed_bytes, "peak %zu < committed %zu",
              st.peak_committed_bytes, st.committed_bytes);
    REL_CHECK(st.guard_failures == 0, "%zu guard failures without any mapping pressure",
              st.guard_failures);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rel_program = "fuzz_abi";
    struct input in = {data, size, 0};
    for (unsigned ops = 0; in.pos < in.size && ops < MAX_OPS; ops++) {
        unsigned op = take8(&in);
        unsigned slot = take8(&in) % SLOTS;
        switch (op % 16) {
        case 0:
        case 1:
            op_malloc(&in, slot);
            break;
        case 2:
            op_calloc(&in, slot);
            break;
        case 3:
            op_realloc(&in, slot, false);
            break;
        case 4:
            op_realloc(&in, slot, true);
            break;
        case 5:
            op_aligned_alloc(&in, slot);
            break;
        case 6:
            op_posix_memalign(&in, slot);
            break;
        case 7:
            op_memalign(&in, slot);
            break;
        case 8:
            op_valloc(&in, slot, false);
            break;
        case 9:
            op_valloc(&in, slot, true);
            break;
        case 10:
        case 11:
            op_free(&in, slot);
            break;
        case 12:
            op_usable_size(slot);
            break;
        case 13: /* rewrite a block: every usable byte belongs to the caller */
            if (live[slot].p) {
                verify(&live[slot], "before rewriting");
                write_pattern(&live[slot]);
            }
            break;
        case 14:
            starmalloc_trim(take8(&in));
            verify_all("after trim");
            break;
        default:
            op_stats();
            break;
        }
    }
    release_all();
    /* Nothing of this input may stay allocated on the large path. */
    struct starmalloc_stats st;
    starmalloc_stats_get(&st);
    REL_CHECK(st.large_objects == 0 && st.large_bytes == 0,
              "%zu large objects (%zu bytes) left after every block was freed", st.large_objects,
              st.large_bytes);
    return 0;
}

/* Virtual memory: the single place that talks to the kernel about mappings. */
#define _GNU_SOURCE /* mremap */
#include "starmalloc/region.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/uio.h>
#include <unistd.h>

#include "starmalloc/config.h"

/* Committed bytes and their high-water mark. Relaxed atomics: they are statistics, and no
 * other memory is published through them. */
static atomic_size_t committed_bytes;
static atomic_size_t peak_committed_bytes;

static void count_committed(size_t bytes)
{
    size_t now = atomic_fetch_add_explicit(&committed_bytes, bytes, memory_order_relaxed) + bytes;
    size_t peak = atomic_load_explicit(&peak_committed_bytes, memory_order_relaxed);
    while (now > peak &&
           !atomic_compare_exchange_weak_explicit(&peak_committed_bytes, &peak, now,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

/* Saturates at zero, so that a caller decommitting memory it never committed (e.g. a range
 * that was only reserved) cannot make the count wrap around. */
static void count_uncommitted(size_t bytes)
{
    size_t old = atomic_load_explicit(&committed_bytes, memory_order_relaxed);
    size_t new_value;
    do
        new_value = old > bytes ? old - bytes : 0;
    while (!atomic_compare_exchange_weak_explicit(&committed_bytes, &old, new_value,
                                                  memory_order_relaxed, memory_order_relaxed));
}

static void *map_aligned(size_t bytes, size_t align, int prot, int extra_flags)
{
    if (align < SM_PAGE_SIZE)
        align = SM_PAGE_SIZE;
    size_t slack = align - SM_PAGE_SIZE;
    if (bytes == 0 || bytes > SIZE_MAX - slack)
        return NULL;
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | extra_flags;
    char *raw = mmap(NULL, bytes + slack, prot, flags, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    /* Over-map by align - page, then cut the misaligned head and the unused tail. */
    uintptr_t start = ((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = start - (uintptr_t)raw;
    size_t tail = slack - head;
    if (head)
        munmap(raw, head);
    if (tail)
        munmap((char *)start + bytes, tail);
    return (void *)start;
}

void *sm_region_reserve(size_t bytes, size_t align)
{
    return map_aligned(bytes, align, PROT_NONE, MAP_NORESERVE);
}

void *sm_region_reserve_shrinking(size_t *bytes, size_t min_bytes, size_t align)
{
    for (size_t want = *bytes; want >= min_bytes && want > 0; want /= 2) {
        void *base = sm_region_reserve(want, align);
        if (base) {
            *bytes = want;
            return base;
        }
    }
    return NULL;
}

bool sm_region_commit(void *addr, size_t bytes)
{
    if (mprotect(addr, bytes, PROT_READ | PROT_WRITE) != 0)
        return false;
    count_committed(bytes);
    return true;
}

bool sm_region_decommit(void *addr, size_t bytes)
{
    /* A fixed PROT_NONE, MAP_NORESERVE mapping over the range drops the pages and their
     * commit charge in one call, which MADV_DONTNEED alone would not do. */
    void *p = mmap(addr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
                   -1, 0);
    if (p == MAP_FAILED)
        return false;
    count_uncommitted(bytes);
    return true;
}

/* ---- guard markers ------------------------------------------------------------------ */

/* madvise advice values of Linux 6.13, absent from older headers. */
enum { ADVICE_GUARD_INSTALL = 102, ADVICE_GUARD_REMOVE = 103 };

enum { MARKERS_UNKNOWN = 0, MARKERS_USABLE, MARKERS_UNUSABLE };
static atomic_int markers_state;
/* Set once the kernel refused markers for a range although they are usable (a locked
 * mapping): from then on sm_region_unguard also restores the protection, as it always does
 * without markers. */
static atomic_bool markers_refused;

/* Reads the start of a small kernel file (sysctl, sysfs) into text[0..capacity); returns the
 * bytes read, or -1. Plain system calls: this runs inside malloc. */
static ssize_t read_kernel_file(const char *path, char *text, size_t capacity)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, text, capacity);
    close(fd);
    return n;
}

/* vm.overcommit_memory as its digit ('0' heuristic, '1' always, '2' strict), or 0 when it
 * cannot be read. */
static char overcommit_mode(void)
{
    char mode = 0;
    if (read_kernel_file("/proc/sys/vm/overcommit_memory", &mode, 1) != 1)
        return 0;
    return mode;
}

/* Whether vm.overcommit_memory is 2 (strict), or cannot be read: then a range must be
 * unmapped, not only emptied, to give its commit charge back. */
static bool overcommit_may_be_strict(void)
{
    char mode = overcommit_mode();
    return mode == 0 || mode == '2';
}

/* Whether the kernel installs guard markers in a private anonymous mapping. */
static bool kernel_has_markers(void)
{
    void *page =
        mmap(NULL, SM_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        return false;
    bool ok = madvise(page, SM_PAGE_SIZE, ADVICE_GUARD_INSTALL) == 0;
    munmap(page, SM_PAGE_SIZE);
    return ok;
}

bool sm_region_guard_markers(void)
{
    int state = atomic_load_explicit(&markers_state, memory_order_relaxed);
    if (state == MARKERS_UNKNOWN) {
        /* Threads that probe at once reach the same answer. */
        bool usable = SM_GUARD_MARKERS && !overcommit_may_be_strict() && kernel_has_markers();
        state = usable ? MARKERS_USABLE : MARKERS_UNUSABLE;
        atomic_store_explicit(&markers_state, state, memory_order_relaxed);
    }
    return state == MARKERS_USABLE;
}

bool sm_region_guard(void *addr, size_t bytes)
{
    if (sm_region_guard_markers()) {
        if (madvise(addr, bytes, ADVICE_GUARD_INSTALL) == 0) {
            count_uncommitted(bytes);
            return true;
        }
        atomic_store_explicit(&markers_refused, true, memory_order_relaxed);
    }
    return sm_region_decommit(addr, bytes);
}

bool sm_region_unguard(void *addr, size_t bytes)
{
    bool markers = sm_region_guard_markers();
    /* A range guarded by markers is read-write already (the mprotect would change nothing);
     * one guarded by a PROT_NONE mapping needs it. */
    if ((!markers || atomic_load_explicit(&markers_refused, memory_order_relaxed)) &&
        mprotect(addr, bytes, PROT_READ | PROT_WRITE) != 0)
        return false;
    if (markers)
        (void)madvise(addr, bytes, ADVICE_GUARD_REMOVE); /* cannot fail where install worked */
    count_committed(bytes);
    return true;
}

bool sm_region_purge(void *addr, size_t bytes)
{
    if (madvise(addr, bytes, MADV_DONTNEED) != 0)
        return false;
    count_uncommitted(bytes);
    return true;
}

/* The kernel's name for the calling thread in pidfd system calls (PIDFD_SELF_THREAD in
 * recent kernels' <linux/pidfd.h>), so that no pidfd has to be opened and kept open. */
enum { PIDFD_OF_THIS_THREAD = -10000, BATCH_RANGES = 64 };

/* Per advice, set once process_madvise failed for a reason that will not
 * change (no such call, no PIDFD_SELF, advice not allowed there, a seccomp filter): later
 * batches go straight to madvise. */
enum batch_advice { BATCH_PURGE, BATCH_GUARD, BATCH_UNGUARD, BATCH_POPULATE, BATCH_ADVICES };
enum { ADVICE_POPULATE_WRITE = 23 }; /* MADV_POPULATE_WRITE, absent from older headers */
static const int batch_advice_value[BATCH_ADVICES] = {MADV_DONTNEED, ADVICE_GUARD_INSTALL,
                                                      ADVICE_GUARD_REMOVE, ADVICE_POPULATE_WRITE};
static atomic_bool batch_refused[BATCH_ADVICES];

/* Applies `advice` to up to BATCH_RANGES ranges with one process_madvise; returns how many
 * ranges, from the first, it was applied to (0 where batches are refused). */
static size_t advise_batch(void *const *addrs, size_t count, size_t bytes, enum batch_advice which)
{
#ifdef SYS_process_madvise
    if (count < 2 || atomic_load_explicit(&batch_refused[which], memory_order_relaxed))
        return 0;
    struct iovec ranges[BATCH_RANGES];
    for (size_t i = 0; i < count; i++)
        ranges[i] = (struct iovec){addrs[i], bytes};
    int saved_errno = errno; /* free(3) leaves errno alone */
    long done = syscall(SYS_process_madvise, PIDFD_OF_THIS_THREAD, ranges, count,
                        batch_advice_value[which], 0);
    if (done < 0 && errno != EINTR && errno != EAGAIN && errno != ENOMEM)
        atomic_store_explicit(&batch_refused[which], true, memory_order_relaxed);
    errno = saved_errno;
    /* A partial answer covers whole ranges from the first. */
    return done > 0 ? (size_t)done / bytes : 0;
#else
    (void)addrs, (void)count, (void)bytes, (void)which;
    return 0;
#endif
}

/* Applies one operation to `count` ranges of `bytes` bytes: batches of up to BATCH_RANGES
 * ranges through `batch` (which returns how many ranges, from the first, it covered, 0 where
 * batches are not possible), and the first range a batch left out through `one` before the
 * next batch. Returns how many ranges, from the first, were done; stops at the first range
 * `one` fails on. */
static size_t for_ranges(void *const *addrs, size_t count, size_t bytes,
                         size_t (*batch)(void *const *addrs, size_t count, size_t bytes),
                         bool (*one)(void *addr, size_t bytes))
{
    size_t done = 0;
    while (done < count) {
        size_t size = count - done < BATCH_RANGES ? count - done : BATCH_RANGES;
        size_t covered = batch(addrs + done, size, bytes);
        done += covered;
        if (covered < size) {
            if (!one(addrs[done], bytes))
                return done;
            done++;
        }
    }
    return done;
}

/* Whether guarded ranges are guarded by markers alone (not by PROT_NONE mappings, which
 * need an mprotect each). */
static bool markers_only(void)
{
    return sm_region_guard_markers() &&
           !atomic_load_explicit(&markers_refused, memory_order_relaxed);
}

static size_t purge_batch(void *const *addrs, size_t count, size_t bytes)
{
    size_t done = advise_batch(addrs, count, bytes, BATCH_PURGE);
    count_uncommitted(done * bytes);
    return done;
}

/* Markers alone, for ranges that never had pages (nothing to drop first). */
static size_t guard_untouched_batch(void *const *addrs, size_t count, size_t bytes)
{
    if (!markers_only())
        return 0;
    size_t done = advise_batch(addrs, count, bytes, BATCH_GUARD);
    count_uncommitted(done * bytes);
    return done;
}

static size_t guard_batch(void *const *addrs, size_t count, size_t bytes)
{
    if (!markers_only())
        return 0;
    /* Markers go in fast over ranges without pages: the pages go first, in a batch. */
    (void)advise_batch(addrs, count, bytes, BATCH_PURGE);
    return guard_untouched_batch(addrs, count, bytes);
}

static size_t unguard_batch(void *const *addrs, size_t count, size_t bytes)
{
    if (!markers_only())
        return 0;
    size_t done = advise_batch(addrs, count, bytes, BATCH_UNGUARD);
    count_committed(done * bytes);
    return done;
}

static size_t populate_batch(void *const *addrs, size_t count, size_t bytes)
{
    return advise_batch(addrs, count, bytes, BATCH_POPULATE);
}

static bool populate_one(void *addr, size_t bytes)
{
    sm_region_populate(addr, bytes);
    return true; /* best effort */
}

size_t sm_region_purge_many(void *const *addrs, size_t count, size_t bytes)
{
    return for_ranges(addrs, count, bytes, purge_batch, sm_region_purge);
}

size_t sm_region_guard_many(void *const *addrs, size_t count, size_t bytes)
{
    return for_ranges(addrs, count, bytes, guard_batch, sm_region_guard);
}

size_t sm_region_guard_untouched_many(void *const *addrs, size_t count, size_t bytes)
{
    return for_ranges(addrs, count, bytes, guard_untouched_batch, sm_region_guard);
}

size_t sm_region_unguard_many(void *const *addrs, size_t count, size_t bytes)
{
    return for_ranges(addrs, count, bytes, unguard_batch, sm_region_unguard);
}

void sm_region_populate_many(void *const *addrs, size_t count, size_t bytes)
{
    (void)for_ranges(addrs, count, bytes, populate_batch, populate_one);
}

void sm_region_reuse_purged(size_t bytes)
{
    count_committed(bytes);
}

/* The number of pages from `first` on (below `pages`) with the same residency as `first`. */
static size_t residency_run(const unsigned char *resident, size_t first, size_t pages)
{
    size_t end = first + 1;
    while (end < pages && (resident[end] & 1) == (resident[first] & 1))
        end++;
    return end - first;
}

enum { RESIDENCY_WINDOW_PAGES = 512 }; /* mincore's answer for 2 MiB of 4 KiB pages */

/* mincore for the first window of [at, end), at most RESIDENCY_WINDOW_PAGES pages, into
 * resident: the window's length in bytes, or 0 where the kernel cannot tell. */
static size_t residency_window(const char *at, const char *end, unsigned char *resident)
{
    const size_t page = sm_region_kernel_page_size();
    size_t window = (size_t)(end - at) < RESIDENCY_WINDOW_PAGES * page
                        ? (size_t)(end - at)
                        : RESIDENCY_WINDOW_PAGES * page;
    if (window % page != 0 || mincore((void *)at, window, resident) != 0)
        return 0;
    return window;
}

void sm_region_clear(void *addr, size_t bytes, void (*zero_resident)(void *addr, size_t bytes))
{
    unsigned char resident[RESIDENCY_WINDOW_PAGES];
    const size_t page = sm_region_kernel_page_size();
    char *at = addr;
    char *end = at + bytes;
    while (at < end) {
        size_t window = residency_window(at, end, resident);
        if (window == 0) {
            zero_resident(at, (size_t)(end - at));
            return;
        }
        size_t pages = window / page;
        for (size_t first = 0; first < pages;) {
            size_t run = residency_run(resident, first, pages);
            char *run_addr = at + first * page;
            if ((resident[first] & 1) || madvise(run_addr, run * page, MADV_DONTNEED) != 0)
                zero_resident(run_addr, run * page);
            first += run;
        }
        at += window;
    }
}

size_t sm_region_resident_bytes(const void *addr, size_t bytes)
{
    unsigned char resident[RESIDENCY_WINDOW_PAGES];
    const size_t page = sm_region_kernel_page_size();
    const char *at = addr;
    const char *end = at + bytes;
    size_t total = 0;
    while (at < end) {
        size_t window = residency_window(at, end, resident);
        if (window == 0)
            return SIZE_MAX;
        for (size_t i = 0; i < window / page; i++)
            total += (resident[i] & 1u) ? page : 0;
        at += window;
    }
    return total;
}

void sm_region_populate(void *addr, size_t bytes)
{
    (void)madvise(addr, bytes, ADVICE_POPULATE_WRITE);
}

void sm_region_advise_huge(void *addr, size_t bytes)
{
    uintptr_t huge = SM_REGION_HUGE_PAGE_SIZE;
    uintptr_t start = ((uintptr_t)addr + huge - 1) & ~(huge - 1);
    uintptr_t end = ((uintptr_t)addr + bytes) & ~(huge - 1);
    if (end > start)
        (void)madvise(addr, bytes, MADV_HUGEPAGE);
}

/* Whether the THP mode file exists (the kernel has THP) and does not say `[never]`. */
static bool thp_mode_allows_huge_pages(void)
{
    static const char never[] = "[never]";
    const size_t never_length = sizeof never - 1;
    char text[64];
    ssize_t n = read_kernel_file("/sys/kernel/mm/transparent_hugepage/enabled", text, sizeof text);
    if (n <= 0)
        return false;
    for (ssize_t i = 0; i + (ssize_t)never_length <= n; i++)
        if (memcmp(text + i, never, never_length) == 0)
            return false;
    return true;
}

enum { HUGE_UNKNOWN = 0, HUGE_ENABLED, HUGE_DISABLED };
static atomic_int huge_state;

bool sm_region_huge_pages_enabled(void)
{
    int state = atomic_load_explicit(&huge_state, memory_order_relaxed);
    if (state == HUGE_UNKNOWN) {
        bool off = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 || !thp_mode_allows_huge_pages();
        state = off ? HUGE_DISABLED : HUGE_ENABLED;
        atomic_store_explicit(&huge_state, state, memory_order_relaxed);
    }
    return state == HUGE_ENABLED;
}

bool sm_region_protect_none(void *addr, size_t bytes)
{
    return mprotect(addr, bytes, PROT_NONE) == 0;
}

bool sm_region_protect_read_only(void *addr, size_t bytes)
{
    return mprotect(addr, bytes, PROT_READ) == 0;
}

bool sm_region_protect_read_write(void *addr, size_t bytes)
{
    return mprotect(addr, bytes, PROT_READ | PROT_WRITE) == 0;
}

bool sm_region_release(void *addr, size_t bytes)
{
    return munmap(addr, bytes) == 0;
}

bool sm_region_unmap(void *addr, size_t bytes, size_t committed)
{
    if (munmap(addr, bytes) != 0)
        return false;
    count_uncommitted(committed);
    return true;
}

bool sm_region_move(void *old_addr, size_t old_bytes, void *new_addr, size_t new_bytes,
                    size_t room_bytes)
{
    /* The room is grown with the pages, so that it continues their mapping, then closed. */
    void *p = mremap(old_addr, old_bytes, new_bytes + room_bytes, MREMAP_MAYMOVE | MREMAP_FIXED,
                     new_addr);
    if (p == MAP_FAILED)
        return false;
    /* Where the kernel refuses to split the mapping (vm.max_map_count), the room is unmapped
     * instead: an access there still faults, though a later mapping may take the place. */
    if (room_bytes > 0 && mprotect((char *)p + new_bytes, room_bytes, PROT_NONE) != 0)
        (void)munmap((char *)p + new_bytes, room_bytes);
    /* Already read-write; saying so again lets valgrind know that the pages the move added
     * are accessible (memcheck 3.19 otherwise flags them). */
    mprotect(p, new_bytes, PROT_READ | PROT_WRITE);
    if (new_bytes > old_bytes)
        count_committed(new_bytes - old_bytes);
    else
        count_uncommitted(old_bytes - new_bytes);
    return true;
}

void *sm_region_map(size_t bytes, size_t align)
{
    void *p = map_aligned(bytes, align, PROT_READ | PROT_WRITE, MAP_NORESERVE);
    if (p)
        count_committed(bytes);
    return p;
}

size_t sm_region_committed_bytes(void)
{
    return atomic_load_explicit(&committed_bytes, memory_order_relaxed);
}

size_t sm_region_peak_committed_bytes(void)
{
    return atomic_load_explicit(&peak_committed_bytes, memory_order_relaxed);
}

size_t sm_region_kernel_page_size(void)
{
    /* Asked once (sysconf took a tenth of a large malloc + free pair's instructions): threads
     * that ask at once store the same answer. */
    static _Atomic size_t known;
    size_t page = atomic_load_explicit(&known, memory_order_relaxed);
    if (page)
        return page;
    long answer = sysconf(_SC_PAGESIZE);
    page = answer > 0 ? (size_t)answer : SM_PAGE_SIZE;
    atomic_store_explicit(&known, page, memory_order_relaxed);
    return page;
}

size_t sm_region_overcommit_bytes_max(void)
{
    struct sysinfo info;
    if (overcommit_mode() != '0' || sysinfo(&info) != 0)
        return SIZE_MAX;
    size_t units = 0, bytes = 0;
    if (__builtin_add_overflow(info.totalram, info.totalswap, &units) ||
        __builtin_mul_overflow(units, info.mem_unit ? info.mem_unit : 1, &bytes))
        return SIZE_MAX;
    return bytes;
}

size_t sm_region_address_space_limit(void)
{
    struct rlimit limit;
    if (getrlimit(RLIMIT_AS, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY)
        return SIZE_MAX;
    return (size_t)limit.rlim_cur;
}

/* starmalloc/region.h: virtual memory. The only code in StarMalloc that calls mmap,
 * mprotect, madvise and munmap.
 *
 * A reservation is address space only: PROT_NONE and MAP_NORESERVE, so neither strict
 * overcommit accounting nor RSS is charged until a range is committed. Every function
 * takes page-aligned addresses and sizes (SM_PAGE_SIZE) and reports failure by its
 * return value, leaving errno as the kernel set it; none of them allocates.
 *
 * Accounting: the module counts committed bytes, i.e. bytes made readable and writable by
 * sm_region_commit or sm_region_map and not yet given back by sm_region_decommit or
 * sm_region_unmap, and the peak of that count. sm_region_protect_none and sm_region_release
 * leave the count alone. Callers commit a range only when it is not committed already. */
#ifndef STARMALLOC_REGION_H
#define STARMALLOC_REGION_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Reserves bytes of address space aligned to `align` (a power of two, at least a page).
 * Returns the base, or NULL when the kernel refuses. */
void *sm_region_reserve(size_t bytes, size_t align);

/* Reserves as much as it can of `*bytes`, halving down to `min_bytes` on each refusal;
 * the size obtained is stored in *bytes. Alignment as for sm_region_reserve.
 * Returns NULL (with *bytes unchanged) when even min_bytes cannot be reserved. */
void *sm_region_reserve_shrinking(size_t *bytes, size_t min_bytes, size_t align);

/* Makes [addr, addr + bytes) of a reservation readable and writable.
 * Returns false (nothing changed) when the kernel refuses, e.g. for commit charge. */
bool sm_region_commit(void *addr, size_t bytes);

/* Returns the pages' memory to the kernel and makes them PROT_NONE again; their content
 * is lost and they no longer count as committed. Returns false when the kernel refuses. */
bool sm_region_decommit(void *addr, size_t bytes);

/* Whether sm_region_guard uses lightweight guard markers (madvise MADV_GUARD_INSTALL, Linux
 * 6.13 and later): built with SM_GUARD_MARKERS, supported by the kernel, and the system not
 * under strict overcommit (vm.overcommit_memory = 2, where a guarded range would keep its
 * commit charge). Probed at the first call; safe from any thread. */
bool sm_region_guard_markers(void);

/* Returns the pages of [addr, addr + bytes), a range of a read-write mapping, to the kernel
 * and makes any access to it trap (SIGSEGV); it no longer counts as committed. With guard
 * markers the mapping is not changed, so that guarded ranges neither split it nor count
 * towards vm.max_map_count; otherwise, or when the kernel refuses the markers (a locked
 * mapping), this is sm_region_decommit. Not for ranges advised MADV_HUGEPAGE: markers split
 * the huge pages and keep the range on 4 KiB pages after sm_region_unguard. Returns false
 * when the kernel refuses both ways. */
bool sm_region_guard(void *addr, size_t bytes);

/* Makes a range guarded by sm_region_guard readable and writable again, reading as zero, and
 * counts it as committed. Returns false (nothing changed) when the kernel refuses. */
bool sm_region_unguard(void *addr, size_t bytes);

/* sm_region_unguard for `count` ranges of `bytes` bytes each, batched like
 * sm_region_purge_many where they are guarded by markers. Returns how many ranges, from the
 * first, were unguarded. */
size_t sm_region_unguard_many(void *const *addrs, size_t count, size_t bytes);

/* Returns the pages' memory to the kernel (MADV_DONTNEED) but leaves [addr, addr + bytes)
 * readable and writable: it reads as zero afterwards and takes memory again page by page as
 * it is touched. Cheaper than a decommit and a later commit (the mapping is not changed);
 * for committed ranges of a MAP_NORESERVE reservation that need not trap. The bytes no
 * longer count as committed until sm_region_reuse_purged. Returns false when the kernel
 * refuses. */
bool sm_region_purge(void *addr, size_t bytes);

/* sm_region_purge for `count` page-aligned ranges of `bytes` bytes each, starting at
 * addrs[0..count), with as few system calls as the kernel allows: one process_madvise(2) on
 * the calling thread (PIDFD_SELF) for up to 64 ranges where the kernel accepts it, else one
 * madvise per range (older kernels, seccomp filters). Returns how many ranges, from the
 * first, were purged: count unless the kernel refused. */
size_t sm_region_purge_many(void *const *addrs, size_t count, size_t bytes);

/* sm_region_guard for `count` page-aligned ranges of `bytes` bytes each, batched like
 * sm_region_purge_many: with guard markers, the ranges lose their pages in one call and get
 * their markers in another (a marker goes into a range without pages far faster than into
 * one with pages). Returns how many ranges, from the first, were guarded. */
size_t sm_region_guard_many(void *const *addrs, size_t count, size_t bytes);

/* sm_region_guard_many for ranges of a committed mapping that were never touched (no pages
 * to drop): the markers alone, one process_madvise for up to 64 ranges. Returns how many
 * ranges, from the first, were guarded. */
size_t sm_region_guard_untouched_many(void *const *addrs, size_t count, size_t bytes);

/* A purged range of `bytes` bytes is in use again: counts it as committed. */
void sm_region_reuse_purged(size_t bytes);

/* Makes the committed, writable range [addr, addr + bytes) read as zero without faulting in
 * the pages it never touched: runs of resident pages go to zero_resident (the caller's way of
 * clearing memory), the other runs are discarded (MADV_DONTNEED, which also drops copies in
 * swap) and read as zero when next touched. Still counted as committed. Where the kernel
 * cannot tell residency (mincore fails) or refuses a discard, zero_resident clears the rest. */
void sm_region_clear(void *addr, size_t bytes, void (*zero_resident)(void *addr, size_t bytes));

/* The bytes of the page-aligned range [addr, addr + bytes) whose pages are resident
 * (mincore): what the process has touched and the kernel still backs. SIZE_MAX where the
 * kernel cannot tell (mincore fails, e.g. for a range that is not mapped). No allocation. */
size_t sm_region_resident_bytes(const void *addr, size_t bytes);

/* Best effort: makes the kernel fault in the pages of the committed range [addr, addr +
 * bytes) now, writable (MADV_POPULATE_WRITE, Linux 5.14 and later), so that a range about to
 * be read and written takes one system call instead of up to two faults per page. Does
 * nothing where the kernel does not support it or refuses (the pages then fault in on use). */
void sm_region_populate(void *addr, size_t bytes);

/* sm_region_populate for `count` ranges of `bytes` bytes each, batched like
 * sm_region_purge_many. */
void sm_region_populate_many(void *const *addrs, size_t count, size_t bytes);

/* The size of a transparent huge page on x86-64 and arm64 with 4 KiB pages. */
enum { SM_REGION_HUGE_PAGE_SIZE = 2 << 20 };

/* Best effort: asks the kernel to back the 2 MiB-aligned parts of the committed range
 * [addr, addr + bytes) with transparent huge pages (MADV_HUGEPAGE), so that they fault in
 * 2 MiB at a time. The advice covers the whole range, its ends outside whole huge pages too
 * (they cannot take one): the range stays one mapping, which mremap can move whole (it
 * refuses a range that spans mappings of different advice). Does nothing for a range that
 * holds no aligned 2 MiB, where the kernel has no THP support or it is disabled (`never`,
 * or prctl PR_SET_THP_DISABLE), or when the kernel refuses. The advice belongs to the
 * mapping: sm_region_decommit drops it. */
void sm_region_advise_huge(void *addr, size_t bytes);

/* Whether madvise MADV_HUGEPAGE can give this process transparent huge pages: the kernel has
 * THP, /sys/kernel/mm/transparent_hugepage/enabled is not `never`, and the process did not
 * disable THP with prctl(PR_SET_THP_DISABLE). Read once, at the first call (later changes are
 * not seen); safe from any thread; no allocation. */
bool sm_region_huge_pages_enabled(void);

/* Makes [addr, addr + bytes) inaccessible, keeping the pages' content (guards, quarantine).
 * Returns false when the kernel refuses (e.g. vm.max_map_count reached). */
bool sm_region_protect_none(void *addr, size_t bytes);

/* Makes [addr, addr + bytes) read-only (state that must not change after initialisation).
 * Returns false when the kernel refuses. */
bool sm_region_protect_read_only(void *addr, size_t bytes);

/* Makes [addr, addr + bytes) readable and writable again, keeping its pages and changing no
 * count: for a committed range made inaccessible with sm_region_protect_none, or the
 * program's own data made read-only. Returns false when the kernel refuses (e.g.
 * vm.max_map_count reached: the change splits a mapping). */
bool sm_region_protect_read_write(void *addr, size_t bytes);

/* Hands a reservation or mapping back to the kernel. Returns false when munmap fails.
 * Does not change the committed count: use sm_region_unmap for memory that was committed. */
bool sm_region_release(void *addr, size_t bytes);

/* sm_region_release for a range in which committed_bytes bytes are committed (e.g. a large
 * object's mapping with its guard pages): on success they no longer count as committed. */
bool sm_region_unmap(void *addr, size_t bytes, size_t committed_bytes);

/* Moves the committed pages [old_addr, old_addr + old_bytes) to new_addr (replacing what is
 * mapped there, e.g. a reservation) without copying them, resized to new_bytes (growth
 * adds zeroed pages), followed by room_bytes of inaccessible address space that belongs to
 * the same mapping: sm_region_commit of its start later grows the range in place and it
 * stays one mapping, which a later move needs (a range that spans two mappings cannot
 * move). The old range is left unmapped. Returns false, changing nothing, when the kernel
 * refuses. */
bool sm_region_move(void *old_addr, size_t old_bytes, void *new_addr, size_t new_bytes,
                    size_t room_bytes);

/* Maps bytes of fresh zeroed read-write memory aligned to `align` (a power of two, at
 * least a page), MAP_NORESERVE like the reservations that sm_region_commit makes read-write:
 * under the kernel's overcommit heuristic neither is charged, so that either can later be
 * moved and grown by sm_region_move alike (a charged mapping's growth can be refused where
 * the same move of an uncharged one is not). Returns NULL when the kernel refuses. */
void *sm_region_map(size_t bytes, size_t align);

/* Bytes committed now, and the most ever committed at once (see "Accounting" above).
 * Lock-free reads of counters updated atomically; safe from any thread at any time. */
size_t sm_region_committed_bytes(void);
size_t sm_region_peak_committed_bytes(void);

/* The kernel's page size (read once; the caller checks it against SM_PAGE_SIZE). */
size_t sm_region_kernel_page_size(void);

/* The most bytes the kernel's overcommit heuristic grants one charged mapping: RAM + swap
 * (sysinfo, read now) when vm.overcommit_memory is 0, the default; SIZE_MAX when it is 1
 * (nothing is refused), 2 (strict accounting ignores MAP_NORESERVE and refuses by itself) or
 * cannot be read. Reservations are never charged, so the heuristic never refuses them: the
 * large path refuses bigger objects itself, as the kernel refuses glibc's. Two system calls,
 * for big requests only. */
size_t sm_region_overcommit_bytes_max(void);

/* The address-space limit (RLIMIT_AS) in bytes, or SIZE_MAX when unlimited. */
size_t sm_region_address_space_limit(void);

#ifdef __cplusplus
}
#endif

#endif

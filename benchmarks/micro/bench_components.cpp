// The component libraries on their own: size-class lookup, the slab bitmap, the AVL map,
// region commit/decommit, and the arena's alloc/free (below the ABI and its checks).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

#include "starmalloc.h"
#include "starmalloc/arena.h"
#include "starmalloc/avl.h"
#include "starmalloc/region.h"
#include "starmalloc/slab.h"
// sizeclass.h names a function like its struct, which g++ -Wshadow reports as hiding the
// struct's implicit constructor: harmless here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#include "starmalloc/sizeclass.h"
#pragma GCC diagnostic pop

namespace
{

// size -> class for 1024 sizes spread over every class.
void BM_sizeclass_of(benchmark::State &state)
{
    std::mt19937_64 rng(1);
    std::uniform_int_distribution<size_t> dist(1, SM_MAX_SMALL_SIZE);
    std::vector<size_t> sizes(1024);
    for (auto &s : sizes)
        s = dist(rng) >> (rng() % 14); // many small sizes, some large
    for (auto &s : sizes)
        s = s ? s : 1;
    for (auto _ : state) {
        unsigned sum = 0;
        for (size_t s : sizes)
            sum += sm_sizeclass_of(s);
        benchmark::DoNotOptimize(sum);
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(sizes.size()));
}
BENCHMARK(BM_sizeclass_of);

// The same for aligned requests (the class must also have a slot size multiple of align).
void BM_sizeclass_of_aligned(benchmark::State &state)
{
    std::mt19937_64 rng(2);
    std::vector<std::pair<size_t, size_t>> reqs(1024);
    for (auto &r : reqs)
        r = {1 + rng() % 8192, size_t{16} << (rng() % 9)};
    for (auto _ : state) {
        unsigned sum = 0;
        for (auto &r : reqs)
            sum += sm_sizeclass_of_aligned(r.first, r.second);
        benchmark::DoNotOptimize(sum);
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(reqs.size()));
}
BENCHMARK(BM_sizeclass_of_aligned);

// Fill a slab of N slots by claiming the lowest free slot, then release every slot.
void BM_slab_fill_drain(benchmark::State &state)
{
    const unsigned slots = static_cast<unsigned>(state.range(0));
    sm_slab slab;
    uint8_t allocated[256];
    sm_slab_init(&slab, slots, allocated, 1);
    for (auto _ : state) {
        for (unsigned i = 0; i < slots; i++)
            benchmark::DoNotOptimize(sm_slab_claim_slot(&slab));
        for (unsigned i = 0; i < slots; i++)
            sm_slab_release_slot(&slab, i);
    }
    state.SetItemsProcessed(state.iterations() * 2 * slots);
}
BENCHMARK(BM_slab_fill_drain)->Arg(8)->Arg(64)->Arg(256);

// Claim and release one slot in a 256-slot slab that is already `fill` percent full
// (slots in use spread at random), starting the search at a random slot as randomisation does.
void BM_slab_claim_release(benchmark::State &state)
{
    const unsigned fill = static_cast<unsigned>(state.range(0));
    sm_slab slab;
    uint8_t allocated[256];
    sm_slab_init(&slab, 256, allocated, 1);
    std::mt19937 rng(3);
    for (unsigned i = 0; i < 256; i++)
        if (rng() % 100 < fill)
            sm_slab_claim_slot_from(&slab, i);
    std::vector<unsigned> starts(4096);
    for (auto &s : starts)
        s = rng() % 256;
    size_t k = 0;
    for (auto _ : state) {
        int slot = sm_slab_claim_slot_from(&slab, starts[k++ & 4095]);
        benchmark::DoNotOptimize(slot);
        if (slot >= 0)
            sm_slab_release_slot(&slab, static_cast<unsigned>(slot));
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_slab_claim_release)->Arg(0)->Arg(50)->Arg(95);

// An AVL map with a node pool from aligned memory; keys are page addresses in random order.
struct AvlFixture {
    sm_avl_map map;
    std::vector<uintptr_t> keys;
    void *pool;

    explicit AvlFixture(size_t n) : keys(n)
    {
        size_t bytes = (n + 16) * sm_avl_node_bytes();
        bytes = (bytes + 63) & ~size_t{63};
        pool = std::aligned_alloc(64, bytes);
        sm_avl_init(&map);
        sm_avl_pool_add(&map, pool, bytes);
        std::mt19937_64 rng(4);
        for (size_t i = 0; i < n; i++)
            keys[i] = (uintptr_t{1} << 40) + i * 65536;
        std::shuffle(keys.begin(), keys.end(), rng);
    }
    ~AvlFixture()
    {
        std::free(pool);
    }
    void insert_all()
    {
        for (uintptr_t k : keys) {
            sm_avl_entry e{k, 65536, k - 4096, 65536 + 8192, 0};
            sm_avl_insert(&map, &e);
        }
    }
};

// Insert N entries, then remove them all in another order.
void BM_avl_insert_remove(benchmark::State &state)
{
    const size_t n = static_cast<size_t>(state.range(0));
    AvlFixture f(n);
    std::vector<uintptr_t> order = f.keys;
    std::mt19937_64 rng(5);
    std::shuffle(order.begin(), order.end(), rng);
    for (auto _ : state) {
        f.insert_all();
        for (uintptr_t k : order)
            sm_avl_remove(&f.map, k, nullptr);
    }
    state.SetItemsProcessed(state.iterations() * 2 * static_cast<int64_t>(n));
}
BENCHMARK(BM_avl_insert_remove)->Arg(16)->Arg(1024)->Arg(65536);

// Exact lookups in a map of N entries (the large path's free).
void BM_avl_find(benchmark::State &state)
{
    const size_t n = static_cast<size_t>(state.range(0));
    AvlFixture f(n);
    f.insert_all();
    size_t i = 0;
    for (auto _ : state) {
        benchmark::DoNotOptimize(sm_avl_find(&f.map, f.keys[i]));
        i = i + 1 == n ? 0 : i + 1;
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_avl_find)->Arg(16)->Arg(1024)->Arg(65536);

// Lookups of interior addresses (malloc_usable_size and realloc of a large block).
void BM_avl_find_containing(benchmark::State &state)
{
    const size_t n = static_cast<size_t>(state.range(0));
    AvlFixture f(n);
    f.insert_all();
    size_t i = 0;
    for (auto _ : state) {
        benchmark::DoNotOptimize(sm_avl_find_containing(&f.map, f.keys[i] + 100));
        i = i + 1 == n ? 0 : i + 1;
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_avl_find_containing)->Arg(1024);

// Commit N pages of a reservation, write one byte per page, decommit them again.
void BM_region_commit_decommit(benchmark::State &state)
{
    const size_t pages = static_cast<size_t>(state.range(0));
    const size_t bytes = pages * SM_PAGE_SIZE;
    char *base = static_cast<char *>(sm_region_reserve(bytes, SM_PAGE_SIZE));
    if (!base) {
        state.SkipWithError("sm_region_reserve failed");
        return;
    }
    for (auto _ : state) {
        if (!sm_region_commit(base, bytes)) {
            state.SkipWithError("sm_region_commit failed");
            break;
        }
        for (size_t off = 0; off < bytes; off += SM_PAGE_SIZE)
            base[off] = 1;
        if (!sm_region_decommit(base, bytes)) {
            state.SkipWithError("sm_region_decommit failed");
            break;
        }
    }
    sm_region_release(base, bytes);
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(pages));
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes));
}
BENCHMARK(BM_region_commit_decommit)->Arg(1)->Arg(16)->Arg(256);

// Map N fresh zeroed pages and release them (a large allocation without guards).
void BM_region_map_release(benchmark::State &state)
{
    const size_t bytes = static_cast<size_t>(state.range(0)) * SM_PAGE_SIZE;
    for (auto _ : state) {
        char *p = static_cast<char *>(sm_region_map(bytes, SM_PAGE_SIZE));
        if (!p) {
            state.SkipWithError("sm_region_map failed");
            break;
        }
        p[0] = 1;
        sm_region_release(p, bytes);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_region_map_release)->Arg(16)->Arg(256);

// The arena's alloc + free of one slot (what malloc/free pay below the ABI checks).
void BM_arena_alloc_free(benchmark::State &state)
{
    starmalloc_free(starmalloc_malloc(1)); // initialises the heap (sm_arena_init, once)
    const unsigned arena = sm_arena_of_thread();
    const unsigned cls = sm_sizeclass_of(static_cast<size_t>(state.range(0)));
    for (auto _ : state) {
        int zeroed = 0;
        void *p = sm_arena_alloc(arena, cls, &zeroed);
        if (!p) {
            state.SkipWithError("sm_arena_alloc failed");
            break;
        }
        benchmark::DoNotOptimize(p);
        sm_arena_free(p);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_arena_alloc_free)->Arg(16)->Arg(256)->Arg(4096);

} // namespace

// The allocation ABI: every case runs twice, on StarMalloc's prefixed functions (<sm>) and on
// the C library's (<libc>: glibc, or whatever allocator is preloaded), so the two can be read
// side by side: --benchmark_filter='<sm>' keeps StarMalloc's only.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "starmalloc.h"

namespace
{

struct sm {
    static void *malloc(size_t n)
    {
        return starmalloc_malloc(n);
    }
    static void free(void *p)
    {
        starmalloc_free(p);
    }
    static void *calloc(size_t c, size_t n)
    {
        return starmalloc_calloc(c, n);
    }
    static void *realloc(void *p, size_t n)
    {
        return starmalloc_realloc(p, n);
    }
    static void *aligned_alloc(size_t a, size_t n)
    {
        return starmalloc_aligned_alloc(a, n);
    }
};

struct libc {
    static void *malloc(size_t n)
    {
        return std::malloc(n);
    }
    static void free(void *p)
    {
        std::free(p);
    }
    static void *calloc(size_t c, size_t n)
    {
        return std::calloc(c, n);
    }
    static void *realloc(void *p, size_t n)
    {
        return std::realloc(p, n);
    }
    static void *aligned_alloc(size_t a, size_t n)
    {
        return std::aligned_alloc(a, n);
    }
};

// Ends the benchmark with an error when an allocation fails; true when p is usable.
bool usable(benchmark::State &state, void *p)
{
    if (p)
        return true;
    state.SkipWithError("allocation failed");
    return false;
}

// 16 B .. 1 MiB, by factors of 4.
void sizes_16_to_1m(benchmark::internal::Benchmark *b)
{
    for (long size = 16; size <= (1L << 20); size *= 4)
        b->Arg(size);
}

// 1, 2, 4, ... up to twice the number of cores (at least 4).
void thread_counts(benchmark::internal::Benchmark *b)
{
    unsigned max = std::max(4u, 2 * std::thread::hardware_concurrency());
    for (unsigned t = 1; t <= max; t *= 2)
        b->Threads(static_cast<int>(t));
    b->UseRealTime();
}

// malloc(size), write its first byte, free it.
template <class A> void BM_malloc_free(benchmark::State &state)
{
    const size_t size = static_cast<size_t>(state.range(0));
    for (auto _ : state) {
        char *p = static_cast<char *>(A::malloc(size));
        if (!usable(state, p))
            break;
        benchmark::DoNotOptimize(p);
        p[0] = 1;
        A::free(p);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK_TEMPLATE(BM_malloc_free, sm)->Apply(sizes_16_to_1m);
BENCHMARK_TEMPLATE(BM_malloc_free, libc)->Apply(sizes_16_to_1m);

// Allocate `count` blocks of `size`, then free them in allocation order (arg 2 = 0) or in a
// random order (arg 2 = 1).
template <class A> void BM_batch_alloc_free(benchmark::State &state)
{
    const size_t size = static_cast<size_t>(state.range(0));
    const size_t count = static_cast<size_t>(state.range(1));
    std::vector<void *> blocks(count);
    std::vector<size_t> order(count);
    for (size_t i = 0; i < count; i++)
        order[i] = i;
    if (state.range(2)) {
        std::mt19937_64 rng(6);
        std::shuffle(order.begin(), order.end(), rng);
    }
    for (auto _ : state) {
        for (size_t i = 0; i < count; i++) {
            blocks[i] = A::malloc(size);
            if (!usable(state, blocks[i]))
                return;
            static_cast<char *>(blocks[i])[0] = 1;
        }
        for (size_t i = 0; i < count; i++)
            A::free(blocks[order[i]]);
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(count));
}
void batch_args(benchmark::internal::Benchmark *b)
{
    b->ArgNames({"size", "count", "shuffled"});
    for (long size : {16L, 256L, 4096L})
        for (long shuffled : {0L, 1L})
            b->Args({size, 1000, shuffled});
}
BENCHMARK_TEMPLATE(BM_batch_alloc_free, sm)->Apply(batch_args);
BENCHMARK_TEMPLATE(BM_batch_alloc_free, libc)->Apply(batch_args);

// Grow a buffer from 64 B to `final` bytes by 64-byte appends, each a realloc.
template <class A> void BM_realloc_append(benchmark::State &state)
{
    const size_t final_bytes = static_cast<size_t>(state.range(0));
    for (auto _ : state) {
        char *p = nullptr;
        for (size_t n = 64; n <= final_bytes; n += 64) {
            char *q = static_cast<char *>(A::realloc(p, n));
            if (!usable(state, q)) {
                A::free(p);
                return;
            }
            q[n - 1] = 1;
            p = q;
        }
        A::free(p);
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(final_bytes / 64));
}
BENCHMARK_TEMPLATE(BM_realloc_append, sm)->Arg(4096)->Arg(65536);
BENCHMARK_TEMPLATE(BM_realloc_append, libc)->Arg(4096)->Arg(65536);

// Grow a buffer from 16 B to `final` bytes by doubling, writing the new half each time.
template <class A> void BM_realloc_double(benchmark::State &state)
{
    const size_t final_bytes = static_cast<size_t>(state.range(0));
    int64_t steps = 0;
    for (auto _ : state) {
        char *p = nullptr;
        for (size_t n = 16; n <= final_bytes; n *= 2) {
            char *q = static_cast<char *>(A::realloc(p, n));
            if (!usable(state, q)) {
                A::free(p);
                return;
            }
            std::memset(q + n / 2, 1, n / 2);
            p = q;
            steps++;
        }
        A::free(p);
    }
    state.SetItemsProcessed(steps);
}
BENCHMARK_TEMPLATE(BM_realloc_double, sm)->Arg(1 << 20);
BENCHMARK_TEMPLATE(BM_realloc_double, libc)->Arg(1 << 20);

// calloc(1, size) and free: zeroing cost, or its absence when the memory is known zero.
template <class A> void BM_calloc_free(benchmark::State &state)
{
    const size_t size = static_cast<size_t>(state.range(0));
    for (auto _ : state) {
        char *p = static_cast<char *>(A::calloc(1, size));
        if (!usable(state, p))
            break;
        benchmark::DoNotOptimize(p[size - 1]);
        A::free(p);
    }
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(size));
}
BENCHMARK_TEMPLATE(BM_calloc_free, sm)->Arg(64)->Arg(4096)->Arg(65536)->Arg(1 << 20);
BENCHMARK_TEMPLATE(BM_calloc_free, libc)->Arg(64)->Arg(4096)->Arg(65536)->Arg(1 << 20);

// aligned_alloc(align, size) and free.
template <class A> void BM_aligned_alloc_free(benchmark::State &state)
{
    const size_t align = static_cast<size_t>(state.range(0));
    const size_t size = static_cast<size_t>(state.range(1));
    for (auto _ : state) {
        char *p = static_cast<char *>(A::aligned_alloc(align, size));
        if (!usable(state, p))
            break;
        benchmark::DoNotOptimize(p);
        p[0] = 1;
        A::free(p);
    }
    state.SetItemsProcessed(state.iterations());
}
void aligned_args(benchmark::internal::Benchmark *b)
{
    b->ArgNames({"align", "size"});
    b->Args({64, 64})->Args({64, 1000})->Args({4096, 4096})->Args({65536, 65536});
}
BENCHMARK_TEMPLATE(BM_aligned_alloc_free, sm)->Apply(aligned_args);
BENCHMARK_TEMPLATE(BM_aligned_alloc_free, libc)->Apply(aligned_args);

// Cross-thread free: thread t allocates batches of blocks and passes them through a
// single-producer single-consumer ring to thread t + 1, which frees them. When the ring is
// full (its consumer is not scheduled), the producer frees its batch itself; the counter
// remote_frees tells how many frees were cross-thread.
constexpr size_t kRings = 64, kRingSlots = 1024, kBatch = 64;

struct Ring {
    std::atomic<void **> slots[kRingSlots];
    size_t produced; // touched by the producer only
    size_t consumed; // touched by the consumer only
};
template <class A> Ring rings[kRings]; // one set per allocator: never mix their blocks

template <class A> void free_batch(void **batch)
{
    for (size_t i = 0; i < kBatch; i++)
        A::free(batch[i]);
    A::free(batch);
}

template <class A> void BM_cross_thread_free(benchmark::State &state)
{
    const size_t size = static_cast<size_t>(state.range(0));
    const size_t threads = static_cast<size_t>(state.threads());
    const size_t me = static_cast<size_t>(state.thread_index());
    if (threads > kRings) {
        state.SkipWithError("too many threads");
        return;
    }
    Ring &out = rings<A>[(me + 1) % threads], &in = rings<A>[me];
    int64_t remote = 0;
    for (auto _ : state) {
        void **batch = static_cast<void **>(A::malloc(kBatch * sizeof(void *)));
        if (!usable(state, batch))
            break;
        for (size_t i = 0; i < kBatch; i++) {
            batch[i] = A::malloc(size);
            if (!usable(state, batch[i]))
                return;
            static_cast<char *>(batch[i])[0] = 1;
        }
        std::atomic<void **> &slot = out.slots[out.produced % kRingSlots];
        if (threads > 1 && slot.load(std::memory_order_acquire) == nullptr) {
            slot.store(batch, std::memory_order_release);
            out.produced++;
        } else {
            free_batch<A>(batch);
        }
        for (;;) { // free what the previous thread passed us
            std::atomic<void **> &next = in.slots[in.consumed % kRingSlots];
            void **theirs = next.load(std::memory_order_acquire);
            if (!theirs)
                break;
            next.store(nullptr, std::memory_order_release);
            in.consumed++;
            free_batch<A>(theirs);
            remote += kBatch;
        }
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kBatch));
    state.counters["remote_frees"] = benchmark::Counter(static_cast<double>(remote));
    // Batches still in a ring are freed by the next run with this ring's consumer.
}
BENCHMARK_TEMPLATE(BM_cross_thread_free, sm)->Arg(64)->Threads(2)->Threads(4)->UseRealTime();
BENCHMARK_TEMPLATE(BM_cross_thread_free, libc)->Arg(64)->Threads(2)->Threads(4)->UseRealTime();

// malloc/free pairs of mixed small sizes in 1..N threads at once (scalability, contention).
template <class A> void BM_malloc_free_threads(benchmark::State &state)
{
    const size_t base = static_cast<size_t>(state.range(0));
    size_t i = static_cast<size_t>(state.thread_index());
    void *keep[8] = {};
    for (auto _ : state) {
        // Keep a few blocks alive so each pair does not simply reuse the last slot.
        size_t slot = i & 7;
        A::free(keep[slot]);
        keep[slot] = A::malloc(base + 16 * (i % 5));
        if (!usable(state, keep[slot]))
            break;
        static_cast<char *>(keep[slot])[0] = 1;
        i++;
    }
    for (void *p : keep)
        A::free(p);
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK_TEMPLATE(BM_malloc_free_threads, sm)->Arg(64)->Apply(thread_counts);
BENCHMARK_TEMPLATE(BM_malloc_free_threads, libc)->Arg(64)->Apply(thread_counts);

} // namespace

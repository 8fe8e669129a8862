// cxx_containers: a C++17 allocation workload for the integration tests.
//
// new/delete, new[]/delete[], aligned new (an alignas(64) type and explicit std::align_val_t),
// std::vector, std::string, std::map, std::unordered_map, std::shared_ptr, exceptions, and
// std::thread with several threads building containers. Prints one deterministic checksum line
// on stdout: it must be the same whether malloc is glibc's or StarMalloc's (preloaded or linked).
//
// Usage: cxx_containers [--expect-starmalloc | --expect-plain]
//   --expect-starmalloc  starmalloc_malloc_usable_size must be found in the process with
//                        dlsym(RTLD_DEFAULT) and return >= the size for blocks from `new`
//   --expect-plain       the symbol must not be there (StarMalloc is not in the process)
// The finding is reported on stderr; a failed expectation exits with status 3.
#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace
{

using usable_size_fn = std::size_t (*)(void *);

[[noreturn]] void fail(const char *what)
{
    std::fprintf(stderr, "cxx_containers: FAIL: %s\n", what);
    std::exit(3);
}

std::uint64_t mix(std::uint64_t h, std::uint64_t v)
{
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    return h * 0xFF51AFD7ED558CCDull;
}

std::uint64_t mix_str(std::uint64_t h, const std::string &s)
{
    for (unsigned char c : s)
        h = mix(h, c);
    return mix(h, s.size());
}

struct alignas(64) CacheLine {
    std::uint64_t words[8];
};

struct Node {
    explicit Node(int v) : value(v), name("node-" + std::to_string(v)) {}
    int value;
    std::string name;
    std::vector<std::shared_ptr<Node>> children;
};

std::uint64_t plain_new_delete()
{
    std::uint64_t h = 1;
    std::vector<int *> singles;
    for (int i = 0; i < 20000; i++) {
        singles.push_back(new int(i * 3));
        if (i % 3 == 0) {
            h = mix(h, static_cast<std::uint64_t>(*singles.back()));
            delete singles.back();
            singles.pop_back();
        }
    }
    for (int *p : singles) {
        h = mix(h, static_cast<std::uint64_t>(*p));
        delete p;
    }
    for (std::size_t n = 1; n < 300000; n = n * 3 + 1) { // arrays from 1 element to ~1 MiB
        char *a = new char[n];
        std::memset(a, static_cast<int>(n & 0xFF), n);
        h = mix(h, static_cast<unsigned char>(a[n / 2]) + n);
        delete[] a;
        std::string *strs = new std::string[n % 97 + 1];
        for (std::size_t i = 0; i < n % 97 + 1; i++)
            strs[i].assign(i * 11, static_cast<char>('a' + i % 26));
        h = mix(h, strs[n % 97].size());
        delete[] strs;
    }
    return h;
}

std::uint64_t aligned_new()
{
    std::uint64_t h = 2;
    std::vector<CacheLine *> lines;
    for (int i = 0; i < 4000; i++) {
        auto *c = new CacheLine{};
        if (reinterpret_cast<std::uintptr_t>(c) % 64 != 0)
            fail("new of an alignas(64) type is not 64-byte aligned");
        c->words[i % 8] = static_cast<std::uint64_t>(i);
        lines.push_back(c);
    }
    for (CacheLine *c : lines) {
        for (std::uint64_t w : c->words)
            h = mix(h, w);
        delete c;
    }
    auto *many = new CacheLine[333];
    if (reinterpret_cast<std::uintptr_t>(many) % 64 != 0)
        fail("new[] of an alignas(64) type is not 64-byte aligned");
    many[332].words[7] = 42;
    h = mix(h, many[332].words[7]);
    delete[] many;
    for (std::size_t align = 16; align <= 65536; align *= 4) {
        for (std::size_t size : {std::size_t{1}, std::size_t{1000}, std::size_t{200000}}) {
            void *p = ::operator new (size, std::align_val_t{align});
            if (reinterpret_cast<std::uintptr_t>(p) % align != 0)
                fail("operator new(size, align_val_t) returned a misaligned pointer");
            std::memset(p, 0x5A, size);
            h = mix(h, align + size);
            ::operator delete (p, std::align_val_t{align});
        }
    }
    return h;
}

std::uint64_t containers(int seed)
{
    std::uint64_t h = static_cast<std::uint64_t>(seed);
    std::vector<std::string> strings;
    for (int i = 0; i < 20000; i++)
        strings.push_back(std::to_string(i * seed) +
                          std::string(static_cast<std::size_t>(i % 40), 'x'));
    std::sort(strings.begin(), strings.end());
    for (std::size_t i = 0; i < strings.size(); i += 97)
        h = mix_str(h, strings[i]);

    std::map<std::string, std::vector<int>> tree;
    for (int i = 0; i < 10000; i++)
        tree["k" + std::to_string((i * 7919 + seed) % 5000)].push_back(i);
    for (auto it = tree.begin(); it != tree.end();) { // erase every other key
        it = tree.erase(it);
        if (it != tree.end())
            ++it;
    }
    for (const auto &kv : tree)
        h = mix(mix_str(h, kv.first), kv.second.size());

    std::unordered_map<int, std::string> hash;
    for (int i = 0; i < 30000; i++)
        hash[i * 31 + seed] =
            std::string(static_cast<std::size_t>(i % 64), static_cast<char>('A' + i % 26));
    for (int i = 0; i < 30000; i += 2)
        hash.erase(i * 31 + seed);
    std::uint64_t unordered = 0; // order-independent sum
    for (const auto &kv : hash)
        unordered += static_cast<std::uint64_t>(kv.first) * kv.second.size();
    h = mix(h, unordered);

    std::vector<std::uint64_t> growing;
    for (std::uint64_t i = 0; i < 500000; i++)
        growing.push_back(i ^ static_cast<std::uint64_t>(seed));
    growing.resize(100);
    growing.shrink_to_fit();
    h = mix(h, growing.back() + growing.capacity());
    return h;
}

std::uint64_t shared_graph()
{
    auto root = std::make_shared<Node>(0);
    std::vector<std::shared_ptr<Node>> all{root};
    for (int i = 1; i < 20000; i++) {
        auto n = std::make_shared<Node>(i);
        all[static_cast<std::size_t>(static_cast<std::uint64_t>(i) * 2654435761u %
                                     static_cast<std::uint64_t>(i))]
            ->children.push_back(n);
        all.push_back(std::move(n));
    }
    std::uint64_t h = 3;
    std::weak_ptr<Node> watch = all[1234];
    for (const auto &n : all)
        h = mix(mix_str(h, n->name),
                n->children.size() + static_cast<std::uint64_t>(n.use_count()));
    all.clear();
    root.reset(); // the whole graph is freed here
    h = mix(h, watch.expired() ? 1 : 0);
    return h;
}

std::uint64_t exceptions()
{
    std::uint64_t h = 4;
    for (int i = 0; i < 3000; i++) {
        try {
            if (i % 3 == 0)
                throw std::runtime_error("runtime error number " + std::to_string(i));
            if (i % 3 == 1)
                throw std::vector<int>(static_cast<std::size_t>(i), i);
            throw std::string(static_cast<std::size_t>(i % 500), 'e');
        } catch (const std::runtime_error &e) {
            h = mix(h, std::strlen(e.what()));
        } catch (const std::vector<int> &v) {
            h = mix(h, v.size());
        } catch (const std::string &s) {
            h = mix_str(h, s);
        }
    }
    try {
        std::vector<int> v;
        (void)v.at(5);
    } catch (const std::out_of_range &) {
        h = mix(h, 5);
    }
    return h;
}

std::uint64_t threads()
{
    constexpr int kThreads = 6;
    std::vector<std::uint64_t> results(kThreads);
    std::vector<std::thread> pool;
    // Containers built in one thread and destroyed in another: cross-thread frees.
    std::vector<std::unique_ptr<std::map<int, std::string>>> handoff(kThreads);
    for (int t = 0; t < kThreads; t++) {
        pool.emplace_back([t, &results, &handoff] {
            std::uint64_t h = containers(t + 10);
            auto m = std::make_unique<std::map<int, std::string>>();
            for (int i = 0; i < 5000; i++)
                (*m)[i] = std::string(static_cast<std::size_t>(i % 100), 't');
            handoff[static_cast<std::size_t>(t)] = std::move(m);
            results[static_cast<std::size_t>(t)] = h;
        });
    }
    for (auto &th : pool)
        th.join();
    pool.clear();
    for (int t = 0; t < kThreads; t++) {
        pool.emplace_back(
            [t, &handoff] { handoff[static_cast<std::size_t>((t + 1) % kThreads)].reset(); });
    }
    for (auto &th : pool)
        th.join();
    std::uint64_t h = 5;
    for (std::uint64_t r : results)
        h = mix(h, r);
    return h;
}

void check_override(const char *mode)
{
    bool expect_star = std::strcmp(mode, "--expect-starmalloc") == 0;
    auto fn =
        reinterpret_cast<usable_size_fn>(dlsym(RTLD_DEFAULT, "starmalloc_malloc_usable_size"));
    if (!fn) {
        if (expect_star)
            fail("starmalloc_malloc_usable_size not found with dlsym: StarMalloc is not in the "
                 "process");
        std::fprintf(stderr, "cxx_containers: StarMalloc not in the process (as expected)\n");
        return;
    }
    if (!expect_star)
        fail("starmalloc_malloc_usable_size found, but this run should use the plain allocator");
    for (std::size_t size : {std::size_t{8}, std::size_t{1000}, std::size_t{300000}}) {
        void *p =
            ::operator new(size); // aborts inside StarMalloc if `new` did not get the block from it
        std::size_t usable = fn(p);
        ::operator delete(p);
        if (usable < size)
            fail("starmalloc_malloc_usable_size of a block from operator new is smaller than "
                 "requested");
        std::fprintf(stderr,
                     "cxx_containers: operator new(%zu) is a StarMalloc block of %zu bytes\n", size,
                     usable);
    }
    auto *c = new CacheLine{};
    std::size_t usable = fn(c);
    delete c;
    if (usable < sizeof(CacheLine))
        fail("aligned new did not come from StarMalloc");
}

} // namespace

int main(int argc, char **argv)
{
    if (argc > 2 || (argc == 2 && std::strcmp(argv[1], "--expect-starmalloc") != 0 &&
                     std::strcmp(argv[1], "--expect-plain") != 0)) {
        std::fprintf(stderr, "usage: cxx_containers [--expect-starmalloc | --expect-plain]\n");
        return 2;
    }
    if (argc == 2)
        check_override(argv[1]);
    std::uint64_t h = 0;
    h = mix(h, plain_new_delete());
    h = mix(h, aligned_new());
    h = mix(h, containers(1));
    h = mix(h, shared_graph());
    h = mix(h, exceptions());
    h = mix(h, threads());
    std::printf("checksum: %016llx\n", static_cast<unsigned long long>(h));
    return 0;
}

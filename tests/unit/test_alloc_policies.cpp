// The shipped AllocPolicies beyond heap_alloc: recycling_pool_alloc (size classes, reuse, the cap, sharing,
// release with the last copy, threads, no heap allocation per IO once warm) and std_allocator_alloc (any
// standard allocator; exceptions become nullptr, and then out_of_memory).
#include <async_socket/alloc/recycling_pool_alloc.hpp>
#include <async_socket/alloc/std_allocator_alloc.hpp>

#include "../support/fixtures.hpp"

#include "inline_threadpool.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <new>
#include <future>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace test_support;
using async_socket::win32_no_error;

namespace
{

// A pool over the test's ledger: every block the pool takes from or gives back to the heap is counted there,
// and so is the pool's own state.
using ledger_pool = async_socket::basic_recycling_pool_alloc<fault_alloc>;
using std_alloc = async_socket::std_allocator_alloc<std::allocator<std::byte>>;
using pmr_alloc = async_socket::std_allocator_alloc<std::pmr::polymorphic_allocator<std::byte>>;

// thread_cache_blocks = 0 leaves only the shared lists, for the tests of that layer on its own.
ledger_pool make_pool(alloc_ledger& ledger, std::uint32_t max_cached_per_class = 64,
                      std::uint32_t thread_cache_blocks = 8)
{
    return ledger_pool{async_socket::recycling_pool_options{.max_cached_per_class = max_cached_per_class,
                                                            .thread_cache_blocks = thread_cache_blocks},
                       fault_alloc{&ledger}};
}

// `count` blocks of `size` bytes from `pool`, each required.
std::vector<void*> allocate_blocks(ledger_pool& pool, int count, std::size_t size)
{
    std::vector<void*> blocks;
    for (int i = 0; i < count; ++i)
    {
        blocks.push_back(pool.allocate(size));
        REQUIRE(blocks.back() != nullptr);
    }
    return blocks;
}

// Gives each of `blocks` back to `pool`, as `size` bytes.
void deallocate_blocks(ledger_pool& pool, const std::vector<void*>& blocks, std::size_t size)
{
    for (void* p : blocks)
    {
        pool.deallocate(p, size);
    }
}

bool is_max_aligned(const void* p)
{
    return reinterpret_cast<std::uintptr_t>(p) % alignof(std::max_align_t) == 0;
}

bool holds(const unsigned char* p, std::size_t size, unsigned char value)
{
    return std::all_of(p, p + size, [value](unsigned char c) { return c == value; });
}

// The context layout over the fake threadpool: the size each IO asks for.
using fake_layout = async_socket::detail::io_context_layout<
    async_socket::detail::io_context_header<async_socket::testing::fake_threadpool::io_state>, fake_wsabuf>;

void noop_open(void*, ASYNC_SOCKET_OPEN_RESULT) {}

// A socket of type Socket over fake socket `n`, its memory from `alloc`: created, each step required.
template <class Socket, class Engine, class Alloc>
typename Socket::handle created_socket(Engine* engine, std::uintptr_t n, Alloc alloc)
{
    auto socket = Socket::create(engine, fake_socket(n), {}, alloc);
    REQUIRE(socket);
    return socket;
}

// The same, and opened.
template <class Socket, class Engine, class Alloc>
typename Socket::handle opened_socket(Engine* engine, std::uintptr_t n, Alloc alloc)
{
    auto socket = created_socket<Socket>(engine, n, alloc);
    REQUIRE(socket->open_async(&noop_open, nullptr) == status::ok);
    return socket;
}

// A std::pmr memory resource that counts what it hands out and can be told to throw.
class counting_resource : public std::pmr::memory_resource
{
public:
    std::atomic<std::uint64_t> allocations{0};
    std::atomic<std::uint64_t> deallocations{0};
    std::atomic<std::int64_t> live_bytes{0};
    std::atomic<std::size_t> last_bytes{0};
    std::atomic<std::size_t> smallest_alignment{SIZE_MAX};
    std::atomic<bool> fail{false};

private:
    void* do_allocate(std::size_t bytes, std::size_t alignment) override
    {
        if (fail.load())
        {
            throw std::bad_alloc();
        }
        void* p = std::pmr::new_delete_resource()->allocate(bytes, alignment);
        allocations.fetch_add(1);
        live_bytes.fetch_add(static_cast<std::int64_t>(bytes));
        last_bytes.store(bytes);
        std::size_t seen = smallest_alignment.load();
        while (alignment < seen && !smallest_alignment.compare_exchange_weak(seen, alignment))
        {
        }
        return p;
    }

    void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override
    {
        deallocations.fetch_add(1);
        live_bytes.fetch_sub(static_cast<std::int64_t>(bytes));
        std::pmr::new_delete_resource()->deallocate(p, bytes, alignment);
    }

    bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override
    {
        return this == &other;
    }
};

using pmr_socket = async_socket::basic_async_socket<fake_threadpool, pmr_alloc, async_socket::std_sync>;

pmr_alloc alloc_from(counting_resource& resource)
{
    return pmr_alloc{std::pmr::polymorphic_allocator<std::byte>{&resource}};
}

// A standard allocator that throws something other than bad_alloc.
template <class T>
struct throwing_allocator
{
    using value_type = T;
    throwing_allocator() noexcept = default;
    template <class U>
    throwing_allocator(const throwing_allocator<U>&) noexcept
    {
    }
    T* allocate(std::size_t)
    {
        throw std::runtime_error("no memory today");
    }
    void deallocate(T*, std::size_t) noexcept {}
    template <class U>
    bool operator==(const throwing_allocator<U>&) const noexcept
    {
        return true;
    }
};

} // namespace

// ---- both policies ----------------------------------------------------------------------------------------

TEST_CASE("recycling_pool_alloc and std_allocator_alloc model alloc_policy")
{
    static_assert(async_socket::check_alloc_policy<async_socket::recycling_pool_alloc>());
    static_assert(async_socket::check_alloc_policy<ledger_pool>());
    static_assert(async_socket::check_alloc_policy<std_alloc>());
    static_assert(async_socket::check_alloc_policy<pmr_alloc>());
    static_assert(async_socket::check_alloc_policy<async_socket::std_allocator_alloc<throwing_allocator<int>>>());
    CHECK(async_socket::alloc_policy<async_socket::recycling_pool_alloc>);
    CHECK(async_socket::alloc_policy<std_alloc>);
    CHECK(async_socket::alloc_policy<pmr_alloc>);
}

// ---- recycling_pool_alloc ---------------------------------------------------------------------------------

TEST_CASE("recycling_pool_alloc: size classes are the powers of two from 64 bytes to 64 KiB")
{
    using pool = async_socket::recycling_pool_alloc;
    CHECK(pool::class_index(1) == 0);
    CHECK(pool::class_index(64) == 0);
    CHECK(pool::class_index(65) == 1);
    CHECK(pool::class_index(128) == 1);
    CHECK(pool::class_index(129) == 2);
    CHECK(pool::class_index(4096) == 6);
    CHECK(pool::class_index(65536) == 10);
    CHECK(pool::class_index(65537) >= pool::class_count);
    CHECK(pool::class_index(SIZE_MAX) >= pool::class_count);
    CHECK(pool::class_size(0) == 64);
    CHECK(pool::class_size(pool::class_count - 1) == 65536);
}

TEST_CASE("recycling_pool_alloc: live blocks are aligned for max_align_t, writable and distinct")
{
    alloc_ledger ledger;
    {
        ledger_pool pool = make_pool(ledger);
        const std::size_t sizes[] = {1, 8, 63, 64, 65, 100, 128, 129, 1000, 4096, 65536, 65537, 200000};
        struct block
        {
            unsigned char* p;
            std::size_t size;
            unsigned char tag;
        };
        std::vector<block> blocks;
        for (int round = 0; round < 3; ++round)
        {
            for (const std::size_t size : sizes)
            {
                auto* p = static_cast<unsigned char*>(pool.allocate(size));
                REQUIRE(p != nullptr);
                CHECK_MESSAGE(is_max_aligned(p), "a block of ", size, " bytes is not aligned for max_align_t");
                const auto tag = static_cast<unsigned char>(blocks.size() + 1);
                std::memset(p, tag, size);
                blocks.push_back({p, size, tag});
            }
        }
        for (const block& b : blocks)
        {
            CHECK_MESSAGE(holds(b.p, b.size, b.tag), "the block of ", b.size, " bytes was overwritten");
        }
        for (const block& b : blocks)
        {
            pool.deallocate(b.p, b.size);
        }
    }
    CHECK(ledger.misuse() == 0);
    CHECK(ledger.live_blocks() == 0);
}

TEST_CASE("recycling_pool_alloc: a freed block is handed out again for a request of its class, from no new heap "
          "allocation")
{
    alloc_ledger ledger;
    ledger_pool pool = make_pool(ledger);
    void* first = pool.allocate(100);
    REQUIRE(first != nullptr);
    CHECK(pool.stats().heap_allocations == 1);
    pool.deallocate(first, 100);
    CHECK(pool.stats().cached_blocks == 1);
    CHECK(pool.stats().cached_bytes == 128);

    void* again = pool.allocate(128); // the same class (65..128 bytes)
    CHECK(again == first);
    CHECK(pool.stats().heap_allocations == 1);
    CHECK(pool.stats().cached_blocks == 0);

    void* other_class = pool.allocate(64);
    REQUIRE(other_class != nullptr);
    CHECK(other_class != first);
    CHECK(pool.stats().heap_allocations == 2);
    pool.deallocate(other_class, 64);
    pool.deallocate(again, 128);
    CHECK(pool.stats().cached_blocks == 2);
    CHECK(pool.stats().heap_deallocations == 0);
}

TEST_CASE("recycling_pool_alloc: a block larger than 64 KiB goes straight to the heap and back")
{
    alloc_ledger ledger;
    ledger_pool pool = make_pool(ledger);
    void* big = pool.allocate(65537);
    REQUIRE(big != nullptr);
    CHECK(ledger.live_bytes() >= 65537);
    pool.deallocate(big, 65537);
    const async_socket::recycling_pool_stats stats = pool.stats();
    CHECK(stats.heap_allocations == 1);
    CHECK(stats.heap_deallocations == 1);
    CHECK(stats.cached_blocks == 0);
    CHECK(ledger.live_blocks() == 1); // the pool's own state
    CHECK(ledger.misuse() == 0);
}

TEST_CASE("recycling_pool_alloc: a class caches at most max_cached_per_class blocks and frees the excess at once")
{
    alloc_ledger ledger;
    ledger_pool pool = make_pool(ledger, 4, 0);
    std::vector<void*> blocks = allocate_blocks(pool, 10, 200);
    deallocate_blocks(pool, blocks, 200);
    async_socket::recycling_pool_stats stats = pool.stats();
    CHECK(stats.cached_blocks == 4);
    CHECK(stats.cached_bytes == 4 * 256);
    CHECK(stats.heap_allocations == 10);
    CHECK(stats.heap_deallocations == 6);
    CHECK(ledger.live_blocks() == 4 + 1); // the cached blocks and the pool's state

    // Ten again: four come from the cache, six from the heap.
    blocks = allocate_blocks(pool, 10, 150);
    CHECK(pool.stats().heap_allocations == 16);
    deallocate_blocks(pool, blocks, 150);
    CHECK(pool.stats().cached_blocks == 4);
    CHECK(ledger.misuse() == 0);
}

TEST_CASE("recycling_pool_alloc: trim returns every cached block to the heap and leaves blocks in use alone")
{
    alloc_ledger ledger;
    ledger_pool pool = make_pool(ledger);
    void* in_use = pool.allocate(300);
    void* a = pool.allocate(300);
    void* b = pool.allocate(40);
    pool.deallocate(a, 300);
    pool.deallocate(b, 40);
    CHECK(pool.stats().cached_blocks == 2);
    pool.trim();
    CHECK(pool.stats().cached_blocks == 0);
    CHECK(pool.stats().heap_deallocations == 2);
    CHECK(pool.stats().thread_caches == 1);
    CHECK(ledger.live_blocks() == 1 + 1 + 1); // in_use, the pool's state and this thread's (empty) cache
    std::memset(in_use, 0x5A, 300);
    pool.deallocate(in_use, 300);
    CHECK(ledger.misuse() == 0);
}

TEST_CASE("recycling_pool_alloc: reserve fills the shared list of a class from the heap, up to max_cached_per_class, "
          "and the blocks then go out with no heap allocation")
{
    alloc_ledger ledger;
    ledger_pool pool = make_pool(ledger, 12, 0); // no thread caches: every block below comes from the shared list
    CHECK(pool.reserve(300, 5) == 5);            // the 512-byte class; makes the pool first
    async_socket::recycling_pool_stats stats = pool.stats();
    CHECK(stats.cached_blocks == 5);
    CHECK(stats.cached_bytes == 5 * 512);
    CHECK(stats.heap_allocations == 5);
    CHECK(ledger.live_blocks() == 5 + 1);

    CHECK(pool.reserve(260, 3) == 5);   // already holds more than 3: nothing taken
    CHECK(pool.reserve(512, 40) == 12); // capped at max_cached_per_class
    CHECK(pool.stats().heap_allocations == 12);

    std::vector<void*> blocks = allocate_blocks(pool, 12, 400);
    CHECK(pool.stats().heap_allocations == 12); // all twelve were reserved
    CHECK(pool.stats().cached_blocks == 0);
    void* more = pool.allocate(400);
    REQUIRE(more != nullptr);
    CHECK(pool.stats().heap_allocations == 13); // the class is empty again: the heap
    pool.deallocate(more, 400);
    deallocate_blocks(pool, blocks, 400);
    CHECK(ledger.misuse() == 0);
}

TEST_CASE("recycling_pool_alloc: reserve says how many it holds when the heap refuses, and takes none for a size "
          "above 64 KiB")
{
    alloc_ledger ledger;
    {
        ledger_pool pool = make_pool(ledger);
        CHECK(pool.reserve(70000, 4) == 0); // never cached
        CHECK(pool.stats().heap_allocations == 0);
        ledger.fail_nth(3); // the third block from now is refused
        CHECK(pool.reserve(100, 8) == 2);
        CHECK(pool.stats().cached_blocks == 2);
        CHECK(pool.reserve(100, 8) == 8); // the heap gives again
        ledger.fail_all(true);
        CHECK(pool.reserve(100, 10) == 8);
        ledger.fail_all(false);
    }
    {
        ledger.fail_all(true);
        ledger_pool pool = make_pool(ledger);
        CHECK(pool.reserve(100, 8) == 0); // not even the pool can be made
        ledger.fail_all(false);
    }
    CHECK(ledger.live_blocks() == 0); // the reserved blocks went back with the pool
    CHECK(ledger.misuse() == 0);
}

TEST_CASE("recycling_pool_alloc: blocks one thread allocates and another frees come from the reserve while the "
          "freeing thread's cache takes its first blocks, not from the heap")
{
    // The pattern of a completion thread that frees contexts another thread allocated: its cache keeps the first
    // blocks it frees (up to 8 of the class), so without a reserve the allocating thread finds the shared list
    // empty and goes to the heap for each of them.
    const auto heap_blocks_taken = [](std::uint32_t reserved)
    {
        alloc_ledger ledger;
        ledger_pool pool = make_pool(ledger);
        REQUIRE(pool.reserve(200, reserved) == reserved);
        std::mutex lock;
        std::condition_variable changed;
        void* handed = nullptr;
        bool finished = false;
        std::thread freer(
            [&]
            {
                std::unique_lock<std::mutex> held(lock);
                while (true)
                {
                    changed.wait(held, [&] { return handed != nullptr || finished; });
                    if (handed == nullptr)
                    {
                        return;
                    }
                    pool.deallocate(handed, 200);
                    handed = nullptr;
                    changed.notify_all();
                }
            });
        bool all_given = true;
        for (int i = 0; i < 100; ++i)
        {
            void* block = pool.allocate(200);
            all_given = all_given && block != nullptr;
            std::unique_lock<std::mutex> held(lock);
            handed = block;
            changed.notify_all();
            all_given =
                all_given && changed.wait_for(held, std::chrono::seconds(60), [&] { return handed == nullptr; });
        }
        {
            std::lock_guard<std::mutex> held(lock);
            finished = true;
        }
        changed.notify_all();
        freer.join();
        CHECK(all_given);
        return pool.stats().heap_allocations;
    };
    // Without: the 8 blocks the freeing thread's cache keeps, and one more before its first spill reaches the
    // shared list; from then on the blocks circulate.
    CHECK(heap_blocks_taken(0) == 9);
    CHECK(heap_blocks_taken(16) == 16); // only the reserve
}

TEST_CASE("recycling_pool_alloc: reserve_thread_caches makes caches that the next threads adopt without a heap "
          "allocation")
{
    alloc_ledger ledger;
    {
        ledger_pool pool = make_pool(ledger);
        CHECK(pool.reserve_thread_caches(2) == 2);
        CHECK(pool.stats().thread_caches == 2);
        CHECK(pool.reserve(100, 4) == 4);
        const std::uint64_t before = ledger.allocations();
        // A new thread's first allocate and deallocate: its cache is one of the two made ahead.
        bool given = false;
        std::thread user(
            [&]
            {
                void* block = pool.allocate(100);
                given = block != nullptr;
                pool.deallocate(block, 100);
            });
        user.join();
        CHECK(given);
        CHECK(ledger.allocations() == before);
        CHECK(pool.stats().thread_caches == 2);

        CHECK(pool.reserve_thread_caches(2) == 2); // the exited thread's cache waits again: still two
        CHECK(ledger.allocations() == before);
        void* kept = pool.allocate(64); // this thread adopts one
        REQUIRE(kept != nullptr);
        CHECK(pool.reserve_thread_caches(2) == 2); // one more made
        CHECK(pool.stats().thread_caches == 3);
        ledger.fail_all(true);
        CHECK(pool.reserve_thread_caches(5) == 2); // the heap refuses: the two that wait
        ledger.fail_all(false);
        pool.deallocate(kept, 64);
    }
    CHECK(ledger.live_blocks() == 0); // the caches and the reserved blocks went back with the pool
    CHECK(ledger.misuse() == 0);
}

TEST_CASE("recycling_pool_alloc: the last copy to go returns every cached block and the pool itself to the heap")
{
    alloc_ledger ledger;
    auto original = std::make_unique<ledger_pool>(make_pool(ledger));
    void* kept = original->allocate(1000);
    auto copy = std::make_unique<ledger_pool>(*original);
    auto assigned = std::make_unique<ledger_pool>(make_pool(ledger));
    *assigned = *copy;
    ledger_pool moved_from = *copy;
    auto moved = std::make_unique<ledger_pool>(std::move(moved_from));
    CHECK(copy->shares_pool_with(*original));
    CHECK(assigned->shares_pool_with(*original));
    CHECK(moved->shares_pool_with(*original));

    // Blocks go back through any copy.
    for (std::size_t size : {10u, 100u, 1000u, 10000u})
    {
        void* p = copy->allocate(size);
        REQUIRE(p != nullptr);
        assigned->deallocate(p, size);
    }
    moved->deallocate(kept, 1000);
    CHECK(original->stats().cached_blocks == 5);
    CHECK(original->stats().thread_caches == 1);
    const std::int64_t held = ledger.live_blocks();
    CHECK(held == 5 + 1 + 1); // the blocks, the pool's state and this thread's cache

    original.reset();
    copy.reset();
    assigned.reset();
    CHECK(ledger.live_blocks() == held); // one copy still holds the pool
    moved.reset();
    CHECK(ledger.live_blocks() == 0);
    CHECK(ledger.live_bytes() == 0);
    CHECK(ledger.misuse() == 0);
}

TEST_CASE("recycling_pool_alloc: a default-constructed allocator makes its pool at the first use, and its copies "
          "share it")
{
    async_socket::recycling_pool_alloc unused;
    CHECK(unused.stats().heap_allocations == 0);
    CHECK(unused.stats().cached_blocks == 0);

    async_socket::recycling_pool_alloc original;
    async_socket::recycling_pool_alloc copy = original; // before any allocation: the copy makes the pool
    CHECK(copy.shares_pool_with(original));
    void* p = copy.allocate(100);
    REQUIRE(p != nullptr);
    original.deallocate(p, 100);
    CHECK(original.stats().cached_blocks == 1);
    CHECK(copy.stats().cached_blocks == 1);
    CHECK(original.allocate(90) == p);
    original.deallocate(p, 90);

    async_socket::recycling_pool_alloc first_use;
    void* q = first_use.allocate(64);
    REQUIRE(q != nullptr);
    CHECK(first_use.stats().heap_allocations == 1);
    first_use.deallocate(q, 64);
}

TEST_CASE("recycling_pool_alloc: an allocation the heap refuses gives nullptr")
{
    alloc_ledger ledger;
    SUBCASE("the pool cannot even be made")
    {
        ledger_pool pool = make_pool(ledger);
        ledger.fail_all(true);
        CHECK(pool.allocate(100) == nullptr);
        CHECK(pool.allocate(100000) == nullptr);
        ledger.fail_all(false);
    }
    SUBCASE("the pool exists but its class is empty")
    {
        ledger_pool pool = make_pool(ledger);
        pool.deallocate(pool.allocate(10), 10); // makes the pool
        ledger.fail_all(true);
        void* cached = pool.allocate(10); // the class-64 block comes from the cache
        CHECK(cached != nullptr);
        CHECK(pool.allocate(10) == nullptr);
        CHECK(pool.allocate(1000) == nullptr);
        ledger.fail_all(false);
        pool.deallocate(cached, 10);
        CHECK(pool.stats().heap_allocations == 1);
    }
    CHECK(ledger.live_blocks() == 0);
    CHECK(ledger.misuse() == 0);
}

TEST_CASE("recycling_pool_alloc: a block made while the pool could not be made is class-sized and recycles safely")
{
    alloc_ledger ledger;
    ledger_pool without_pool = make_pool(ledger);
    ledger.fail_nth(1); // the pool's state: the block passes straight through
    auto* p = static_cast<unsigned char*>(without_pool.allocate(70));
    REQUIRE(p != nullptr);
    CHECK(without_pool.stats().heap_allocations == 0); // still no pool

    ledger_pool with_pool = without_pool; // this copy makes the pool
    with_pool.deallocate(p, 70);
    CHECK(with_pool.stats().cached_blocks == 1);
    auto* reused = static_cast<unsigned char*>(with_pool.allocate(128)); // the whole class
    CHECK(reused == p);
    std::memset(reused, 0x77, 128);
    with_pool.deallocate(reused, 128);
    CHECK(ledger.misuse() == 0);
}

TEST_CASE("recycling_pool_alloc: four threads allocating and freeing at once, each other's blocks too, never share a "
          "block")
{
    alloc_ledger ledger;
    constexpr int threads = 4;
    constexpr int iterations = 4000;
    std::atomic<int> corrupted{0};
    std::atomic<int> failed{0};
    {
        ledger_pool pool = make_pool(ledger, 8);
        struct block
        {
            unsigned char* p;
            std::size_t size;
            unsigned char tag;
        };
        // Blocks handed to another thread to free, as completions free contexts on threadpool threads.
        std::mutex handoff_mutex;
        std::deque<block> handoff;

        const auto check_and_free = [&](ledger_pool& alloc, const block& b)
        {
            if (!holds(b.p, b.size, b.tag))
            {
                ++corrupted;
            }
            alloc.deallocate(b.p, b.size);
        };

        std::vector<std::thread> workers;
        for (int t = 0; t < threads; ++t)
        {
            workers.emplace_back(
                [&, t]
                {
                    ledger_pool alloc = pool; // each thread its own copy, as each socket has
                    std::minstd_rand random(static_cast<unsigned>(t + 1));
                    std::vector<block> held;
                    for (int i = 0; i < iterations; ++i)
                    {
                        const std::size_t size = 1 + random() % 2000;
                        auto* p = static_cast<unsigned char*>(alloc.allocate(size));
                        if (p == nullptr || !is_max_aligned(p))
                        {
                            ++failed;
                            continue;
                        }
                        const auto tag = static_cast<unsigned char>(1 + (t * 61 + i) % 250);
                        std::memset(p, tag, size);
                        held.push_back({p, size, tag});
                        if (held.size() > 12)
                        {
                            const std::size_t victim = random() % held.size();
                            const block chosen = held[victim];
                            held[victim] = held.back();
                            held.pop_back();
                            if (random() % 2 == 0)
                            {
                                check_and_free(alloc, chosen);
                            }
                            else
                            {
                                std::lock_guard lock(handoff_mutex);
                                handoff.push_back(chosen);
                            }
                        }
                        std::optional<block> theirs;
                        {
                            std::lock_guard lock(handoff_mutex);
                            if (!handoff.empty() && random() % 2 == 0)
                            {
                                theirs = handoff.front();
                                handoff.pop_front();
                            }
                        }
                        if (theirs)
                        {
                            check_and_free(alloc, *theirs);
                        }
                    }
                    for (const block& b : held)
                    {
                        check_and_free(alloc, b);
                    }
                });
        }
        for (auto& worker : workers)
        {
            worker.join();
        }
        for (const block& b : handoff)
        {
            check_and_free(pool, b);
        }
        const async_socket::recycling_pool_stats stats = pool.stats();
        // The workers have exited: their caches gave their blocks back to the shared lists (at most 8 per
        // class); only this thread's cache may still hold blocks, and the caches wait for new threads.
        CHECK(stats.cached_blocks - stats.thread_cache_blocks <= 8 * async_socket::recycling_pool_alloc::class_count);
        CHECK(stats.thread_cache_blocks <= 8 * async_socket::recycling_pool_alloc::class_count);
        CHECK(stats.thread_caches <= 5);
        CHECK(ledger.live_blocks() ==
              static_cast<std::int64_t>(stats.cached_blocks) + 1 + static_cast<std::int64_t>(stats.thread_caches));
    }
    CHECK(corrupted.load() == 0);
    CHECK(failed.load() == 0);
    CHECK(ledger.live_blocks() == 0);
    CHECK(ledger.misuse() == 0);
}

// ---- recycling_pool_alloc: the thread caches -------------------------------------------------------------

TEST_CASE("recycling_pool_alloc: a block freed on a thread waits in that thread's cache and goes out again from there")
{
    alloc_ledger ledger;
    ledger_pool pool = make_pool(ledger);
    void* first = pool.allocate(100);
    REQUIRE(first != nullptr);
    pool.deallocate(first, 100);
    async_socket::recycling_pool_stats stats = pool.stats();
    CHECK(stats.cached_blocks == 1);
    CHECK(stats.thread_cache_blocks == 1); // not in the shared list
    CHECK(stats.thread_caches == 1);
    CHECK(pool.allocate(120) == first);
    CHECK(pool.stats().cached_blocks == 0);
    CHECK(pool.stats().heap_allocations == 1);
    pool.deallocate(first, 120);
}

TEST_CASE("recycling_pool_alloc: a full thread cache gives its older half to the shared list, and an empty one takes "
          "half its size back in one go")
{
    alloc_ledger ledger;
    ledger_pool pool = make_pool(ledger);
    std::vector<void*> blocks = allocate_blocks(pool, 20, 100);
    deallocate_blocks(pool, blocks, 100);
    // 8 fit in the cache; the 9th, 13th and 17th frees each moved 4 to the shared list first.
    async_socket::recycling_pool_stats stats = pool.stats();
    CHECK(stats.cached_blocks == 20);
    CHECK(stats.thread_cache_blocks == 8);
    CHECK(stats.heap_deallocations == 0);

    // The last freed goes out first; after the cache's 8, a refill brings 4 from the shared list.
    std::vector<void*> again = allocate_blocks(pool, 10, 100);
    CHECK(again.front() == blocks.back());
    stats = pool.stats();
    CHECK(stats.heap_allocations == 20);
    CHECK(stats.cached_blocks == 10);
    CHECK(stats.thread_cache_blocks == 2);
    pool.trim(); // the shared list and this thread's cache
    CHECK(pool.stats().cached_blocks == 0);
    CHECK(ledger.live_blocks() == 10 + 1 + 1); // the blocks handed out, the state and the cache
    deallocate_blocks(pool, again, 100);
    CHECK(ledger.misuse() == 0);
}

TEST_CASE("recycling_pool_alloc: a thread caches at most 8 KiB per class, and classes above 8 KiB not at all")
{
    alloc_ledger ledger;
    ledger_pool pool = make_pool(ledger);
    std::vector<void*> blocks = allocate_blocks(pool, 5, 3000); // the 4 KiB class: 2 per thread
    void* big = pool.allocate(10000);                           // the 16 KiB class: none per thread
    deallocate_blocks(pool, blocks, 3000);
    pool.deallocate(big, 10000);
    const async_socket::recycling_pool_stats stats = pool.stats();
    CHECK(stats.cached_blocks == 6);
    CHECK(stats.thread_cache_blocks <= 2);
    CHECK(stats.cached_bytes == 5 * 4096 + 16384);
}

TEST_CASE("recycling_pool_alloc: with thread_cache_blocks = 0 every block goes through the shared lists")
{
    alloc_ledger ledger;
    ledger_pool pool = make_pool(ledger, 64, 0);
    void* p = pool.allocate(100);
    pool.deallocate(p, 100);
    const async_socket::recycling_pool_stats stats = pool.stats();
    CHECK(stats.cached_blocks == 1);
    CHECK(stats.thread_cache_blocks == 0);
    CHECK(stats.thread_caches == 0);
    CHECK(ledger.live_blocks() == 1 + 1);
}

TEST_CASE("recycling_pool_alloc: a thread that exits gives its cached blocks to the shared lists, and the next "
          "thread takes over its cache")
{
    alloc_ledger ledger;
    ledger_pool pool = make_pool(ledger);
    const auto churn = [&pool]
    {
        void* blocks[3];
        for (void*& p : blocks)
        {
            p = pool.allocate(200);
        }
        for (void* p : blocks)
        {
            pool.deallocate(p, 200);
        }
    };
    std::thread(churn).join();
    async_socket::recycling_pool_stats stats = pool.stats();
    CHECK(stats.cached_blocks == 3);
    CHECK(stats.thread_cache_blocks == 0); // given back when the thread exited
    CHECK(stats.thread_caches == 1);
    CHECK(stats.heap_allocations == 3);

    for (int i = 0; i < 5; ++i)
    {
        std::thread(churn).join();
    }
    stats = pool.stats();
    CHECK(stats.heap_allocations == 3); // each thread found the blocks in the shared list
    CHECK(stats.thread_caches == 1);    // and took over the one cache
    CHECK(stats.cached_blocks == 3);
    CHECK(ledger.live_blocks() == 3 + 1 + 1);
    CHECK(ledger.misuse() == 0);
}

TEST_CASE("recycling_pool_alloc: the last copy returns the blocks in a live thread's cache, and that thread then "
          "leaves the dead pool alone")
{
    alloc_ledger ledger;
    auto pool = std::make_unique<ledger_pool>(make_pool(ledger));
    std::promise<void> cached;
    std::promise<void> pool_gone;
    std::atomic<std::uint64_t> misuse_after{UINT64_MAX};
    std::thread holder(
        [&]
        {
            void* blocks[5];
            for (void*& p : blocks)
            {
                p = pool->allocate(100);
            }
            for (void* p : blocks)
            {
                pool->deallocate(p, 100);
            }
            cached.set_value();
            pool_gone.get_future().wait();
            // A new pool, on a thread whose table still names the dead one: the dead entry is never followed.
            alloc_ledger other_ledger;
            {
                ledger_pool other = make_pool(other_ledger);
                void* p = other.allocate(100);
                other.deallocate(p, 100);
            }
            misuse_after = other_ledger.misuse() + static_cast<std::uint64_t>(other_ledger.live_blocks());
        });
    cached.get_future().wait();
    CHECK(pool->stats().thread_cache_blocks == 5);
    pool.reset();
    CHECK(ledger.live_blocks() == 0); // the thread's cached blocks and its cache went with the pool
    pool_gone.set_value();
    holder.join(); // its exit hands back nothing to the dead pool
    CHECK(misuse_after.load() == 0);
    CHECK(ledger.live_blocks() == 0);
    CHECK(ledger.misuse() == 0);
}

TEST_CASE("recycling_pool_alloc: a thread using more pools than its table holds hands caches back and goes on "
          "recycling")
{
    constexpr int pools = 12; // the table holds 8
    alloc_ledger ledger;
    {
        std::vector<ledger_pool> all;
        for (int i = 0; i < pools; ++i)
        {
            all.push_back(make_pool(ledger));
        }
        for (int round = 0; round < 3; ++round)
        {
            for (ledger_pool& pool : all)
            {
                void* p = pool.allocate(100);
                REQUIRE(p != nullptr);
                std::memset(p, 0x3C, 100);
                pool.deallocate(p, 100);
            }
        }
        for (ledger_pool& pool : all)
        {
            const async_socket::recycling_pool_stats stats = pool.stats();
            CHECK(stats.heap_allocations == 1); // a cache handed back left its block in the shared list
            CHECK(stats.cached_blocks == 1);
            CHECK(stats.thread_caches == 1); // this thread took the same cache again
        }
    }
    CHECK(ledger.live_blocks() == 0);
    CHECK(ledger.misuse() == 0);
}

// ---- recycling_pool_alloc under a socket ------------------------------------------------------------------

TEST_CASE("io_context_size(n) is the block an IO over n buffers takes: reserved ahead, even the first IO of each "
          "size takes nothing from the heap")
{
    using pool_socket = async_socket::basic_async_socket<fake_threadpool, ledger_pool, async_socket::std_sync>;
    static_assert(pool_socket::io_context_size(1) == fake_layout::size(1));
    CHECK(pool_socket::io_context_size(16) == fake_layout::size(16));
    CHECK(pool_socket::io_context_size(UINT32_MAX) > UINT32_MAX); // no overflow in the arithmetic
    REQUIRE(ledger_pool::class_index(fake_layout::size(1)) != ledger_pool::class_index(fake_layout::size(16)));
    fake_os os;
    alloc_ledger ledger;
    ledger_pool pool = make_pool(ledger, 64, 0);
    {
        auto socket = opened_socket<pool_socket>(&os, 7, pool);
        REQUIRE(pool.reserve(pool_socket::io_context_size(1), 1) == 1);
        REQUIRE(pool.reserve(pool_socket::io_context_size(16), 1) == 1);
        const std::uint64_t before = pool.stats().heap_allocations;
        std::array<char, 256> memory{};
        std::array<ASYNC_SOCKET_BUFFER, 16> buffers{};
        buffers.fill(ASYNC_SOCKET_BUFFER{memory.data(), 16});
        send_recorder sent;
        receive_recorder received;
        REQUIRE(socket->send_async(buffers.data(), 1, &send_recorder::callback, &sent) == status::ok);
        REQUIRE(socket->receive_async(buffers.data(), 16, &receive_recorder::callback, &received) == status::ok);
        CHECK(pool.stats().heap_allocations == before);
        CHECK(pool.stats().cached_blocks == 0); // both reserved blocks are in use
        REQUIRE(os.complete_oldest(win32_no_error, 16));
        REQUIRE(os.complete_oldest(win32_no_error, 16));
        CHECK(sent.seen().size() == 1);
        CHECK(received.seen().size() == 1);
    }
    CHECK(ledger.misuse() == 0);
}

TEST_CASE("a socket over recycling_pool_alloc makes no heap allocation per IO once warm, and reuses the context a "
          "completion freed")
{
    using pool_socket = async_socket::basic_async_socket<fake_threadpool, ledger_pool, async_socket::std_sync>;
    fake_os os;
    alloc_ledger ledger;
    ledger_pool pool = make_pool(ledger);
    constexpr int rounds = 1000;
    int sends_ok = 0;
    int receives_ok = 0;
    {
        auto socket = opened_socket<pool_socket>(&os, 7, pool);

        std::array<char, 4096> memory{};
        std::array<ASYNC_SOCKET_BUFFER, 16> buffers{};
        for (std::size_t i = 0; i < buffers.size(); ++i)
        {
            buffers[i] = ASYNC_SOCKET_BUFFER{memory.data() + i * 256, 256};
        }
        send_recorder sent;
        receive_recorder received;
        // One round: a 1-buffer send, a 4-buffer send and a 16-buffer receive outstanding together (three
        // classes), completed in an order that changes from round to round.
        const auto round = [&](int n)
        {
            REQUIRE(socket->send_async(buffers.data(), 1, &send_recorder::callback, &sent) == status::ok);
            REQUIRE(socket->send_async(buffers.data(), 4, &send_recorder::callback, &sent) == status::ok);
            REQUIRE(socket->receive_async(buffers.data(), 16, &receive_recorder::callback, &received) == status::ok);
            std::vector<pending_io> pending = os.pending();
            REQUIRE(pending.size() == 3);
            std::rotate(pending.begin(), pending.begin() + n % 3, pending.end());
            for (const pending_io& io : pending)
            {
                REQUIRE(os.complete(io.overlapped, win32_no_error,
                                    io.kind == fake_call::wsa_send ? static_cast<std::size_t>(io.total_length) : 100));
            }
        };
        round(0); // warm-up: each class gets its block
        const async_socket::recycling_pool_stats warm = pool.stats();
        const std::uint64_t upstream_allocations = ledger.allocations();
        CHECK(warm.heap_allocations == 1 + 3); // the socket and one context per class

        for (int n = 1; n <= rounds; ++n)
        {
            round(n);
        }
        CHECK(pool.stats().heap_allocations == warm.heap_allocations);
        CHECK(pool.stats().heap_deallocations == warm.heap_deallocations);
        CHECK(ledger.allocations() == upstream_allocations);

        // A completed IO's context is the next IO's context.
        os.clear_calls();
        REQUIRE(socket->send_async(buffers.data(), 1, &send_recorder::callback, &sent) == status::ok);
        void* const first = os.pending().back().overlapped;
        REQUIRE(os.complete(first, win32_no_error, 256));
        REQUIRE(socket->send_async(buffers.data(), 1, &send_recorder::callback, &sent) == status::ok);
        CHECK(os.pending().back().overlapped == first);
        REQUIRE(os.complete_oldest(win32_no_error, 256));

        for (const ASYNC_SOCKET_SEND_RESULT result : sent.seen())
        {
            sends_ok += result == ASYNC_SOCKET_SEND_OK ? 1 : 0;
        }
        for (const receive_recorder::completion& c : received.seen())
        {
            receives_ok += c.result == ASYNC_SOCKET_RECEIVE_OK && c.bytes == 100 ? 1 : 0;
        }
        CHECK(os.violations().empty());
    }
    CHECK(sends_ok == 2 * (rounds + 1) + 2);
    CHECK(receives_ok == rounds + 1);
    CHECK(pool.stats().cached_blocks == 4); // three contexts and the socket, back in the pool
    const auto caches = static_cast<std::int64_t>(pool.stats().thread_caches);
    CHECK(caches >= 1); // the fake's worker threads and this one
    CHECK(ledger.live_blocks() == 4 + 1 + caches);
    CHECK(ledger.misuse() == 0);
}

TEST_CASE("a socket over recycling_pool_alloc and the inline threadpool makes no heap allocation per IO once warm")
{
    using inline_socket =
        async_socket::basic_async_socket<async_socket::testing::inline_threadpool, ledger_pool, async_socket::std_sync>;
    async_socket::testing::inline_engine engine;
    alloc_ledger ledger;
    constexpr int cycles = 2000;
    {
        ledger_pool pool = make_pool(ledger);
        auto socket = opened_socket<inline_socket>(&engine, 3, pool);
        char memory[64 * 8] = {};
        ASYNC_SOCKET_BUFFER buffers[64];
        for (std::size_t i = 0; i < 64; ++i)
        {
            buffers[i] = ASYNC_SOCKET_BUFFER{memory + i * 8, 8};
        }
        send_recorder sent;
        receive_recorder received;
        const std::uint32_t counts[] = {1, 4, 16, 64};
        for (const std::uint32_t count : counts) // warm-up
        {
            REQUIRE(socket->send_async(buffers, count, &send_recorder::callback, &sent) == status::ok);
            REQUIRE(socket->receive_async(buffers, count, &receive_recorder::callback, &received) == status::ok);
        }
        const std::uint64_t warm = pool.stats().heap_allocations;
        const std::uint64_t upstream = ledger.allocations();
        for (int i = 0; i < cycles; ++i)
        {
            const std::uint32_t count = counts[i % 4];
            REQUIRE(socket->send_async(buffers, count, &send_recorder::callback, &sent) == status::ok);
            REQUIRE(socket->receive_async(buffers, count, &receive_recorder::callback, &received) == status::ok);
        }
        CHECK(pool.stats().heap_allocations == warm);
        CHECK(ledger.allocations() == upstream);
        CHECK(sent.seen().size() == cycles + 4);
        CHECK(received.seen().size() == cycles + 4);
        const std::vector<ASYNC_SOCKET_SEND_RESULT> results = sent.seen();
        CHECK(std::all_of(results.begin(), results.end(),
                          [](ASYNC_SOCKET_SEND_RESULT r) { return r == ASYNC_SOCKET_SEND_OK; }));
    }
    CHECK(ledger.live_blocks() == 0);
    CHECK(ledger.misuse() == 0);
}

// ---- std_allocator_alloc ----------------------------------------------------------------------------------

TEST_CASE("std_allocator_alloc rounds a request up to whole max_align_t units and aligns every block")
{
    counting_resource resource;
    pmr_alloc alloc{&resource}; // from anything the allocator is constructible from
    const std::size_t unit = alignof(std::max_align_t);
    void* one = alloc.allocate(1);
    CHECK(resource.last_bytes.load() == unit);
    void* more = alloc.allocate(unit + 1);
    CHECK(resource.last_bytes.load() == 2 * unit);
    void* none = alloc.allocate(0);
    CHECK(resource.last_bytes.load() == unit);
    CHECK(resource.smallest_alignment.load() == alignof(std::max_align_t));
    for (void* p : {one, more, none})
    {
        REQUIRE(p != nullptr);
        CHECK(is_max_aligned(p));
    }
    CHECK(one != more);
    CHECK(none != one);
    alloc.deallocate(one, 1);
    alloc.deallocate(more, unit + 1);
    alloc.deallocate(none, 0);
    CHECK(resource.live_bytes.load() == 0);

    std_alloc plain;
    void* p = plain.allocate(100);
    REQUIRE(p != nullptr);
    CHECK(is_max_aligned(p));
    std::memset(p, 1, 100);
    plain.deallocate(p, 100);
}

TEST_CASE("std_allocator_alloc over std::pmr: the memory resource sees the socket and one block per IO, and gets "
          "every byte back")
{
    fake_os os;
    counting_resource resource;
    {
        auto socket = created_socket<pmr_socket>(&os, 9, alloc_from(resource));
        CHECK(resource.allocations.load() == 1); // the socket object
        REQUIRE(socket->open_async(&noop_open, nullptr) == status::ok);
        CHECK(resource.allocations.load() == 1);

        char memory[8][32] = {};
        ASYNC_SOCKET_BUFFER buffers[8];
        for (std::size_t i = 0; i < 8; ++i)
        {
            buffers[i] = ASYNC_SOCKET_BUFFER{memory[i], 32};
        }
        send_recorder sent;
        receive_recorder received;
        const std::size_t unit = alignof(std::max_align_t);
        for (std::uint32_t count = 1; count <= 8; ++count)
        {
            const std::uint64_t before = resource.allocations.load();
            REQUIRE(socket->send_async(buffers, count, &send_recorder::callback, &sent) == status::ok);
            CHECK(resource.allocations.load() == before + 1);
            const auto context_size = static_cast<std::size_t>(fake_layout::size(count));
            CHECK(resource.last_bytes.load() == (context_size + unit - 1) / unit * unit);
            REQUIRE(socket->receive_async(buffers, count, &receive_recorder::callback, &received) == status::ok);
            CHECK(resource.allocations.load() == before + 2);
            CHECK(resource.deallocations.load() == before - 1); // the IOs of earlier rounds only
            REQUIRE(os.complete_oldest(win32_no_error, count * 32));
            REQUIRE(os.complete_oldest(win32_no_error, 5));
            CHECK(resource.deallocations.load() == before + 1);
        }
        CHECK(sent.seen().size() == 8);
        CHECK(received.seen().size() == 8);
        CHECK(resource.allocations.load() == 1 + 16);
        CHECK(resource.live_bytes.load() > 0); // the socket
    }
    CHECK(resource.deallocations.load() == resource.allocations.load());
    CHECK(resource.live_bytes.load() == 0);
    CHECK(resource.smallest_alignment.load() == alignof(std::max_align_t));
    CHECK(os.violations().empty());
}

TEST_CASE("std_allocator_alloc: an allocator that throws gives nullptr, and send_async and receive_async fail with "
          "out_of_memory")
{
    fake_os os;
    counting_resource resource;
    {
        auto socket = opened_socket<pmr_socket>(&os, 9, alloc_from(resource));
        os.clear_calls();

        resource.fail = true;
        char data[16] = {};
        ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
        send_recorder sent;
        receive_recorder received;
        CHECK(socket->send_async(&buffer, 1, &send_recorder::callback, &sent) == status::out_of_memory);
        CHECK(socket->receive_async(&buffer, 1, &receive_recorder::callback, &received) == status::out_of_memory);
        CHECK(os.calls().empty()); // not even StartThreadpoolIo
        CHECK(sent.seen().empty());
        CHECK(received.seen().empty());

        resource.fail = false; // and the socket works again
        REQUIRE(socket->send_async(&buffer, 1, &send_recorder::callback, &sent) == status::ok);
        REQUIRE(os.complete_oldest(win32_no_error, sizeof(data)));
        CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});

        resource.fail = true;
        CHECK(pmr_socket::create(&os, fake_socket(10), {}, alloc_from(resource)) == nullptr);
        resource.fail = false;
    }
    CHECK(resource.live_bytes.load() == 0);

    async_socket::std_allocator_alloc<throwing_allocator<int>> throwing;
    CHECK(throwing.allocate(64) == nullptr); // std::runtime_error, not only bad_alloc

    std_alloc plain;
    CHECK(plain.allocate(SIZE_MAX) == nullptr); // more than the allocator can ever give: it throws
}

/// @file
/// async_socket: an AllocPolicy that recycles IO contexts, so that a socket in steady state allocates
/// nothing per IO.
///
/// A context's size is set by its buffer count, so the same few sizes come back again and again. The pool
/// keeps freed blocks in size classes (powers of two from 64 B to 64 KiB) and hands them out again; a block
/// larger than 64 KiB goes straight to the upstream allocator and back. Blocks come from an upstream
/// AllocPolicy (heap_alloc, that is malloc, by default) only when their class is empty.
///
///   auto socket = basic_async_socket<win32_threadpool, recycling_pool_alloc, win32_sync>::create(engine, s);
///
/// Two layers hold the freed blocks of a class:
/// - a thread cache: per thread and per pool, a few blocks (thread_cache_blocks, 8 by default, and at most
///   8 KiB of them per class; classes above 8 KiB have none) that only that thread touches, with no atomic
///   operation: a thread that frees a context and then starts the next IO (a completion callback does just
///   that) reuses the block at the cost of a few loads and stores;
/// - the shared free list of the class (at most max_cached_per_class blocks, 64 by default), guarded by a
///   spin lock. A thread cache that runs empty takes half its size from there in one go, and one that runs
///   full gives half of it back in one go, so blocks flow from the threads that free them (completion
///   threads) to the threads that allocate them at one lock per several IO.
///
/// - Copies share one pool. The pool is made at the first allocate (or the first copy) of a
///   default-constructed allocator, so the `AllocPolicy alloc = {}` of create works and the socket's copy
///   shares the pool that allocated the socket. To share one pool among several sockets, make one
///   recycling_pool_alloc and pass it to each create.
/// - Returned on destroy: the pool is reference-counted, and when the last copy is destroyed every cached
///   block, in the shared lists and in every thread's cache of that pool, goes back to the upstream
///   allocator, and so do the thread caches and the pool itself. (The pool owns its threads' caches; a
///   thread finds its cache through a small thread-local table of pool ids that are never reused, so an
///   entry of a destroyed pool is never followed.)
/// - Bounded: per class at most max_cached_per_class blocks in the shared list plus the thread-cache
///   blocks of each thread that used the pool. A thread that exits gives its cache's blocks back to the
///   shared lists (the excess goes upstream) and leaves the cache to the next thread that comes, so
///   threads that come and go do not add caches. A thread using more than 8 pools at once hands back the
///   cache of one to take one of another (a slow path, taken under a process-wide mutex).
/// - reserve(size, n) fills the shared list of size's class with n blocks ahead of time, and
///   reserve_thread_caches(n) makes n thread caches for threads yet to come (see there for when that matters).
/// - trim() returns the shared lists and the calling thread's cache to upstream now; blocks in other live
///   threads' caches are theirs until they exit or the pool is destroyed.
/// - Thread-safe: allocate, deallocate, copies, stats(), reserve() and trim() may run on any threads at once (a
///   completion frees its context on a threadpool thread).
/// - noexcept throughout. allocate returns nullptr when upstream does; when even the pool cannot be made,
///   the allocator passes every block through to upstream (still correct, just not recycling).
///
/// Why two layers, by measurement (bench_native; docs/benchmarks.md, "The pool's layers"; medians of 6 runs on
/// a 2-core AMD EPYC): an allocate + deallocate of a 1-buffer context costs 2.3 ns from the thread cache,
/// 8.0 ns through the spin-locked shared lists alone (two atomic exchanges) and 8.6 ns with malloc; a whole
/// 1-buffer send cycle over the inline threadpool 11.1 ns, against 15.3 ns over malloc.
///
/// Longer than 500 lines on purpose: one class whose shared lists, thread-cache protocol and statistics are
/// read together; the per-thread plumbing it builds on is in alloc/detail/pool_internals.hpp.
#pragma once

#include <async_socket/detail/config.hpp>

#include <async_socket/alloc/detail/pool_internals.hpp>
#include <async_socket/alloc/heap_alloc.hpp>
#include <async_socket/concepts.hpp>

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <thread>
#include <utility>

namespace async_socket
{

/// Tuning of a recycling pool.
struct recycling_pool_options
{
    /// Blocks each size class keeps in its shared list; a block freed into a full list is returned upstream.
    std::uint32_t max_cached_per_class = 64;
    /// Blocks each thread keeps per size class for itself (at most 8, and at most 8 KiB of them per class);
    /// 0 turns the thread caches off, so that every block goes through the shared lists.
    std::uint32_t thread_cache_blocks = 8;
};

/// What a pool holds and has done, for tests and monitoring. Every field is a snapshot.
struct recycling_pool_stats
{
    std::size_t cached_blocks = 0;       ///< blocks held for reuse, in the shared lists and the thread caches
    std::size_t cached_bytes = 0;        ///< their total size (class sizes)
    std::size_t thread_cache_blocks = 0; ///< of cached_blocks, those in thread caches
    std::size_t thread_caches = 0; ///< thread caches the pool owns (one per thread that used it at most, and spares)
    std::uint64_t heap_allocations = 0;   ///< blocks taken from upstream so far (class misses and large blocks)
    std::uint64_t heap_deallocations = 0; ///< blocks given back to upstream so far (full classes, large, trim)
};

/// Upstream: the AllocPolicy blocks come from and go back to. Lock: guards one size class; default
/// constructible, with lock() and unlock() that do not throw (pool_spin_lock; std::mutex works too, see
/// above). recycling_pool_alloc is the usual choice.
template <class Upstream = heap_alloc, class Lock = detail::pool_spin_lock>
class basic_recycling_pool_alloc
{
    static_assert(alloc_policy<Upstream>, "the upstream of a recycling pool must be an AllocPolicy");

public:
    static constexpr std::size_t min_class_size = 64;        ///< the smallest size class: smaller requests take one
    static constexpr std::size_t max_class_size = 64 * 1024; ///< larger blocks bypass the pool
    static constexpr unsigned class_count = detail::pool_class_count; ///< 64, 128, ..., 65536
    static_assert(min_class_size << (class_count - 1) == max_class_size);

    /// A pool with default options, made at the first allocate or copy.
    basic_recycling_pool_alloc() noexcept = default;

    /// A pool with these options over this upstream, made at the first allocate or copy.
    explicit basic_recycling_pool_alloc(recycling_pool_options options, Upstream upstream = Upstream{}) noexcept
        : upstream_(upstream), options_(options)
    {
    }

    /// The copy shares the pool (making it first if need be).
    basic_recycling_pool_alloc(const basic_recycling_pool_alloc& other) noexcept
        : upstream_(other.upstream_), options_(other.options_), state_(other.share_state())
    {
    }

    /// Takes other's pool; other is left without one (it makes a new one if it is used again).
    basic_recycling_pool_alloc(basic_recycling_pool_alloc&& other) noexcept
        : upstream_(other.upstream_), options_(other.options_),
          state_(other.state_.exchange(nullptr, std::memory_order_acq_rel))
    {
    }

    /// Shares other's pool (making it first if need be) and lets go of its own.
    basic_recycling_pool_alloc& operator=(const basic_recycling_pool_alloc& other) noexcept
    {
        if (this != &other)
        {
            pool_state* shared = other.share_state();
            release(state_.exchange(shared, std::memory_order_acq_rel));
            upstream_ = other.upstream_;
            options_ = other.options_;
        }
        return *this;
    }

    /// Takes other's pool and lets go of its own; other is left without one.
    basic_recycling_pool_alloc& operator=(basic_recycling_pool_alloc&& other) noexcept
    {
        if (this != &other)
        {
            release(
                state_.exchange(other.state_.exchange(nullptr, std::memory_order_acq_rel), std::memory_order_acq_rel));
            upstream_ = other.upstream_;
            options_ = other.options_;
        }
        return *this;
    }

    /// Drops this copy's share; the last copy returns every cached block and the pool to upstream.
    ~basic_recycling_pool_alloc()
    {
        release(state_.load(std::memory_order_acquire));
    }

    /// A block of at least `size` bytes aligned for std::max_align_t, or nullptr when upstream fails.
    [[nodiscard]] void* allocate(std::size_t size) noexcept
    {
        const unsigned index = class_index(size);
        pool_state* state = state_.load(std::memory_order_acquire);
        if (state != nullptr && index < class_count && detail::pool_last_used.id == state->id)
        {
            // The fast path: a block from this thread's cache, no atomic operation.
            detail::pool_thread_cache::bin& cached = detail::pool_last_used.cache->bins[index];
            const std::uint32_t count = cached.count.load(std::memory_order_relaxed);
            if (count != 0)
            {
                void* block = cached.blocks[count - 1];
                cached.count.store(count - 1, std::memory_order_relaxed);
                handed_out(block, size, index);
                return block;
            }
        }
        return allocate_slow(size, index, state);
    }

    /// Takes back a block from allocate (of this pool or of any copy), with the size given to allocate.
    void deallocate(void* p, std::size_t size) noexcept
    {
        const unsigned index = class_index(size);
        pool_state* state = state_.load(std::memory_order_acquire);
        if (p != nullptr && state != nullptr && index < class_count && detail::pool_last_used.id == state->id)
        {
            // The fast path: into this thread's cache, no atomic operation.
            detail::pool_thread_cache::bin& cached = detail::pool_last_used.cache->bins[index];
            const std::uint32_t count = cached.count.load(std::memory_order_relaxed);
            if (count < state->cache_limit[index])
            {
                detail::pool_poison(p, class_size(index));
                cached.blocks[count] = p;
                cached.count.store(count + 1, std::memory_order_relaxed);
                return;
            }
        }
        deallocate_slow(p, size, index, state);
    }

    /// A snapshot of the pool shared by this copy (all zero before the pool is made).
    [[nodiscard]] recycling_pool_stats stats() const noexcept
    {
        recycling_pool_stats result;
        pool_state* state = state_.load(std::memory_order_acquire);
        if (state == nullptr)
        {
            return result;
        }
        for (unsigned index = 0; index < class_count; ++index)
        {
            size_class& bin = state->classes[index];
            bin.lock.lock();
            const std::uint32_t cached = bin.cached;
            bin.lock.unlock();
            result.cached_blocks += cached;
            result.cached_bytes += std::size_t{cached} * class_size(index);
        }
        state->caches_lock.lock();
        for (const detail::pool_thread_cache* cache = state->caches; cache != nullptr; cache = cache->next)
        {
            ++result.thread_caches;
            for (unsigned index = 0; index < class_count; ++index)
            {
                const std::uint32_t cached = cache->bins[index].count.load(std::memory_order_relaxed);
                result.thread_cache_blocks += cached;
                result.cached_blocks += cached;
                result.cached_bytes += std::size_t{cached} * class_size(index);
            }
        }
        state->caches_lock.unlock();
        result.heap_allocations = state->heap_allocations.load(std::memory_order_relaxed);
        result.heap_deallocations = state->heap_deallocations.load(std::memory_order_relaxed);
        return result;
    }

    /// Returns the shared lists' blocks and the calling thread's cached blocks to upstream now. Blocks in use,
    /// and blocks in the caches of other threads, are not affected.
    void trim() noexcept
    {
        pool_state* state = state_.load(std::memory_order_acquire);
        if (state == nullptr)
        {
            return;
        }
        if (detail::pool_thread_table != nullptr)
        {
            if (detail::pool_thread_cache* cache = detail::pool_thread_table->find(state->id))
            {
                state->free_cache_blocks(*cache);
            }
        }
        state->free_shared_blocks();
    }

    /// Takes blocks for requests of `size` bytes from upstream now, into the shared list of their class, until
    /// that list holds `count` (at most max_cached_per_class). Why: a thread that frees blocks of a class it
    /// never allocated (a completion thread, the first time an IO of that kind completes there) keeps up to its
    /// cache's size of them, and meanwhile the threads that allocate find the shared list empty and go upstream;
    /// reserved blocks are what they take instead, so that even that first time costs no heap allocation. (A
    /// socket's context size for n buffers: basic_async_socket::io_context_size(n).) Returns the blocks the
    /// shared list holds afterwards: fewer than asked when upstream refuses; 0 for a size above max_class_size
    /// (such blocks are never cached) or when no pool can be made.
    std::uint32_t reserve(std::size_t size, std::uint32_t count) noexcept
    {
        const unsigned index = class_index(size);
        pool_state* state = state_.load(std::memory_order_acquire);
        if (state == nullptr)
        {
            state = make_state();
        }
        if (state == nullptr || index >= class_count)
        {
            return 0;
        }
        size_class& bin = state->classes[index];
        const std::uint32_t wanted = count < state->max_cached_per_class ? count : state->max_cached_per_class;
        bin.lock.lock();
        const std::uint32_t held = bin.cached;
        bin.lock.unlock();
        for (std::uint32_t added = held; added < wanted; ++added)
        {
            void* block = allocate_upstream(class_size(index), state);
            if (block == nullptr)
            {
                break;
            }
            detail::pool_poison(block, class_size(index));
            state->give_shared(index, &block, 1);
        }
        bin.lock.lock();
        const std::uint32_t now = bin.cached;
        bin.lock.unlock();
        return now;
    }

    /// Makes thread caches ahead until `count` wait unowned, for the next threads that use the pool (a thread
    /// adopts one at its first allocate or deallocate here, and otherwise takes a new one from upstream then: on a
    /// completion thread, that may be in the middle of a hot loop). Returns the caches waiting afterwards: fewer
    /// when upstream refuses or no pool can be made.
    std::uint32_t reserve_thread_caches(std::uint32_t count) noexcept
    {
        pool_state* state = state_.load(std::memory_order_acquire);
        if (state == nullptr)
        {
            state = make_state();
        }
        return state == nullptr ? 0 : state->make_spare_caches(count);
    }

    /// True when this copy and `other` share one pool.
    [[nodiscard]] bool shares_pool_with(const basic_recycling_pool_alloc& other) const noexcept
    {
        pool_state* state = state_.load(std::memory_order_acquire);
        return state != nullptr && state == other.state_.load(std::memory_order_acquire);
    }

    /// The size class of a request: 0 for up to 64 bytes, 1 for up to 128, ...; class_count or more for a
    /// block larger than max_class_size.
    static constexpr unsigned class_index(std::size_t size) noexcept
    {
        return static_cast<unsigned>(std::bit_width((size - 1) | (min_class_size - 1))) - 6u;
    }

    /// The block size of size class index: 64 << index.
    static constexpr std::size_t class_size(unsigned index) noexcept
    {
        return min_class_size << index;
    }

private:
    static_assert(std::bit_width(min_class_size - 1) == 6, "class_index assumes 64-byte smallest class");

    struct free_block
    {
        free_block* next;
    };

    /// Under ASan: the block's first `size` bytes are usable, the rest of its class is not.
    static void handed_out(void* block, std::size_t size, unsigned index) noexcept
    {
        detail::pool_unpoison(block, size);
        detail::pool_poison(static_cast<std::byte*>(block) + size, class_size(index) - size);
    }

    /// One class on its own cache line, so that threads busy with different classes do not contend. A block
    /// in the list has its first bytes (the link) unpoisoned under ASan; a block in a thread cache has none.
    struct alignas(64) size_class
    {
        Lock lock;
        free_block* head = nullptr;
        std::uint32_t cached = 0;
    };

    /// Thread-cache blocks per class: the option, at most pool_thread_cache_max, at most 8 KiB of blocks.
    static constexpr std::uint32_t thread_cache_limit(std::uint32_t wanted, unsigned index) noexcept
    {
        const std::size_t by_bytes = std::size_t{8192} / class_size(index);
        std::uint32_t limit = wanted < detail::pool_thread_cache_max ? wanted : detail::pool_thread_cache_max;
        return by_bytes < limit ? static_cast<std::uint32_t>(by_bytes) : limit;
    }

    struct pool_state : detail::pool_registration
    {
        pool_state(const Upstream& upstream_alloc, void* raw_memory, recycling_pool_options options) noexcept
            : upstream(upstream_alloc), raw(raw_memory), max_cached_per_class(options.max_cached_per_class)
        {
            give_back_cache = &give_back;
            for (unsigned index = 0; index < class_count; ++index)
            {
                cache_limit[index] = thread_cache_limit(options.thread_cache_blocks, index);
            }
        }

        /// A block from the shared list of the class, or nullptr when it is empty.
        void* take_shared(unsigned index) noexcept
        {
            size_class& bin = classes[index];
            bin.lock.lock();
            free_block* block = bin.head;
            if (block != nullptr)
            {
                bin.head = block->next;
                --bin.cached;
            }
            bin.lock.unlock();
            return block;
        }

        /// Puts (wholly poisoned) blocks in the shared list of their class under one lock; what does not fit
        /// goes upstream.
        void give_shared(unsigned index, void* const* blocks, std::uint32_t count) noexcept
        {
            size_class& bin = classes[index];
            for (std::uint32_t i = 0; i < count; ++i)
            {
                detail::pool_unpoison(blocks[i], sizeof(free_block));
            }
            std::uint32_t kept = 0;
            bin.lock.lock();
            for (; kept < count && bin.cached < max_cached_per_class; ++kept)
            {
                bin.head = ::new (blocks[kept]) free_block{bin.head};
                ++bin.cached;
            }
            bin.lock.unlock();
            if (kept == count)
            {
                return; // the usual case: no atomic operation for the statistics
            }
            for (std::uint32_t i = kept; i < count; ++i)
            {
                detail::pool_unpoison(blocks[i], class_size(index));
                upstream.deallocate(blocks[i], class_size(index));
            }
            heap_deallocations.fetch_add(count - kept, std::memory_order_relaxed);
        }

        /// An empty thread-cache bin takes up to half its size from the shared list, under one lock.
        std::uint32_t refill(detail::pool_thread_cache::bin& cached, unsigned index) noexcept
        {
            const std::uint32_t wanted = cache_limit[index] > 1 ? cache_limit[index] / 2 : 1;
            size_class& bin = classes[index];
            std::uint32_t taken = 0;
            bin.lock.lock();
            while (taken < wanted && bin.head != nullptr)
            {
                free_block* block = bin.head;
                bin.head = block->next;
                --bin.cached;
                detail::pool_poison(block, sizeof(free_block));
                cached.blocks[taken++] = block;
            }
            bin.lock.unlock();
            cached.count.store(taken, std::memory_order_relaxed);
            return taken;
        }

        /// A full thread-cache bin of `count` blocks gives its older half to the shared list; returns what
        /// it keeps.
        std::uint32_t spill(detail::pool_thread_cache::bin& cached, unsigned index, std::uint32_t count) noexcept
        {
            const std::uint32_t kept = count / 2;
            const std::uint32_t given = count - kept;
            give_shared(index, cached.blocks, given);
            for (std::uint32_t i = 0; i < kept; ++i)
            {
                cached.blocks[i] = cached.blocks[given + i];
            }
            cached.count.store(kept, std::memory_order_relaxed);
            return kept;
        }

        /// The cache of a thread that lets go of it (it exits, or needs its table entry for another pool):
        /// its blocks go to the shared lists and the cache waits for the next thread.
        static void give_back(detail::pool_registration* registration, detail::pool_thread_cache* cache) noexcept
        {
            auto* state = static_cast<pool_state*>(registration);
            for (unsigned index = 0; index < class_count; ++index)
            {
                detail::pool_thread_cache::bin& cached = cache->bins[index];
                state->give_shared(index, cached.blocks, cached.count.load(std::memory_order_relaxed));
                cached.count.store(0, std::memory_order_relaxed);
            }
            state->caches_lock.lock();
            cache->owned = false;
            state->caches_lock.unlock();
        }

        /// This thread's cache: a cache let go by an exited thread, or a new one; nullptr without memory.
        detail::pool_thread_cache* adopt_cache() noexcept
        {
            caches_lock.lock();
            detail::pool_thread_cache* cache = caches;
            while (cache != nullptr && cache->owned)
            {
                cache = cache->next;
            }
            if (cache != nullptr)
            {
                cache->owned = true;
            }
            caches_lock.unlock();
            if (cache != nullptr)
            {
                return cache;
            }
            void* memory = upstream.allocate(sizeof(detail::pool_thread_cache));
            if (memory == nullptr)
            {
                return nullptr;
            }
            cache = ::new (memory) detail::pool_thread_cache{};
            cache->owned = true;
            caches_lock.lock();
            cache->next = caches;
            caches = cache;
            caches_lock.unlock();
            return cache;
        }

        /// Unowned caches until `count` wait (the list is only ever added to while the pool lives).
        std::uint32_t make_spare_caches(std::uint32_t count) noexcept
        {
            caches_lock.lock();
            std::uint32_t spare = 0;
            for (const detail::pool_thread_cache* cache = caches; cache != nullptr; cache = cache->next)
            {
                spare += cache->owned ? 0 : 1;
            }
            caches_lock.unlock();
            for (; spare < count; ++spare)
            {
                void* memory = upstream.allocate(sizeof(detail::pool_thread_cache));
                if (memory == nullptr)
                {
                    break;
                }
                auto* cache = ::new (memory) detail::pool_thread_cache{};
                cache->owned = false;
                caches_lock.lock();
                cache->next = caches;
                caches = cache;
                caches_lock.unlock();
            }
            return spare;
        }

        void free_cache_blocks(detail::pool_thread_cache& cache) noexcept
        {
            for (unsigned index = 0; index < class_count; ++index)
            {
                detail::pool_thread_cache::bin& cached = cache.bins[index];
                const std::uint32_t count = cached.count.load(std::memory_order_relaxed);
                for (std::uint32_t i = 0; i < count; ++i)
                {
                    detail::pool_unpoison(cached.blocks[i], class_size(index));
                    upstream.deallocate(cached.blocks[i], class_size(index));
                }
                cached.count.store(0, std::memory_order_relaxed);
                heap_deallocations.fetch_add(count, std::memory_order_relaxed);
            }
        }

        void free_shared_blocks() noexcept
        {
            for (unsigned index = 0; index < class_count; ++index)
            {
                size_class& bin = classes[index];
                bin.lock.lock();
                free_block* block = bin.head;
                const std::uint32_t count = bin.cached;
                bin.head = nullptr;
                bin.cached = 0;
                bin.lock.unlock();
                while (block != nullptr)
                {
                    free_block* next = block->next;
                    detail::pool_unpoison(block, class_size(index));
                    upstream.deallocate(block, class_size(index));
                    block = next;
                }
                heap_deallocations.fetch_add(count, std::memory_order_relaxed);
            }
        }

        /// At destroy, when no thread uses the pool any more (the last copy is going) and no thread can hand
        /// a cache back (the pool has left the registry): every cache, with its blocks.
        void free_thread_caches() noexcept
        {
            detail::pool_thread_cache* cache = caches;
            caches = nullptr;
            while (cache != nullptr)
            {
                detail::pool_thread_cache* next = cache->next;
                free_cache_blocks(*cache);
                cache->~pool_thread_cache();
                upstream.deallocate(cache, sizeof(detail::pool_thread_cache));
                cache = next;
            }
        }

        size_class classes[class_count];
        Lock caches_lock;                            ///< guards the list below and each cache's `owned`
        detail::pool_thread_cache* caches = nullptr; ///< every cache of this pool, owned or waiting
        std::uint32_t cache_limit[class_count];
        std::atomic<std::uint32_t> references{1};
        std::atomic<std::uint64_t> heap_allocations{0};
        std::atomic<std::uint64_t> heap_deallocations{0};
        ASYNC_SOCKET_NO_UNIQUE_ADDRESS Upstream upstream;
        void* raw; ///< what upstream returned for this state (it is aligned up from there)
        std::uint32_t max_cached_per_class;
    };

    [[gnu::noinline]] void* allocate_slow(std::size_t size, unsigned index, pool_state* state) noexcept
    {
        if (state == nullptr)
        {
            state = make_state();
        }
        if (index >= class_count)
        {
            return allocate_upstream(size, state);
        }
        if (state == nullptr)
        {
            return upstream_.allocate(class_size(index)); // no pool: pass through, at the class size
        }
        void* block = nullptr;
        if (detail::pool_thread_cache* cache = thread_cache(state, index))
        {
            block = take_from_cache(state, cache->bins[index], index);
        }
        else
        {
            block = state->take_shared(index);
        }
        if (block == nullptr)
        {
            block = allocate_upstream(class_size(index), state);
        }
        if (block != nullptr)
        {
            handed_out(block, size, index);
        }
        return block;
    }

    [[gnu::noinline]] void deallocate_slow(void* p, std::size_t size, unsigned index, pool_state* state) noexcept
    {
        if (p == nullptr)
        {
            return;
        }
        if (index >= class_count)
        {
            deallocate_upstream(p, size, state);
            return;
        }
        if (state == nullptr)
        {
            detail::pool_unpoison(p, class_size(index));
            upstream_.deallocate(p, class_size(index)); // every block is class-sized, whoever made it
            return;
        }
        detail::pool_poison(p, class_size(index));
        if (detail::pool_thread_cache* cache = thread_cache(state, index))
        {
            give_to_cache(state, cache->bins[index], index, p);
            return;
        }
        state->give_shared(index, &p, 1);
    }

    /// This thread's cache of the pool, when the class has thread caches: the one used last, one found in the
    /// thread's table, or one adopted or made now (nullptr when that fails or the thread is exiting: the
    /// shared list serves).
    static detail::pool_thread_cache* thread_cache(pool_state* state, unsigned index) noexcept
    {
        if (state->cache_limit[index] == 0 || detail::pool_last_used.closed)
        {
            return nullptr;
        }
        if (detail::pool_last_used.id == state->id)
        {
            return detail::pool_last_used.cache;
        }
        detail::pool_thread_cache_table* table = detail::this_thread_table();
        if (table == nullptr)
        {
            return nullptr;
        }
        detail::pool_thread_cache* cache = table->find(state->id);
        if (cache == nullptr)
        {
            detail::pool_thread_cache_table::entry& entry = table->free_entry();
            cache = state->adopt_cache();
            if (cache == nullptr)
            {
                return nullptr;
            }
            entry = detail::pool_thread_cache_table::entry{state->id, state, cache};
        }
        detail::pool_last_used.id = state->id;
        detail::pool_last_used.cache = cache;
        return cache;
    }

    static void* take_from_cache(pool_state* state, detail::pool_thread_cache::bin& cached, unsigned index) noexcept
    {
        std::uint32_t count = cached.count.load(std::memory_order_relaxed);
        if (count == 0)
        {
            count = state->refill(cached, index);
            if (count == 0)
            {
                return nullptr;
            }
        }
        void* block = cached.blocks[count - 1];
        cached.count.store(count - 1, std::memory_order_relaxed);
        return block;
    }

    static void give_to_cache(pool_state* state, detail::pool_thread_cache::bin& cached, unsigned index,
                              void* block) noexcept
    {
        std::uint32_t count = cached.count.load(std::memory_order_relaxed);
        if (count >= state->cache_limit[index])
        {
            count = state->spill(cached, index, count);
        }
        cached.blocks[count] = block;
        cached.count.store(count + 1, std::memory_order_relaxed);
    }

    /// The state is over-aligned (its classes sit on cache lines); upstream guarantees max_align_t only.
    static constexpr std::size_t state_bytes = sizeof(pool_state) + alignof(pool_state) - alignof(std::max_align_t);

    void* allocate_upstream(std::size_t size, pool_state* state) noexcept
    {
        void* p = upstream_.allocate(size);
        if (p != nullptr && state != nullptr)
        {
            state->heap_allocations.fetch_add(1, std::memory_order_relaxed);
        }
        return p;
    }

    void deallocate_upstream(void* p, std::size_t size, pool_state* state) noexcept
    {
        upstream_.deallocate(p, size);
        if (state != nullptr)
        {
            state->heap_deallocations.fetch_add(1, std::memory_order_relaxed);
        }
    }

    /// Makes the pool of a default-constructed allocator; of two threads racing here, one pool wins.
    pool_state* make_state() const noexcept
    {
        Upstream upstream = upstream_;
        void* raw = upstream.allocate(state_bytes);
        if (raw == nullptr)
        {
            return nullptr;
        }
        const auto address = reinterpret_cast<std::uintptr_t>(raw);
        const std::uintptr_t aligned = (address + alignof(pool_state) - 1) & ~std::uintptr_t{alignof(pool_state) - 1};
        auto* made = ::new (reinterpret_cast<void*>(aligned)) pool_state(upstream, raw, options_);
        detail::pool_registry::instance().add(made); // its id, before any thread can see it
        pool_state* expected = nullptr;
        if (state_.compare_exchange_strong(expected, made, std::memory_order_acq_rel, std::memory_order_acquire))
        {
            return made;
        }
        destroy_state(made);
        return expected;
    }

    /// The pool for a new copy, with a reference taken for it; nullptr only when no pool can be made.
    pool_state* share_state() const noexcept
    {
        pool_state* state = state_.load(std::memory_order_acquire);
        if (state == nullptr)
        {
            state = make_state();
            if (state == nullptr)
            {
                return nullptr;
            }
        }
        state->references.fetch_add(1, std::memory_order_relaxed);
        return state;
    }

    static void release(pool_state* state) noexcept
    {
        if (state != nullptr && state->references.fetch_sub(1, std::memory_order_acq_rel) == 1)
        {
            destroy_state(state);
        }
    }

    /// Returns everything the pool holds to upstream, the pool last. The pool leaves the registry first, so
    /// no exiting thread hands it a cache from then on; no thread uses it (its last copy is going).
    static void destroy_state(pool_state* state) noexcept
    {
        detail::pool_registry::instance().remove(state);
        state->free_thread_caches();
        state->free_shared_blocks();
        Upstream upstream = state->upstream;
        void* raw = state->raw;
        state->~pool_state();
        upstream.deallocate(raw, state_bytes);
    }

    ASYNC_SOCKET_NO_UNIQUE_ADDRESS Upstream upstream_{};
    recycling_pool_options options_{};
    mutable std::atomic<pool_state*> state_{nullptr};
};

/// Recycling IO contexts over malloc, with a spin lock per size class.
using recycling_pool_alloc = basic_recycling_pool_alloc<>;

static_assert(alloc_policy<recycling_pool_alloc>);

} // namespace async_socket

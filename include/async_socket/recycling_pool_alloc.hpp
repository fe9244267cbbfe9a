// async_socket: an AllocPolicy that recycles IO contexts, so that a socket in steady state allocates
// nothing per IO.
//
// A context's size is set by its buffer count, so the same few sizes come back again and again. The pool
// keeps freed blocks in size classes (powers of two from 64 B to 64 KiB, one free list each) and hands
// them out again; a block larger than 64 KiB goes straight to the upstream allocator and back. Blocks come
// from an upstream AllocPolicy (heap_alloc, that is malloc, by default) only when their class is empty.
//
//   auto socket = basic_async_socket<win32_threadpool, recycling_pool_alloc, win32_sync>::create(engine, s);
//
// - Copies share one pool. The pool is made at the first allocate (or the first copy) of a
//   default-constructed allocator, so the `AllocPolicy alloc = {}` of create works and the socket's copy
//   shares the pool that allocated the socket. To share one pool among several sockets, make one
//   recycling_pool_alloc and pass it to each create.
// - The pool is reference-counted: when the last copy is destroyed, every cached block and the pool itself
//   go back to the upstream allocator.
// - Bounded: each class caches at most max_cached_per_class blocks (64 by default); a block freed into a
//   full class goes back upstream at once. trim() returns every cached block now.
// - Thread-safe: allocate, deallocate, copies, stats() and trim() may run on any threads at once (a
//   completion frees its context on a threadpool thread).
// - noexcept throughout. allocate returns nullptr when upstream does; when even the pool cannot be made,
//   the allocator passes every block through to upstream (still correct, just not recycling).
//
// Each class is guarded by a spin lock (detail::pool_spin_lock), chosen by measurement (bench_native;
// docs/benchmarks.md, "Choosing the pool's lock"; medians on a 2-core AMD EPYC, g++ 12 -O3, glibc 2.36):
//
//   guard of a class        allocate+deallocate (112 B)   1-buffer send cycle (inline threadpool)
//   spin lock               4.4 ns                        15.5 ns
//   std::mutex              12.3 ns                       21.3 ns
//   per-thread cache sketch 0.8 ns                        13.0 ns
//   (malloc/free, no pool   9.0 ns                        19.2 ns)
//
// - std::mutex: two atomic read-modify-writes and two out-of-line calls per operation; slower than malloc.
// - A per-thread cache has no atomics on a hit and saves a further 2.5 ns per IO, but it is not taken. A
//   completion that frees a context often runs on another thread than the send that made it, so a correct
//   one needs batches of blocks moving between threads; and a thread's cache cannot be emptied by another
//   thread when the last copy of the pool dies, so cached memory would outlive the pool, against the
//   guarantee above. glibc's malloc already is such a per-thread cache (tcache).
// - The spin lock is held for a few instructions (push or pop one block), so a waiter spins briefly; one
//   that sees it held for long (its holder was preempted) yields its time slice.
#pragma once

#include <async_socket/heap_alloc.hpp>
#include <async_socket/policies.hpp>

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <new>
#include <thread>
#include <utility>

#if defined(_MSC_VER) && !defined(__clang__) && (defined(_M_X64) || defined(_M_IX86))
#include <intrin.h>
#endif

// Under AddressSanitizer a cached block is poisoned (all but its free-list link), and so are the bytes of a
// block past the size asked for: a use after free or an overflow within the class is reported as for malloc.
#if defined(__SANITIZE_ADDRESS__)
#define ASYNC_SOCKET_POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASYNC_SOCKET_POOL_ASAN 1
#endif
#endif
#ifdef ASYNC_SOCKET_POOL_ASAN
#include <sanitizer/asan_interface.h>
#endif

// The same definition as in basic_async_socket.hpp (an identical redefinition is allowed).
#ifndef ASYNC_SOCKET_NO_UNIQUE_ADDRESS
#if defined(_MSC_VER) && !defined(__clang__)
#define ASYNC_SOCKET_NO_UNIQUE_ADDRESS [[msvc::no_unique_address]]
#else
#define ASYNC_SOCKET_NO_UNIQUE_ADDRESS [[no_unique_address]]
#endif
#endif

namespace async_socket
{

// Tuning of a recycling pool.
struct recycling_pool_options
{
    // Blocks each size class keeps for reuse; a block freed into a full class is returned upstream.
    std::uint32_t max_cached_per_class = 64;
};

// What a pool holds and has done, for tests and monitoring. Every field is a snapshot.
struct recycling_pool_stats
{
    std::size_t cached_blocks = 0;        // blocks held for reuse
    std::size_t cached_bytes = 0;         // their total size (class sizes)
    std::uint64_t heap_allocations = 0;   // blocks taken from upstream so far (class misses and large blocks)
    std::uint64_t heap_deallocations = 0; // blocks given back to upstream so far (full classes, large, trim)
};

namespace detail
{

inline void cpu_relax() noexcept
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(_MSC_VER) && !defined(__clang__) && (defined(_M_X64) || defined(_M_IX86))
    _mm_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

// A test-and-test-and-set lock: an exchange to take it, a store to release it. A waiter spins on a plain
// load (the line stays shared while the holder works) and yields when the holder seems preempted.
class pool_spin_lock
{
public:
    void lock() noexcept
    {
        while (locked_.exchange(true, std::memory_order_acquire))
        {
            for (unsigned spins = 0; locked_.load(std::memory_order_relaxed); ++spins)
            {
                if (spins < 64)
                {
                    cpu_relax();
                }
                else
                {
                    std::this_thread::yield();
                }
            }
        }
    }

    void unlock() noexcept
    {
        locked_.store(false, std::memory_order_release);
    }

private:
    std::atomic<bool> locked_{false};
};

inline void pool_poison(void* p, std::size_t size) noexcept
{
#ifdef ASYNC_SOCKET_POOL_ASAN
    ASAN_POISON_MEMORY_REGION(p, size);
#else
    (void)p;
    (void)size;
#endif
}

inline void pool_unpoison(void* p, std::size_t size) noexcept
{
#ifdef ASYNC_SOCKET_POOL_ASAN
    ASAN_UNPOISON_MEMORY_REGION(p, size);
#else
    (void)p;
    (void)size;
#endif
}

} // namespace detail

// Upstream: the AllocPolicy blocks come from and go back to. Lock: guards one size class; default
// constructible, with lock() and unlock() that do not throw (pool_spin_lock; std::mutex works too, see
// above). recycling_pool_alloc is the usual choice.
template <class Upstream = heap_alloc, class Lock = detail::pool_spin_lock>
class basic_recycling_pool_alloc
{
    static_assert(alloc_policy<Upstream>, "the upstream of a recycling pool must be an AllocPolicy");

public:
    static constexpr std::size_t min_class_size = 64;
    static constexpr std::size_t max_class_size = 64 * 1024; // larger blocks bypass the pool
    static constexpr unsigned class_count = 11;              // 64, 128, ..., 65536
    static_assert(min_class_size << (class_count - 1) == max_class_size);

    // A pool with default options, made at the first allocate or copy.
    basic_recycling_pool_alloc() noexcept = default;

    // A pool with these options over this upstream, made at the first allocate or copy.
    explicit basic_recycling_pool_alloc(recycling_pool_options options, Upstream upstream = Upstream{}) noexcept
        : upstream_(upstream), options_(options)
    {
    }

    // The copy shares the pool (making it first if need be).
    basic_recycling_pool_alloc(const basic_recycling_pool_alloc& other) noexcept
        : upstream_(other.upstream_), options_(other.options_), state_(other.share_state())
    {
    }

    basic_recycling_pool_alloc(basic_recycling_pool_alloc&& other) noexcept
        : upstream_(other.upstream_), options_(other.options_),
          state_(other.state_.exchange(nullptr, std::memory_order_acq_rel))
    {
    }

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

    // Drops this copy's share; the last copy returns every cached block and the pool to upstream.
    ~basic_recycling_pool_alloc()
    {
        release(state_.load(std::memory_order_acquire));
    }

    // A block of at least `size` bytes aligned for std::max_align_t, or nullptr when upstream fails.
    [[nodiscard]] void* allocate(std::size_t size) noexcept
    {
        const unsigned index = class_index(size);
        pool_state* state = state_.load(std::memory_order_acquire);
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
        size_class& bin = state->classes[index];
        bin.lock.lock();
        free_block* block = bin.head;
        if (block != nullptr)
        {
            bin.head = block->next;
            --bin.cached;
        }
        bin.lock.unlock();
        if (block != nullptr)
        {
            handed_out(block, size, index);
            return block;
        }
        void* fresh = allocate_upstream(class_size(index), state);
        if (fresh != nullptr)
        {
            handed_out(fresh, size, index);
        }
        return fresh;
    }

    // Takes back a block from allocate (of this pool or of any copy), with the size given to allocate.
    void deallocate(void* p, std::size_t size) noexcept
    {
        if (p == nullptr)
        {
            return;
        }
        const unsigned index = class_index(size);
        pool_state* state = state_.load(std::memory_order_acquire);
        if (index >= class_count)
        {
            deallocate_upstream(p, size, state);
            return;
        }
        detail::pool_unpoison(p, class_size(index));
        if (state == nullptr)
        {
            upstream_.deallocate(p, class_size(index)); // every block is class-sized, whoever made it
            return;
        }
        size_class& bin = state->classes[index];
        bin.lock.lock();
        if (bin.cached < state->max_cached_per_class)
        {
            auto* block = ::new (p) free_block{bin.head};
            bin.head = block;
            ++bin.cached;
            detail::pool_poison(block + 1, class_size(index) - sizeof(free_block));
            bin.lock.unlock();
            return;
        }
        bin.lock.unlock();
        deallocate_upstream(p, class_size(index), state);
    }

    // A snapshot of the pool shared by this copy (all zero before the pool is made).
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
        result.heap_allocations = state->heap_allocations.load(std::memory_order_relaxed);
        result.heap_deallocations = state->heap_deallocations.load(std::memory_order_relaxed);
        return result;
    }

    // Returns every cached block to upstream now. Blocks in use are not affected.
    void trim() noexcept
    {
        pool_state* state = state_.load(std::memory_order_acquire);
        if (state != nullptr)
        {
            state->free_cached_blocks();
        }
    }

    // True when this copy and `other` share one pool.
    [[nodiscard]] bool shares_pool_with(const basic_recycling_pool_alloc& other) const noexcept
    {
        pool_state* state = state_.load(std::memory_order_acquire);
        return state != nullptr && state == other.state_.load(std::memory_order_acquire);
    }

    // The size class of a request: 0 for up to 64 bytes, 1 for up to 128, ...; class_count or more for a
    // block larger than max_class_size.
    static constexpr unsigned class_index(std::size_t size) noexcept
    {
        return static_cast<unsigned>(std::bit_width((size - 1) | (min_class_size - 1))) - 6u;
    }

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

    // Under ASan: the block's first `size` bytes are usable, the rest of its class is not.
    static void handed_out(void* block, std::size_t size, unsigned index) noexcept
    {
        detail::pool_unpoison(block, size);
        detail::pool_poison(static_cast<std::byte*>(block) + size, class_size(index) - size);
    }

    // One class on its own cache line, so that threads busy with different classes do not contend.
    struct alignas(64) size_class
    {
        Lock lock;
        free_block* head = nullptr;
        std::uint32_t cached = 0;
    };

    struct pool_state
    {
        pool_state(const Upstream& upstream_alloc, void* raw_memory, std::uint32_t max_cached) noexcept
            : upstream(upstream_alloc), raw(raw_memory), max_cached_per_class(max_cached)
        {
        }

        void free_cached_blocks() noexcept
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

        size_class classes[class_count];
        std::atomic<std::uint32_t> references{1};
        std::atomic<std::uint64_t> heap_allocations{0};
        std::atomic<std::uint64_t> heap_deallocations{0};
        ASYNC_SOCKET_NO_UNIQUE_ADDRESS Upstream upstream;
        void* raw; // what upstream returned for this state (it is aligned up from there)
        std::uint32_t max_cached_per_class;
    };

    // The state is over-aligned (its classes sit on cache lines); upstream guarantees max_align_t only.
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

    // Makes the pool of a default-constructed allocator; of two threads racing here, one pool wins.
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
        auto* made = ::new (reinterpret_cast<void*>(aligned)) pool_state(upstream, raw, options_.max_cached_per_class);
        pool_state* expected = nullptr;
        if (state_.compare_exchange_strong(expected, made, std::memory_order_acq_rel, std::memory_order_acquire))
        {
            return made;
        }
        destroy_state(made);
        return expected;
    }

    // The pool for a new copy, with a reference taken for it; nullptr only when no pool can be made.
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
            state->free_cached_blocks();
            destroy_state(state);
        }
    }

    static void destroy_state(pool_state* state) noexcept
    {
        Upstream upstream = state->upstream;
        void* raw = state->raw;
        state->~pool_state();
        upstream.deallocate(raw, state_bytes);
    }

    ASYNC_SOCKET_NO_UNIQUE_ADDRESS Upstream upstream_{};
    recycling_pool_options options_{};
    mutable std::atomic<pool_state*> state_{nullptr};
};

// Recycling IO contexts over malloc, with a spin lock per size class.
using recycling_pool_alloc = basic_recycling_pool_alloc<>;

static_assert(alloc_policy<recycling_pool_alloc>);

} // namespace async_socket

// async_socket, recycling pool internals: the spin lock of a size class, the AddressSanitizer poisoning of
// cached blocks, and the per-thread caches (their registry, the table each thread keeps, and the hook that
// gives a thread's cached blocks back when it exits). Used only by alloc/recycling_pool_alloc.hpp, whose
// header comment says how the layers fit together and why.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <thread>
#include <utility>

#if defined(_MSC_VER) && !defined(__clang__) && (defined(_M_X64) || defined(_M_IX86))
#include <intrin.h>
#endif

#if defined(_WIN32)
#include <winsock2.h> // before windows.h, as everywhere in the library (windows.h alone brings winsock.h)
#include <windows.h>  // FlsAlloc: the thread-exit hook of the thread caches
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

namespace async_socket::detail
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

// ---- thread caches ------------------------------------------------------------------------------------
// Not templates, so that the thread-local table below is one table for every pool type.

inline constexpr unsigned pool_class_count = 11;          // 64 B .. 64 KiB
inline constexpr std::uint32_t pool_thread_cache_max = 8; // blocks per class per thread, at most

// One thread's cached blocks of one pool. Only its owner thread touches the bins while it owns the cache;
// the pool touches them when it is destroyed (no thread uses it then) and when the owner has let go.
// Counts are atomics so that stats() may read them from another thread; the owner only loads and stores.
struct pool_thread_cache
{
    struct bin
    {
        std::atomic<std::uint32_t> count{0};
        void* blocks[pool_thread_cache_max];
    };
    bin bins[pool_class_count];
    pool_thread_cache* next = nullptr; // in its pool's list of caches
    bool owned = false;                // by a live thread; guarded by the pool's cache-list lock
};

// The part of every pool that a thread may need after it has lost track of whether the pool still lives:
// its never-reused id and how to hand a cache back to it.
struct pool_registration
{
    std::uint64_t id = 0;
    pool_registration* next_live = nullptr;
    void (*give_back_cache)(pool_registration* pool, pool_thread_cache* cache) noexcept = nullptr;
};

// The pools alive in the process. A thread that lets go of a cache looks its pool up here, under the
// mutex, and a pool leaves it under the same mutex before it frees anything: a thread never hands a cache
// back to a pool being destroyed.
struct pool_registry
{
    std::mutex mutex;
    pool_registration* live = nullptr;
    std::uint64_t last_id = 0;

    // Never destroyed: a thread may exit (and hand its caches back) while the process runs its static
    // destructors, e.g. a Win32 pool thread whose idle timeout ends during exit; it must not find a destroyed
    // mutex (the likely cause of a segmentation fault seen under Wine after every test had passed). Built in
    // static storage, so there is no allocation to leak.
    static pool_registry& instance() noexcept
    {
        alignas(pool_registry) static unsigned char storage[sizeof(pool_registry)];
        static pool_registry* const registry = ::new (static_cast<void*>(storage)) pool_registry;
        return *registry;
    }

    void add(pool_registration* pool) noexcept
    {
        std::lock_guard<std::mutex> hold(mutex);
        pool->id = ++last_id;
        pool->next_live = live;
        live = pool;
    }

    void remove(pool_registration* pool) noexcept
    {
        std::lock_guard<std::mutex> hold(mutex);
        for (pool_registration** link = &live; *link != nullptr; link = &(*link)->next_live)
        {
            if (*link == pool)
            {
                *link = pool->next_live;
                break;
            }
        }
    }

    // Hands `cache` back to the pool with this id, if that pool still lives.
    void give_back(std::uint64_t id, pool_registration* pool, pool_thread_cache* cache) noexcept
    {
        std::lock_guard<std::mutex> hold(mutex);
        for (pool_registration* alive = live; alive != nullptr; alive = alive->next_live)
        {
            if (alive == pool && alive->id == id)
            {
                pool->give_back_cache(pool, cache);
                return;
            }
        }
    }
};

// The cache this thread used last, for the fast path: a trivially destructible thread-local is reached
// without the guard a thread-local with a destructor needs. `closed` is set when the thread's table is gone
// (the thread is exiting): from then on the thread uses the shared lists only.
struct pool_last_cache
{
    std::uint64_t id = 0;
    pool_thread_cache* cache = nullptr;
    bool closed = false;
};

inline thread_local pool_last_cache pool_last_used;

// This thread's caches, by pool id. When the thread exits, it hands every cache back to its pool (if the
// pool still lives).
struct pool_thread_cache_table
{
    struct entry
    {
        std::uint64_t id = 0; // 0: empty
        pool_registration* pool = nullptr;
        pool_thread_cache* cache = nullptr;
    };
    static constexpr unsigned capacity = 8;
    entry entries[capacity];
    unsigned next_victim = 0;

    pool_thread_cache_table() noexcept = default;
    pool_thread_cache_table(const pool_thread_cache_table&) = delete;
    pool_thread_cache_table& operator=(const pool_thread_cache_table&) = delete;

    // At thread exit: every cache goes back to its pool (if the pool still lives).
    void let_go_all() noexcept
    {
        for (entry& held : entries)
        {
            let_go(held);
        }
    }

    [[nodiscard]] pool_thread_cache* find(std::uint64_t id) const noexcept
    {
        for (const entry& held : entries)
        {
            if (held.id == id)
            {
                return held.cache;
            }
        }
        return nullptr;
    }

    // An empty entry, handing back the cache of an occupied one (round robin) when none is empty.
    entry& free_entry() noexcept
    {
        for (entry& held : entries)
        {
            if (held.id == 0)
            {
                return held;
            }
        }
        entry& victim = entries[next_victim];
        next_victim = (next_victim + 1) % capacity;
        let_go(victim);
        return victim;
    }

    static void let_go(entry& held) noexcept
    {
        if (held.id != 0)
        {
            if (pool_last_used.id == held.id)
            {
                pool_last_used.id = 0;
                pool_last_used.cache = nullptr;
            }
            pool_registry::instance().give_back(held.id, held.pool, held.cache);
            held = entry{};
        }
    }
};

// The thread's table lives on the heap, reached through a trivially destructible thread-local, and the thread's
// exit is caught by a hook of the platform's: a fiber-local slot's callback on Windows, a thread-local object's
// destructor elsewhere. Not a thread_local table with a destructor: with mingw-w64's emulated TLS the storage
// of such an object can be freed before its destructor runs at thread exit (seen under Wine as a corrupted
// heap, then a hang in free), while fiber-local callbacks run before any thread-detach processing.
inline thread_local pool_thread_cache_table* pool_thread_table = nullptr;

inline void pool_thread_exit(pool_thread_cache_table* table) noexcept
{
    pool_last_used = pool_last_cache{0, nullptr, true}; // from now on this thread uses the shared lists
    pool_thread_table = nullptr;
    table->let_go_all();
    delete table;
}

#if defined(_WIN32)
inline void WINAPI pool_thread_exit_callback(void* table) noexcept
{
    if (table != nullptr)
    {
        pool_thread_exit(static_cast<pool_thread_cache_table*>(table));
    }
}

// Registers `table` to be handed back when the thread exits.
inline bool pool_hook_thread_exit(pool_thread_cache_table* table) noexcept
{
    static const DWORD slot = FlsAlloc(&pool_thread_exit_callback);
    return slot != FLS_OUT_OF_INDEXES && FlsSetValue(slot, table) != FALSE;
}
#else
struct pool_thread_exit_hook
{
    pool_thread_cache_table* table = nullptr;
    ~pool_thread_exit_hook()
    {
        if (table != nullptr)
        {
            pool_thread_exit(table);
        }
    }
};

inline thread_local pool_thread_exit_hook pool_exit_hook;

inline bool pool_hook_thread_exit(pool_thread_cache_table* table) noexcept
{
    pool_exit_hook.table = table;
    return true;
}
#endif

// This thread's table, made at its first use; nullptr when it cannot be made or the thread is exiting.
inline pool_thread_cache_table* this_thread_table() noexcept
{
    if (pool_thread_table != nullptr || pool_last_used.closed)
    {
        return pool_thread_table;
    }
    auto* table = new (std::nothrow) pool_thread_cache_table;
    if (table == nullptr)
    {
        return nullptr;
    }
    if (!pool_hook_thread_exit(table))
    {
        delete table;
        return nullptr;
    }
    pool_thread_table = table;
    return table;
}

} // namespace async_socket::detail

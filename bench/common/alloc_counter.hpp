// Counts every heap allocation of the process, on every thread, for the benchmarks' allocs_per_io counters
// (bench/linux, bench/native). It replaces malloc, calloc, realloc, free, memalign, aligned_alloc and
// posix_memalign, forwarding to glibc's __libc_* functions; operator new goes through malloc, so it is counted
// once. While alloc_counter::traces_left is above 0 each allocation prints a backtrace to stderr (names:
// addr2line -f -C -e <executable> <offset>).
//
// It defines those functions: include it in one translation unit of an executable, never in a library. glibc
// only (elsewhere alloc_counter::available is false and nothing is counted).
#pragma once

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>

#if defined(__GLIBC__)
#include <execinfo.h>
#include <unistd.h>

extern "C"
{
    void* __libc_malloc(std::size_t size);
    void* __libc_calloc(std::size_t count, std::size_t size);
    void* __libc_realloc(void* memory, std::size_t size);
    void* __libc_memalign(std::size_t alignment, std::size_t size);
    void __libc_free(void* memory);
}

namespace alloc_counter
{
std::atomic<std::uint64_t> allocations{0};
std::atomic<int> traces_left{0}; // > 0 while a timed loop runs with ASYNC_SOCKET_BENCH_ALLOC_TRACE set
thread_local bool in_trace = false;

void note() noexcept
{
    allocations.fetch_add(1, std::memory_order_relaxed);
    if (traces_left.load(std::memory_order_relaxed) > 0 && !in_trace)
    {
        in_trace = true;
        if (traces_left.fetch_sub(1, std::memory_order_relaxed) > 0)
        {
            void* frames[32];
            const int depth = backtrace(frames, 32);
            static const char header[] = "---- allocation in a timed loop:\n";
            (void)!write(2, header, sizeof header - 1);
            backtrace_symbols_fd(frames, depth, 2);
        }
        in_trace = false;
    }
}
} // namespace alloc_counter

extern "C"
{
    void* malloc(std::size_t size)
    {
        alloc_counter::note();
        return __libc_malloc(size);
    }
    void* calloc(std::size_t count, std::size_t size)
    {
        alloc_counter::note();
        return __libc_calloc(count, size);
    }
    void* realloc(void* memory, std::size_t size)
    {
        alloc_counter::note();
        return __libc_realloc(memory, size);
    }
    void* memalign(std::size_t alignment, std::size_t size)
    {
        alloc_counter::note();
        return __libc_memalign(alignment, size);
    }
    void* aligned_alloc(std::size_t alignment, std::size_t size)
    {
        alloc_counter::note();
        return __libc_memalign(alignment, size);
    }
    int posix_memalign(void** result, std::size_t alignment, std::size_t size)
    {
        alloc_counter::note();
        void* memory = __libc_memalign(alignment, size);
        if (memory == nullptr)
        {
            return ENOMEM;
        }
        *result = memory;
        return 0;
    }
    void free(void* memory)
    {
        __libc_free(memory);
    }
}

namespace alloc_counter
{
constexpr bool available = true;
} // namespace alloc_counter
#else
namespace alloc_counter
{
constexpr bool available = false;
inline std::atomic<std::uint64_t> allocations{0};
inline std::atomic<int> traces_left{0};
} // namespace alloc_counter
#endif

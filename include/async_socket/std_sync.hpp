// async_socket: a portable SyncPolicy on std::atomic with C++20 wait/notify.
//
// Works on every platform with a C++20 standard library; the Win32 policy (win32_sync) does the same
// with Interlocked* and WaitOnAddress.
#pragma once

#include <atomic>
#include <cstdint>

namespace async_socket
{

struct std_sync
{
    using word_type = std::atomic<std::int32_t>;

    static std::int32_t load(const word_type& word) noexcept
    {
        return word.load();
    }

    static void store(word_type& word, std::int32_t value) noexcept
    {
        word.store(value);
    }

    // Returns the value seen before the exchange, as InterlockedCompareExchange does.
    static std::int32_t compare_exchange(word_type& word, std::int32_t desired, std::int32_t expected) noexcept
    {
        word.compare_exchange_strong(expected, desired);
        return expected;
    }

    static std::int32_t increment(word_type& word) noexcept
    {
        return word.fetch_add(1) + 1;
    }

    static std::int32_t decrement(word_type& word) noexcept
    {
        return word.fetch_sub(1) - 1;
    }

    static void wait(const word_type& word, std::int32_t value) noexcept
    {
        word.wait(value);
    }

    static void wake_one(word_type& word) noexcept
    {
        word.notify_one();
    }

    static void wake_all(word_type& word) noexcept
    {
        word.notify_all();
    }
};

} // namespace async_socket

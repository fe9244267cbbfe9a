/// @file
/// async_socket: a portable SyncPolicy on std::atomic with C++20 wait/notify.
///
/// Works on every platform with a C++20 standard library; the Win32 policy (win32_sync) does the same
/// with Interlocked* and WaitOnAddress.
///
/// Where libstdc++ has no platform wait (no futex: mingw-w64, for one), its std::atomic::wait can miss a
/// notify (it checks the value outside the lock that notify does not take; a wake_one check hung about
/// one run in six under Wine). There std_sync parks waiters on a small table of mutex + condition
/// variable pairs instead, checking the value under the lock that the waker takes.
#pragma once

#include <atomic>
#include <cstdint>

#if defined(__GLIBCXX__) && !defined(_GLIBCXX_HAVE_PLATFORM_WAIT)
/// Defined where libstdc++ has no platform wait: std_sync then parks waiters on mutex and condition variable slots.
#define ASYNC_SOCKET_STD_SYNC_PARKING 1
#include <condition_variable>
#include <mutex>
#endif

namespace async_socket
{

#ifdef ASYNC_SOCKET_STD_SYNC_PARKING
namespace detail
{
struct parking_slot
{
    std::mutex mutex;
    std::condition_variable changed;
};

inline parking_slot& parking_slot_for(const void* address) noexcept
{
    static parking_slot slots[64];
    return slots[(reinterpret_cast<std::uintptr_t>(address) / alignof(std::int32_t)) % 64];
}
} // namespace detail
#endif

/// The portable SyncPolicy, on std::atomic<std::int32_t> and C++20 atomic wait/notify (or, where libstdc++ has no
/// platform wait, on a table of mutex and condition variable slots). Every member is static and noexcept.
struct std_sync
{
    /// The word every member works on.
    using word_type = std::atomic<std::int32_t>;

    /// Reads the word (sequentially consistent).
    static std::int32_t load(const word_type& word) noexcept
    {
        return word.load();
    }

    /// Writes the word (sequentially consistent).
    static void store(word_type& word, std::int32_t value) noexcept
    {
        word.store(value);
    }

    /// Returns the value seen before the exchange, as InterlockedCompareExchange does.
    static std::int32_t compare_exchange(word_type& word, std::int32_t desired, std::int32_t expected) noexcept
    {
        word.compare_exchange_strong(expected, desired);
        return expected;
    }

    /// Adds one; returns the new value.
    static std::int32_t increment(word_type& word) noexcept
    {
        return word.fetch_add(1) + 1;
    }

    /// Subtracts one; returns the new value.
    static std::int32_t decrement(word_type& word) noexcept
    {
        return word.fetch_sub(1) - 1;
    }

#ifdef ASYNC_SOCKET_STD_SYNC_PARKING
    /// Blocks while the word holds value.
    static void wait(const word_type& word, std::int32_t value) noexcept
    {
        detail::parking_slot& slot = detail::parking_slot_for(&word);
        std::unique_lock lock(slot.mutex);
        while (word.load() == value)
        {
            slot.changed.wait(lock);
        }
    }

    /// Slots are shared between addresses, so every waiter of the slot is woken; each checks its word.
    static void wake_one(word_type& word) noexcept
    {
        wake_all(word);
    }

    /// Wakes every thread waiting on the word.
    static void wake_all(word_type& word) noexcept
    {
        detail::parking_slot& slot = detail::parking_slot_for(&word);
        {
            std::lock_guard lock(slot.mutex);
        }
        slot.changed.notify_all();
    }
#else
    /// Blocks while the word holds value (std::atomic::wait; may return spuriously).
    static void wait(const word_type& word, std::int32_t value) noexcept
    {
        word.wait(value);
    }

    /// Wakes one thread waiting on the word.
    static void wake_one(word_type& word) noexcept
    {
        word.notify_one();
    }

    /// Wakes every thread waiting on the word.
    static void wake_all(word_type& word) noexcept
    {
        word.notify_all();
    }
#endif
};

} // namespace async_socket

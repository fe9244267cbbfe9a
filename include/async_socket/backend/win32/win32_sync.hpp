/// @file
/// async_socket: the Win32 SyncPolicy, on Interlocked* and WaitOnAddress/WakeByAddress*.
///
/// The same contract as std_sync (see concepts.hpp): a 32-bit word (volatile LONG) with sequentially
/// consistent load/store, compare-exchange, increment/decrement, and wait/wake on its address. Needs
/// Windows 8 or later and links synchronization.lib (-lsynchronization with mingw-w64).
#pragma once

#include <winsock2.h>
#include <windows.h>

#include <cstdint>

namespace async_socket
{

static_assert(sizeof(LONG) == sizeof(std::int32_t), "win32_sync needs LONG to be 32 bits");

/// The Win32 SyncPolicy (see the top of this file). Every member is static and noexcept.
struct win32_sync
{
    /// The word every member works on: what the Interlocked* functions take.
    using word_type = volatile LONG;

    /// Reads the word (full barrier: an interlocked no-op exchange).
    static std::int32_t load(word_type& word) noexcept
    {
        return static_cast<std::int32_t>(InterlockedCompareExchange(&word, 0, 0));
    }

    /// Writes the word (full barrier: InterlockedExchange).
    static void store(word_type& word, std::int32_t value) noexcept
    {
        (void)InterlockedExchange(&word, static_cast<LONG>(value));
    }

    /// Sets the word to desired if it holds expected; returns the value seen before (as
    /// InterlockedCompareExchange does).
    static std::int32_t compare_exchange(word_type& word, std::int32_t desired, std::int32_t expected) noexcept
    {
        return static_cast<std::int32_t>(
            InterlockedCompareExchange(&word, static_cast<LONG>(desired), static_cast<LONG>(expected)));
    }

    /// Adds one; returns the new value.
    static std::int32_t increment(word_type& word) noexcept
    {
        return static_cast<std::int32_t>(InterlockedIncrement(&word));
    }

    /// Subtracts one; returns the new value.
    static std::int32_t decrement(word_type& word) noexcept
    {
        return static_cast<std::int32_t>(InterlockedDecrement(&word));
    }

    /// Blocks while the word holds value (WaitOnAddress, no timeout); may return spuriously. WaitOnAddress
    /// can only fail with a timeout, which INFINITE rules out.
    static void wait(word_type& word, std::int32_t value) noexcept
    {
        LONG compare = static_cast<LONG>(value);
        (void)WaitOnAddress(&word, &compare, sizeof(LONG), INFINITE);
    }

    /// Wakes one thread waiting on the word (WakeByAddressSingle).
    static void wake_one(word_type& word) noexcept
    {
        WakeByAddressSingle(const_cast<LONG*>(&word));
    }

    /// Wakes every thread waiting on the word (WakeByAddressAll).
    static void wake_all(word_type& word) noexcept
    {
        WakeByAddressAll(const_cast<LONG*>(&word));
    }
};

} // namespace async_socket

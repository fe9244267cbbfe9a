// Shared pieces of the lifecycle tests (create/destroy, open, close): waits with a deadline, the end-of-test
// checks, and an allocator that keeps freed blocks for use-after-free probes.
#pragma once

#include "fixtures.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace doctest
{
template <>
struct StringMaker<std::vector<std::string>>
{
    static String convert(const std::vector<std::string>& names)
    {
        std::string text = "{";
        for (const auto& name : names)
        {
            text += (text.size() > 1 ? ", " : "") + name;
        }
        return (text + "}").c_str();
    }
};
} // namespace doctest

namespace test_support
{

using names = std::vector<std::string>;

// Every wait of these tests gives up after this long, and the test then fails with a message.
inline constexpr std::chrono::seconds deadline{30};

// Polls `done` until it holds or the deadline passes (the fake's record has no notification of its own).
template <class Condition>
bool eventually(Condition done)
{
    const auto give_up = std::chrono::steady_clock::now() + deadline;
    while (!done())
    {
        if (std::chrono::steady_clock::now() > give_up)
        {
            return false;
        }
        std::this_thread::yield();
    }
    return true;
}

// What every test ends with, once its sockets are destroyed: no OS rule broken, nothing left behind.
inline void expect_nothing_left(const fake_os& os, const alloc_ledger& ledger)
{
    const names violations = os.violations();
    CHECK_MESSAGE(violations.empty(), doctest::toString(violations));
    CHECK(os.live_events() == 0);
    CHECK(os.live_ios() == 0);
    CHECK(ledger.live_blocks() == 0);
    CHECK(ledger.misuse() == 0);
}

// An AllocPolicy for lifetime tests: a freed block is filled with 0xDD and kept until the test
// ends, so that a core that still uses a destroyed socket reads dead but mapped memory and the probe can
// report it (under ASan the read would end the whole run instead of failing one test).
struct kept_blocks
{
    std::mutex mutex;
    std::int64_t live = 0;
    std::vector<void*> freed;

    kept_blocks() = default;
    kept_blocks(const kept_blocks&) = delete;
    kept_blocks& operator=(const kept_blocks&) = delete;
    ~kept_blocks()
    {
        for (void* block : freed)
        {
            std::free(block);
        }
    }
};

struct keep_freed_alloc
{
    kept_blocks* blocks = nullptr;

    void* allocate(std::size_t size) noexcept
    {
        void* block = std::malloc(size);
        if (block != nullptr)
        {
            std::lock_guard lock(blocks->mutex);
            ++blocks->live;
        }
        return block;
    }

    void deallocate(void* block, std::size_t size) noexcept
    {
        std::memset(block, 0xDD, size);
        std::lock_guard lock(blocks->mutex);
        --blocks->live;
        blocks->freed.push_back(block);
    }
};

inline const names release_calls{"CloseThreadpoolIo", "CloseThreadpoolCleanupGroup", "DestroyThreadpoolEnvironment"};

} // namespace test_support

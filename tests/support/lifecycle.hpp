// Shared pieces of the lifecycle tests (create/destroy, open, close): waits with a deadline, the end-of-test
// checks, an allocator that keeps freed blocks for use-after-free probes, and small steps the tests share (a
// required socket, a started receive, a close on another thread, the calls of destroy).
#pragma once

#include "fixtures.hpp"

#include <doctest/doctest.h>

#include <atomic>
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

// The calls of a first open (it binds the socket), and those of destroy (it releases that binding).
inline const names binding_calls{"InitializeThreadpoolEnvironment", "SetThreadpoolCallbackPool",
                                 "CreateThreadpoolCleanupGroup", "CreateThreadpoolIo"};
inline const names release_calls{"CloseThreadpoolIo", "CloseThreadpoolCleanupGroup", "DestroyThreadpoolEnvironment"};

// What the lifecycle tests send and receive.
inline char payload[16] = "lifecycle bytes";

// A fixture (fixtures.hpp) whose socket the test requires to have been made.
struct made_fixture : fixture
{
    explicit made_fixture(bool open = true) : fixture(open)
    {
        REQUIRE(socket);
    }
};

// Destroys the fixture's socket and returns the calls that destroy made.
template <class Fixture>
names calls_of_destroy(Fixture& f)
{
    f.os.clear_calls();
    f.socket.reset();
    return f.os.call_names();
}

// One receive into `payload`, started (and required to start) on `socket`.
struct started_receive
{
    ASYNC_SOCKET_BUFFER buffer{payload, sizeof(payload)};
    receive_recorder received;

    template <class Socket>
    explicit started_receive(Socket* socket)
    {
        REQUIRE(socket->receive_async(&buffer, 1, &receive_recorder::callback, &received) == status::ok);
    }

    // Its callback ran once, with `result`.
    void check_completed_once(ASYNC_SOCKET_RECEIVE_RESULT result)
    {
        REQUIRE(received.seen().size() == 1);
        CHECK(received.seen()[0].result == result);
    }
};

// Runs close on a thread of its own; `closed` once it has returned.
template <class Socket>
struct background_close
{
    std::atomic<bool> closed{false};
    std::atomic<status> result{status::invalid_argument};
    std::thread thread;

    explicit background_close(Socket* socket)
        : thread(
              [this, socket]
              {
                  result = socket->close();
                  closed = true;
              })
    {
    }

    void join()
    {
        thread.join();
    }
};

// The end of a test over a fixture (made_fixture, probed_fixture, held_open): destroys the socket, then checks that
// nothing is left.
template <class Fixture>
void destroy_and_expect_nothing_left(Fixture& f)
{
    f.socket.reset();
    expect_nothing_left(f.os, f.ledger);
}

} // namespace test_support

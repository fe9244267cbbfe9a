// probe_sync: a SyncPolicy through which a test watches the state machine of a socket, and fixtures of sockets
// under it.
#pragma once

#include <async_socket/basic_async_socket.hpp>
#include <async_socket/sync/std_sync.hpp>
#include <async_socket/testing/fake_threadpool.hpp>
#include <async_socket/testing/fault_alloc.hpp>

#include "fixtures.hpp"
#include "lifecycle.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>

namespace test_support
{

using async_socket::socket_state;
using namespace async_socket::testing;

// Every wait of the probe gives up after this long; the test then fails with a message.
inline constexpr std::chrono::seconds probe_deadline{30};

// The name of a state, as the probe writes it in its list of transitions.
inline const char* name_of(socket_state state)
{
    switch (state)
    {
    case socket_state::closed:
        return "closed";
    case socket_state::opening:
        return "opening";
    case socket_state::open:
        return "open";
    case socket_state::closing:
        return "closing";
    }
    return "?";
}

// ---- probe_sync: a SyncPolicy through which a test watches the state machine ----------------------------
// It works as std_sync does, on std::atomic words, with a mutex and a condition variable in place of the
// futex: every change of a word wakes the waiters, and wait() returns once the word no longer holds the
// value. Around that it keeps, in the test's sync_probe:
//   - every change of the state word (the word of the first compare_exchange), as "from->to";
//   - how many wait() calls began on the state word (destroy waiting) and on the other word (close waiting
//     for the send_async/receive_async calls under way);
//   - a hold: storing the state `hold` blocks until the test sets `released`, which keeps the socket
//     OPENING (hold open) or CLOSING (hold closed) for as long as the test needs;
//   - a pause after storing `pause_after_store`, or after the decrement that ends the last call under way,
//     which lasts until the test says the socket is destroyed; and a count of the calls made after that.
// Like std_sync it has no state of its own (the probe is reached through active_probe): a call that runs
// after the socket was freed reads nothing from the freed memory itself.
struct sync_probe
{
    std::mutex mutex;
    std::condition_variable changed;
    const void* state_word = nullptr;
    std::string transitions;
    int state_waits = 0;
    int other_waits = 0;
    std::optional<socket_state> hold;
    bool holding = false;
    bool released = false;
    std::optional<socket_state> pause_after_store;
    bool pause_after_last_call = false;
    bool destroyed = false;
    int calls_after_destroy = 0;

    // Waits until `condition` (read under the probe's lock) holds; false after the probe_deadline.
    template <class Condition>
    bool wait_until(Condition condition)
    {
        std::unique_lock lock(mutex);
        return changed.wait_for(lock, probe_deadline, condition);
    }

    // Changes the probe under its lock and wakes whoever waits on it.
    template <class Change>
    void update(Change change)
    {
        {
            std::lock_guard lock(mutex);
            change();
        }
        changed.notify_all();
    }

    template <class Read>
    auto read(Read what)
    {
        std::lock_guard lock(mutex);
        return what();
    }

    void note_transition(std::int32_t from, std::int32_t to)
    {
        transitions += (transitions.empty() ? "" : ", ") + std::string(name_of(static_cast<socket_state>(from))) +
                       "->" + name_of(static_cast<socket_state>(to));
    }

    void pause_until_destroyed(std::unique_lock<std::mutex>& lock)
    {
        const int waits = state_waits + other_waits;
        changed.wait_for(lock, probe_deadline, [&] { return destroyed || state_waits + other_waits > waits; });
    }
};

inline sync_probe* active_probe = nullptr;

class probe_scope
{
public:
    explicit probe_scope(sync_probe& probe)
    {
        active_probe = &probe;
    }
    ~probe_scope()
    {
        active_probe = nullptr;
    }
    probe_scope(const probe_scope&) = delete;
    probe_scope& operator=(const probe_scope&) = delete;
};

struct probe_sync
{
    using word_type = std::atomic<std::int32_t>;

    static std::int32_t load(const word_type& word) noexcept
    {
        std::lock_guard lock(active_probe->mutex);
        count_if_destroyed();
        return word.load();
    }

    static void store(word_type& word, std::int32_t value) noexcept
    {
        sync_probe& probe = *active_probe;
        std::unique_lock lock(probe.mutex);
        count_if_destroyed();
        const bool state = &word == probe.state_word;
        if (state && probe.hold == static_cast<socket_state>(value))
        {
            probe.hold.reset();
            probe.holding = true;
            probe.changed.notify_all();
            probe.changed.wait_for(lock, probe_deadline, [&] { return probe.released; });
            probe.holding = false;
        }
        if (state)
        {
            probe.note_transition(word.load(), value);
        }
        word.store(value);
        probe.changed.notify_all();
        if (state && probe.pause_after_store == static_cast<socket_state>(value))
        {
            probe.pause_after_store.reset();
            probe.pause_until_destroyed(lock);
        }
    }

    static std::int32_t compare_exchange(word_type& word, std::int32_t desired, std::int32_t expected) noexcept
    {
        sync_probe& probe = *active_probe;
        std::lock_guard lock(probe.mutex);
        count_if_destroyed();
        if (probe.state_word == nullptr)
        {
            probe.state_word = &word;
        }
        const std::int32_t previous = async_socket::std_sync::compare_exchange(word, desired, expected);
        if (&word == probe.state_word && previous == expected)
        {
            probe.note_transition(expected, desired);
        }
        probe.changed.notify_all();
        return previous;
    }

    static std::int32_t increment(word_type& word) noexcept
    {
        std::lock_guard lock(active_probe->mutex);
        count_if_destroyed();
        const std::int32_t now = async_socket::std_sync::increment(word);
        active_probe->changed.notify_all();
        return now;
    }

    static std::int32_t decrement(word_type& word) noexcept
    {
        sync_probe& probe = *active_probe;
        std::unique_lock lock(probe.mutex);
        count_if_destroyed();
        const std::int32_t now = async_socket::std_sync::decrement(word);
        probe.changed.notify_all();
        if (&word != probe.state_word && probe.pause_after_last_call)
        {
            probe.pause_after_last_call = false;
            probe.pause_until_destroyed(lock);
        }
        return now;
    }

    static void wait(const word_type& word, std::int32_t value) noexcept
    {
        sync_probe& probe = *active_probe;
        std::unique_lock lock(probe.mutex);
        count_if_destroyed();
        ++(&word == probe.state_word ? probe.state_waits : probe.other_waits);
        probe.changed.notify_all();
        probe.changed.wait_for(lock, probe_deadline, [&] { return word.load() != value; });
    }

    static void wake_one(word_type&) noexcept
    {
        wake();
    }

    static void wake_all(word_type&) noexcept
    {
        wake();
    }

private:
    // A wake is not counted after destroy: the SyncPolicy contract lets it run on the address of a word that
    // is already freed (the woken thread may destroy the socket at once), as WakeByAddress* and futexes do.
    static void wake() noexcept
    {
        std::lock_guard lock(active_probe->mutex);
        active_probe->changed.notify_all();
    }

    // Under the probe's lock.
    static void count_if_destroyed() noexcept
    {
        if (active_probe->destroyed)
        {
            ++active_probe->calls_after_destroy;
        }
    }
};

using probed_socket_type = async_socket::basic_async_socket<fake_threadpool, fault_alloc, probe_sync>;

// A socket whose open_async runs on a thread of its own and is held just before it stores OPEN, so that a test
// acts on the socket while it is OPENING. release() lets the open finish (the destructor does, at the latest).
struct held_open
{
    sync_probe probe;
    probe_scope scope{probe};
    fake_os os;
    alloc_ledger ledger;
    open_recorder opened;
    probed_socket_type::handle socket = probed_socket_type::create(&os, fake_socket(42), {}, fault_alloc{&ledger});
    probed_socket_type* const raw = socket.get();
    std::atomic<status> open_result{status::invalid_argument};
    std::thread opener;

    // Starts the open (after forgetting the calls of create, if asked) and waits until it is held; false when the
    // socket could not be made or the open never got there.
    [[nodiscard]] bool start(bool forget_create_calls = false)
    {
        if (raw == nullptr)
        {
            return false;
        }
        if (forget_create_calls)
        {
            os.clear_calls();
        }
        probe.update([&] { probe.hold = socket_state::open; });
        opener = std::thread([this] { open_result = raw->open_async(&open_recorder::callback, &opened); });
        return probe.wait_until([&] { return probe.holding; });
    }

    void release()
    {
        probe.update([&] { probe.released = true; });
        if (opener.joinable())
        {
            opener.join();
        }
    }

    held_open() = default;
    held_open(const held_open&) = delete;
    held_open& operator=(const held_open&) = delete;
    ~held_open()
    {
        release();
    }
};

// A socket of the probe's, over fake socket 42: created and (by default) opened, each step required. Its memory
// comes from `ledger`, or with keep_freed_alloc from `blocks`.
template <class Alloc>
struct basic_probed_fixture
{
    using socket_type = async_socket::basic_async_socket<fake_threadpool, Alloc, probe_sync>;

    sync_probe probe;
    probe_scope scope{probe};
    fake_os os;
    alloc_ledger ledger;
    kept_blocks blocks;
    open_recorder opened;
    typename socket_type::handle socket;
    socket_type* raw = nullptr;

    explicit basic_probed_fixture(bool open = true)
    {
        if constexpr (std::is_same_v<Alloc, keep_freed_alloc>)
        {
            socket = socket_type::create(&os, fake_socket(42), {}, keep_freed_alloc{&blocks});
        }
        else
        {
            socket = socket_type::create(&os, fake_socket(42), {}, fault_alloc{&ledger});
        }
        REQUIRE(socket);
        raw = socket.get();
        if (open)
        {
            REQUIRE(raw->open_async(&open_recorder::callback, &opened) == status::ok);
        }
    }
};

using probed_fixture = basic_probed_fixture<fault_alloc>;
// Its freed memory stays mapped, for the tests that look for a use after destroy.
using kept_fixture = basic_probed_fixture<keep_freed_alloc>;

// The end of a test over a kept_fixture, once its socket is destroyed: every block freed, no OS rule broken,
// nothing of the OS left.
inline void expect_nothing_left(const kept_fixture& f)
{
    CHECK(f.blocks.live == 0);
    CHECK(f.os.violations().empty());
    CHECK(f.os.live_events() == 0);
    CHECK(f.os.live_ios() == 0);
}

} // namespace test_support

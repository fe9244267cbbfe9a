// Tests of the Win32 pieces on their own: the execution engine, win32_sync (against the same checks as
// std_sync) and win32_threadpool on a real loopback socket (under Wine when cross compiling).
#include <async_socket/backend/win32/execution_engine.hpp>
#include <async_socket/backend/win32/win32_sync.hpp>
#include <async_socket/backend/win32/threadpool.hpp>

#include <async_socket/sync/std_sync.hpp>

#include "support/loopback.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

// The wait/wake checks run on both policies. std_sync parks its waiters itself where libstdc++ has no
// platform wait (mingw-w64): its std::atomic::wait there could lose a notify (std_sync.hpp says how).
#define WAIT_WAKE_SYNC_POLICIES async_socket::std_sync, async_socket::win32_sync

namespace
{

constexpr double deadline_seconds = 60.0;

// Runs `count` work items on the engine's pool, each calling body(); returns when all have run or the
// deadline passed (false).
template <class Body>
bool run_on_pool(EXECUTION_ENGINE_HANDLE engine, int count, Body& body)
{
    struct shared_state
    {
        Body* body = nullptr;
        std::atomic<int> finished{0};
        win32_test::waiter waiter;
    } shared;
    shared.body = &body;

    TP_CALLBACK_ENVIRON environment;
    InitializeThreadpoolEnvironment(&environment);
    SetThreadpoolCallbackPool(&environment, execution_engine_win32_get_threadpool(engine));
    bool submitted = true;
    for (int i = 0; i < count; ++i)
    {
        submitted = submitted && TrySubmitThreadpoolCallback(
                                     [](PTP_CALLBACK_INSTANCE, PVOID context)
                                     {
                                         auto* state = static_cast<shared_state*>(context);
                                         (*state->body)();
                                         state->waiter.update([&] { ++state->finished; });
                                     },
                                     &shared, &environment);
    }
    const int expected = submitted ? count : 0;
    const bool all_ran =
        submitted && shared.waiter.wait_for([&] { return shared.finished == expected; }, deadline_seconds);
    DestroyThreadpoolEnvironment(&environment);
    return all_ran;
}

} // namespace

TEST_CASE("execution_engine_create with NULL parameters makes an engine with a threadpool")
{
    EXECUTION_ENGINE_HANDLE engine = execution_engine_create(nullptr);
    REQUIRE(engine != nullptr);
    CHECK(execution_engine_win32_get_threadpool(engine) != nullptr);

    // The default minimum of 4 threads: 4 work items can all be running at once.
    std::atomic<int> arrived{0};
    win32_test::waiter barrier;
    bool all_met = true;
    auto rendezvous = [&]
    {
        barrier.update([&] { ++arrived; });
        if (!barrier.wait_for([&] { return arrived >= 4; }, deadline_seconds))
        {
            all_met = false;
        }
    };
    CHECK(run_on_pool(engine, 4, rendezvous));
    CHECK(all_met);
    execution_engine_dec_ref(engine);
}

TEST_CASE("execution_engine_create accepts a minimum with or without a maximum")
{
    for (const EXECUTION_ENGINE_PARAMETERS parameters :
         {EXECUTION_ENGINE_PARAMETERS{1, 1}, EXECUTION_ENGINE_PARAMETERS{2, 8},
          EXECUTION_ENGINE_PARAMETERS{0, EXECUTION_ENGINE_NO_MAX_THREAD_COUNT},
          EXECUTION_ENGINE_PARAMETERS{16, EXECUTION_ENGINE_NO_MAX_THREAD_COUNT}})
    {
        CAPTURE(parameters.min_thread_count);
        CAPTURE(parameters.max_thread_count);
        EXECUTION_ENGINE_HANDLE engine = execution_engine_create(&parameters);
        REQUIRE(engine != nullptr);
        CHECK(execution_engine_win32_get_threadpool(engine) != nullptr);
        int runs = 0;
        auto count_run = [&] { ++runs; };
        CHECK(run_on_pool(engine, 1, count_run));
        CHECK(runs == 1);
        execution_engine_dec_ref(engine);
    }
}

TEST_CASE("an engine with a maximum of one thread never runs two work items at once")
{
    const EXECUTION_ENGINE_PARAMETERS parameters{1, 1};
    EXECUTION_ENGINE_HANDLE engine = execution_engine_create(&parameters);
    REQUIRE(engine != nullptr);
    std::atomic<int> running{0};
    std::atomic<int> most{0};
    auto body = [&]
    {
        const int now = ++running;
        for (int seen = most; now > seen && !most.compare_exchange_weak(seen, now);)
        {
        }
        std::this_thread::yield();
        --running;
    };
    CHECK(run_on_pool(engine, 16, body));
    CHECK(most == 1);
    execution_engine_dec_ref(engine);
}

TEST_CASE("execution_engine_create fails when the maximum is below the minimum")
{
    const EXECUTION_ENGINE_PARAMETERS below{5, 2};
    CHECK(execution_engine_create(&below) == nullptr);
    const EXECUTION_ENGINE_PARAMETERS too_many{UINT32_MAX, EXECUTION_ENGINE_NO_MAX_THREAD_COUNT};
    CHECK(execution_engine_create(&too_many) == nullptr);
}

TEST_CASE("execution engine functions ignore a NULL engine")
{
    execution_engine_inc_ref(nullptr);
    execution_engine_dec_ref(nullptr);
    CHECK(execution_engine_win32_get_threadpool(nullptr) == nullptr);
}

TEST_CASE("an engine lives until its last reference is dropped")
{
    EXECUTION_ENGINE_HANDLE engine = execution_engine_create(nullptr);
    REQUIRE(engine != nullptr);
    execution_engine_inc_ref(engine);
    execution_engine_dec_ref(engine); // one reference left: the pool still runs work

    int runs = 0;
    auto count_run = [&] { ++runs; };
    CHECK(run_on_pool(engine, 3, count_run));
    CHECK(runs == 3);
    execution_engine_dec_ref(engine);
}

// ---- win32_sync passes the checks std_sync passes ------------------------------------------------

TEST_CASE_TEMPLATE("a sync policy loads, stores, exchanges and counts like InterlockedXxx", sync,
                   async_socket::std_sync, async_socket::win32_sync)
{
    static_assert(async_socket::check_sync_policy<sync>());
    typename sync::word_type word{5};
    CHECK(sync::load(word) == 5);
    sync::store(word, -7);
    CHECK(sync::load(word) == -7);

    // compare_exchange returns the value seen before, and exchanges only when it was `expected`.
    CHECK(sync::compare_exchange(word, 3, -7) == -7);
    CHECK(sync::load(word) == 3);
    CHECK(sync::compare_exchange(word, 9, 4) == 3);
    CHECK(sync::load(word) == 3);

    CHECK(sync::increment(word) == 4);
    CHECK(sync::decrement(word) == 3);
    sync::store(word, INT32_MAX);
    CHECK(sync::load(word) == INT32_MAX);
}

TEST_CASE_TEMPLATE("a sync policy's increments from several threads are not lost", sync, async_socket::std_sync,
                   async_socket::win32_sync)
{
    typename sync::word_type word{0};
    constexpr int thread_count = 4;
    constexpr int per_thread = 20000;
    std::vector<std::thread> threads;
    for (int t = 0; t < thread_count; ++t)
    {
        threads.emplace_back(
            [&]
            {
                for (int i = 0; i < per_thread; ++i)
                {
                    sync::increment(word);
                    sync::increment(word);
                    sync::decrement(word);
                }
            });
    }
    for (auto& thread : threads)
    {
        thread.join();
    }
    CHECK(sync::load(word) == thread_count * per_thread);
}

TEST_CASE_TEMPLATE("a sync policy's wait returns at once when the word holds another value", sync,
                   async_socket::std_sync, async_socket::win32_sync)
{
    typename sync::word_type word{1};
    sync::wait(word, 0);
    CHECK(sync::load(word) == 1);
}

TEST_CASE_TEMPLATE("a sync policy's wake_all wakes every thread waiting on the word", sync, WAIT_WAKE_SYNC_POLICIES)
{
    typename sync::word_type word{0};
    std::atomic<int> woken{0};
    win32_test::waiter waiter;
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; ++t)
    {
        threads.emplace_back(
            [&]
            {
                for (std::int32_t seen = sync::load(word); seen == 0; seen = sync::load(word))
                {
                    sync::wait(word, seen);
                }
                waiter.update([&] { ++woken; });
            });
    }
    sync::store(word, 1);
    sync::wake_all(word);
    CHECK(waiter.wait_for([&] { return woken == 3; }, deadline_seconds));
    for (auto& thread : threads)
    {
        thread.join();
    }
}

TEST_CASE_TEMPLATE("a sync policy's wake_one hands a counter from thread to thread", sync, WAIT_WAKE_SYNC_POLICIES)
{
    // Two threads take turns: each waits for the word to reach its number, then bumps it and wakes the other.
    typename sync::word_type word{0};
    constexpr std::int32_t rounds = 200;
    auto player = [&](std::int32_t parity)
    {
        for (;;)
        {
            std::int32_t seen = sync::load(word);
            while (seen < rounds && seen % 2 != parity)
            {
                sync::wait(word, seen);
                seen = sync::load(word);
            }
            if (seen >= rounds)
            {
                return;
            }
            sync::increment(word);
            sync::wake_one(word);
        }
    };
    std::thread even(player, 0);
    std::thread odd(player, 1);
    even.join();
    odd.join();
    CHECK(sync::load(word) == rounds);
}

// The layer of real Win32 calls under win32_threadpool (one member, one call).
using win32_calls = async_socket::detail::win32_threadpool_calls<async_socket::win32_options{}>;

// ---- the Win32 calls of threadpool IO on a real socket -------------------------------------------------------------

namespace
{

struct io_record
{
    std::atomic<int> calls{0};
    std::atomic<std::uint32_t> io_result{0xffffffff};
    std::atomic<std::size_t> bytes{0};
    std::atomic<void*> overlapped{nullptr};
    win32_test::waiter waiter;
};

void record_completion(void* context, void* overlapped, async_socket::win32_error io_result,
                       std::size_t bytes_transferred) noexcept
{
    auto* record = static_cast<io_record*>(context);
    record->waiter.update(
        [&]
        {
            record->io_result = io_result;
            record->bytes = bytes_transferred;
            record->overlapped = overlapped;
            ++record->calls;
        });
}

// A win32_threadpool bound to one socket, torn down as basic_async_socket does (wait, close, close group,
// destroy environment).
struct bound_threadpool
{
    win32_calls threadpool;
    bool bound = false;

    bound_threadpool(EXECUTION_ENGINE_HANDLE engine, SOCKET socket, io_record& record)
    {
        REQUIRE(threadpool.acquire_pool(engine));
        threadpool.initialize_environment();
        threadpool.set_callback_pool();
        REQUIRE(threadpool.create_cleanup_group());
        bound = threadpool.create_io<&record_completion>(win32_test::as_handle(socket), &record);
        if (!bound)
        {
            threadpool.close_cleanup_group();
            threadpool.destroy_environment();
        }
    }
    ~bound_threadpool()
    {
        if (bound)
        {
            threadpool.wait_for_io_callbacks(false);
            threadpool.close_io();
            threadpool.close_cleanup_group();
            threadpool.destroy_environment();
        }
    }
};

struct engine_and_pair
{
    win32_test::wsa_session wsa;
    EXECUTION_ENGINE_HANDLE engine = execution_engine_create(nullptr);
    win32_test::socket_pair pair = win32_test::make_loopback_pair();

    engine_and_pair()
    {
        REQUIRE(wsa.ok());
        REQUIRE(engine != nullptr);
        REQUIRE(pair.valid());
    }
    ~engine_and_pair()
    {
        pair.close();
        execution_engine_dec_ref(engine); // ignores NULL
    }

    // Drops the test's reference to the engine now.
    void release_engine()
    {
        execution_engine_dec_ref(engine);
        engine = nullptr;
    }
};

// A bound_threadpool on `socket` (required to be bound) that records into `record`, and the one buffer, WSABUF
// and OVERLAPPED (no event) of the IO a test posts on it.
struct bound_io
{
    io_record record;
    bound_threadpool bound;
    SOCKET socket;
    char buffer[32] = {};
    WSABUF wsabuf{};
    OVERLAPPED overlapped{};
    std::uint32_t flags = 0;

    // The buffer is cut to `length` bytes.
    bound_io(EXECUTION_ENGINE_HANDLE engine, SOCKET bound_socket, std::uint32_t length = sizeof(buffer))
        : bound(engine, bound_socket, record), socket(bound_socket)
    {
        REQUIRE(bound.bound);
        win32_calls::set_buffer(wsabuf, buffer, length);
        win32_calls::set_overlapped_event(overlapped, nullptr);
    }

    // Starts a threadpool IO and issues a receive into the buffer, which must be pending or done.
    void receive()
    {
        bound.threadpool.start_io();
        flags = 0;
        REQUIRE(bound.threadpool.receive(win32_test::as_handle(socket), &wsabuf, 1, nullptr, &flags, &overlapped) ==
                async_socket::win32_no_error);
    }

    // Issues a receive, has `peer` send `text` and checks that the receive completed (as completion `calls`)
    // with NO_ERROR and the text's length.
    void receive_from(SOCKET peer, std::string_view text, int calls)
    {
        receive();
        CHECK(send(peer, text.data(), static_cast<int>(text.size()), 0) == static_cast<int>(text.size()));
        wait_for_calls(calls);
        CHECK(record.io_result == async_socket::win32_no_error);
        CHECK(record.bytes == text.size());
    }

    // Waits until `calls` completions have been recorded.
    void wait_for_calls(int calls)
    {
        REQUIRE(record.waiter.wait_for([&] { return record.calls == calls; }, deadline_seconds));
    }
};

} // namespace

TEST_CASE("the Win32 threadpool calls deliver a receive's completion with NO_ERROR and the byte count")
{
    engine_and_pair world;
    bound_io io(world.engine, world.pair.server);

    HANDLE event = io.bound.threadpool.create_event();
    REQUIRE(event != nullptr);
    win32_calls::set_overlapped_event(io.overlapped, event);
    CHECK(io.overlapped.hEvent == event);
    CHECK(io.overlapped.Internal == 0);

    io.receive_from(world.pair.client, "hello", 1);
    CHECK(io.record.overlapped == &io.overlapped);
    CHECK(std::string(io.buffer, 5) == "hello");
    io.bound.threadpool.close_event(event);
}

TEST_CASE("the Win32 threadpool calls: cancel_socket_io completes a pending receive with ERROR_OPERATION_ABORTED")
{
    engine_and_pair world;
    bound_io io(world.engine, world.pair.server);
    io.receive();

    io.bound.threadpool.cancel_socket_io(win32_test::as_handle(world.pair.server));

    io.wait_for_calls(1);
    CHECK(io.record.io_result == async_socket::win32_operation_aborted);
    CHECK(io.record.bytes == 0);

    // The socket still works after the cancel.
    io.receive_from(world.pair.client, "x", 2);
}

TEST_CASE("the Win32 threadpool calls: send returns the WSA error when WSASend fails at once")
{
    engine_and_pair world;
    bound_io io(world.engine, world.pair.client, 1);
    REQUIRE(shutdown(world.pair.client, SD_SEND) == 0);

    io.buffer[0] = 'x';
    io.bound.threadpool.start_io();
    const async_socket::win32_error error =
        io.bound.threadpool.send(win32_test::as_handle(world.pair.client), &io.wsabuf, 1, nullptr, 0, &io.overlapped);
    CHECK(error == WSAESHUTDOWN);
    io.bound.threadpool.cancel_io(); // the IO was not issued
    CHECK(io.record.calls == 0);
}

TEST_CASE("the Win32 threadpool calls: create_io fails on a socket bound to another threadpool IO")
{
    engine_and_pair world;
    bound_io first(world.engine, world.pair.client);

    io_record second_record;
    bound_threadpool second(world.engine, world.pair.client, second_record);
    CHECK_FALSE(second.bound);
    MESSAGE("second CreateThreadpoolIo on the same SOCKET: GetLastError() = " << GetLastError());
}

TEST_CASE("the Win32 threadpool calls keep their engine alive after the creator's reference is gone")
{
    engine_and_pair world;
    {
        bound_io io(world.engine, world.pair.server, 8);
        world.release_engine(); // only the policy's reference is left

        io.receive_from(world.pair.client, "ok", 1);
    } // the policy drops the last reference here
}

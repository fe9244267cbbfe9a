// testing::inline_threadpool: the benchmark backend (the Win32 protocol over calls that complete every IO inline).
#include "inline_threadpool.hpp"

#include "../support/fixtures.hpp"

#include <async_socket/alloc/heap_alloc.hpp>

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <vector>

using namespace test_support;
using async_socket::win32_no_error;
using async_socket::testing::inline_engine;
using async_socket::testing::inline_event_threadpool;
using async_socket::testing::inline_overlapped;
using async_socket::testing::inline_threadpool;
using async_socket::testing::inline_wsabuf;

namespace
{

template <class Threadpool>
using inline_socket = async_socket::basic_async_socket<Threadpool, fault_alloc, async_socket::std_sync>;

void noop_open(void*, ASYNC_SOCKET_OPEN_RESULT) {}

// What the completion routine was called with.
struct completion_log
{
    struct call
    {
        void* callback_context;
        void* overlapped;
        async_socket::win32_error io_result;
        std::size_t bytes;
    };
    static inline std::vector<call> calls;

    static void record(void* callback_context, void* overlapped, async_socket::win32_error io_result,
                       std::size_t bytes) noexcept
    {
        calls.push_back({callback_context, overlapped, io_result, bytes});
    }
};

// A send recorder that also notes whether send_async had returned when the callback ran.
struct inline_send_recorder
{
    int calls = 0;
    bool returned = false;
    bool ran_before_return = false;
    ASYNC_SOCKET_SEND_RESULT last = ASYNC_SOCKET_SEND_RESULT_INVALID;

    static void callback(void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        auto* self = static_cast<inline_send_recorder*>(context);
        ++self->calls;
        self->ran_before_return = !self->returned;
        self->last = result;
    }
};

} // namespace

TEST_CASE("inline_threadpool is a backend, with and without the per-IO event")
{
    static_assert(async_socket::check_backend<inline_threadpool>());
    static_assert(async_socket::check_backend<inline_event_threadpool>());
    static_assert(async_socket::win32_threadpool_calls<async_socket::testing::inline_win32_calls<true>>);
    CHECK_FALSE(inline_threadpool::uses_io_events);
    CHECK(inline_event_threadpool::uses_io_events);
    CHECK_FALSE(async_socket::completes_at_once<inline_threadpool>());
}

TEST_CASE_TEMPLATE("inline_win32_calls: send and receive call the completion routine once, with NO_ERROR and every "
                   "byte, before they return",
                   Threadpool, async_socket::testing::inline_win32_calls<false>,
                   async_socket::testing::inline_win32_calls<true>)
{
    completion_log::calls.clear();
    inline_engine engine;
    Threadpool threadpool;
    REQUIRE(threadpool.acquire_pool(&engine));
    CHECK(threadpool.engine() == &engine);
    int context = 0;
    REQUIRE(threadpool.template create_io<&completion_log::record>(fake_socket(1), &context));

    char data[10] = {};
    inline_wsabuf buffers[3];
    Threadpool::set_buffer(buffers[0], data, 2);
    Threadpool::set_buffer(buffers[1], data + 2, 3);
    Threadpool::set_buffer(buffers[2], data + 5, 5);
    inline_overlapped overlapped{};
    const auto event = Threadpool::uses_io_events ? threadpool.create_event() : 0;
    if (Threadpool::uses_io_events)
    {
        CHECK(event != 0); // a dummy, but not "no event"
    }
    Threadpool::set_overlapped_event(overlapped, event);
    CHECK(overlapped.event == event);

    threadpool.start_io();
    CHECK(threadpool.send(fake_socket(1), buffers, 3, nullptr, 0, &overlapped) == win32_no_error);
    REQUIRE(completion_log::calls.size() == 1);
    CHECK(completion_log::calls[0].callback_context == &context);
    CHECK(completion_log::calls[0].overlapped == &overlapped);
    CHECK(completion_log::calls[0].io_result == win32_no_error);
    CHECK(completion_log::calls[0].bytes == 10);

    std::uint32_t flags = 0;
    threadpool.start_io();
    CHECK(threadpool.receive(fake_socket(1), buffers, 2, nullptr, &flags, &overlapped) == win32_no_error);
    REQUIRE(completion_log::calls.size() == 2);
    CHECK(completion_log::calls[1].bytes == 5);
    CHECK(flags == 0);
    threadpool.close_event(event);
    threadpool.close_io();
}

TEST_CASE_TEMPLATE("a socket over inline_threadpool completes every send and receive exactly once, before the call "
                   "returns, and frees every context",
                   Threadpool, inline_threadpool, inline_event_threadpool)
{
    inline_engine engine;
    alloc_ledger ledger;
    {
        auto socket = inline_socket<Threadpool>::create(&engine, fake_socket(2), {}, fault_alloc{&ledger});
        REQUIRE(socket);
        REQUIRE(socket->open_async(&noop_open, nullptr) == status::ok);

        char data[3][100] = {};
        ASYNC_SOCKET_BUFFER buffers[3] = {{data[0], 100}, {data[1], 50}, {data[2], 7}};
        for (int i = 0; i < 100; ++i)
        {
            inline_send_recorder sent;
            REQUIRE(socket->send_async(buffers, 3, &inline_send_recorder::callback, &sent) == status::ok);
            sent.returned = true;
            CHECK(sent.calls == 1);
            CHECK(sent.ran_before_return);
            CHECK(sent.last == ASYNC_SOCKET_SEND_OK);
        }
        receive_recorder received;
        for (int i = 0; i < 100; ++i)
        {
            REQUIRE(socket->receive_async(buffers, 2, &receive_recorder::callback, &received) == status::ok);
            REQUIRE(received.seen().size() == static_cast<std::size_t>(i + 1));
        }
        for (const receive_recorder::completion& c : received.seen())
        {
            CHECK(c.result == ASYNC_SOCKET_RECEIVE_OK);
            CHECK(c.bytes == 150);
        }
        CHECK(ledger.live_blocks() == 1); // the socket only: each context was freed in its completion
        CHECK(socket->close() == status::ok);
        REQUIRE(socket->open_async(&noop_open, nullptr) == status::ok); // reopen works too
        inline_send_recorder after;
        REQUIRE(socket->send_async(buffers, 1, &inline_send_recorder::callback, &after) == status::ok);
        CHECK(after.calls == 1);
    }
    CHECK(ledger.live_blocks() == 0);
    CHECK(ledger.misuse() == 0);
}

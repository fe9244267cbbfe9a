// The fakes that ship in <async_socket/testing/...>: fake_os with its ThreadpoolPolicy, and fault_alloc.
// Users test their own code with them, so they are tested like any other public part: mostly by
// driving the policy object directly (as the core does), and through a socket where that reads better.
#include <async_socket/testing/fake_threadpool.hpp>
#include <async_socket/testing/fault_alloc.hpp>

#include "../support/fixtures.hpp"

#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

using namespace test_support;
using async_socket::win32_error;
using async_socket::win32_no_error;
using async_socket::win32_operation_aborted;
using async_socket::testing::fake_threadpool_calls;

namespace
{

constexpr auto deadline = std::chrono::seconds(20);

// What the fake handed to the completion routine of a fake threadpool IO.
struct completion_log
{
    struct entry
    {
        void* context;
        void* overlapped;
        win32_error io_result;
        std::size_t bytes;
        std::thread::id thread;
    };

    std::mutex mutex;
    std::condition_variable changed;
    std::vector<entry> entries;

    std::vector<entry> seen()
    {
        std::lock_guard lock(mutex);
        return entries;
    }

    bool wait_for_count(std::size_t n)
    {
        std::unique_lock lock(mutex);
        return changed.wait_for(lock, deadline, [&] { return entries.size() >= n; });
    }

    static void record(void* context, void* overlapped, win32_error io_result, std::size_t bytes) noexcept
    {
        auto* self = static_cast<completion_log*>(context);
        {
            std::lock_guard lock(self->mutex);
            self->entries.push_back({context, overlapped, io_result, bytes, std::this_thread::get_id()});
        }
        self->changed.notify_all();
    }
};

// A fake world and one fake threadpool policy bound to fake socket 9, driven the way the core drives it.
struct direct
{
    fake_os os;
    fake_threadpool_calls tp;
    completion_log log;
    SOCKET_HANDLE socket = fake_socket(9);
    char payload[3] = {};
    std::vector<fake_wsabuf> buffers{{3, payload}}; // what most tests send: 3 bytes in one WSABUF

    direct()
    {
        REQUIRE(tp.acquire_pool(&os));
        REQUIRE(tp.template create_io<&completion_log::record>(socket, &log));
        os.clear_calls();
    }

    // StartThreadpoolIo + WSASend of `with`, as the core issues a send.
    win32_error send(fake_overlapped& overlapped, std::vector<fake_wsabuf>& with)
    {
        tp.start_io();
        return tp.send(socket, with.data(), static_cast<std::uint32_t>(with.size()), nullptr, 0, &overlapped);
    }
    win32_error send(fake_overlapped& overlapped)
    {
        return send(overlapped, buffers);
    }

    win32_error receive(fake_overlapped& overlapped, std::vector<fake_wsabuf>& with)
    {
        tp.start_io();
        std::uint32_t flags = 0;
        return tp.receive(socket, with.data(), static_cast<std::uint32_t>(with.size()), nullptr, &flags, &overlapped);
    }
    win32_error receive(fake_overlapped& overlapped)
    {
        return receive(overlapped, buffers);
    }
};

// Each threadpool IO's pool from `os`, required.
void acquire_pools(fake_os& os, std::initializer_list<fake_threadpool_calls*> pools)
{
    for (fake_threadpool_calls* tp : pools)
    {
        REQUIRE(tp->acquire_pool(&os));
    }
}

bool mentions(const std::vector<std::string>& violations, const std::string& text)
{
    for (const auto& violation : violations)
    {
        if (violation.find(text) != std::string::npos)
        {
            return true;
        }
    }
    return false;
}

} // namespace

// ---------------------------------------------------------------------------------------------------
// Recording
// ---------------------------------------------------------------------------------------------------

TEST_CASE("fake_os records every call in order, with the arguments that call has")
{
    fake_os os;
    fake_threadpool_calls tp;
    completion_log log;
    const SOCKET_HANDLE socket = fake_socket(9);

    REQUIRE(tp.acquire_pool(&os));
    CHECK(tp.os() == &os);
    tp.initialize_environment();
    tp.set_callback_pool();
    REQUIRE(tp.create_cleanup_group());
    REQUIRE(tp.create_io<&completion_log::record>(socket, &log));
    const fake_event event = tp.create_event();
    REQUIRE(event != fake_event{});

    char payload[12] = "hello world";
    std::vector<fake_wsabuf> buffers{{5, payload}, {6, payload + 5}};
    fake_overlapped overlapped{};
    fake_threadpool_calls::set_overlapped_event(overlapped, event);
    tp.start_io();
    REQUIRE(tp.send(socket, buffers.data(), 2, nullptr, 0, &overlapped) == win32_no_error);

    REQUIRE(os.complete(&overlapped, win32_no_error, 11));
    tp.close_event(event);
    tp.wait_for_io_callbacks(false);
    tp.close_io();
    tp.close_cleanup_group();
    tp.destroy_environment();

    CHECK(os.call_names() == std::vector<std::string>{"execution_engine_win32_get_threadpool",
                                                      "InitializeThreadpoolEnvironment", "SetThreadpoolCallbackPool",
                                                      "CreateThreadpoolCleanupGroup", "CreateThreadpoolIo",
                                                      "CreateEvent", "StartThreadpoolIo", "WSASend", "CloseHandle",
                                                      "WaitForThreadpoolIoCallbacks", "CloseThreadpoolIo",
                                                      "CloseThreadpoolCleanupGroup", "DestroyThreadpoolEnvironment"});

    const std::vector<call_record> calls = os.calls();
    REQUIRE(calls.size() == 13);
    CHECK(calls[4].socket == socket);
    CHECK(calls[4].io_id != 0);
    CHECK(calls[5].event == event);
    const call_record& send = calls[7];
    CHECK(send.io_id == calls[4].io_id);
    CHECK(send.socket == socket);
    CHECK(send.overlapped == &overlapped);
    CHECK(send.event == event);
    CHECK(send.buffer_count == 2);
    REQUIRE(send.buffers.size() == 2);
    CHECK(send.buffers[0].buf == payload);
    CHECK(send.buffers[0].len == 5);
    CHECK(send.buffers[1].buf == payload + 5);
    CHECK(send.buffers[1].len == 6);
    CHECK(send.flags == 0);
    CHECK(send.bytes_pointer_is_null);
    CHECK_FALSE(send.failed);
    CHECK(calls[8].event == event);
    CHECK_FALSE(calls[9].cancel_pending);

    CHECK(os.count(fake_call::wsa_send) == 1);
    CHECK(os.count(fake_call::wsa_recv) == 0);
    REQUIRE(log.seen().size() == 1);
    CHECK(log.seen()[0].context == &log);
    CHECK(log.seen()[0].overlapped == &overlapped);
    CHECK(log.seen()[0].io_result == win32_no_error);
    CHECK(log.seen()[0].bytes == 11);
    CHECK(log.seen()[0].thread == std::this_thread::get_id());
    CHECK(os.violations().empty());
    CHECK(os.live_events() == 0);
    CHECK(os.live_ios() == 0);

    os.clear_calls();
    CHECK(os.calls().empty());
}

TEST_CASE("a socket's life reads as its Win32 call sequence, and each IO's records carry the socket and its event")
{
    fixture f;
    REQUIRE(f.socket);
    char payload[4] = {1, 2, 3, 4};
    ASYNC_SOCKET_BUFFER buffer{payload, sizeof(payload)};
    receive_recorder received;
    REQUIRE(f.socket->receive_async(&buffer, 1, &receive_recorder::callback, &received) == status::ok);

    const std::vector<call_record> calls = f.os.calls();
    REQUIRE(calls.size() >= 3);
    const call_record& recv = calls.back();
    CHECK(recv.call == fake_call::wsa_recv);
    CHECK(recv.socket == fake_socket(42));
    CHECK(recv.event == calls[calls.size() - 3].event); // the event CreateEvent made for this IO
    CHECK(recv.event != fake_event{});
    CHECK(recv.flags == 0);
    CHECK(recv.bytes_pointer_is_null);
    CHECK(f.os.pending_count() == 1);
    CHECK(f.os.pending()[0].kind == fake_call::wsa_recv);
    CHECK(f.os.pending()[0].total_length == sizeof(payload));
    CHECK(f.os.live_events() == 1);
    CHECK(f.os.live_ios() == 1);

    f.os.set_cancel_behavior(cancel_behavior::abort_inline);
    CHECK(f.socket->close() == status::ok);
    f.socket.reset();
    CHECK(f.os.live_events() == 0);
    CHECK(f.os.live_ios() == 0);
    CHECK(f.os.violations().empty());
}

// ---------------------------------------------------------------------------------------------------
// Failing on demand
// ---------------------------------------------------------------------------------------------------

TEST_CASE("fail(call, skip) fails exactly the (skip + 1)-th next call of that kind, and only that one")
{
    direct d;
    d.os.fail(fake_call::create_event, 2);

    CHECK(d.tp.create_event() != fake_event{});
    CHECK(d.tp.create_event() != fake_event{});
    CHECK(d.tp.create_event() == fake_event{}); // the third: failed
    CHECK(d.tp.create_event() != fake_event{}); // the failure was used up
    const std::vector<call_record> calls = d.os.calls();
    REQUIRE(calls.size() == 4);
    CHECK_FALSE(calls[0].failed);
    CHECK_FALSE(calls[1].failed);
    CHECK(calls[2].failed);
    CHECK_FALSE(calls[3].failed);
    CHECK(d.os.live_events() == 3);
    for (const call_record& record : calls)
    {
        if (!record.failed)
        {
            d.tp.close_event(record.event);
        }
    }
    CHECK(d.os.violations().empty());
}

TEST_CASE("fail(call) with no skip fails the very next call, and other kinds of call are not affected")
{
    direct d;
    d.os.fail(fake_call::create_cleanup_group);
    d.tp.initialize_environment();
    const fake_event event = d.tp.create_event();
    CHECK(event != fake_event{});
    CHECK_FALSE(d.tp.create_cleanup_group());
    CHECK(d.tp.create_cleanup_group());
    d.tp.close_event(event);
    CHECK(d.os.violations().empty());
}

TEST_CASE("a failed WSASend returns the planned error, issues no IO and leaves the StartThreadpoolIo to cancel")
{
    direct d;
    d.os.fail(fake_call::wsa_send, 1, 10054 /* WSAECONNRESET */);
    fake_overlapped first{};
    fake_overlapped second{};
    fake_overlapped third{};

    CHECK(d.send(first) == win32_no_error);
    CHECK(d.send(second) == 10054);
    d.tp.cancel_io(); // what the core does after a failed WSASend: no violation
    CHECK(d.send(third) == win32_no_error);

    CHECK(d.os.pending_count() == 2);
    CHECK_FALSE(d.os.complete(&second, win32_no_error, 3)); // never issued
    CHECK(d.os.complete(&first, win32_no_error, 3));
    CHECK(d.os.complete(&third, win32_no_error, 3));
    CHECK(d.log.seen().size() == 2);
    CHECK(d.os.violations().empty());
}

TEST_CASE("the failures a socket sees from the fake: CreateThreadpoolIo at open, WSARecv at receive")
{
    fixture f(false);
    REQUIRE(f.socket);
    f.os.fail(fake_call::create_io);
    CHECK(f.socket->open_async(&open_recorder::callback, &f.opened) == status::os_error);
    CHECK(f.opened.calls == 0);
    // A failed CreateThreadpoolIo binds nothing: the next open binds the socket.
    CHECK(f.socket->open_async(&open_recorder::callback, &f.opened) == status::ok);

    f.os.fail(fake_call::wsa_recv, 1);
    char payload[8] = {};
    ASYNC_SOCKET_BUFFER buffer{payload, sizeof(payload)};
    receive_recorder received;
    CHECK(f.socket->receive_async(&buffer, 1, &receive_recorder::callback, &received) == status::ok);
    CHECK(f.socket->receive_async(&buffer, 1, &receive_recorder::callback, &received) == status::os_error);
    CHECK(f.os.count(fake_call::cancel_io) == 1);
    CHECK(f.os.pending_count() == 1);

    f.os.set_cancel_behavior(cancel_behavior::abort_inline);
    CHECK(f.socket->close() == status::ok);
    REQUIRE(received.seen().size() == 1);
    CHECK(received.seen()[0].result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
    f.socket.reset();
    CHECK(f.os.violations().empty());
    CHECK(f.ledger.live_blocks() == 0);
}

TEST_CASE("fail(get_threadpool) makes acquire_pool fail, and a socket cannot be created")
{
    fake_os os;
    os.fail(fake_call::get_threadpool);
    alloc_ledger ledger;
    auto socket = fake_socket_type::create(&os, fake_socket(1), {}, fault_alloc{&ledger});
    CHECK_FALSE(socket);
    CHECK(ledger.live_blocks() == 0);
    REQUIRE(os.calls().size() == 1);
    CHECK(os.calls()[0].failed);
}

TEST_CASE("fail() on a call that has no failure result leaves that call working")
{
    direct d;
    d.os.fail(fake_call::start_io);
    fake_overlapped overlapped{};
    CHECK(d.send(overlapped) == win32_no_error);
    CHECK(d.os.violations().empty()); // the IO was started: WSASend was legal
    CHECK(d.os.complete(&overlapped, win32_no_error, 3));
}

// Regression: the record used to say failed for a call without a failure result that had used up a planned failure.
TEST_CASE("fail() on a call that has no failure result does not mark that call failed")
{
    direct d;
    d.os.fail(fake_call::start_io);
    d.tp.start_io();
    d.tp.cancel_io();
    const std::vector<call_record> calls = d.os.calls();
    REQUIRE(calls.size() == 2);
    CHECK_FALSE(calls[0].failed);
}

// ---------------------------------------------------------------------------------------------------
// The OS rules the fake enforces
// ---------------------------------------------------------------------------------------------------

TEST_CASE("a second CreateThreadpoolIo on the same socket fails: a socket binds to one threadpool IO for life")
{
    fake_os os;
    fake_threadpool_calls first;
    fake_threadpool_calls second;
    fake_threadpool_calls other;
    completion_log log;
    acquire_pools(os, {&first, &second, &other});

    CHECK(first.create_io<&completion_log::record>(fake_socket(7), &log));
    CHECK_FALSE(second.create_io<&completion_log::record>(fake_socket(7), &log));
    CHECK(other.create_io<&completion_log::record>(fake_socket(8), &log));
    CHECK(os.calls().back().socket == fake_socket(8));
    CHECK(os.calls()[os.calls().size() - 2].failed);

    // Closing the first threadpool IO does not unbind the socket.
    first.close_io();
    CHECK_FALSE(second.create_io<&completion_log::record>(fake_socket(7), &log));
    CHECK(os.live_ios() == 1);
    other.close_io();
    CHECK(os.violations().empty());
}

TEST_CASE("two sockets over one SOCKET: the second cannot open, even after the first is destroyed")
{
    fake_os os;
    open_recorder opened;
    auto first = fake_socket_type::create(&os, fake_socket(7));
    auto second = fake_socket_type::create(&os, fake_socket(7));
    REQUIRE(first);
    REQUIRE(second);
    CHECK(first->open_async(&open_recorder::callback, &opened) == status::ok);
    CHECK(second->open_async(&open_recorder::callback, &opened) == status::os_error);
    first.reset();
    CHECK(second->open_async(&open_recorder::callback, &opened) == status::os_error);
    CHECK(opened.calls == 1);
    CHECK(os.violations().empty());
}

TEST_CASE("WSASend without a StartThreadpoolIo before it is a violation")
{
    direct d;
    fake_overlapped overlapped{};
    CHECK(d.tp.send(d.socket, d.buffers.data(), 1, nullptr, 0, &overlapped) == win32_no_error);
    CHECK(mentions(d.os.violations(), "WSASend without a StartThreadpoolIo"));
    CHECK(d.os.complete(&overlapped, win32_no_error, 3));
}

TEST_CASE("WSARecv without a StartThreadpoolIo before it is a violation")
{
    direct d;
    fake_overlapped overlapped{};
    std::uint32_t flags = 0;
    CHECK(d.tp.receive(d.socket, d.buffers.data(), 1, nullptr, &flags, &overlapped) == win32_no_error);
    CHECK(mentions(d.os.violations(), "WSARecv without a StartThreadpoolIo"));
    CHECK(d.os.complete(&overlapped, win32_no_error, 0));
}

TEST_CASE("one StartThreadpoolIo covers one IO only")
{
    direct d;
    fake_overlapped first{};
    fake_overlapped second{};
    CHECK(d.send(first) == win32_no_error);
    CHECK(d.os.violations().empty());
    CHECK(d.tp.send(d.socket, d.buffers.data(), 1, nullptr, 0, &second) == win32_no_error);
    CHECK(mentions(d.os.violations(), "WSASend without a StartThreadpoolIo"));
    CHECK(d.os.complete(&first, win32_no_error, 3));
    CHECK(d.os.complete(&second, win32_no_error, 3));
}

TEST_CASE("CancelThreadpoolIo without a StartThreadpoolIo to cancel is a violation")
{
    direct d;
    d.tp.cancel_io();
    CHECK(mentions(d.os.violations(), "CancelThreadpoolIo without a StartThreadpoolIo"));
}

namespace
{
// Issues a send, then does `act` on the threadpool IO, and checks that the fake reports `violation`.
template <class Act>
void check_violation_with_send_outstanding(Act act, const std::string& violation)
{
    direct d;
    fake_overlapped overlapped{};
    CHECK(d.send(overlapped) == win32_no_error);
    act(d.tp);
    CHECK(mentions(d.os.violations(), violation));
    CHECK(d.os.complete(&overlapped, win32_no_error, 3));
}
} // namespace

TEST_CASE("CancelThreadpoolIo after an issued IO is a violation: the start was used by the IO")
{
    check_violation_with_send_outstanding([](fake_threadpool_calls& tp) { tp.cancel_io(); },
                                          "CancelThreadpoolIo without a StartThreadpoolIo");
}

TEST_CASE("CloseThreadpoolIo with an IO outstanding is a violation")
{
    check_violation_with_send_outstanding([](fake_threadpool_calls& tp) { tp.close_io(); },
                                          "CloseThreadpoolIo with IO outstanding");
}

TEST_CASE("CloseThreadpoolIo after a StartThreadpoolIo that was neither used nor cancelled is a violation")
{
    direct d;
    d.tp.start_io();
    d.tp.close_io();
    CHECK(mentions(d.os.violations(), "CloseThreadpoolIo with IO outstanding"));
}

TEST_CASE("calls on a threadpool IO after CloseThreadpoolIo are violations")
{
    direct d;
    d.tp.close_io();
    CHECK(d.os.violations().empty());
    d.tp.start_io();
    CHECK(mentions(d.os.violations(), "StartThreadpoolIo on a threadpool IO that does not exist or was closed"));
    fake_overlapped overlapped{};
    CHECK(d.tp.send(d.socket, d.buffers.data(), 1, nullptr, 0, &overlapped) != win32_no_error);
    CHECK(d.os.pending_count() == 0);
}

namespace
{
// A completion routine that waits for its own threadpool IO's callbacks, as close would if called from a callback.
struct waits_for_itself
{
    fake_threadpool_calls* tp = nullptr;
    int calls = 0;

    static void on_complete(void* context, void*, win32_error, std::size_t) noexcept
    {
        auto* self = static_cast<waits_for_itself*>(context);
        ++self->calls;
        self->tp->wait_for_io_callbacks(false);
    }
};
} // namespace

TEST_CASE("WaitForThreadpoolIoCallbacks from inside a callback of the same IO is a violation, not a deadlock")
{
    fake_os os;
    fake_threadpool_calls tp;
    waits_for_itself callback{&tp};
    REQUIRE(tp.acquire_pool(&os));
    REQUIRE(tp.create_io<&waits_for_itself::on_complete>(fake_socket(3), &callback));
    char payload[3] = {};
    fake_wsabuf buffer{3, payload};
    fake_overlapped overlapped{};
    tp.start_io();
    REQUIRE(tp.send(fake_socket(3), &buffer, 1, nullptr, 0, &overlapped) == win32_no_error);

    CHECK(os.complete(&overlapped, win32_no_error, 3));
    CHECK(callback.calls == 1);
    CHECK(mentions(os.violations(), "WaitForThreadpoolIoCallbacks called from inside a callback"));
}

TEST_CASE("CloseHandle of an event that is not open is a violation, and so is closing an event twice")
{
    direct d;
    d.tp.close_event(0x4242);
    CHECK(mentions(d.os.violations(), "CloseHandle on an event that is not open"));
    CHECK(d.os.violations().size() == 1);

    const fake_event event = d.tp.create_event();
    d.tp.close_event(event);
    CHECK(d.os.violations().size() == 1);
    d.tp.close_event(event);
    CHECK(d.os.violations().size() == 2);
    CHECK(d.os.live_events() == 0);
}

// ---------------------------------------------------------------------------------------------------
// The watchdog
// ---------------------------------------------------------------------------------------------------

TEST_CASE("the watchdog ends a WaitForThreadpoolIoCallbacks that would hang, and reports it")
{
    direct d;
    d.os.set_watchdog(std::chrono::milliseconds(200));
    fake_overlapped overlapped{};
    REQUIRE(d.receive(overlapped) == win32_no_error);

    d.tp.wait_for_io_callbacks(false); // nobody completes the receive: would block forever

    CHECK(mentions(d.os.violations(), "WaitForThreadpoolIoCallbacks hung"));
    CHECK(d.os.pending_count() == 1);
    CHECK(d.os.complete(&overlapped, win32_operation_aborted, 0));
}

TEST_CASE("a socket whose close would hang on a receive nobody cancels returns from close with a violation")
{
    fixture f;
    REQUIRE(f.socket);
    f.os.set_watchdog(std::chrono::milliseconds(200));
    f.os.set_cancel_behavior(cancel_behavior::ignore); // CancelIoEx that does not cancel
    char payload[8] = {};
    ASYNC_SOCKET_BUFFER buffer{payload, sizeof(payload)};
    receive_recorder received;
    REQUIRE(f.socket->receive_async(&buffer, 1, &receive_recorder::callback, &received) == status::ok);

    CHECK(f.socket->close() == status::ok);

    CHECK(mentions(f.os.violations(), "WaitForThreadpoolIoCallbacks hung"));
    CHECK(received.seen().empty());
    CHECK(f.os.complete_oldest(win32_operation_aborted, 0)); // let the receive go, or it would leak
    CHECK(received.seen().size() == 1);
}

// ---------------------------------------------------------------------------------------------------
// Delivering completions
// ---------------------------------------------------------------------------------------------------

TEST_CASE("complete_receive copies the data across the WSABUFs in order and reports the bytes copied")
{
    direct d;
    std::array<char, 3> a{};
    std::array<char, 4> b{};
    std::array<char, 5> c{'x', 'x', 'x', 'x', 'x'};
    std::vector<fake_wsabuf> buffers{{3, a.data()}, {4, b.data()}, {5, c.data()}};
    fake_overlapped overlapped{};
    REQUIRE(d.receive(overlapped, buffers) == win32_no_error);

    const char text[] = "0123456789";
    const auto data = std::as_bytes(std::span(text, 10));
    CHECK(d.os.complete_receive(&overlapped, data));

    CHECK(std::string(a.data(), 3) == "012");
    CHECK(std::string(b.data(), 4) == "3456");
    CHECK(std::string(c.data(), 5) == "789xx"); // the rest of the last buffer is untouched
    REQUIRE(d.log.seen().size() == 1);
    CHECK(d.log.seen()[0].io_result == win32_no_error);
    CHECK(d.log.seen()[0].bytes == 10);
    CHECK(d.os.pending_count() == 0);
}

TEST_CASE("complete_receive copies no more than the buffers hold")
{
    direct d;
    std::array<char, 4> a{};
    std::vector<fake_wsabuf> buffers{{4, a.data()}};
    fake_overlapped overlapped{};
    REQUIRE(d.receive(overlapped, buffers) == win32_no_error);
    const char text[] = "abcdefgh";
    CHECK(d.os.complete_receive(&overlapped, std::as_bytes(std::span(text, 8))));
    CHECK(std::string(a.data(), 4) == "abcd");
    REQUIRE(d.log.seen().size() == 1);
    CHECK(d.log.seen()[0].bytes == 4);
}

TEST_CASE("complete_receive refuses a send and an IO that is not outstanding")
{
    direct d;
    fake_overlapped send{};
    fake_overlapped unknown{};
    REQUIRE(d.send(send) == win32_no_error);
    const char text[] = "ab";
    CHECK_FALSE(d.os.complete_receive(&send, std::as_bytes(std::span(text, 2))));
    CHECK_FALSE(d.os.complete_receive(&unknown, std::as_bytes(std::span(text, 2))));
    CHECK(d.log.seen().empty());
    CHECK(d.os.complete(&send, win32_no_error, 3));
}

TEST_CASE("a socket's receive gets the data complete_receive delivers, across its buffers")
{
    fixture f;
    REQUIRE(f.socket);
    char first[2] = {};
    char second[6] = {};
    ASYNC_SOCKET_BUFFER buffers[2] = {{first, sizeof(first)}, {second, sizeof(second)}};
    receive_recorder received;
    REQUIRE(f.socket->receive_async(buffers, 2, &receive_recorder::callback, &received) == status::ok);
    const char text[] = "hello";
    REQUIRE(f.os.complete_receive(f.os.pending()[0].overlapped, std::as_bytes(std::span(text, 5))));
    REQUIRE(received.seen().size() == 1);
    CHECK(received.seen()[0].result == ASYNC_SOCKET_RECEIVE_OK);
    CHECK(received.seen()[0].bytes == 5);
    CHECK(std::string(first, 2) == "he");
    CHECK(std::string(second, 3) == "llo");
}

TEST_CASE("complete and complete_oldest deliver each IO once, oldest first, and refuse when nothing is outstanding")
{
    direct d;
    CHECK_FALSE(d.os.complete_oldest(win32_no_error, 0));
    fake_overlapped first{};
    fake_overlapped second{};
    REQUIRE(d.send(first) == win32_no_error);
    REQUIRE(d.receive(second) == win32_no_error);

    CHECK(d.os.complete_oldest(64, 0));
    CHECK_FALSE(d.os.complete(&first, win32_no_error, 3)); // already completed
    CHECK(d.os.complete_oldest(win32_no_error, 2));
    CHECK_FALSE(d.os.complete_oldest(win32_no_error, 0));

    const auto seen = d.log.seen();
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].overlapped == &first);
    CHECK(seen[0].io_result == 64);
    CHECK(seen[1].overlapped == &second);
    CHECK(seen[1].bytes == 2);
}

TEST_CASE("complete_on_worker delivers on a worker thread, and wait_until_idle waits for it")
{
    direct d;
    d.os.set_worker_count(2);
    std::array<fake_overlapped, 8> overlapped{};
    for (auto& o : overlapped)
    {
        REQUIRE(d.send(o) == win32_no_error);
    }
    for (auto& o : overlapped)
    {
        d.os.complete_on_worker(&o, win32_no_error, 3);
    }
    CHECK(d.os.wait_until_idle(std::chrono::duration_cast<std::chrono::milliseconds>(deadline)));

    const auto seen = d.log.seen();
    REQUIRE(seen.size() == overlapped.size());
    for (const auto& entry : seen)
    {
        CHECK(entry.thread != std::this_thread::get_id());
        CHECK(entry.io_result == win32_no_error);
    }
    CHECK(d.os.pending_count() == 0);
    CHECK(d.os.violations().empty());
}

TEST_CASE("wait_until_idle reports false while an IO is still outstanding")
{
    direct d;
    fake_overlapped overlapped{};
    REQUIRE(d.send(overlapped) == win32_no_error);
    CHECK_FALSE(d.os.wait_until_idle(std::chrono::milliseconds(50)));
    CHECK(d.os.complete(&overlapped, win32_no_error, 3));
    CHECK(d.os.wait_until_idle(std::chrono::milliseconds(0)));
}

TEST_CASE("on_issue sees every IO the fake accepts, before WSASend returns, and none that failed")
{
    direct d;
    std::vector<pending_io> issued;
    d.os.on_issue([&](const pending_io& io) { issued.push_back(io); });
    d.os.fail(fake_call::wsa_send, 1);
    char payload[10] = {};
    std::vector<fake_wsabuf> buffers{{4, payload}, {6, payload + 4}};
    fake_overlapped first{};
    fake_overlapped second{};
    fake_overlapped third{};
    REQUIRE(d.send(first, buffers) == win32_no_error);
    REQUIRE(issued.size() == 1);
    CHECK(issued[0].overlapped == &first);
    CHECK(issued[0].kind == fake_call::wsa_send);
    CHECK(issued[0].total_length == 10);
    CHECK(issued[0].buffers.size() == 2);
    CHECK(issued[0].socket == d.socket);

    CHECK(d.send(second, buffers) != win32_no_error);
    d.tp.cancel_io();
    CHECK(issued.size() == 1);
    REQUIRE(d.receive(third, buffers) == win32_no_error);
    REQUIRE(issued.size() == 2);
    CHECK(issued[1].kind == fake_call::wsa_recv);

    CHECK(d.os.complete(&first, win32_no_error, 10));
    CHECK(d.os.complete(&third, win32_no_error, 0));
    CHECK(d.os.violations().empty());
}

TEST_CASE("CancelIoEx aborts the socket's outstanding IO as the cancel behaviour says, and no other socket's")
{
    fake_os os;
    fake_threadpool_calls mine;
    fake_threadpool_calls theirs;
    completion_log my_log;
    completion_log their_log;
    acquire_pools(os, {&mine, &theirs});
    REQUIRE(mine.create_io<&completion_log::record>(fake_socket(1), &my_log));
    REQUIRE(theirs.create_io<&completion_log::record>(fake_socket(2), &their_log));
    char payload[3] = {};
    fake_wsabuf buffer{3, payload};
    std::uint32_t flags = 0;
    std::array<fake_overlapped, 2> my_ios{};
    fake_overlapped their_io{};
    for (auto& o : my_ios)
    {
        mine.start_io();
        REQUIRE(mine.receive(fake_socket(1), &buffer, 1, nullptr, &flags, &o) == win32_no_error);
    }
    theirs.start_io();
    REQUIRE(theirs.receive(fake_socket(2), &buffer, 1, nullptr, &flags, &their_io) == win32_no_error);

    SUBCASE("abort_on_worker (the default) completes each with ERROR_OPERATION_ABORTED on a worker")
    {
        mine.cancel_socket_io(fake_socket(1));
        REQUIRE(my_log.wait_for_count(2));
        for (const auto& entry : my_log.seen())
        {
            CHECK(entry.io_result == win32_operation_aborted);
            CHECK(entry.bytes == 0);
            CHECK(entry.thread != std::this_thread::get_id());
        }
    }
    SUBCASE("abort_inline completes each with ERROR_OPERATION_ABORTED before CancelIoEx returns")
    {
        os.set_cancel_behavior(cancel_behavior::abort_inline);
        mine.cancel_socket_io(fake_socket(1));
        REQUIRE(my_log.seen().size() == 2);
        for (const auto& entry : my_log.seen())
        {
            CHECK(entry.io_result == win32_operation_aborted);
            CHECK(entry.thread == std::this_thread::get_id());
        }
    }
    SUBCASE("ignore leaves them outstanding")
    {
        os.set_cancel_behavior(cancel_behavior::ignore);
        mine.cancel_socket_io(fake_socket(1));
        CHECK(my_log.seen().empty());
        CHECK(os.pending_count() == 3);
        CHECK(os.complete(&my_ios[0], win32_operation_aborted, 0));
        CHECK(os.complete(&my_ios[1], win32_operation_aborted, 0));
    }

    CHECK(os.pending_count() == 1); // theirs is untouched
    CHECK(their_log.seen().empty());
    CHECK(os.count(fake_call::cancel_socket_io) == 1);
    CHECK(os.complete(&their_io, win32_no_error, 0));
    CHECK(os.wait_until_idle(std::chrono::duration_cast<std::chrono::milliseconds>(deadline)));
    CHECK(os.violations().empty());
}

namespace
{
// A completion routine that blocks its worker until the test lets it go, and on request re-issues an IO with
// the same OVERLAPPED from inside the callback (as a socket's user does when the next IO reuses the memory).
struct gated_completions
{
    fake_threadpool_calls* tp = nullptr;
    fake_overlapped* gate = nullptr;    // the IO whose callback blocks
    fake_overlapped* reissue = nullptr; // the IO whose callback issues the next IO in the same OVERLAPPED
    fake_wsabuf* buffer = nullptr;
    std::mutex mutex;
    std::condition_variable changed;
    bool gate_entered = false;
    bool gate_open = false;
    std::vector<std::pair<void*, win32_error>> seen;

    static void on_complete(void* context, void* overlapped, win32_error io_result, std::size_t) noexcept
    {
        auto* self = static_cast<gated_completions*>(context);
        std::unique_lock lock(self->mutex);
        self->seen.emplace_back(overlapped, io_result);
        if (overlapped == self->gate)
        {
            self->gate_entered = true;
            self->changed.notify_all();
            self->changed.wait_for(lock, deadline, [self] { return self->gate_open; });
        }
        else if (overlapped == self->reissue && self->seen.size() == 2)
        {
            lock.unlock();
            self->tp->start_io();
            (void)self->tp->send(fake_socket(9), self->buffer, 1, nullptr, 0, self->reissue);
        }
    }
};

// One worker, a threadpool IO over fake socket 9 with gated_completions as its routine, and a send issued in
// `gate`, whose callback will hold the worker until open_gate().
struct gated_world
{
    fake_os os;
    fake_threadpool_calls tp;
    gated_completions completions;
    char payload[3] = {};
    fake_wsabuf buffer{3, payload};
    fake_overlapped gate{};

    gated_world()
    {
        os.set_worker_count(1);
        completions.tp = &tp;
        completions.gate = &gate;
        completions.buffer = &buffer;
        REQUIRE(tp.acquire_pool(&os));
        REQUIRE(tp.create_io<&gated_completions::on_complete>(fake_socket(9), &completions));
        tp.start_io();
        REQUIRE(tp.send(fake_socket(9), &buffer, 1, nullptr, 0, &gate) == win32_no_error);
    }

    void wait_until_gate_entered()
    {
        std::unique_lock lock(completions.mutex);
        REQUIRE(completions.changed.wait_for(lock, deadline, [&] { return completions.gate_entered; }));
    }

    void open_gate()
    {
        {
            std::lock_guard lock(completions.mutex);
            completions.gate_open = true;
        }
        completions.changed.notify_all();
    }
};
} // namespace

// CancelIoEx cannot cancel an IO whose completion packet the OS has already queued: that IO completes once, with its
// own result. Regression: the fake's cancel_socket_io used to queue a second, aborted completion for an IO that
// complete_on_worker had already queued; when that IO's callback had started a new IO in the same OVERLAPPED (the
// core frees the context before the user's callback, so the next IO often gets the same block), the stale abort
// completed the new IO, which nobody had cancelled.
TEST_CASE_FIXTURE(gated_world,
                  "CancelIoEx does not add a second completion to an IO whose completion is already queued")
{
    fake_overlapped reused{};
    completions.reissue = &reused;
    tp.start_io();
    REQUIRE(tp.send(fake_socket(9), &buffer, 1, nullptr, 0, &reused) == win32_no_error);

    // The only worker runs the gate's callback and stays there; `reused` completes successfully, queued behind.
    os.complete_on_worker(&gate, win32_no_error, 3);
    wait_until_gate_entered();
    os.complete_on_worker(&reused, win32_no_error, 3);

    tp.cancel_socket_io(fake_socket(9)); // `reused` is already completed as far as the OS is concerned

    open_gate();
    // `reused` completes with NO_ERROR and its callback issues a new IO in the same OVERLAPPED; that one must
    // stay outstanding: nobody cancelled it.
    CHECK_FALSE(os.wait_until_idle(std::chrono::milliseconds(200)));

    std::lock_guard lock(completions.mutex);
    REQUIRE(completions.seen.size() >= 2);
    CHECK(completions.seen[1] == std::pair<void*, win32_error>{&reused, win32_no_error});
    CHECK(completions.seen.size() == 2); // the new IO in `reused` was not completed
    CHECK(os.pending_count() == 1);
    CHECK_MESSAGE(os.violations().empty(), joined(os.violations()));
}

TEST_CASE_FIXTURE(
    gated_world,
    "an IO whose completion is queued to a worker can no longer be completed, received into or queued again")
{
    fake_overlapped queued{};
    tp.start_io();
    std::uint32_t flags = 0;
    REQUIRE(tp.receive(fake_socket(9), &buffer, 1, nullptr, &flags, &queued) == win32_no_error);

    CHECK(os.complete_on_worker(&gate, win32_no_error, 3)); // the only worker blocks in the gate's callback
    wait_until_gate_entered();
    CHECK(os.complete_on_worker(&queued, win32_no_error, 2));
    const std::vector<pending_io> pending = os.pending();
    REQUIRE(pending.size() == 1);
    CHECK(pending[0].overlapped == &queued);
    CHECK(pending[0].completion_queued);

    CHECK_FALSE(os.complete(&queued, win32_no_error, 1));
    const char text[] = "x";
    CHECK_FALSE(os.complete_receive(&queued, std::as_bytes(std::span(text, 1))));
    CHECK_FALSE(os.complete_oldest(win32_no_error, 1));
    CHECK(os.violations().empty());
    CHECK_FALSE(os.complete_on_worker(&queued, win32_no_error, 3));
    CHECK(mentions(os.violations(), "a completion was queued for an IO that is not outstanding or already completing"));

    open_gate();
    CHECK(os.wait_until_idle(std::chrono::duration_cast<std::chrono::milliseconds>(deadline)));
    std::lock_guard lock(completions.mutex);
    REQUIRE(completions.seen.size() == 2);
    CHECK(completions.seen[1] == std::pair<void*, win32_error>{&queued, win32_no_error}); // once, with its own result
}

TEST_CASE("complete_on_worker of an IO that is not outstanding is refused and reported")
{
    direct d;
    fake_overlapped unknown{};
    CHECK_FALSE(d.os.complete_on_worker(&unknown, win32_no_error, 0));
    CHECK(mentions(d.os.violations(), "a completion was queued for an IO that is not outstanding"));
    CHECK(d.log.seen().empty());
}

TEST_CASE("clear_failures drops the failures planned and not yet happened")
{
    direct d;
    d.os.fail(fake_call::create_event);
    d.os.fail(fake_call::wsa_send, 0, 10054);
    d.os.clear_failures();
    const fake_event event = d.tp.create_event();
    CHECK(event != fake_event{});
    fake_overlapped overlapped{};
    CHECK(d.send(overlapped) == win32_no_error);
    CHECK(d.os.complete(&overlapped, win32_no_error, 3));
    d.tp.close_event(event);
    CHECK(d.os.violations().empty());
}

// ---------------------------------------------------------------------------------------------------
// fault_alloc
// ---------------------------------------------------------------------------------------------------

TEST_CASE("fault_alloc counts live blocks and bytes, and attempts including failed ones")
{
    alloc_ledger ledger;
    fault_alloc alloc{&ledger};
    void* a = alloc.allocate(10);
    void* b = alloc.allocate(22);
    REQUIRE(a != nullptr);
    REQUIRE(b != nullptr);
    CHECK(a != b);
    CHECK(reinterpret_cast<std::uintptr_t>(a) % alignof(std::max_align_t) == 0);
    CHECK(ledger.live_blocks() == 2);
    CHECK(ledger.live_bytes() == 32);
    CHECK(ledger.allocations() == 2);
    alloc.deallocate(a, 10);
    CHECK(ledger.live_blocks() == 1);
    CHECK(ledger.live_bytes() == 22);
    fault_alloc copy = alloc; // copies share the ledger
    copy.deallocate(b, 22);
    CHECK(ledger.live_blocks() == 0);
    CHECK(ledger.live_bytes() == 0);
    alloc.deallocate(nullptr, 5); // ignored, as free(nullptr)
    CHECK(ledger.misuse() == 0);
    CHECK(ledger.failed_allocations() == 0);
}

TEST_CASE("fault_alloc fail_nth(n) fails exactly the n-th allocation from now, once; fail_nth(0) cancels")
{
    alloc_ledger ledger;
    fault_alloc alloc{&ledger};
    ledger.fail_nth(3);
    void* first = alloc.allocate(8);
    void* second = alloc.allocate(8);
    void* third = alloc.allocate(8);
    void* fourth = alloc.allocate(8);
    CHECK(first != nullptr);
    CHECK(second != nullptr);
    CHECK(third == nullptr);
    CHECK(fourth != nullptr);
    CHECK(ledger.allocations() == 4);
    CHECK(ledger.failed_allocations() == 1);
    CHECK(ledger.live_blocks() == 3);

    ledger.fail_nth(1);
    CHECK(alloc.allocate(8) == nullptr);

    ledger.fail_nth(1);
    ledger.fail_nth(0);
    void* fifth = alloc.allocate(8);
    CHECK(fifth != nullptr);
    CHECK(ledger.failed_allocations() == 2);

    for (void* p : {first, second, fourth, fifth})
    {
        alloc.deallocate(p, 8);
    }
    CHECK(ledger.live_blocks() == 0);
}

TEST_CASE("fault_alloc fail_all fails every allocation while it is on")
{
    alloc_ledger ledger;
    fault_alloc alloc{&ledger};
    ledger.fail_all(true);
    CHECK(alloc.allocate(1) == nullptr);
    CHECK(alloc.allocate(100) == nullptr);
    CHECK(ledger.failed_allocations() == 2);
    CHECK(ledger.live_blocks() == 0);
    ledger.fail_all(false);
    void* p = alloc.allocate(1);
    CHECK(p != nullptr);
    alloc.deallocate(p, 1);
    CHECK(ledger.live_blocks() == 0);
}

TEST_CASE("fault_alloc counts a deallocate with the wrong size as misuse and leaves the block alone")
{
    alloc_ledger ledger;
    fault_alloc alloc{&ledger};
    void* p = alloc.allocate(32);
    REQUIRE(p != nullptr);
    std::memset(p, 0x5a, 32);

    alloc.deallocate(p, 31);
    CHECK(ledger.misuse() == 1);
    CHECK(ledger.live_blocks() == 1); // not freed: the block is still the caller's
    CHECK(static_cast<unsigned char*>(p)[31] == 0x5a);

    alloc.deallocate(p, 32); // the right size frees it
    CHECK(ledger.misuse() == 1);
    CHECK(ledger.live_blocks() == 0);
}

TEST_CASE("fault_alloc without a ledger neither counts nor fails")
{
    fault_alloc alloc;
    void* p = alloc.allocate(16);
    REQUIRE(p != nullptr);
    std::memset(p, 1, 16);
    alloc.deallocate(p, 16);
    CHECK(p != nullptr);
}

TEST_CASE("a socket over fault_alloc: a failed allocation fails create or the IO, before any OS call")
{
    fake_os os;
    alloc_ledger ledger;
    ledger.fail_all(true);
    CHECK_FALSE(fake_socket_type::create(&os, fake_socket(1), {}, fault_alloc{&ledger}));
    CHECK(os.calls().empty());
    ledger.fail_all(false);

    auto socket = fake_socket_type::create(&os, fake_socket(1), {}, fault_alloc{&ledger});
    REQUIRE(socket);
    open_recorder opened;
    REQUIRE(socket->open_async(&open_recorder::callback, &opened) == status::ok);
    os.clear_calls();
    ledger.fail_nth(1);
    char payload[4] = {};
    ASYNC_SOCKET_BUFFER buffer{payload, sizeof(payload)};
    send_recorder sent;
    CHECK(socket->send_async(&buffer, 1, &send_recorder::callback, &sent) == status::out_of_memory);
    CHECK(os.calls().empty());
    CHECK(socket->send_async(&buffer, 1, &send_recorder::callback, &sent) == status::ok);
    CHECK(os.complete_oldest(win32_no_error, sizeof(payload)));
    CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
    socket.reset();
    CHECK(ledger.live_blocks() == 0);
    CHECK(ledger.misuse() == 0);
    CHECK(os.violations().empty());
}

// Tests of create and destroy (SRS 01_001, 002, 034, 035, 003, 004, 005, 093, 006) against the fake
// threadpool: what create checks, asks for and allocates; what destroy waits for, closes and frees.
#include <async_socket/basic_async_socket.hpp>

#include "../support/fixtures.hpp"
#include "../support/lifecycle.hpp"
#include "../support/probe_sync.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace test_support;
using async_socket::socket_state;

namespace
{

names concat(std::initializer_list<names> parts)
{
    names all;
    for (const auto& part : parts)
    {
        all.insert(all.end(), part.begin(), part.end());
    }
    return all;
}

} // namespace

// ---- create -------------------------------------------------------------------------------------------

// Tests_SRS_ASYNC_SOCKET_WIN32_01_001: [ async_socket_create shall allocate a new async socket and on success shall
// return a non-NULL handle. ]
TEST_CASE("create allocates one block and returns a non-NULL CLOSED socket over the given handle")
{
    fake_os os;
    alloc_ledger ledger;

    auto socket = fake_socket_type::create(&os, fake_socket(42), {}, fault_alloc{&ledger});

    REQUIRE(socket);
    CHECK(socket->state() == socket_state::closed);
    CHECK(socket->socket_handle() == fake_socket(42));
    CHECK(ledger.allocations() == 1);
    CHECK(ledger.live_blocks() == 1);
    CHECK(socket->backend().calls().os() == &os);
    socket.reset();
    expect_nothing_left(os, ledger);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_002: [ If execution_engine is NULL, async_socket_create shall fail and return NULL. ]
TEST_CASE("create fails and returns NULL when the execution engine is NULL, allocating nothing")
{
    fake_os os;
    alloc_ledger ledger;

    auto socket = fake_socket_type::create(nullptr, fake_socket(42), {}, fault_alloc{&ledger});

    CHECK_FALSE(socket);
    CHECK(ledger.allocations() == 0);
    CHECK(os.calls().empty());
    expect_nothing_left(os, ledger);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_034: [ If socket_handle is NULL, async_socket_create shall fail and return NULL. ]
TEST_CASE("create fails and returns NULL when the socket handle is NULL, allocating nothing")
{
    fake_os os;
    alloc_ledger ledger;

    auto socket = fake_socket_type::create(&os, nullptr, {}, fault_alloc{&ledger});

    CHECK_FALSE(socket);
    CHECK(ledger.allocations() == 0);
    CHECK(os.calls().empty());
    expect_nothing_left(os, ledger);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_035: [ Otherwise, async_socket_open_async shall obtain the PTP_POOL from the
// execution engine passed to async_socket_create by calling execution_engine_win32_get_threadpool. ]
TEST_CASE("create obtains the pool from the execution engine once, and open does not ask for it again")
{
    fake_os os;
    alloc_ledger ledger;
    open_recorder opened;

    auto socket = fake_socket_type::create(&os, fake_socket(42), {}, fault_alloc{&ledger});
    REQUIRE(socket);
    CHECK(os.call_names() == names{"execution_engine_win32_get_threadpool"});

    REQUIRE(socket->open_async(&open_recorder::callback, &opened) == status::ok);
    CHECK(os.count(fake_call::get_threadpool) == 1);
    // The environment is bound to that pool right after it is initialized.
    CHECK(os.call_names() == concat({{"execution_engine_win32_get_threadpool"}, binding_calls}));

    socket.reset();
    expect_nothing_left(os, ledger);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_003: [ If any error occurs, async_socket_create shall fail and return NULL. ]
TEST_CASE("create fails and returns NULL when the socket cannot be allocated, calling no OS function")
{
    fake_os os;
    alloc_ledger ledger;
    ledger.fail_nth(1);

    auto socket = fake_socket_type::create(&os, fake_socket(42), {}, fault_alloc{&ledger});

    CHECK_FALSE(socket);
    CHECK(ledger.failed_allocations() == 1);
    CHECK(os.calls().empty());

    // The failure was the allocation only: the next create works.
    auto next = fake_socket_type::create(&os, fake_socket(42), {}, fault_alloc{&ledger});
    CHECK(next);
    next.reset();
    expect_nothing_left(os, ledger);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_003: [ If any error occurs, async_socket_create shall fail and return NULL. ]
TEST_CASE("create fails and returns NULL, freeing what it allocated, when the engine gives no pool")
{
    fake_os os;
    alloc_ledger ledger;
    os.fail(fake_call::get_threadpool);

    auto socket = fake_socket_type::create(&os, fake_socket(42), {}, fault_alloc{&ledger});

    CHECK_FALSE(socket);
    CHECK(ledger.allocations() == 1);
    CHECK(ledger.live_blocks() == 0);
    const auto calls = os.calls();
    REQUIRE(calls.size() == 1);
    CHECK(calls[0].call == fake_call::get_threadpool);
    CHECK(calls[0].failed);

    auto next = fake_socket_type::create(&os, fake_socket(42), {}, fault_alloc{&ledger});
    CHECK(next);
    next.reset();
    expect_nothing_left(os, ledger);
}

// ---- destroy ------------------------------------------------------------------------------------------

// Tests_SRS_ASYNC_SOCKET_WIN32_01_004: [ If async_socket is NULL, async_socket_destroy shall return. ]
TEST_CASE("destroy of a NULL socket returns and touches nothing")
{
    made_fixture f;
    f.os.clear_calls();
    const auto blocks = f.ledger.live_blocks();

    fake_socket_type::destroy(nullptr);
    fake_socket_type::handle empty;
    empty.reset();

    CHECK(f.os.calls().empty());
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(f.socket->state() == socket_state::open);
    destroy_and_expect_nothing_left(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_005: [ Otherwise, async_socket_destroy shall free all resources associated with
// async_socket. ]
TEST_CASE("destroy of a socket that was never opened frees its memory and calls no OS function")
{
    made_fixture f(false);
    CHECK(f.ledger.live_blocks() == 1);

    CHECK(calls_of_destroy(f).empty());
    expect_nothing_left(f.os, f.ledger);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_005: [ Otherwise, async_socket_destroy shall free all resources associated with
// async_socket. ]
TEST_CASE("destroy after a life of IO releases the threadpool IO, cleanup group, environment, events and memory")
{
    made_fixture f(false);
    REQUIRE(f.socket->open_async(&open_recorder::callback, &f.opened) == status::ok);
    ASYNC_SOCKET_BUFFER buffer{payload, sizeof(payload)};
    send_recorder sent;
    receive_recorder received;
    REQUIRE(f.socket->send_async(&buffer, 1, &send_recorder::callback, &sent) == status::ok);
    REQUIRE(f.socket->receive_async(&buffer, 1, &receive_recorder::callback, &received) == status::ok);
    REQUIRE(f.os.complete_oldest(async_socket::win32_no_error, sizeof(payload)));
    REQUIRE(f.os.complete_oldest(async_socket::win32_no_error, 3));
    CHECK(f.socket->close() == status::ok);
    CHECK(f.os.live_ios() == 1);

    CHECK(calls_of_destroy(f) == release_calls);
    CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
    REQUIRE(received.seen().size() == 1);
    CHECK(received.seen()[0].result == ASYNC_SOCKET_RECEIVE_OK);
    expect_nothing_left(f.os, f.ledger);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_006: [ async_socket_destroy shall perform an implicit close if async_socket is OPEN.
// ]
TEST_CASE("destroy of an OPEN socket closes it first: cancel, wait for callbacks, then release")
{
    made_fixture f;
    REQUIRE(f.socket->state() == socket_state::open);

    CHECK(calls_of_destroy(f) == concat({{"CancelIoEx", "WaitForThreadpoolIoCallbacks"}, release_calls}));
    const auto calls = f.os.calls();
    REQUIRE(calls.size() == 5);
    CHECK(calls[0].socket == fake_socket(42));
    CHECK_FALSE(calls[1].cancel_pending);
    expect_nothing_left(f.os, f.ledger);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_006: [ async_socket_destroy shall perform an implicit close if async_socket is OPEN.
// ]
TEST_CASE("destroy of an OPEN socket with IO pending completes each send and receive once with BECAUSE_CLOSE")
{
    made_fixture f;
    ASYNC_SOCKET_BUFFER buffer{payload, sizeof(payload)};
    send_recorder sent;
    receive_recorder received;
    REQUIRE(f.socket->send_async(&buffer, 1, &send_recorder::callback, &sent) == status::ok);
    REQUIRE(f.socket->receive_async(&buffer, 1, &receive_recorder::callback, &received) == status::ok);
    REQUIRE(f.os.pending_count() == 2);

    f.socket.reset();

    CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_BECAUSE_CLOSE});
    REQUIRE(received.seen().size() == 1);
    CHECK(received.seen()[0].result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
    CHECK(received.seen()[0].bytes == 0);
    CHECK(f.os.pending_count() == 0);
    CHECK_FALSE(f.os.complete_oldest(async_socket::win32_no_error, 1));
    expect_nothing_left(f.os, f.ledger);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_006: [ async_socket_destroy shall perform an implicit close if async_socket is OPEN.
// ]
TEST_CASE("destroy of a socket that was closed does not close it again")
{
    made_fixture f;
    REQUIRE(f.socket->close() == status::ok);

    CHECK(calls_of_destroy(f) == release_calls);
    expect_nothing_left(f.os, f.ledger);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_093: [ While async_socket is OPENING or CLOSING, async_socket_destroy shall wait for
// the open to complete either successfully or with error. ]
TEST_CASE("destroy while the socket is OPENING waits for the open to finish, then closes the socket")
{
    held_open h;
    REQUIRE_MESSAGE(h.start(), "open never reached the store of OPEN");
    CHECK(h.raw->state() == socket_state::opening);

    std::atomic<bool> destroyed{false};
    std::thread destroyer(
        [&]
        {
            h.socket.reset();
            destroyed = true;
        });
    CHECK_MESSAGE(h.probe.wait_until([&] { return h.probe.state_waits >= 1; }), "destroy never waited on the state");
    // destroy waits: the socket is neither closed nor freed while the open is under way.
    CHECK_FALSE(destroyed.load());
    CHECK(h.ledger.live_blocks() == 1);
    CHECK(h.os.count(fake_call::cancel_socket_io) == 0);
    CHECK(h.os.count(fake_call::close_io) == 0);

    h.release();
    destroyer.join();

    CHECK(h.open_result.load() == status::ok);
    CHECK(h.opened.calls.load() == 1);
    CHECK(h.opened.last.load() == ASYNC_SOCKET_OPEN_OK);
    // The open finished (OPEN), then destroy closed the socket implicitly and released it.
    CHECK(h.probe.read([&] { return h.probe.transitions; }) ==
          "closed->opening, opening->open, open->closing, closing->closed");
    CHECK(h.os.call_names() == concat({{"execution_engine_win32_get_threadpool"},
                                       binding_calls,
                                       {"CancelIoEx", "WaitForThreadpoolIoCallbacks"},
                                       release_calls}));
    expect_nothing_left(h.os, h.ledger);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_093: [ While async_socket is OPENING or CLOSING, async_socket_destroy shall wait for
// the open to complete either successfully or with error. ]
TEST_CASE("destroy while the socket is CLOSING waits until the close has finished")
{
    probed_fixture f;
    f.os.set_cancel_behavior(cancel_behavior::ignore); // close blocks until this test completes the receive
    started_receive receive(f.raw);

    background_close closer(f.raw);
    CHECK_MESSAGE(eventually([&] { return f.os.count(fake_call::wait_for_io_callbacks) == 1; }),
                  "close never reached WaitForThreadpoolIoCallbacks");

    std::atomic<bool> destroyed{false};
    std::thread destroyer(
        [&]
        {
            f.socket.reset();
            destroyed = true;
        });
    CHECK_MESSAGE(f.probe.wait_until([&] { return f.probe.state_waits >= 1; }), "destroy never waited on the state");
    CHECK(f.raw->state() == socket_state::closing);
    CHECK_FALSE(closer.closed.load());
    CHECK_FALSE(destroyed.load());
    CHECK(f.os.count(fake_call::close_io) == 0);
    CHECK(f.ledger.live_blocks() == 2); // the socket and the receive's context

    // The receive completes (as the cancelled IO would): close ends, and then destroy.
    CHECK(f.os.complete_oldest(async_socket::win32_operation_aborted, 0));
    closer.join();
    destroyer.join();

    CHECK(closer.result.load() == status::ok);
    receive.check_completed_once(ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
    // One close only (destroy found the socket CLOSED), and the release after it.
    CHECK(f.probe.read([&] { return f.probe.transitions; }) ==
          "closed->opening, opening->open, open->closing, closing->closed");
    const names calls = f.os.call_names();
    REQUIRE(calls.size() >= 3);
    CHECK(names(calls.end() - 3, calls.end()) == release_calls);
    CHECK(f.os.count(fake_call::cancel_socket_io) == 1);
    CHECK(f.os.count(fake_call::wait_for_io_callbacks) == 1);
    expect_nothing_left(f.os, f.ledger);
}

// Regression: a destroy that waits while the socket is CLOSING may see CLOSED as soon as close stores it (a
// wait may return spuriously, or the closing thread may be preempted before its wake), run to the end and
// free the socket. After that store the closing thread may only wake waiters by the word's address (the
// SyncPolicy contract: static members, address-only wakes). The probe pauses the closing thread right after
// the store until destroy has returned, then counts the core's calls after it (wakes excepted).
// Tests_SRS_ASYNC_SOCKET_WIN32_01_093: [ While async_socket is OPENING or CLOSING, async_socket_destroy shall wait for
// the open to complete either successfully or with error. ]
TEST_CASE("a close that ends while destroy waits makes no call on the socket after destroy has returned")
{
    kept_fixture f;
    f.os.set_cancel_behavior(cancel_behavior::ignore);
    started_receive receive(f.raw);

    background_close closer(f.raw);
    CHECK(eventually([&] { return f.os.count(fake_call::wait_for_io_callbacks) == 1; }));
    std::thread destroyer(
        [&]
        {
            f.socket.reset();
            f.probe.update([&] { f.probe.destroyed = true; });
        });
    CHECK(f.probe.wait_until([&] { return f.probe.state_waits >= 1; }));
    f.probe.update([&] { f.probe.pause_after_store = socket_state::closed; });

    CHECK(f.os.complete_oldest(async_socket::win32_operation_aborted, 0));
    closer.join();
    destroyer.join();

    CHECK_MESSAGE(f.probe.read([&] { return f.probe.calls_after_destroy; }) == 0,
                  "the closing thread called the SyncPolicy of the socket after destroy had freed it");
    receive.check_completed_once(ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
    expect_nothing_left(f);
}

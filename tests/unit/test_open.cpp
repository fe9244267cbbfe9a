// Tests of open_async (SRS 01_008, 009, 023, 014, 015, 016, 036, 037, 058, 094, 017, 039) against the fake
// threadpool: what open checks, the state it passes through, the Win32 calls it makes, its callback, and how
// it undoes a failed binding. (01_007, a NULL socket, belongs to the C API and is tested there.)
#include <async_socket/basic_async_socket.hpp>

#include "../support/fixtures.hpp"
#include "../support/lifecycle.hpp"
#include "../support/probe_sync.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
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

// Sees one open callback: how often, with what, on which thread, and what the socket looked like then.
struct open_witness
{
    fake_socket_type* socket = nullptr;
    std::atomic<int> calls{0};
    std::atomic<void*> context{nullptr};
    std::atomic<ASYNC_SOCKET_OPEN_RESULT> result{ASYNC_SOCKET_OPEN_RESULT_INVALID};
    std::atomic<socket_state> state{socket_state::closed};
    std::thread::id thread;
    bool open_returned = false; // set by the test once open_async has returned
    bool called_before_return = false;

    static void callback(void* context, ASYNC_SOCKET_OPEN_RESULT result)
    {
        auto* self = static_cast<open_witness*>(context);
        self->context = context;
        self->result = result;
        self->state = self->socket->state();
        self->thread = std::this_thread::get_id();
        self->called_before_return = !self->open_returned;
        ++self->calls;
    }
};

// An open callback for a NULL context: keeps what it got in globals.
std::atomic<int> null_context_calls{0};
std::atomic<void*> null_context_seen{nullptr};
std::atomic<ASYNC_SOCKET_OPEN_RESULT> null_context_result{ASYNC_SOCKET_OPEN_RESULT_INVALID};

void on_open_with_null_context(void* context, ASYNC_SOCKET_OPEN_RESULT result)
{
    null_context_seen = context;
    null_context_result = result;
    ++null_context_calls;
}

} // namespace

// Tests_SRS_ASYNC_SOCKET_WIN32_01_008: [ If on_open_complete is NULL, async_socket_open_async shall fail and return a
// non-zero value. ]
TEST_CASE("open_async fails with invalid_argument when on_open_complete is NULL, and changes nothing")
{
    made_fixture f(false);
    f.os.clear_calls();

    CHECK(f.socket->open_async(nullptr, &f.opened) == status::invalid_argument);

    CHECK(f.os.calls().empty());
    CHECK(f.socket->state() == socket_state::closed);
    CHECK(f.opened.calls.load() == 0);
    // Nothing was half done: an open with a callback binds the socket as a first open does.
    CHECK(f.socket->open_async(&open_recorder::callback, &f.opened) == status::ok);
    CHECK(f.os.call_names() == binding_calls);
    destroy_and_expect_nothing_left(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_009: [ on_open_complete_context shall be allowed to be NULL. ]
TEST_CASE("open_async accepts a NULL on_open_complete_context and passes NULL to the callback")
{
    made_fixture f(false);
    null_context_calls = 0;
    null_context_seen = &f; // anything but NULL, to see the callback overwrite it
    null_context_result = ASYNC_SOCKET_OPEN_RESULT_INVALID;

    CHECK(f.socket->open_async(&on_open_with_null_context, nullptr) == status::ok);

    CHECK(null_context_calls.load() == 1);
    CHECK(null_context_seen.load() == nullptr);
    CHECK(null_context_result.load() == ASYNC_SOCKET_OPEN_OK);
    CHECK(f.socket->state() == socket_state::open);
    destroy_and_expect_nothing_left(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_023: [ Otherwise, async_socket_open_async shall switch the state to OPENING. ]
TEST_CASE("open_async switches the state to OPENING first and keeps it there while it binds the socket")
{
    held_open h;
    REQUIRE_MESSAGE(h.start(true), "open never reached the store of OPEN");

    // Held just before OPEN is stored: the state is OPENING, the binding is done, no callback yet.
    CHECK(h.raw->state() == socket_state::opening);
    CHECK(h.probe.read([&] { return h.probe.transitions; }) == "closed->opening");
    CHECK(h.os.call_names() == binding_calls);
    CHECK(h.opened.calls.load() == 0);

    h.release();
    CHECK(h.open_result.load() == status::ok);
    CHECK(h.probe.read([&] { return h.probe.transitions; }) == "closed->opening, opening->open");
    destroy_and_expect_nothing_left(h);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_014: [ On success, async_socket_open_async shall return 0. ]
TEST_CASE("open_async returns 0 on success")
{
    made_fixture f(false);

    const status result = f.socket->open_async(&open_recorder::callback, &f.opened);

    CHECK(result == status::ok);
    CHECK(static_cast<int>(result) == 0);
    destroy_and_expect_nothing_left(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_015: [ If async_socket is already OPEN or OPENING, async_socket_open_async shall fail
// and return a non-zero value. ]
TEST_CASE("open_async on an OPEN socket fails with invalid_state, calls no callback and makes no OS call")
{
    made_fixture f(false);
    REQUIRE(f.socket->open_async(&open_recorder::callback, &f.opened) == status::ok);
    REQUIRE(f.opened.calls.load() == 1);
    f.os.clear_calls();
    open_recorder second;

    CHECK(f.socket->open_async(&open_recorder::callback, &second) == status::invalid_state);

    CHECK(second.calls.load() == 0);
    CHECK(f.opened.calls.load() == 1);
    CHECK(f.os.calls().empty());
    CHECK(f.socket->state() == socket_state::open);
    destroy_and_expect_nothing_left(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_015: [ If async_socket is already OPEN or OPENING, async_socket_open_async shall fail
// and return a non-zero value. ]
TEST_CASE("open_async while another open is OPENING fails with invalid_state and leaves that open alone")
{
    held_open h;
    open_recorder second;
    REQUIRE_MESSAGE(h.start(), "open never reached the store of OPEN");
    REQUIRE(h.raw->state() == socket_state::opening);
    const auto calls_before = h.os.calls().size();

    CHECK(h.raw->open_async(&open_recorder::callback, &second) == status::invalid_state);
    CHECK(h.os.calls().size() == calls_before);
    CHECK(second.calls.load() == 0);

    h.release();
    CHECK(h.open_result.load() == status::ok);
    CHECK(h.opened.calls.load() == 1);
    CHECK(second.calls.load() == 0);
    CHECK(h.os.count(fake_call::create_io) == 1);
    destroy_and_expect_nothing_left(h);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_016: [ Otherwise async_socket_open_async shall initialize a thread pool environment
// by calling InitializeThreadpoolEnvironment. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_036: [ async_socket_open_async shall set the thread pool for the environment to the
// pool obtained from the execution engine by calling SetThreadpoolCallbackPool. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_037: [ async_socket_open_async shall create a threadpool cleanup group by calling
// CreateThreadpoolCleanupGroup. ]
TEST_CASE("the first open_async initializes the environment, sets its pool, then creates the cleanup group and the "
          "threadpool IO")
{
    made_fixture f(false);
    // The pool was obtained at create (01_035); open sets it on the environment it initializes.
    REQUIRE(f.os.call_names() == names{"execution_engine_win32_get_threadpool"});
    f.os.clear_calls();

    REQUIRE(f.socket->open_async(&open_recorder::callback, &f.opened) == status::ok);

    CHECK(f.os.call_names() == binding_calls);
    for (const auto& call : f.os.calls())
    {
        CHECK_FALSE(call.failed);
    }
    destroy_and_expect_nothing_left(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_058: [ async_socket_open_async shall create a threadpool IO by calling
// CreateThreadpoolIo and passing socket_handle, the callback environment to it and on_io_complete as callback. ]
TEST_CASE("open_async creates the threadpool IO over the socket handle, with the socket's completion routine")
{
    made_fixture f(false);
    f.os.clear_calls();

    REQUIRE(f.socket->open_async(&open_recorder::callback, &f.opened) == status::ok);

    const auto calls = f.os.calls();
    REQUIRE(calls.size() == 4);
    CHECK(calls[3].call == fake_call::create_io);
    CHECK(calls[3].socket == fake_socket(42));
    CHECK(calls[3].io_id != 0);
    CHECK(f.os.live_ios() == 1);
    // Its callback is the socket's completion routine: completing an IO of that threadpool IO reaches
    // the send's callback.
    ASYNC_SOCKET_BUFFER buffer{payload, sizeof(payload)};
    send_recorder sent;
    REQUIRE(f.socket->send_async(&buffer, 1, &send_recorder::callback, &sent) == status::ok);
    const auto in_flight = f.os.pending();
    REQUIRE(in_flight.size() == 1);
    CHECK(in_flight[0].io_id == calls[3].io_id);
    CHECK(f.os.complete(in_flight[0].overlapped, async_socket::win32_no_error, sizeof(payload)));
    CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
    destroy_and_expect_nothing_left(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_094: [ async_socket_open_async shall set the state to OPEN. ]
TEST_CASE("open_async leaves the socket OPEN, and it is OPEN already when on_open_complete runs")
{
    made_fixture f(false);
    open_witness witness;
    witness.socket = f.socket.get();

    REQUIRE(f.socket->open_async(&open_witness::callback, &witness) == status::ok);

    CHECK(f.socket->state() == socket_state::open);
    CHECK(witness.calls.load() == 1);
    CHECK(witness.state.load() == socket_state::open);
    destroy_and_expect_nothing_left(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_094: [ async_socket_open_async shall set the state to OPEN. ]
TEST_CASE("open_async moves the state from CLOSED through OPENING to OPEN and nowhere else")
{
    probed_fixture f(false);

    REQUIRE(f.raw->open_async(&open_recorder::callback, &f.opened) == status::ok);

    CHECK(f.probe.read([&] { return f.probe.transitions; }) == "closed->opening, opening->open");
    CHECK(f.raw->state() == socket_state::open);
    destroy_and_expect_nothing_left(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_017: [ On success async_socket_open_async shall call on_open_complete_context with
// ASYNC_SOCKET_OPEN_OK. ]
TEST_CASE("open_async calls on_open_complete once, with its context and ASYNC_SOCKET_OPEN_OK, on the calling thread "
          "before it returns")
{
    made_fixture f(false);
    open_witness witness;
    witness.socket = f.socket.get();

    const status result = f.socket->open_async(&open_witness::callback, &witness);
    witness.open_returned = true;

    CHECK(result == status::ok);
    CHECK(witness.calls.load() == 1);
    CHECK(witness.result.load() == ASYNC_SOCKET_OPEN_OK);
    CHECK(witness.context.load() == &witness);
    CHECK(witness.thread == std::this_thread::get_id());
    CHECK(witness.called_before_return);
    f.socket.reset();
    CHECK(witness.calls.load() == 1);
    expect_nothing_left(f.os, f.ledger);
}

namespace
{

// Fails the first open at `failing` and checks that it made `calls` (the failed one at `failed_at`), called no
// callback and undid what it had bound; then that a later open works, or that destroy has nothing to release.
void check_failed_open_is_undone(fake_call failing, const names& calls, std::size_t failed_at)
{
    made_fixture f(false);
    f.os.clear_calls();
    f.os.fail(failing);

    CHECK(f.socket->open_async(&open_recorder::callback, &f.opened) == status::os_error);

    CHECK(f.opened.calls.load() == 0);
    CHECK(f.os.call_names() == calls);
    CHECK(f.os.calls()[failed_at].failed);
    CHECK(f.socket->state() == socket_state::closed);
    CHECK(f.os.live_ios() == 0);
    f.os.clear_calls();

    SUBCASE("a later open binds the socket and succeeds")
    {
        CHECK(f.socket->open_async(&open_recorder::callback, &f.opened) == status::ok);
        CHECK(f.os.call_names() == binding_calls);
        CHECK(f.opened.calls.load() == 1);
        CHECK(f.opened.last.load() == ASYNC_SOCKET_OPEN_OK);
        CHECK(f.socket->state() == socket_state::open);
        CHECK(f.os.live_ios() == 1);
    }
    SUBCASE("destroy finds nothing to release")
    {
        f.socket.reset();
        CHECK(f.os.calls().empty());
    }
    destroy_and_expect_nothing_left(f);
}

} // namespace

// Tests_SRS_ASYNC_SOCKET_WIN32_01_039: [ If any error occurs, async_socket_open_async shall fail and return a non-zero
// value. ]
TEST_CASE("open_async fails when the cleanup group cannot be created, calls no callback and undoes the environment")
{
    check_failed_open_is_undone(fake_call::create_cleanup_group,
                                names{"InitializeThreadpoolEnvironment", "SetThreadpoolCallbackPool",
                                      "CreateThreadpoolCleanupGroup", "DestroyThreadpoolEnvironment"},
                                2);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_039: [ If any error occurs, async_socket_open_async shall fail and return a non-zero
// value. ]
TEST_CASE("open_async fails when the threadpool IO cannot be created, calls no callback and undoes the cleanup group "
          "and the environment")
{
    check_failed_open_is_undone(fake_call::create_io,
                                names{"InitializeThreadpoolEnvironment", "SetThreadpoolCallbackPool",
                                      "CreateThreadpoolCleanupGroup", "CreateThreadpoolIo",
                                      "CloseThreadpoolCleanupGroup", "DestroyThreadpoolEnvironment"},
                                3);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_039: [ If any error occurs, async_socket_open_async shall fail and return a non-zero
// value. ]
TEST_CASE("open_async fails, undoing its binding, when another async socket has bound the same handle")
{
    made_fixture first;
    REQUIRE(first.opened.calls.load() == 1);
    auto second = fake_socket_type::create(&first.os, fake_socket(42), {}, fault_alloc{&first.ledger});
    REQUIRE(second);
    first.os.clear_calls();
    open_recorder second_opened;

    // The OS refuses a second CreateThreadpoolIo on a socket (ERROR_INVALID_PARAMETER).
    CHECK(second->open_async(&open_recorder::callback, &second_opened) == status::os_error);

    CHECK(second_opened.calls.load() == 0);
    CHECK(first.os.call_names() == names{"InitializeThreadpoolEnvironment", "SetThreadpoolCallbackPool",
                                         "CreateThreadpoolCleanupGroup", "CreateThreadpoolIo",
                                         "CloseThreadpoolCleanupGroup", "DestroyThreadpoolEnvironment"});
    CHECK(first.os.calls()[3].failed);
    CHECK(second->state() == socket_state::closed);
    CHECK(first.socket->state() == socket_state::open);
    first.os.clear_calls();
    second.reset();
    CHECK(first.os.calls().empty());
    destroy_and_expect_nothing_left(first);
}

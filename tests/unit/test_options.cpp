// The optional ThreadpoolPolicy traits: no event per IO, and skip-completion-port-on-success.
#include <async_socket/basic_async_socket.hpp>

#include "../support/fixtures.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

using namespace test_support;
using async_socket::win32_no_error;

namespace
{

using names = std::vector<std::string>;

using no_event_threadpool = basic_fake_threadpool<fake_wsabuf, fake_features{.io_events = false}>;
using skip_threadpool = basic_fake_threadpool<fake_wsabuf, fake_features{.skip_completion_on_success = true}>;
using fast_threadpool =
    basic_fake_threadpool<fake_wsabuf, fake_features{.io_events = false, .skip_completion_on_success = true}>;

template <class Threadpool>
using socket_of = async_socket::basic_async_socket<Threadpool, fault_alloc, async_socket::std_sync>;

void noop_open(void*, ASYNC_SOCKET_OPEN_RESULT) {}

// A socket over fake socket `id`, created (not opened).
template <class Threadpool>
typename socket_of<Threadpool>::handle created_socket(fake_os& os, alloc_ledger& ledger, std::uintptr_t id = 5)
{
    auto socket = socket_of<Threadpool>::create(&os, fake_socket(id), {}, fault_alloc{&ledger});
    REQUIRE(socket);
    return socket;
}

// A socket over fake socket `id`, created and opened; the calls of both are forgotten.
template <class Threadpool>
typename socket_of<Threadpool>::handle open_socket(fake_os& os, alloc_ledger& ledger, std::uintptr_t id = 5)
{
    auto socket = created_socket<Threadpool>(os, ledger, id);
    REQUIRE(socket->open_async(&noop_open, nullptr) == status::ok);
    os.clear_calls();
    return socket;
}

// For fake_os::at_once: every IO finishes at once, with all its bytes.
std::optional<std::uint32_t> all_at_once(const pending_io& io)
{
    return static_cast<std::uint32_t>(io.total_length);
}

// What each test runs in; it ends with expect_clean(os, ledger) once its sockets are gone.
struct fake_world
{
    fake_os os;
    alloc_ledger ledger;
};

void expect_clean(const fake_os& os, const alloc_ledger& ledger)
{
    const names violations = os.violations();
    CHECK_MESSAGE(violations.empty(), doctest::toString(violations.empty() ? std::string() : violations[0]));
    CHECK(os.live_events() == 0);
    CHECK(ledger.live_blocks() == 0);
}

} // namespace

TEST_CASE_FIXTURE(fake_world, "a threadpool policy without io events makes no event per IO and leaves hEvent null")
{
    {
        auto socket = open_socket<no_event_threadpool>(os, ledger);
        char data[4] = {'a', 'b', 'c', 'd'};
        ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
        send_recorder sent;
        receive_recorder received;
        REQUIRE(socket->send_async(&buffer, 1, &send_recorder::callback, &sent) == status::ok);
        REQUIRE(socket->receive_async(&buffer, 1, &receive_recorder::callback, &received) == status::ok);
        CHECK(os.call_names() == names{"StartThreadpoolIo", "WSASend", "StartThreadpoolIo", "WSARecv"});
        for (const call_record& call : os.calls())
        {
            if (call.call == fake_call::wsa_send || call.call == fake_call::wsa_recv)
            {
                CHECK(call.event == 0);
            }
        }
        REQUIRE(os.complete_oldest(win32_no_error, sizeof(data)));
        REQUIRE(os.complete_oldest(win32_no_error, 2));
        CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
        REQUIRE(received.seen().size() == 1);
        CHECK(received.seen()[0].bytes == 2);
        CHECK(os.count(fake_call::create_event) == 0);
        CHECK(os.count(fake_call::close_event) == 0);
    }
    expect_clean(os, ledger);
}

TEST_CASE_FIXTURE(fake_world,
                  "skip mode puts the socket in skip-completion-port-on-success mode once, at the first open")
{
    {
        auto socket = created_socket<skip_threadpool>(os, ledger);
        os.clear_calls();
        REQUIRE(socket->open_async(&noop_open, nullptr) == status::ok);
        CHECK(os.call_names() == names{"InitializeThreadpoolEnvironment", "SetThreadpoolCallbackPool",
                                       "CreateThreadpoolCleanupGroup", "CreateThreadpoolIo",
                                       "SetFileCompletionNotificationModes"});
        CHECK(socket->close() == status::ok);
        REQUIRE(socket->open_async(&noop_open, nullptr) == status::ok);
        CHECK(os.count(fake_call::set_completion_modes) == 1);
    }
    expect_clean(os, ledger);
}

TEST_CASE_FIXTURE(fake_world,
                  "skip mode: a failed SetFileCompletionNotificationModes fails the open and undoes the binding")
{
    {
        auto socket = created_socket<skip_threadpool>(os, ledger);
        os.fail(fake_call::set_completion_modes);
        open_recorder opened;
        CHECK(socket->open_async(&open_recorder::callback, &opened) == status::os_error);
        CHECK(opened.calls == 0);
        const names calls = os.call_names();
        REQUIRE(calls.size() >= 3);
        CHECK(names(calls.end() - 3, calls.end()) ==
              names{"CloseThreadpoolIo", "CloseThreadpoolCleanupGroup", "DestroyThreadpoolEnvironment"});
        CHECK(socket->state() == async_socket::socket_state::closed);
    }
    expect_clean(os, ledger);
}

TEST_CASE_FIXTURE(
    fake_world,
    "skip mode: a send that finishes at once completes on the calling thread, once, after CancelThreadpoolIo")
{
    os.at_once(&all_at_once);
    {
        auto socket = open_socket<skip_threadpool>(os, ledger);
        char data[6] = "hello";
        ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
        send_recorder sent;
        REQUIRE(socket->send_async(&buffer, 1, &send_recorder::callback, &sent) == status::ok);
        // The callback already ran, before send_async returned.
        CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
        CHECK(os.call_names() ==
              names{"CreateEvent", "StartThreadpoolIo", "WSASend", "CancelThreadpoolIo", "CloseHandle"});
        const std::vector<call_record> calls = os.calls();
        CHECK_FALSE(calls[2].bytes_pointer_is_null); // the byte count of an IO that finishes at once
        CHECK(os.pending_count() == 0);
    }
    expect_clean(os, ledger);
}

TEST_CASE_FIXTURE(fake_world,
                  "skip mode: a receive that finishes at once reports its bytes; one that does not completes as usual")
{
    bool finish_at_once = true;
    os.at_once([&](const pending_io&) { return finish_at_once ? std::optional<std::uint32_t>(3) : std::nullopt; });
    {
        auto socket = open_socket<fast_threadpool>(os, ledger);
        char data[8] = {};
        ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
        receive_recorder received;
        REQUIRE(socket->receive_async(&buffer, 1, &receive_recorder::callback, &received) == status::ok);
        REQUIRE(received.seen().size() == 1);
        CHECK(received.seen()[0].result == ASYNC_SOCKET_RECEIVE_OK);
        CHECK(received.seen()[0].bytes == 3);

        finish_at_once = false;
        REQUIRE(socket->receive_async(&buffer, 1, &receive_recorder::callback, &received) == status::ok);
        CHECK(received.seen().size() == 1);
        REQUIRE(os.pending_count() == 1);
        REQUIRE(os.complete_oldest(win32_no_error, 7));
        REQUIRE(received.seen().size() == 2);
        CHECK(received.seen()[1].bytes == 7);
        CHECK(os.call_names() ==
              names{"StartThreadpoolIo", "WSARecv", "CancelThreadpoolIo", "StartThreadpoolIo", "WSARecv"});
    }
    expect_clean(os, ledger);
}

namespace
{
// A chain of sends, each started from the callback of the previous one, all finishing at once.
struct send_chain
{
    socket_of<fast_threadpool>* socket = nullptr;
    char data[2] = {'x', 'y'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    int remaining = 0;
    int completed = 0;
    int depth = 0;
    int deepest = 0;
    bool start_failed = false;

    static void on_sent(void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        auto* self = static_cast<send_chain*>(context);
        ++self->depth;
        self->deepest = self->depth > self->deepest ? self->depth : self->deepest;
        self->completed += result == ASYNC_SOCKET_SEND_OK ? 1 : 0;
        if (self->remaining > 0)
        {
            --self->remaining;
            self->start_failed =
                self->start_failed || self->socket->send_async(&self->buffer, 1, &on_sent, self) != status::ok;
        }
        --self->depth;
    }
};
} // namespace

TEST_CASE_FIXTURE(fake_world,
                  "skip mode: callbacks that start IO finishing at once do not recurse: a chain of 10000 runs one deep")
{
    os.at_once(&all_at_once);
    {
        auto socket = open_socket<fast_threadpool>(os, ledger);
        send_chain chain;
        chain.socket = socket.get();
        chain.remaining = 9999;
        REQUIRE(socket->send_async(&chain.buffer, 1, &send_chain::on_sent, &chain) == status::ok);
        CHECK_FALSE(chain.start_failed);
        CHECK(chain.completed == 10000);
        CHECK(chain.deepest == 1);
        CHECK(os.count(fake_call::cancel_io) == 10000);
        CHECK(ledger.live_blocks() == 1); // only the socket: every context was freed
    }
    expect_clean(os, ledger);
}

TEST_CASE_FIXTURE(fake_world, "skip mode: close from a callback of an IO that finished at once is refused")
{
    os.at_once(&all_at_once);
    {
        auto socket = open_socket<fast_threadpool>(os, ledger);
        struct closer
        {
            socket_of<fast_threadpool>* socket;
            status seen = status::ok;
            static void on_sent(void* context, ASYNC_SOCKET_SEND_RESULT)
            {
                auto* self = static_cast<closer*>(context);
                self->seen = self->socket->close();
            }
        } attempt{socket.get()};
        char data[1] = {'z'};
        ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
        REQUIRE(socket->send_async(&buffer, 1, &closer::on_sent, &attempt) == status::ok);
        CHECK(attempt.seen == status::called_from_callback);
        CHECK(socket->state() == async_socket::socket_state::open);
        CHECK(socket->close() == status::ok);
    }
    expect_clean(os, ledger);
}

namespace
{
// Two sockets of one type: from X's callback (X's send finished at once), Y sends (finishing at once too),
// then closes and destroys Y.
struct cross_socket
{
    socket_of<fast_threadpool>* x = nullptr;
    socket_of<fast_threadpool>::handle y;
    char data[2] = {'p', 'q'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    send_recorder y_sent;
    std::size_t y_callbacks_when_closed = 99;
    status y_close = status::ok;
    status x_close = status::ok;
    bool close_x = false;

    static void on_y_sent(void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        auto* self = static_cast<cross_socket*>(context);
        send_recorder::callback(&self->y_sent, result);
        if (self->close_x)
        {
            self->x_close = self->x->close(); // X's send_async is further out on this thread
        }
    }

    static void on_x_sent(void* context, ASYNC_SOCKET_SEND_RESULT)
    {
        auto* self = static_cast<cross_socket*>(context);
        REQUIRE(self->y->send_async(&self->buffer, 1, &on_y_sent, self) == status::ok);
        if (!self->close_x)
        {
            self->y_close = self->y->close();
            self->y_callbacks_when_closed = self->y_sent.seen().size();
            self->y.reset();
        }
    }
};
} // namespace

TEST_CASE_FIXTURE(fake_world, "skip mode: IO of another socket that finishes at once in a callback")
{
    os.at_once(&all_at_once);
    {
        auto x = open_socket<fast_threadpool>(os, ledger);
        cross_socket test;
        test.x = x.get();
        SUBCASE("an IO of another socket that finishes at once in a callback completes before its close returns") {}
        SUBCASE("close of a socket from a callback nested in its own IO finishing at once is refused")
        {
            test.close_x = true;
        }
        test.y = open_socket<fast_threadpool>(os, ledger, 6);

        REQUIRE(x->send_async(&test.buffer, 1, &cross_socket::on_x_sent, &test) == status::ok);
        if (test.close_x)
        {
            CHECK(test.x_close == status::called_from_callback); // would otherwise wait for itself forever
            CHECK(x->state() == async_socket::socket_state::open);
            CHECK(x->close() == status::ok);
        }
        else
        {
            CHECK(test.y_close == status::ok);
            CHECK(test.y_callbacks_when_closed == 1);
            CHECK(test.y_sent.seen().size() == 1);
            CHECK_FALSE(test.y);
        }
    }
    expect_clean(os, ledger);
}

namespace
{
// A's receive completes through the pool; from its callback B sends (finishing at once), and from B's
// callback C sends (finishing at once). From C's callback every socket whose callback is running on the
// thread is asked to close: all three are refused, since each would wait for a callback further out on
// this very thread. Only plain recording here: the callback may run on a worker thread of the fake.
struct nested_closes
{
    socket_of<fast_threadpool>* a = nullptr;
    socket_of<fast_threadpool>* b = nullptr;
    socket_of<fast_threadpool>* c = nullptr;
    char data[3] = {'n', 'e', 's'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    std::atomic<int> a_received{0};
    std::atomic<int> b_sent{0};
    std::atomic<int> c_sent{0};
    std::atomic<bool> starts_failed{false};
    std::atomic<status> a_close{status::ok};
    std::atomic<status> b_close{status::ok};
    std::atomic<status> c_close{status::ok};
    std::atomic<status> a_close_from_b{status::ok};
    bool nest_c = true;

    static void on_a_received(void* context, ASYNC_SOCKET_RECEIVE_RESULT, std::uint32_t)
    {
        auto* self = static_cast<nested_closes*>(context);
        ++self->a_received;
        if (self->b->send_async(&self->buffer, 1, &on_b_sent, self) != status::ok)
        {
            self->starts_failed = true;
        }
    }
    static void on_b_sent(void* context, ASYNC_SOCKET_SEND_RESULT)
    {
        auto* self = static_cast<nested_closes*>(context);
        ++self->b_sent;
        if (self->nest_c)
        {
            if (self->c->send_async(&self->buffer, 1, &on_c_sent, self) != status::ok)
            {
                self->starts_failed = true;
            }
        }
        else
        {
            self->a_close_from_b = self->a->close(); // the case found by review: A's callback is further out
        }
    }
    static void on_c_sent(void* context, ASYNC_SOCKET_SEND_RESULT)
    {
        auto* self = static_cast<nested_closes*>(context);
        ++self->c_sent;
        self->a_close = self->a->close();
        self->b_close = self->b->close();
        self->c_close = self->c->close();
    }
};
} // namespace

TEST_CASE_FIXTURE(fake_world,
                  "skip mode: close of a socket whose pooled callback is further out on the thread is refused")
{
    // B's (6) and C's (7) IO finish at once; A's (5) waits for the test to complete it.
    os.at_once([](const pending_io& io) { return io.socket == fake_socket(5) ? std::nullopt : all_at_once(io); });
    {
        auto a = open_socket<fast_threadpool>(os, ledger);
        auto b = open_socket<fast_threadpool>(os, ledger, 6);
        auto c = open_socket<fast_threadpool>(os, ledger, 7);
        nested_closes test;
        test.a = a.get();
        test.b = b.get();
        test.c = c.get();
        char into[8];
        ASYNC_SOCKET_BUFFER receive_buffer{into, sizeof(into)};

        SUBCASE("A's callback on the test's thread; B closes A")
        {
            test.nest_c = false;
        }
        SUBCASE("A's callback on the test's thread; C closes A, B and C") {}
        bool on_worker = false;
        SUBCASE("A's callback on a worker thread; C closes A, B and C")
        {
            on_worker = true;
        }
        REQUIRE(a->receive_async(&receive_buffer, 1, &nested_closes::on_a_received, &test) == status::ok);
        REQUIRE(os.pending().size() == 1);
        const auto overlapped = os.pending().at(0).overlapped;
        if (on_worker)
        {
            os.complete_on_worker(overlapped, win32_no_error, 4);
            CHECK(os.wait_until_idle(std::chrono::seconds(60)));
        }
        else
        {
            CHECK(os.complete(overlapped, win32_no_error, 4));
        }

        CHECK(test.a_received.load() == 1);
        CHECK(test.b_sent.load() == 1);
        CHECK_FALSE(test.starts_failed.load());
        if (test.nest_c)
        {
            CHECK(test.c_sent.load() == 1);
            CHECK(test.a_close.load() == status::called_from_callback);
            CHECK(test.b_close.load() == status::called_from_callback);
            CHECK(test.c_close.load() == status::called_from_callback);
        }
        else
        {
            CHECK(test.a_close_from_b.load() == status::called_from_callback);
        }
        CHECK(a->state() == async_socket::socket_state::open);
        CHECK(b->state() == async_socket::socket_state::open);
        CHECK(c->state() == async_socket::socket_state::open);
        // From outside the callbacks every one closes normally.
        CHECK(a->close() == status::ok);
        CHECK(b->close() == status::ok);
        CHECK(c->close() == status::ok);
    }
    expect_clean(os, ledger);
}

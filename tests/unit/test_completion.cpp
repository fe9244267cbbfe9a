// on_io_complete: how a completion finds its IO, maps the OS result to the callback's result, and releases the
// IO's event and context (before the user's callback runs). Completions are delivered as the OS would, through the
// fake threadpool. A rule that sends and receives share is one TEST_CASE_TEMPLATE over send_direction and
// receive_direction (tests/support/directions.hpp); a rule of one direction alone (a send's short count, a receive's
// byte counts and end of stream) is a plain TEST_CASE.
#include <async_socket/basic_async_socket.hpp>

#include "../support/directions.hpp"
#include "../support/fixtures.hpp"
#include "../support/probe_calls.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

using namespace test_support;
using async_socket::win32_error;
using async_socket::win32_no_error;
using async_socket::win32_operation_aborted;

namespace
{

constexpr win32_error error_netname_deleted = 64; // peer reset

// What the Win32 backend hands to the completion routine it is bound with.
struct routine_probe
{
    static inline int calls = 0;
    static inline void* owner = nullptr;
    static inline void* io = nullptr;
    static inline async_socket::io_result seen{};
    static void routine(void* o, void* i, async_socket::io_result r) noexcept
    {
        ++calls;
        owner = o;
        io = i;
        seen = r;
    }
};

// A Win32 completion as the Win32 backend hands it to the core: classified, with the code beside it.
async_socket::io_result win32_result(win32_error code, std::size_t bytes) noexcept
{
    return {async_socket::classify_win32_error(code), code, bytes};
}
constexpr win32_error wsaeconnreset = 10054;

// Looks at the world from inside a callback: is the IO's context already freed and its event closed?
struct inside_callback_probe
{
    fixture* f = nullptr;
    int calls = 0;
    std::int64_t live_blocks_seen = -1;
    std::size_t live_events_seen = 999;
    std::size_t close_handles_seen = 0;

    void look()
    {
        ++calls;
        live_blocks_seen = f->ledger.live_blocks();
        live_events_seen = f->os.live_events();
        close_handles_seen = f->os.count(fake_call::close_event);
    }
    template <class Result>
    static void on_complete(void* context, Result, std::uint32_t)
    {
        static_cast<inside_callback_probe*>(context)->look();
    }
};

// The callback of Direction that runs the probe given as its context.
template <class Direction>
constexpr typename Direction::callback probe_callback =
    &Direction::template callback_to<&inside_callback_probe::on_complete<typename Direction::result>>;

// One IO of Direction over two bytes, in a socket of its own, whose callback runs the probe.
template <class Direction>
struct probed_io
{
    inside_callback_probe probe;
    fixture f;
    char data[2] = {'h', 'i'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};

    probed_io()
    {
        REQUIRE(f.socket);
        probe.f = &f;
    }

    // Starts the IO (its context the one block it adds) and completes it with `io_result` and `bytes`.
    void run(win32_error io_result, std::size_t bytes)
    {
        const std::int64_t blocks = f.ledger.live_blocks();
        REQUIRE(Direction::start(*f.socket, &buffer, 1, probe_callback<Direction>, &probe) == status::ok);
        REQUIRE(f.ledger.live_blocks() == blocks + 1);
        REQUIRE(f.os.complete_oldest(io_result, bytes));
    }
};

// Starts an IO over `buffers` and completes it with `io_result` and `bytes`: it reports `expected` (a receive's with
// `expected_bytes` bytes).
template <class Direction>
void check_completes_as(fixture& f, typename Direction::recorder& record, ASYNC_SOCKET_BUFFER* buffers,
                        std::uint32_t count, win32_error io_result, std::size_t bytes,
                        typename Direction::result expected, std::uint32_t expected_bytes)
{
    CAPTURE(io_result);
    CAPTURE(bytes);
    const std::size_t before = record.seen().size();
    void* const overlapped = start_io<Direction>(f, buffers, count, record);
    REQUIRE(f.os.complete(overlapped, io_result, bytes));
    REQUIRE(record.seen().size() == before + 1);
    Direction::check_last(record, expected, expected_bytes);
}

// Starts a new send from inside a send callback, as a pipelining user would.
struct chained_sender
{
    fixture* f = nullptr;
    int remaining = 0;
    std::vector<ASYNC_SOCKET_SEND_RESULT> results;
    std::vector<status> restarts;
    char data[6] = {'c', 'h', 'a', 'i', 'n', 's'};

    static void callback(void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        auto* self = static_cast<chained_sender*>(context);
        self->results.push_back(result);
        if (self->remaining > 0)
        {
            --self->remaining;
            ASYNC_SOCKET_BUFFER buffer{self->data, sizeof(self->data)};
            self->restarts.push_back(self->f->socket->send_async(&buffer, 1, &chained_sender::callback, self));
        }
    }
};

} // namespace

// ---- finding the IO -------------------------------------------------------------------------------------

// Tests_SRS_ASYNC_SOCKET_WIN32_01_063: [ If overlapped is NULL, on_io_complete shall return. ]
TEST_CASE("a completion without an OVERLAPPED does nothing")
{
    fake_os os;
    alloc_ledger ledger;
    open_recorder opened;
    send_recorder sent;
    receive_recorder received;
    auto socket = probe_socket_type::create(&os, fake_socket(7), {}, fault_alloc{&ledger});
    REQUIRE(socket);
    REQUIRE(socket->open_async(&open_recorder::callback, &opened) == status::ok);
    char out[3] = {'a', 'b', 'c'};
    char in[4] = {};
    ASYNC_SOCKET_BUFFER out_buffer{out, sizeof(out)};
    ASYNC_SOCKET_BUFFER in_buffer{in, sizeof(in)};
    REQUIRE(socket->send_async(&out_buffer, 1, &send_recorder::callback, &sent) == status::ok);
    REQUIRE(socket->receive_async(&in_buffer, 1, &receive_recorder::callback, &received) == status::ok);
    os.clear_calls();
    const std::int64_t blocks = ledger.live_blocks();
    const std::int64_t bytes = ledger.live_bytes();

    for (const win32_error result : {win32_no_error, win32_operation_aborted, error_netname_deleted})
    {
        CAPTURE(result);
        REQUIRE(socket->backend().calls().deliver_null_overlapped(result, 3));
    }

    CHECK(os.calls().empty());
    CHECK(sent.seen().empty());
    CHECK(received.seen().empty());
    CHECK(ledger.live_blocks() == blocks);
    CHECK(ledger.live_bytes() == bytes);
    CHECK(os.live_events() == 2);
    CHECK(os.pending_count() == 2);

    // The real completions still work afterwards, once each.
    REQUIRE(os.complete_oldest(win32_no_error, sizeof(out)));
    REQUIRE(os.complete_oldest(win32_no_error, 2));
    CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
    REQUIRE(received.seen().size() == 1);
    CHECK(received.seen()[0].bytes == 2u);
    CHECK(ledger.live_blocks() == blocks - 2);
    CHECK(os.live_events() == 0);
    CHECK(os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_064: [ overlapped shall be used to determine the context of the IO. ]
TEST_CASE("each completion reaches the callback, context and byte total of the IO its OVERLAPPED belongs to")
{
    send_recorder first_sent;
    send_recorder second_sent;
    direction_fixture<receive_direction> f;
    receive_recorder& received = f.record;
    char three[3] = {'a', 'b', 'c'};
    char five[5] = {'d', 'e', 'f', 'g', 'h'};
    char in[8] = {};
    void* const first = start_one<send_direction>(f, three, sizeof(three), first_sent);
    void* const second = start_one<send_direction>(f, five, sizeof(five), second_sent);
    void* const third = start_one<receive_direction>(f, in, sizeof(in), received);
    CHECK(first != second);
    CHECK(second != third);

    // Out of order: 5 bytes is right only for the second send, 3 only for the first.
    REQUIRE(f.os.complete(second, win32_no_error, sizeof(five)));
    CHECK(second_sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
    CHECK(first_sent.seen().empty());
    CHECK(received.seen().empty());

    REQUIRE(f.os.complete_receive(third, bytes_of("xyz", 3)));
    REQUIRE(received.seen().size() == 1);
    CHECK(received.seen()[0].result == ASYNC_SOCKET_RECEIVE_OK);
    CHECK(received.seen()[0].bytes == 3u);
    CHECK(std::memcmp(in, "xyz", 3) == 0);
    CHECK(first_sent.seen().empty());

    REQUIRE(f.os.complete(first, win32_no_error, sizeof(three)));
    CHECK(first_sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
    CHECK(second_sent.seen().size() == 1);
    CHECK(received.seen().size() == 1);
    CHECK(f.os.violations().empty());
}

// ---- which callback, and the result it gets -----------------------------------------------------------------

// Tests_SRS_ASYNC_SOCKET_WIN32_01_065: [ If the context of the IO indicates that a send has completed: ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_071: [ If the context of the IO indicates that a receive has completed: ]
TEST_CASE_TEMPLATE("an IO's completion calls the callback of its own direction and never the other's", D,
                   send_direction, receive_direction)
{
    using other = other_direction<D>;
    constexpr std::string_view payload = "data";
    typename D::recorder record;
    typename other::recorder other_record;
    fixture f;
    REQUIRE(f.socket);
    char mine[4];
    char theirs[4];
    D::fill(mine, payload);
    other::fill(theirs, payload);
    void* const other_io = start_one<other>(f, theirs, sizeof(theirs), other_record);
    void* const io = start_one<D>(f, mine, sizeof(mine), record);

    REQUIRE(D::complete(f.os, io, payload));

    D::check_seen(record, {D::ok}, 4);
    CHECK(other_record.seen().empty());
    CHECK(f.os.pending_count() == 1);
    REQUIRE(other::complete(f.os, other_io, payload));
    other::check_seen(other_record, {other::ok}, 4);
    CHECK(record.seen().size() == 1);
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_066: [ If io_result is NO_ERROR, the on_send_complete callback passed to
// async_socket_send_async shall be called with on_send_complete_context as argument and ASYNC_SOCKET_SEND_OK. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_069: [ If io_result is NO_ERROR, the on_receive_complete callback passed to
// async_socket_receive_async shall be called with on_receive_complete_context as context, ASYNC_SOCKET_RECEIVE_OK as
// result and number_of_bytes_transferred as bytes_received. ]
TEST_CASE_TEMPLATE("an IO that completes with NO_ERROR and all its bytes reports OK (a receive's with that count)", D,
                   send_direction, receive_direction)
{
    direction_fixture<D> f;
    char a[2] = {'a', 'b'};
    char b[9] = {};
    char c[1] = {'c'};
    ASYNC_SOCKET_BUFFER buffers[3] = {{a, sizeof(a)}, {b, sizeof(b)}, {c, sizeof(c)}};
    ASYNC_SOCKET_BUFFER single{a, 1};
    constexpr std::uint32_t total = sizeof(a) + sizeof(b) + sizeof(c);

    check_completes_as<D>(f, f.record, buffers, 3, win32_no_error, total, D::ok, total);
    check_completes_as<D>(f, f.record, &single, 1, win32_no_error, 1, D::ok, 1);

    CHECK(f.record.seen().size() == 2);
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_069: [ If io_result is NO_ERROR, the on_receive_complete callback passed to
// async_socket_receive_async shall be called with on_receive_complete_context as context, ASYNC_SOCKET_RECEIVE_OK as
// result and number_of_bytes_transferred as bytes_received. ]
TEST_CASE("a receive that completes with NO_ERROR reports RECEIVE_OK and the bytes it got, 0 meaning end of stream")
{
    direction_fixture<receive_direction> f;
    receive_recorder& received = f.record;
    char in[16] = {};
    ASYNC_SOCKET_BUFFER buffer{in, sizeof(in)};

    for (const std::size_t bytes : {std::size_t{1}, std::size_t{7}, sizeof(in), std::size_t{0}})
    {
        check_completes_as<receive_direction>(f, received, &buffer, 1, win32_no_error, bytes, ASYNC_SOCKET_RECEIVE_OK,
                                              static_cast<std::uint32_t>(bytes));
    }
    CHECK(received.seen().size() == 4);
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_069: [ If io_result is NO_ERROR, the on_receive_complete callback passed to
// async_socket_receive_async shall be called with on_receive_complete_context as context, ASYNC_SOCKET_RECEIVE_OK as
// result and number_of_bytes_transferred as bytes_received. ]
TEST_CASE("received data lands in the caller's buffers, in order, across several buffers")
{
    direction_fixture<receive_direction> f;
    receive_recorder& received = f.record;
    char a[3] = {};
    char b[5] = {};
    char c[2] = {};
    ASYNC_SOCKET_BUFFER buffers[3] = {{a, sizeof(a)}, {b, sizeof(b)}, {c, sizeof(c)}};

    SUBCASE("part of the room")
    {
        REQUIRE(f.os.complete_receive(start_io<receive_direction>(f, buffers, 3, received), bytes_of("abcdefg", 7)));
        receive_direction::check_seen(received, {ASYNC_SOCKET_RECEIVE_OK}, 7);
        CHECK(std::memcmp(a, "abc", 3) == 0);
        CHECK(std::memcmp(b, "defg", 4) == 0);
        CHECK(b[4] == '\0');
        CHECK(c[0] == '\0');
        CHECK(c[1] == '\0');
    }
    SUBCASE("all of the room")
    {
        REQUIRE(
            f.os.complete_receive(start_io<receive_direction>(f, buffers, 3, received), bytes_of("0123456789", 10)));
        receive_direction::check_seen(received, {ASYNC_SOCKET_RECEIVE_OK}, 10);
        CHECK(std::memcmp(a, "012", 3) == 0);
        CHECK(std::memcmp(b, "34567", 5) == 0);
        CHECK(std::memcmp(c, "89", 2) == 0);
    }
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_067: [ If io_result is not NO_ERROR, the on_send_complete callback passed to
// async_socket_send_async shall be called with on_send_complete_context as argument and ASYNC_SOCKET_SEND_ERROR. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_070: [ If io_result is not NO_ERROR, the on_receive_complete callback passed to
// async_socket_receive_async shall be called with on_receive_complete_context as context, ASYNC_SOCKET_RECEIVE_ERROR as
// result and 0 for bytes_received. ]
TEST_CASE_TEMPLATE("an IO that fails reports ERROR while the socket is OPEN, whatever the byte count, and "
                   "BECAUSE_CLOSE while it is CLOSING (documented deviation); a receive's with 0 bytes",
                   D, send_direction, receive_direction)
{
    direction_fixture<D> f;
    char data[8] = {'f', 'a', 'i', 'l', 'i', 'n', 'g', '!'};
    const std::int64_t blocks = f.ledger.live_blocks();

    SUBCASE("OPEN")
    {
        ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
        for (const win32_error error : {error_netname_deleted, wsaeconnreset, win32_operation_aborted})
        {
            for (const std::size_t bytes :
                 {std::size_t{0}, std::size_t{3}, std::size_t{5}, sizeof(data), sizeof(data) + 1})
            {
                check_completes_as<D>(f, f.record, &buffer, 1, error, bytes, D::error, 0);
            }
        }
        CHECK(f.record.seen().size() == 3 * 5);
        CHECK(f.socket->state() == async_socket::socket_state::open);
    }
    SUBCASE("CLOSING")
    {
        (void)start_one<D>(f, data, sizeof(data), f.record);
        (void)start_one<D>(f, data, 2, f.record);
        f.os.set_cancel_behavior(cancel_behavior::abort_inline);

        REQUIRE(f.socket->close() == status::ok);

        D::check_seen(f.record, {D::because_close, D::because_close}, 0);
    }
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(f.os.live_events() == 0);
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_102: [ If io_result is NO_ERROR, but the number of bytes send is different than the
// sum of all buffer sizes passed to async_socket_send_async, the on_send_complete callback passed to
// async_socket_send_async shall be called with on_send_complete_context as context and ASYNC_SOCKET_SEND_ERROR. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_095: [If io_result is NO_ERROR, but the number of bytes received is greater than the
// sum of all buffer sizes passed to async_socket_receive_async, the on_receive_complete callback passed to
// async_socket_receive_async shall be called with on_receive_complete_context as context, ASYNC_SOCKET_RECEIVE_ERROR as
// result and number_of_bytes_transferred for bytes_received. ]
TEST_CASE_TEMPLATE("an IO that completes with NO_ERROR but more bytes than its buffers hold reports ERROR (a "
                   "receive's with that byte count)",
                   D, send_direction, receive_direction)
{
    direction_fixture<D> f;
    char a[3] = {'a', 'b', 'c'};
    char b[4] = {'d', 'e', 'f', 'g'};
    ASYNC_SOCKET_BUFFER buffers[2] = {{a, sizeof(a)}, {b, sizeof(b)}};
    constexpr std::size_t total = sizeof(a) + sizeof(b);

    for (const std::size_t bytes : {total + 1, total * 2, total * 3, std::size_t{UINT32_MAX}})
    {
        check_completes_as<D>(f, f.record, buffers, 2, win32_no_error, bytes, D::error,
                              static_cast<std::uint32_t>(bytes));
    }
    // More than a uint32_t can say: saturated, never truncated into a small OK count.
    for (const std::size_t bytes : {(std::size_t{1} << 32) + 3, (std::size_t{1} << 32) + total})
    {
        check_completes_as<D>(f, f.record, buffers, 2, win32_no_error, bytes, D::error, UINT32_MAX);
    }
    // Exactly the total is not more: OK.
    check_completes_as<D>(f, f.record, buffers, 2, win32_no_error, total, D::ok, total);
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_102: [ If io_result is NO_ERROR, but the number of bytes send is different than the
// sum of all buffer sizes passed to async_socket_send_async, the on_send_complete callback passed to
// async_socket_send_async shall be called with on_send_complete_context as context and ASYNC_SOCKET_SEND_ERROR. ]
TEST_CASE("a send that completes with NO_ERROR but fewer bytes than it had reports SEND_ERROR")
{
    direction_fixture<send_direction> f;
    send_recorder& sent = f.record;
    char a[3] = {'a', 'b', 'c'};
    char b[4] = {'d', 'e', 'f', 'g'};
    ASYNC_SOCKET_BUFFER buffers[2] = {{a, sizeof(a)}, {b, sizeof(b)}};
    constexpr std::size_t total = sizeof(a) + sizeof(b);

    for (const std::size_t bytes : {std::size_t{0}, std::size_t{1}, sizeof(a), total - 1})
    {
        check_completes_as<send_direction>(f, sent, buffers, 2, win32_no_error, bytes, ASYNC_SOCKET_SEND_ERROR, 0);
    }
    // And the exact count is still OK.
    check_completes_as<send_direction>(f, sent, buffers, 2, win32_no_error, total, ASYNC_SOCKET_SEND_OK, 0);
    CHECK(f.os.violations().empty());
}

// ---- releasing the IO -------------------------------------------------------------------------------------

// Tests_SRS_ASYNC_SOCKET_WIN32_01_068: [ on_io_complete shall close the event handle created in
// async_socket_send_async/async_socket_receive_async. ]
TEST_CASE("each completion closes the event of its own IO, exactly once")
{
    send_recorder sent;
    direction_fixture<receive_direction> f;
    receive_recorder& received = f.record;
    char out[4] = {'d', 'a', 't', 'a'};
    char in[4] = {};
    f.os.clear_calls();
    void* const s1 = start_one<send_direction>(f, out, sizeof(out), sent);
    void* const r1 = start_one<receive_direction>(f, in, sizeof(in), received);
    void* const s2 = start_one<send_direction>(f, out, 2, sent);
    const std::vector<call_record> created = calls_of(f.os, fake_call::create_event);
    REQUIRE(created.size() == 3);
    CHECK(f.os.live_events() == 3);
    CHECK(f.os.count(fake_call::close_event) == 0);

    // Completed in another order than started; each closes the event made for it.
    REQUIRE(f.os.complete(r1, error_netname_deleted, 0));
    REQUIRE(f.os.complete(s2, win32_no_error, 2));
    REQUIRE(f.os.complete(s1, win32_no_error, 1)); // a short send: an ERROR completion closes its event too

    const std::vector<call_record> closed = calls_of(f.os, fake_call::close_event);
    REQUIRE(closed.size() == 3);
    CHECK(closed[0].event == created[1].event);
    CHECK(closed[1].event == created[2].event);
    CHECK(closed[2].event == created[0].event);
    CHECK(f.os.live_events() == 0);
    CHECK(sent.seen().size() == 2);
    CHECK(received.seen().size() == 1);
    CHECK(f.os.violations().empty()); // a second CloseHandle on an event would be listed here
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_068: [ on_io_complete shall close the event handle created in
// async_socket_send_async/async_socket_receive_async. ]
TEST_CASE_TEMPLATE("the event of an IO is closed before its callback runs", D, send_direction, receive_direction)
{
    probed_io<D> io;
    io.f.os.clear_calls();

    for (int i = 1; i <= 2; ++i)
    {
        CAPTURE(i);
        io.run(win32_no_error, sizeof(io.data));
        REQUIRE(io.probe.calls == i);
        CHECK(io.probe.live_events_seen == 0);
        CHECK(io.probe.close_handles_seen == static_cast<std::size_t>(i));
    }
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_072: [ on_io_complete shall free the IO context. ]
TEST_CASE_TEMPLATE("the context of an IO is freed before its callback runs", D, send_direction, receive_direction)
{
    probed_io<D> io;
    const std::int64_t blocks = io.f.ledger.live_blocks();
    win32_error io_result = win32_no_error;
    std::size_t bytes = sizeof(io.data);

    SUBCASE("that completes") {}
    SUBCASE("that fails with a reset")
    {
        io_result = error_netname_deleted;
        bytes = 0;
    }
    SUBCASE("that is aborted")
    {
        io_result = win32_operation_aborted;
        bytes = 0;
    }
    io.run(io_result, bytes);

    REQUIRE(io.probe.calls == 1);
    CHECK(io.probe.live_blocks_seen == blocks);
    CHECK(io.f.ledger.live_blocks() == blocks);
    CHECK(io.f.ledger.misuse() == 0);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_072: [ on_io_complete shall free the IO context. ]
TEST_CASE("every IO's context is freed exactly once, and a callback may start the next IO")
{
    chained_sender chain;
    fixture f;
    REQUIRE(f.socket);
    chain.f = &f;
    chain.remaining = 4;
    const std::int64_t blocks = f.ledger.live_blocks();
    const std::uint64_t allocations = f.ledger.allocations();
    ASYNC_SOCKET_BUFFER buffer{chain.data, sizeof(chain.data)};

    REQUIRE(f.socket->send_async(&buffer, 1, &chained_sender::callback, &chain) == status::ok);
    for (int i = 0; i < 5; ++i)
    {
        CAPTURE(i);
        REQUIRE(f.os.pending_count() == 1);
        CHECK(f.ledger.live_blocks() == blocks + 1);
        REQUIRE(f.os.complete_oldest(win32_no_error, sizeof(chain.data)));
    }

    CHECK(chain.results == std::vector<ASYNC_SOCKET_SEND_RESULT>(5, ASYNC_SOCKET_SEND_OK));
    CHECK(chain.restarts == std::vector<status>(4, status::ok));
    CHECK(f.os.pending_count() == 0);
    CHECK(f.ledger.allocations() == allocations + 5);
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(f.ledger.misuse() == 0); // a double free or a wrong size would be counted here
    CHECK(f.os.count(fake_call::create_event) == 5);
    CHECK(f.os.count(fake_call::close_event) == 5);
    CHECK(f.os.live_events() == 0);
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_068: [ on_io_complete shall close the event handle created in
// async_socket_send_async/async_socket_receive_async. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_072: [ on_io_complete shall free the IO context. ]
TEST_CASE("completions delivered on threadpool worker threads release every IO once and call back once")
{
    send_recorder sent;
    direction_fixture<receive_direction> f;
    receive_recorder& received = f.record;
    f.os.set_worker_count(2);
    const std::int64_t blocks = f.ledger.live_blocks();
    char out[4] = {'w', 'o', 'r', 'k'};
    std::vector<char> in(4 * 8);

    std::vector<void*> sends;
    std::vector<void*> receives;
    for (std::size_t i = 0; i < 8; ++i)
    {
        sends.push_back(start_one<send_direction>(f, out, sizeof(out), sent));
        receives.push_back(start_one<receive_direction>(f, &in[i * 4], 4, received));
    }
    for (std::size_t i = 0; i < 8; ++i)
    {
        f.os.complete_on_worker(sends[i], win32_no_error, sizeof(out));
        f.os.complete_on_worker(receives[i], win32_no_error, i % 5);
    }
    REQUIRE(f.os.wait_until_idle(std::chrono::seconds(30)));

    CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>(8, ASYNC_SOCKET_SEND_OK));
    const std::vector<receive_recorder::completion> seen = received.seen();
    REQUIRE(seen.size() == 8);
    std::uint32_t total_bytes = 0;
    for (const auto& completion : seen)
    {
        CHECK(completion.result == ASYNC_SOCKET_RECEIVE_OK);
        total_bytes += completion.bytes;
    }
    CHECK(total_bytes == 0 + 1 + 2 + 3 + 4 + 0 + 1 + 2);
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(f.ledger.misuse() == 0);
    CHECK(f.os.count(fake_call::close_event) == 16);
    CHECK(f.os.live_events() == 0);
    CHECK(f.os.violations().empty());
}

// ---- the mapping on its own -----------------------------------------------------------------------------

// Tests_SRS_ASYNC_SOCKET_WIN32_01_066: [ If io_result is NO_ERROR, the on_send_complete callback passed to
// async_socket_send_async shall be called with on_send_complete_context as argument and ASYNC_SOCKET_SEND_OK. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_067: [ If io_result is not NO_ERROR, the on_send_complete callback passed to
// async_socket_send_async shall be called with on_send_complete_context as argument and ASYNC_SOCKET_SEND_ERROR. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_102: [ If io_result is NO_ERROR, but the number of bytes send is different than the
// sum of all buffer sizes passed to async_socket_send_async, the on_send_complete callback passed to
// async_socket_send_async shall be called with on_send_complete_context as context and ASYNC_SOCKET_SEND_ERROR. ]
TEST_CASE("map_send_result: OK only for NO_ERROR with every byte; ERROR otherwise; BECAUSE_CLOSE for errors while "
          "closing")
{
    struct row
    {
        win32_error io_result;
        std::size_t bytes;
        std::uint32_t total;
        bool closing;
        ASYNC_SOCKET_SEND_RESULT expected;
    };
    const row rows[] = {
        {win32_no_error, 10, 10, false, ASYNC_SOCKET_SEND_OK},
        {win32_no_error, 10, 10, true, ASYNC_SOCKET_SEND_OK}, // a send that made it before close is still OK
        {win32_no_error, UINT32_MAX, UINT32_MAX, false, ASYNC_SOCKET_SEND_OK},
        {win32_no_error, 9, 10, false, ASYNC_SOCKET_SEND_ERROR},
        {win32_no_error, 0, 10, false, ASYNC_SOCKET_SEND_ERROR},
        {win32_no_error, 11, 10, false, ASYNC_SOCKET_SEND_ERROR},
        {win32_no_error, (std::size_t{1} << 32) + 10, 10, false, ASYNC_SOCKET_SEND_ERROR}, // not truncated to 32 bits
        {win32_no_error, 9, 10, true, ASYNC_SOCKET_SEND_ERROR},
        {error_netname_deleted, 10, 10, false, ASYNC_SOCKET_SEND_ERROR},
        {win32_operation_aborted, 0, 10, false, ASYNC_SOCKET_SEND_ERROR},
        {win32_operation_aborted, 0, 10, true, ASYNC_SOCKET_SEND_BECAUSE_CLOSE},
        {error_netname_deleted, 10, 10, true, ASYNC_SOCKET_SEND_BECAUSE_CLOSE},
    };
    for (const row& r : rows)
    {
        CAPTURE(r.io_result);
        CAPTURE(r.bytes);
        CAPTURE(r.total);
        CAPTURE(r.closing);
        CHECK(fake_socket_type::map_send_result(win32_result(r.io_result, r.bytes), r.total, r.closing) == r.expected);
    }
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_069: [ If io_result is NO_ERROR, the on_receive_complete callback passed to
// async_socket_receive_async shall be called with on_receive_complete_context as context, ASYNC_SOCKET_RECEIVE_OK as
// result and number_of_bytes_transferred as bytes_received. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_070: [ If io_result is not NO_ERROR, the on_receive_complete callback passed to
// async_socket_receive_async shall be called with on_receive_complete_context as context, ASYNC_SOCKET_RECEIVE_ERROR as
// result and 0 for bytes_received. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_095: [If io_result is NO_ERROR, but the number of bytes received is greater than the
// sum of all buffer sizes passed to async_socket_receive_async, the on_receive_complete callback passed to
// async_socket_receive_async shall be called with on_receive_complete_context as context, ASYNC_SOCKET_RECEIVE_ERROR as
// result and number_of_bytes_transferred for bytes_received. ]
TEST_CASE("map_receive_result: OK with the bytes up to the total; ERROR with the bytes above it; ERROR with 0 on "
          "errors")
{
    struct row
    {
        win32_error io_result;
        std::size_t bytes;
        std::uint32_t total;
        bool closing;
        ASYNC_SOCKET_RECEIVE_RESULT expected;
        std::uint32_t expected_bytes;
    };
    const row rows[] = {
        {win32_no_error, 0, 10, false, ASYNC_SOCKET_RECEIVE_OK, 0},
        {win32_no_error, 4, 10, false, ASYNC_SOCKET_RECEIVE_OK, 4},
        {win32_no_error, 10, 10, false, ASYNC_SOCKET_RECEIVE_OK, 10},
        {win32_no_error, 10, 10, true, ASYNC_SOCKET_RECEIVE_OK, 10},
        {win32_no_error, UINT32_MAX, UINT32_MAX, false, ASYNC_SOCKET_RECEIVE_OK, UINT32_MAX},
        {win32_no_error, 11, 10, false, ASYNC_SOCKET_RECEIVE_ERROR, 11},
        {win32_no_error, 1000, 10, false, ASYNC_SOCKET_RECEIVE_ERROR, 1000},
        // More than a uint32_t can say: saturated, never truncated into an OK count.
        {win32_no_error, (std::size_t{1} << 32) + 3, 10, false, ASYNC_SOCKET_RECEIVE_ERROR, UINT32_MAX},
        {error_netname_deleted, 0, 10, false, ASYNC_SOCKET_RECEIVE_ERROR, 0},
        {error_netname_deleted, 7, 10, false, ASYNC_SOCKET_RECEIVE_ERROR, 0},
        {error_netname_deleted, 70, 10, false, ASYNC_SOCKET_RECEIVE_ERROR, 0},
        {win32_operation_aborted, 0, 10, false, ASYNC_SOCKET_RECEIVE_ERROR, 0},
        {win32_operation_aborted, 0, 10, true, ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE, 0},
        {win32_operation_aborted, 5, 10, true, ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE, 0},
    };
    for (const row& r : rows)
    {
        CAPTURE(r.io_result);
        CAPTURE(r.bytes);
        CAPTURE(r.total);
        CAPTURE(r.closing);
        const auto outcome =
            fake_socket_type::map_receive_result(win32_result(r.io_result, r.bytes), r.total, r.closing);
        CHECK(outcome.result == r.expected);
        CHECK(outcome.bytes == r.expected_bytes);
    }
}

TEST_CASE("the Win32 backend classifies a completion's code and keeps the code itself beside it")
{
    using async_socket::classify_win32_error;
    using async_socket::io_outcome;
    CHECK(classify_win32_error(0) == io_outcome::success);
    CHECK(classify_win32_error(995) == io_outcome::cancelled); // ERROR_OPERATION_ABORTED (CancelIoEx)
    CHECK(classify_win32_error(64) == io_outcome::reset);      // ERROR_NETNAME_DELETED
    CHECK(classify_win32_error(1236) == io_outcome::reset);    // ERROR_CONNECTION_ABORTED
    CHECK(classify_win32_error(10054) == io_outcome::reset);   // WSAECONNRESET
    CHECK(classify_win32_error(10053) == io_outcome::reset);   // WSAECONNABORTED
    CHECK(classify_win32_error(10055) == io_outcome::other);   // WSAENOBUFS
    CHECK(classify_win32_error(87) == io_outcome::other);      // ERROR_INVALID_PARAMETER

    // Through the backend: its completion routine gets the classification and the OS's own number, and a
    // refused submit answers the OS's code.
    fake_os os;
    {
        fake_threadpool backend;
        REQUIRE(backend.attach(&os));
        int owner = 0;
        REQUIRE(backend.bind<&routine_probe::routine>(fake_socket(3), &owner));
        char byte = 0;
        fake_threadpool::buffer_type buffer{};
        fake_threadpool::set_buffer(buffer, &byte, 1);
        fake_threadpool::io_state io;
        REQUIRE(backend.submit_receive(io, &buffer, 1).status == async_socket::submit_status::pending);
        REQUIRE(os.complete(&io.overlapped, 10054, 0));
        CHECK(routine_probe::calls == 1);
        CHECK(routine_probe::owner == &owner);
        CHECK(routine_probe::io == &io);
        CHECK(routine_probe::seen.outcome == io_outcome::reset);
        CHECK(routine_probe::seen.os_code == 10054);

        os.fail(fake_call::wsa_send, 0, 10055);
        const async_socket::submit_result refused = backend.submit_send(io, &buffer, 1);
        CHECK(refused.status == async_socket::submit_status::refused);
        CHECK(refused.value == 10055);
        os.fail(fake_call::create_event, 0, 8);
        const async_socket::submit_result no_event = backend.submit_send(io, &buffer, 1);
        CHECK(no_event.status == async_socket::submit_status::refused);
        CHECK(no_event.value == 8);
        CHECK(routine_probe::calls == 1); // nothing completes a refused IO
        backend.drain();
        backend.unbind();
    }
    CHECK(os.live_events() == 0);
    CHECK(os.live_ios() == 0);
    CHECK(os.violations().empty());
}

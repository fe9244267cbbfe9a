// send_async and receive_async before they start an IO: the argument checks and the socket states they refuse.
// The two share one path in the socket, so each rule is one TEST_CASE_TEMPLATE over send_direction and
// receive_direction (tests/support/directions.hpp), named "<send>" and "<receive>" in the test names. The IO they
// start once the arguments pass (its context, its Win32 calls, its failure paths) is checked in test_receive.cpp.
#include <async_socket/basic_async_socket.hpp>

#include "../support/directions.hpp"
#include "../support/fixtures.hpp"
#include "../support/probe_calls.hpp"

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <vector>

using namespace test_support;
using async_socket::win32_no_error;

namespace
{

// What a rejected call must leave as it was. Construct it after clear_calls().
struct untouched
{
    fixture& f;
    std::int64_t live_blocks = f.ledger.live_blocks();
    std::uint64_t allocations = f.ledger.allocations();
    std::size_t live_events = f.os.live_events();
    std::size_t pending = f.os.pending_count();

    template <class Recorder>
    void check(Recorder& record) const
    {
        CHECK(f.os.calls().empty());
        CHECK(f.ledger.allocations() == allocations);
        CHECK(f.ledger.live_blocks() == live_blocks);
        CHECK(f.os.live_events() == live_events);
        CHECK(f.os.pending_count() == pending);
        CHECK(record.seen().empty());
        CHECK(f.os.violations().empty());
    }
};

// Records the context pointer it is called with, for callbacks whose context is NULL.
template <class Direction>
struct context_probe
{
    static inline int calls = 0;
    static inline void* last_context = nullptr;
    static inline typename Direction::result last_result = Direction::invalid;
    static inline std::uint32_t last_bytes = 0;

    static void record(void* context, typename Direction::result result, std::uint32_t bytes)
    {
        ++calls;
        last_context = context;
        last_result = result;
        last_bytes = bytes;
    }
    static constexpr typename Direction::callback callback = &Direction::template callback_to<&record>;

    static void reset()
    {
        calls = 0;
        last_context = reinterpret_cast<void*>(std::uintptr_t{0xBAD});
        last_result = Direction::invalid;
        last_bytes = 0xFFFFFFFFu;
    }
};

// Tries an IO while the socket opens.
template <class Direction>
struct start_while_opening
{
    probe_socket_type* socket = nullptr;
    fake_os* os = nullptr;
    int calls = 0;
    async_socket::socket_state state_seen = async_socket::socket_state::closed;
    status attempted = status::ok;
    std::size_t os_calls_before = 0;
    std::size_t os_calls_after = 0;
    char data[2] = {'o', 'k'};
    typename Direction::recorder completions;

    static void run(void* context)
    {
        auto* self = static_cast<start_while_opening*>(context);
        ++self->calls;
        self->state_seen = self->socket->state();
        self->os_calls_before = self->os->calls().size();
        ASYNC_SOCKET_BUFFER buffer{self->data, sizeof(self->data)};
        self->attempted = Direction::start(*self->socket, &buffer, 1, self->completions);
        self->os_calls_after = self->os->calls().size();
    }
};

// Tries an IO from inside a completion callback (the socket is CLOSING when the callback runs in close).
template <class Direction>
struct start_from_callback
{
    fake_socket_type* socket = nullptr;
    int calls = 0;
    typename Direction::result result = Direction::invalid;
    async_socket::socket_state state_seen = async_socket::socket_state::closed;
    status attempted = status::ok;
    char byte = 'x';
    typename Direction::recorder nested;

    static void record(void* context, typename Direction::result result, std::uint32_t)
    {
        auto* self = static_cast<start_from_callback*>(context);
        ++self->calls;
        self->result = result;
        self->state_seen = self->socket->state();
        ASYNC_SOCKET_BUFFER buffer{&self->byte, 1};
        self->attempted = Direction::start(*self->socket, &buffer, 1, self->nested);
    }
    static constexpr typename Direction::callback callback = &Direction::template callback_to<&record>;
};

// Spoils one of four buffers, at each index in turn: every call is refused with invalid_argument and does nothing;
// the socket still works afterwards.
template <class Direction, class Spoil>
void check_each_index_refused(Spoil spoil)
{
    typename Direction::recorder record;
    fixture f;
    REQUIRE(f.socket);
    char data[4][2] = {{'a', 'b'}, {'c', 'd'}, {'e', 'f'}, {'g', 'h'}};

    for (std::uint32_t bad = 0; bad < 4; ++bad)
    {
        CAPTURE(bad);
        ASYNC_SOCKET_BUFFER buffers[4] = {{data[0], 2}, {data[1], 2}, {data[2], 2}, {data[3], 2}};
        spoil(buffers[bad]);
        f.os.clear_calls();
        const untouched before{f};

        const status result = Direction::start(*f.socket, buffers, 4, record);

        CHECK(result == status::invalid_argument);
        before.check(record);
    }
    check_still_works<Direction>(f);
}

// One call with these arguments, in an OPEN socket: refused with `expected` (non-zero), and nothing done.
template <class Direction>
void check_refused(fixture& f, ASYNC_SOCKET_BUFFER* buffers, std::uint32_t count, typename Direction::callback callback,
                   status expected)
{
    typename Direction::recorder record;
    f.os.clear_calls();
    const untouched before{f};

    const status result = Direction::start(*f.socket, buffers, count, callback, &record);

    CHECK(result == expected);
    CHECK(static_cast<int>(result) != 0);
    before.check(record);
}

// One call over a buffer of three bytes with `count` and `callback`, in a fresh OPEN socket: refused with `expected`,
// nothing done, and the socket still works afterwards.
template <class Direction>
void check_one_buffer_refused(std::uint32_t count, typename Direction::callback callback, status expected)
{
    fixture f;
    REQUIRE(f.socket);
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};

    check_refused<Direction>(f, &buffer, count, callback, expected);

    check_still_works<Direction>(f);
}

} // namespace

// ---- argument checks ----------------------------------------------------------------------------------

// Tests_SRS_ASYNC_SOCKET_WIN32_01_025: [ If buffers is NULL, async_socket_send_async shall fail and return a non-zero
// value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_074: [ If buffers is NULL, async_socket_receive_async shall fail and return a
// non-zero value. ]
TEST_CASE_TEMPLATE("an IO fails with invalid_argument when buffers is NULL, and does nothing", D, send_direction,
                   receive_direction)
{
    fixture f;
    REQUIRE(f.socket);

    check_refused<D>(f, nullptr, 1, &D::recorder::callback, status::invalid_argument);

    check_still_works<D>(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_085: [ If buffer_count is 0, async_socket_send_async shall fail and return a
// non-zero value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_086: [ If buffer_count is 0, async_socket_receive_async shall fail and return a
// non-zero value. ]
TEST_CASE_TEMPLATE("an IO fails with invalid_argument when buffer_count is 0, and does nothing", D, send_direction,
                   receive_direction)
{
    check_one_buffer_refused<D>(0, &D::recorder::callback, status::invalid_argument);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_089: [ If any of the buffers in payload has buffer set to NULL,
// async_socket_send_async shall fail and return a non-zero value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_091: [ If any of the buffers in payload has buffer set to NULL,
// async_socket_receive_async shall fail and return a non-zero value. ]
TEST_CASE_TEMPLATE("an IO fails with invalid_argument when the buffer pointer at any index is NULL, and does nothing",
                   D, send_direction, receive_direction)
{
    check_each_index_refused<D>([](ASYNC_SOCKET_BUFFER& buffer) { buffer.buffer = nullptr; });
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_090: [ If any of the buffers in payload has length set to 0, async_socket_send_async
// shall fail and return a non-zero value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_092: [ If any of the buffers in payload has length set to 0,
// async_socket_receive_async shall fail and return a non-zero value. ]
TEST_CASE_TEMPLATE("an IO fails with invalid_argument when the length at any index is 0, and does nothing", D,
                   send_direction, receive_direction)
{
    check_each_index_refused<D>([](ASYNC_SOCKET_BUFFER& buffer) { buffer.length = 0; });
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_101: [ If the sum of buffer lengths for all the buffers in payload is greater than
// UINT32_MAX, async_socket_send_async shall fail and return a non-zero value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_096: [ If the sum of buffer lengths for all the buffers in payload is greater than
// UINT32_MAX, async_socket_receive_async shall fail and return a non-zero value. ]
TEST_CASE_TEMPLATE("an IO fails with size_overflow when the sum of buffer lengths exceeds UINT32_MAX, and does nothing",
                   D, send_direction, receive_direction)
{
    fixture f;
    REQUIRE(f.socket);
    // The lengths are lies: the memory behind them is never touched.
    char small[2] = {'a', 'b'};

    SUBCASE("two buffers of UINT32_MAX")
    {
        ASYNC_SOCKET_BUFFER buffers[2] = {{small, 0xFFFFFFFFu}, {small + 1, 0xFFFFFFFFu}};
        check_refused<D>(f, buffers, 2, &D::recorder::callback, status::size_overflow);
    }
    SUBCASE("UINT32_MAX plus one byte")
    {
        ASYNC_SOCKET_BUFFER buffers[2] = {{small, 0xFFFFFFFFu}, {small + 1, 1}};
        check_refused<D>(f, buffers, 2, &D::recorder::callback, status::size_overflow);
    }
    SUBCASE("three buffers whose sum is exactly 2^32")
    {
        ASYNC_SOCKET_BUFFER buffers[3] = {{small, 0x80000000u}, {small, 0x7FFFFFFFu}, {small + 1, 1}};
        check_refused<D>(f, buffers, 3, &D::recorder::callback, status::size_overflow);
    }
    check_still_works<D>(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_101: [ If the sum of buffer lengths for all the buffers in payload is greater than
// UINT32_MAX, async_socket_send_async shall fail and return a non-zero value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_096: [ If the sum of buffer lengths for all the buffers in payload is greater than
// UINT32_MAX, async_socket_receive_async shall fail and return a non-zero value. ]
TEST_CASE_TEMPLATE("an IO accepts buffer lengths that sum to exactly UINT32_MAX", D, send_direction, receive_direction)
{
    direction_fixture<D> f;
    char small[2] = {'a', 'b'}; // never touched: the fake reads no send buffer and the IO is completed without data
    ASYNC_SOCKET_BUFFER buffers[2] = {{small, 0xFFFFFFFEu}, {small + 1, 1}};

    REQUIRE(D::start(*f.socket, buffers, 2, f.record) == status::ok);
    const std::vector<call_record> started = calls_of(f.os, D::os_call);
    REQUIRE(started.size() == 1);
    REQUIRE(started[0].buffers.size() == 2);
    CHECK(started[0].buffers[0].len == 0xFFFFFFFEu);
    CHECK(started[0].buffers[1].len == 1u);

    // UINT32_MAX bytes is all of them: OK (a receive's with all of them).
    REQUIRE(f.os.complete(started[0].overlapped, win32_no_error, std::size_t{UINT32_MAX}));
    D::check_seen(f.record, {D::ok}, UINT32_MAX);
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_026: [ If on_send_complete is NULL, async_socket_send_async shall fail and return a
// non-zero value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_075: [ If on_receive_complete is NULL, async_socket_receive_async shall fail and
// return a non-zero value. ]
TEST_CASE_TEMPLATE("an IO fails with invalid_argument when its callback is NULL, and does nothing", D, send_direction,
                   receive_direction)
{
    check_one_buffer_refused<D>(1, nullptr, status::invalid_argument);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_027: [ on_send_complete_context shall be allowed to be NULL. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_076: [ on_receive_complete_context shall be allowed to be NULL. ]
TEST_CASE_TEMPLATE("an IO accepts a NULL callback context and passes it to the callback unchanged", D, send_direction,
                   receive_direction)
{
    using probe = context_probe<D>;
    fixture f;
    REQUIRE(f.socket);
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    probe::reset();

    REQUIRE(D::start(*f.socket, &buffer, 1, probe::callback, nullptr) == status::ok);
    CHECK(f.os.count(D::os_call) == 1);
    REQUIRE(D::complete(f.os, f.os.pending().back().overlapped, "xyz"));

    CHECK(probe::calls == 1);
    CHECK(probe::last_context == nullptr);
    CHECK(probe::last_result == D::ok);
    D::check_bytes(probe::last_bytes, 3u);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_027: [ on_send_complete_context shall be allowed to be NULL. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_076: [ on_receive_complete_context shall be allowed to be NULL. ]
TEST_CASE_TEMPLATE("an IO passes a non-NULL callback context through unchanged", D, send_direction, receive_direction)
{
    using probe = context_probe<D>;
    fixture f;
    REQUIRE(f.socket);
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    int marker = 0;
    probe::reset();

    REQUIRE(D::start(*f.socket, &buffer, 1, probe::callback, &marker) == status::ok);
    REQUIRE(f.os.complete_oldest(win32_no_error, sizeof(data)));

    CHECK(probe::calls == 1);
    CHECK(probe::last_context == static_cast<void*>(&marker));
}

// ---- socket states ----------------------------------------------------------------------------------------

// Tests_SRS_ASYNC_SOCKET_WIN32_01_097: [ If async_socket is not OPEN, async_socket_send_async shall fail and return a
// non-zero value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_098: [ If async_socket is not OPEN, async_socket_receive_async shall fail and return
// a non-zero value. ]
TEST_CASE_TEMPLATE("an IO fails with invalid_state before the socket is opened, and does nothing", D, send_direction,
                   receive_direction)
{
    fixture f(false);
    REQUIRE(f.socket);
    REQUIRE(f.socket->state() == async_socket::socket_state::closed);
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};

    check_refused<D>(f, &buffer, 1, &D::recorder::callback, status::invalid_state);

    REQUIRE(f.socket->open_async(&open_recorder::callback, &f.opened) == status::ok);
    check_still_works<D>(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_097: [ If async_socket is not OPEN, async_socket_send_async shall fail and return a
// non-zero value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_098: [ If async_socket is not OPEN, async_socket_receive_async shall fail and return
// a non-zero value. ]
TEST_CASE_TEMPLATE("an IO fails with invalid_state after close, and works again after a reopen", D, send_direction,
                   receive_direction)
{
    fixture f;
    REQUIRE(f.socket);
    REQUIRE(f.socket->close() == status::ok);
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};

    check_refused<D>(f, &buffer, 1, &D::recorder::callback, status::invalid_state);

    REQUIRE(f.socket->open_async(&open_recorder::callback, &f.opened) == status::ok);
    check_still_works<D>(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_097: [ If async_socket is not OPEN, async_socket_send_async shall fail and return a
// non-zero value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_098: [ If async_socket is not OPEN, async_socket_receive_async shall fail and return
// a non-zero value. ]
TEST_CASE_TEMPLATE("an IO fails with invalid_state while the socket is OPENING", D, send_direction, receive_direction)
{
    start_while_opening<D> probe;
    fake_os os;
    alloc_ledger ledger;
    open_recorder opened;
    auto socket = probe_socket_type::create(&os, fake_socket(44), {}, fault_alloc{&ledger});
    REQUIRE(socket);
    probe.socket = socket.get();
    probe.os = &os;
    socket->backend().calls().while_opening = &start_while_opening<D>::run;
    socket->backend().calls().while_opening_context = &probe;
    const std::int64_t blocks = ledger.live_blocks();

    REQUIRE(socket->open_async(&open_recorder::callback, &opened) == status::ok);

    REQUIRE(probe.calls == 1);
    CHECK(probe.state_seen == async_socket::socket_state::opening);
    CHECK(probe.attempted == status::invalid_state);
    CHECK(probe.os_calls_after == probe.os_calls_before);
    CHECK(probe.completions.seen().empty());
    CHECK(ledger.live_blocks() == blocks);
    CHECK(os.live_events() == 0);
    CHECK(os.violations().empty());
    CHECK(socket->state() == async_socket::socket_state::open);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_097: [ If async_socket is not OPEN, async_socket_send_async shall fail and return a
// non-zero value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_098: [ If async_socket is not OPEN, async_socket_receive_async shall fail and return
// a non-zero value. ]
TEST_CASE_TEMPLATE("an IO fails with invalid_state while the socket is CLOSING", D, send_direction, receive_direction)
{
    start_from_callback<D> probe;
    fixture f;
    REQUIRE(f.socket);
    probe.socket = f.socket.get();
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    REQUIRE(D::start(*f.socket, &buffer, 1, start_from_callback<D>::callback, &probe) == status::ok);
    const std::int64_t blocks = f.ledger.live_blocks() - 1; // once the pending IO's context is gone

    // close cancels the pending IO; its callback runs inline, while the socket is CLOSING, and tries another.
    f.os.set_cancel_behavior(cancel_behavior::abort_inline);
    REQUIRE(f.socket->close() == status::ok);

    REQUIRE(probe.calls == 1);
    CHECK(probe.state_seen == async_socket::socket_state::closing);
    CHECK(probe.result == D::because_close);
    CHECK(probe.attempted == status::invalid_state);
    CHECK(probe.nested.seen().empty());
    CHECK(f.os.count(D::os_call) == 1);
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(f.os.live_events() == 0);
    CHECK(f.os.violations().empty());
}

// on_io_complete: how a completion finds its IO, maps the OS result to the callback's result, and releases the
// IO's event and context (before the user's callback runs). Completions are delivered as the OS would, through the
// fake threadpool.
#include <async_socket/basic_async_socket.hpp>

#include "../support/fixtures.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
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

std::vector<call_record> calls_of(const fake_os& os, fake_call call)
{
    std::vector<call_record> found;
    for (const call_record& record : os.calls())
    {
        if (record.call == call)
        {
            found.push_back(record);
        }
    }
    return found;
}

std::span<const std::byte> bytes_of(const char* text, std::size_t size)
{
    return {reinterpret_cast<const std::byte*>(text), size};
}

// Sends `length` bytes of `data` (one buffer) and returns the OVERLAPPED of the IO.
void* start_send(fixture& f, char* data, std::uint32_t length, send_recorder& sent)
{
    ASYNC_SOCKET_BUFFER buffer{data, length};
    REQUIRE(f.socket->send_async(&buffer, 1, &send_recorder::callback, &sent) == status::ok);
    const std::vector<call_record> sends = calls_of(f.os, fake_call::wsa_send);
    REQUIRE(!sends.empty());
    return sends.back().overlapped;
}

void* start_receive(fixture& f, char* data, std::uint32_t length, receive_recorder& received)
{
    ASYNC_SOCKET_BUFFER buffer{data, length};
    REQUIRE(f.socket->receive_async(&buffer, 1, &receive_recorder::callback, &received) == status::ok);
    const std::vector<call_record> receives = calls_of(f.os, fake_call::wsa_recv);
    REQUIRE(!receives.empty());
    return receives.back().overlapped;
}

// Fake Win32 calls that also keep the completion routine the socket registers with CreateThreadpoolIo, so that a
// test can run it as the OS would for a completion without an OVERLAPPED (fake_os has no public way to do that).
class capturing_calls : public async_socket::testing::fake_threadpool_calls
{
public:
    capturing_calls() noexcept = default;
    capturing_calls(capturing_calls&&) noexcept = default;

    template <async_socket::win32_completion_routine Completion>
    bool create_io(SOCKET_HANDLE socket, void* callback_context) noexcept
    {
        completion_ = Completion;
        callback_context_ = callback_context;
        return fake_threadpool_calls::create_io<Completion>(socket, callback_context);
    }

    bool deliver_null_overlapped(win32_error io_result, std::size_t bytes_transferred) const
    {
        if (completion_ == nullptr)
        {
            return false;
        }
        completion_(callback_context_, nullptr, io_result, bytes_transferred);
        return true;
    }

private:
    async_socket::win32_completion_routine completion_ = nullptr;
    void* callback_context_ = nullptr;
};

using capturing_socket_type = async_socket::basic_async_socket<async_socket::win32_threadpool_backend<capturing_calls>,
                                                               fault_alloc, async_socket::std_sync>;

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
    static void on_send(void* context, ASYNC_SOCKET_SEND_RESULT)
    {
        static_cast<inside_callback_probe*>(context)->look();
    }
    static void on_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT, std::uint32_t)
    {
        static_cast<inside_callback_probe*>(context)->look();
    }
};

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
    auto socket = capturing_socket_type::create(&os, fake_socket(7), {}, fault_alloc{&ledger});
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
    receive_recorder received;
    fixture f;
    REQUIRE(f.socket);
    char three[3] = {'a', 'b', 'c'};
    char five[5] = {'d', 'e', 'f', 'g', 'h'};
    char in[8] = {};
    void* const first = start_send(f, three, sizeof(three), first_sent);
    void* const second = start_send(f, five, sizeof(five), second_sent);
    void* const third = start_receive(f, in, sizeof(in), received);
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

// ---- send results -----------------------------------------------------------------------------------------

// Tests_SRS_ASYNC_SOCKET_WIN32_01_065: [ If the context of the IO indicates that a send has completed: ]
TEST_CASE("a send completion calls the send callback and never the receive callback")
{
    send_recorder sent;
    receive_recorder received;
    fixture f;
    REQUIRE(f.socket);
    char out[4] = {'s', 'e', 'n', 'd'};
    char in[4] = {};
    void* const receive = start_receive(f, in, sizeof(in), received);
    void* const send = start_send(f, out, sizeof(out), sent);

    REQUIRE(f.os.complete(send, win32_no_error, sizeof(out)));

    CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
    CHECK(received.seen().empty());
    CHECK(f.os.pending_count() == 1);
    REQUIRE(f.os.complete(receive, win32_no_error, 0));
    CHECK(sent.seen().size() == 1);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_066: [ If io_result is NO_ERROR, the on_send_complete callback passed to
// async_socket_send_async shall be called with on_send_complete_context as argument and ASYNC_SOCKET_SEND_OK. ]
TEST_CASE("a send that completes with NO_ERROR and all its bytes reports SEND_OK")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    char a[2] = {'a', 'b'};
    char b[9] = {};
    char c[1] = {'c'};
    ASYNC_SOCKET_BUFFER buffers[3] = {{a, sizeof(a)}, {b, sizeof(b)}, {c, sizeof(c)}};

    REQUIRE(f.socket->send_async(buffers, 3, &send_recorder::callback, &sent) == status::ok);
    REQUIRE(f.os.complete_oldest(win32_no_error, sizeof(a) + sizeof(b) + sizeof(c)));
    void* const single = start_send(f, a, 1, sent);
    REQUIRE(f.os.complete(single, win32_no_error, 1));

    CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK, ASYNC_SOCKET_SEND_OK});
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_067: [ If io_result is not NO_ERROR, the on_send_complete callback passed to
// async_socket_send_async shall be called with on_send_complete_context as argument and ASYNC_SOCKET_SEND_ERROR. ]
TEST_CASE("a send that fails while the socket is OPEN reports SEND_ERROR, whatever the byte count")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    char data[6] = {'f', 'a', 'i', 'l', 'e', 'd'};

    std::size_t expected = 0;
    for (const win32_error error : {error_netname_deleted, wsaeconnreset, win32_operation_aborted})
    {
        for (const std::size_t bytes : {std::size_t{0}, std::size_t{3}, sizeof(data)})
        {
            CAPTURE(error);
            CAPTURE(bytes);
            void* const overlapped = start_send(f, data, sizeof(data), sent);
            REQUIRE(f.os.complete(overlapped, error, bytes));
            ++expected;
            REQUIRE(sent.seen().size() == expected);
            CHECK(sent.seen().back() == ASYNC_SOCKET_SEND_ERROR);
        }
    }
    CHECK(f.socket->state() == async_socket::socket_state::open);
    CHECK(f.os.live_events() == 0);
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_067: [ If io_result is not NO_ERROR, the on_send_complete callback passed to
// async_socket_send_async shall be called with on_send_complete_context as argument and ASYNC_SOCKET_SEND_ERROR. ]
TEST_CASE("a send that fails while the socket is CLOSING reports SEND_BECAUSE_CLOSE (documented deviation)")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    char data[4] = {'b', 'y', 'e', '!'};
    (void)start_send(f, data, sizeof(data), sent);
    (void)start_send(f, data, 2, sent);
    const std::int64_t blocks = f.ledger.live_blocks() - 2;
    f.os.set_cancel_behavior(cancel_behavior::abort_inline);

    REQUIRE(f.socket->close() == status::ok);

    CHECK(sent.seen() ==
          std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_BECAUSE_CLOSE, ASYNC_SOCKET_SEND_BECAUSE_CLOSE});
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(f.os.live_events() == 0);
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_102: [ If io_result is NO_ERROR, but the number of bytes send is different than the
// sum of all buffer sizes passed to async_socket_send_async, the on_send_complete callback passed to
// async_socket_send_async shall be called with on_send_complete_context as context and ASYNC_SOCKET_SEND_ERROR. ]
TEST_CASE("a send that completes with NO_ERROR but fewer or more bytes than it had reports SEND_ERROR")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    char a[3] = {'a', 'b', 'c'};
    char b[4] = {'d', 'e', 'f', 'g'};
    ASYNC_SOCKET_BUFFER buffers[2] = {{a, sizeof(a)}, {b, sizeof(b)}};
    constexpr std::size_t total = sizeof(a) + sizeof(b);

    std::size_t expected = 0;
    for (const std::size_t bytes :
         {std::size_t{0}, std::size_t{1}, sizeof(a), total - 1, total + 1, total * 2, (std::size_t{1} << 32) + total})
    {
        CAPTURE(bytes);
        REQUIRE(f.socket->send_async(buffers, 2, &send_recorder::callback, &sent) == status::ok);
        REQUIRE(f.os.complete_oldest(win32_no_error, bytes));
        ++expected;
        REQUIRE(sent.seen().size() == expected);
        CHECK(sent.seen().back() == ASYNC_SOCKET_SEND_ERROR);
    }
    // And the exact count is still OK.
    REQUIRE(f.socket->send_async(buffers, 2, &send_recorder::callback, &sent) == status::ok);
    REQUIRE(f.os.complete_oldest(win32_no_error, total));
    CHECK(sent.seen().back() == ASYNC_SOCKET_SEND_OK);
    CHECK(f.os.violations().empty());
}

// ---- receive results ----------------------------------------------------------------------------------

// Tests_SRS_ASYNC_SOCKET_WIN32_01_071: [ If the context of the IO indicates that a receive has completed: ]
TEST_CASE("a receive completion calls the receive callback and never the send callback")
{
    send_recorder sent;
    receive_recorder received;
    fixture f;
    REQUIRE(f.socket);
    char out[4] = {'s', 'e', 'n', 'd'};
    char in[4] = {};
    void* const send = start_send(f, out, sizeof(out), sent);
    void* const receive = start_receive(f, in, sizeof(in), received);

    REQUIRE(f.os.complete_receive(receive, bytes_of("ok", 2)));

    REQUIRE(received.seen().size() == 1);
    CHECK(received.seen()[0].result == ASYNC_SOCKET_RECEIVE_OK);
    CHECK(received.seen()[0].bytes == 2u);
    CHECK(sent.seen().empty());
    REQUIRE(f.os.complete(send, win32_no_error, sizeof(out)));
    CHECK(received.seen().size() == 1);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_069: [ If io_result is NO_ERROR, the on_receive_complete callback passed to
// async_socket_receive_async shall be called with on_receive_complete_context as context, ASYNC_SOCKET_RECEIVE_OK as
// result and number_of_bytes_transferred as bytes_received. ]
TEST_CASE("a receive that completes with NO_ERROR reports RECEIVE_OK and the bytes it got, 0 meaning end of stream")
{
    receive_recorder received;
    fixture f;
    REQUIRE(f.socket);
    char in[16] = {};

    std::size_t expected = 0;
    for (const std::size_t bytes : {std::size_t{1}, std::size_t{7}, sizeof(in), std::size_t{0}})
    {
        CAPTURE(bytes);
        void* const overlapped = start_receive(f, in, sizeof(in), received);
        REQUIRE(f.os.complete(overlapped, win32_no_error, bytes));
        ++expected;
        const std::vector<receive_recorder::completion> seen = received.seen();
        REQUIRE(seen.size() == expected);
        CHECK(seen.back().result == ASYNC_SOCKET_RECEIVE_OK);
        CHECK(seen.back().bytes == bytes);
    }
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_069: [ If io_result is NO_ERROR, the on_receive_complete callback passed to
// async_socket_receive_async shall be called with on_receive_complete_context as context, ASYNC_SOCKET_RECEIVE_OK as
// result and number_of_bytes_transferred as bytes_received. ]
TEST_CASE("received data lands in the caller's buffers, in order, across several buffers")
{
    receive_recorder received;
    fixture f;
    REQUIRE(f.socket);
    char a[3] = {};
    char b[5] = {};
    char c[2] = {};
    ASYNC_SOCKET_BUFFER buffers[3] = {{a, sizeof(a)}, {b, sizeof(b)}, {c, sizeof(c)}};

    SUBCASE("part of the room")
    {
        REQUIRE(f.socket->receive_async(buffers, 3, &receive_recorder::callback, &received) == status::ok);
        REQUIRE(f.os.complete_receive(f.os.pending().back().overlapped, bytes_of("abcdefg", 7)));
        REQUIRE(received.seen().size() == 1);
        CHECK(received.seen()[0].result == ASYNC_SOCKET_RECEIVE_OK);
        CHECK(received.seen()[0].bytes == 7u);
        CHECK(std::memcmp(a, "abc", 3) == 0);
        CHECK(std::memcmp(b, "defg", 4) == 0);
        CHECK(b[4] == '\0');
        CHECK(c[0] == '\0');
        CHECK(c[1] == '\0');
    }
    SUBCASE("all of the room")
    {
        REQUIRE(f.socket->receive_async(buffers, 3, &receive_recorder::callback, &received) == status::ok);
        REQUIRE(f.os.complete_receive(f.os.pending().back().overlapped, bytes_of("0123456789", 10)));
        REQUIRE(received.seen().size() == 1);
        CHECK(received.seen()[0].result == ASYNC_SOCKET_RECEIVE_OK);
        CHECK(received.seen()[0].bytes == 10u);
        CHECK(std::memcmp(a, "012", 3) == 0);
        CHECK(std::memcmp(b, "34567", 5) == 0);
        CHECK(std::memcmp(c, "89", 2) == 0);
    }
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_070: [ If io_result is not NO_ERROR, the on_receive_complete callback passed to
// async_socket_receive_async shall be called with on_receive_complete_context as context, ASYNC_SOCKET_RECEIVE_ERROR as
// result and 0 for bytes_received. ]
TEST_CASE("a receive that fails while the socket is OPEN reports RECEIVE_ERROR with 0 bytes, whatever the OS said")
{
    receive_recorder received;
    fixture f;
    REQUIRE(f.socket);
    char in[8] = {};

    std::size_t expected = 0;
    for (const win32_error error : {error_netname_deleted, wsaeconnreset, win32_operation_aborted})
    {
        for (const std::size_t bytes : {std::size_t{0}, std::size_t{5}, sizeof(in), sizeof(in) + 1})
        {
            CAPTURE(error);
            CAPTURE(bytes);
            void* const overlapped = start_receive(f, in, sizeof(in), received);
            REQUIRE(f.os.complete(overlapped, error, bytes));
            ++expected;
            const std::vector<receive_recorder::completion> seen = received.seen();
            REQUIRE(seen.size() == expected);
            CHECK(seen.back().result == ASYNC_SOCKET_RECEIVE_ERROR);
            CHECK(seen.back().bytes == 0u);
        }
    }
    CHECK(f.socket->state() == async_socket::socket_state::open);
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_070: [ If io_result is not NO_ERROR, the on_receive_complete callback passed to
// async_socket_receive_async shall be called with on_receive_complete_context as context, ASYNC_SOCKET_RECEIVE_ERROR as
// result and 0 for bytes_received. ]
TEST_CASE("a receive that fails while the socket is CLOSING reports RECEIVE_BECAUSE_CLOSE with 0 bytes (deviation)")
{
    receive_recorder received;
    fixture f;
    REQUIRE(f.socket);
    char in[8] = {};
    (void)start_receive(f, in, sizeof(in), received);
    const std::int64_t blocks = f.ledger.live_blocks() - 1;
    f.os.set_cancel_behavior(cancel_behavior::abort_inline);

    REQUIRE(f.socket->close() == status::ok);

    const std::vector<receive_recorder::completion> seen = received.seen();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
    CHECK(seen[0].bytes == 0u);
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(f.os.live_events() == 0);
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_095: [If io_result is NO_ERROR, but the number of bytes received is greater than the
// sum of all buffer sizes passed to async_socket_receive_async, the on_receive_complete callback passed to
// async_socket_receive_async shall be called with on_receive_complete_context as context, ASYNC_SOCKET_RECEIVE_ERROR as
// result and number_of_bytes_transferred for bytes_received. ]
TEST_CASE("a receive that reports more bytes than its buffers hold reports RECEIVE_ERROR with that byte count")
{
    receive_recorder received;
    fixture f;
    REQUIRE(f.socket);
    char a[3] = {};
    char b[4] = {};
    ASYNC_SOCKET_BUFFER buffers[2] = {{a, sizeof(a)}, {b, sizeof(b)}};
    constexpr std::size_t total = sizeof(a) + sizeof(b);

    std::size_t expected = 0;
    for (const std::size_t bytes : {total + 1, total * 3, std::size_t{UINT32_MAX}})
    {
        CAPTURE(bytes);
        REQUIRE(f.socket->receive_async(buffers, 2, &receive_recorder::callback, &received) == status::ok);
        REQUIRE(f.os.complete_oldest(win32_no_error, bytes));
        ++expected;
        const std::vector<receive_recorder::completion> seen = received.seen();
        REQUIRE(seen.size() == expected);
        CHECK(seen.back().result == ASYNC_SOCKET_RECEIVE_ERROR);
        CHECK(seen.back().bytes == bytes);
    }
    // More than a uint32_t can say: saturated, never truncated into a small OK count.
    REQUIRE(f.socket->receive_async(buffers, 2, &receive_recorder::callback, &received) == status::ok);
    REQUIRE(f.os.complete_oldest(win32_no_error, (std::size_t{1} << 32) + 3));
    CHECK(received.seen().back().result == ASYNC_SOCKET_RECEIVE_ERROR);
    CHECK(received.seen().back().bytes == UINT32_MAX);
    // Exactly the total is not "greater": OK.
    REQUIRE(f.socket->receive_async(buffers, 2, &receive_recorder::callback, &received) == status::ok);
    REQUIRE(f.os.complete_oldest(win32_no_error, total));
    CHECK(received.seen().back().result == ASYNC_SOCKET_RECEIVE_OK);
    CHECK(received.seen().back().bytes == total);
    CHECK(f.os.violations().empty());
}

// ---- releasing the IO -------------------------------------------------------------------------------------

// Tests_SRS_ASYNC_SOCKET_WIN32_01_068: [ on_io_complete shall close the event handle created in
// async_socket_send_async/async_socket_receive_async. ]
TEST_CASE("each completion closes the event of its own IO, exactly once")
{
    send_recorder sent;
    receive_recorder received;
    fixture f;
    REQUIRE(f.socket);
    char out[4] = {'d', 'a', 't', 'a'};
    char in[4] = {};
    f.os.clear_calls();
    void* const s1 = start_send(f, out, sizeof(out), sent);
    void* const r1 = start_receive(f, in, sizeof(in), received);
    void* const s2 = start_send(f, out, 2, sent);
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
TEST_CASE("the event of an IO is closed before its callback runs")
{
    inside_callback_probe probe;
    fixture f;
    REQUIRE(f.socket);
    probe.f = &f;
    char out[2] = {'h', 'i'};
    char in[2] = {};
    ASYNC_SOCKET_BUFFER out_buffer{out, sizeof(out)};
    ASYNC_SOCKET_BUFFER in_buffer{in, sizeof(in)};
    f.os.clear_calls();

    REQUIRE(f.socket->send_async(&out_buffer, 1, &inside_callback_probe::on_send, &probe) == status::ok);
    REQUIRE(f.os.complete_oldest(win32_no_error, sizeof(out)));
    REQUIRE(probe.calls == 1);
    CHECK(probe.live_events_seen == 0);
    CHECK(probe.close_handles_seen == 1);

    REQUIRE(f.socket->receive_async(&in_buffer, 1, &inside_callback_probe::on_receive, &probe) == status::ok);
    REQUIRE(f.os.complete_oldest(win32_no_error, 1));
    REQUIRE(probe.calls == 2);
    CHECK(probe.live_events_seen == 0);
    CHECK(probe.close_handles_seen == 2);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_072: [ on_io_complete shall free the IO context. ]
TEST_CASE("the context of an IO is freed before its callback runs")
{
    inside_callback_probe probe;
    fixture f;
    REQUIRE(f.socket);
    probe.f = &f;
    char out[2] = {'h', 'i'};
    char in[2] = {};
    ASYNC_SOCKET_BUFFER out_buffer{out, sizeof(out)};
    ASYNC_SOCKET_BUFFER in_buffer{in, sizeof(in)};
    const std::int64_t blocks = f.ledger.live_blocks();

    SUBCASE("send")
    {
        REQUIRE(f.socket->send_async(&out_buffer, 1, &inside_callback_probe::on_send, &probe) == status::ok);
        REQUIRE(f.ledger.live_blocks() == blocks + 1);
        REQUIRE(f.os.complete_oldest(win32_no_error, sizeof(out)));
    }
    SUBCASE("send that fails")
    {
        REQUIRE(f.socket->send_async(&out_buffer, 1, &inside_callback_probe::on_send, &probe) == status::ok);
        REQUIRE(f.ledger.live_blocks() == blocks + 1);
        REQUIRE(f.os.complete_oldest(error_netname_deleted, 0));
    }
    SUBCASE("receive")
    {
        REQUIRE(f.socket->receive_async(&in_buffer, 1, &inside_callback_probe::on_receive, &probe) == status::ok);
        REQUIRE(f.ledger.live_blocks() == blocks + 1);
        REQUIRE(f.os.complete_oldest(win32_no_error, 2));
    }
    SUBCASE("receive that fails")
    {
        REQUIRE(f.socket->receive_async(&in_buffer, 1, &inside_callback_probe::on_receive, &probe) == status::ok);
        REQUIRE(f.ledger.live_blocks() == blocks + 1);
        REQUIRE(f.os.complete_oldest(win32_operation_aborted, 0));
    }

    REQUIRE(probe.calls == 1);
    CHECK(probe.live_blocks_seen == blocks);
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(f.ledger.misuse() == 0);
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
    receive_recorder received;
    fixture f;
    REQUIRE(f.socket);
    f.os.set_worker_count(2);
    const std::int64_t blocks = f.ledger.live_blocks();
    char out[4] = {'w', 'o', 'r', 'k'};
    std::vector<char> in(4 * 8);

    std::vector<void*> sends;
    std::vector<void*> receives;
    for (std::size_t i = 0; i < 8; ++i)
    {
        sends.push_back(start_send(f, out, sizeof(out), sent));
        receives.push_back(start_receive(f, &in[i * 4], 4, received));
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

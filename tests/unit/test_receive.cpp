// The IO that send_async and receive_async start once their arguments pass: the context it builds, the Win32 calls
// it makes (CreateEvent, StartThreadpoolIo, WSASend or WSARecv) and its failure paths. The two share one path in the
// socket, so each rule is one TEST_CASE_TEMPLATE over send_direction and receive_direction
// (tests/support/directions.hpp), named "<send>" and "<receive>" in the test names. The argument checks and the socket
// states that refuse an IO are in test_send.cpp; how a completion maps to the callback (byte counts, a short receive
// filling its buffers) is in test_completion.cpp.
#include <async_socket/basic_async_socket.hpp>

#include "../support/directions.hpp"
#include "../support/fixtures.hpp"

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

using namespace test_support;
using async_socket::win32_no_error;

namespace
{

constexpr async_socket::win32_error wsaenobufs = 10055;
constexpr async_socket::win32_error wsaeconnreset = 10054;

// The context layout the socket uses with the fake threadpool, for the tests that look inside a context.
using header_type = async_socket::detail::io_context_header<fake_threadpool::io_state>;
template <class Buffer>
using layout_for = async_socket::detail::io_context_layout<header_type, Buffer>;
using fake_layout = layout_for<fake_wsabuf>;

const header_type* context_of(void* overlapped)
{
    // The OVERLAPPED is the first member of the standard-layout context.
    return static_cast<const header_type*>(overlapped);
}

const fake_wsabuf* wsabufs_in_context(void* overlapped)
{
    return fake_layout::buffers(const_cast<header_type*>(context_of(overlapped)));
}

// A WSABUF stand-in large enough that about 2^20 of them exceed UINT32_MAX bytes (SRS 01_103, 01_104).
struct big_buffer
{
    std::uint32_t len;
    char* buf;
    std::byte padding[4096];
};
using big_socket_type =
    async_socket::basic_async_socket<basic_fake_threadpool<big_buffer>, fault_alloc, async_socket::std_sync>;
using big_layout = layout_for<big_buffer>;
constexpr std::uint32_t largest_fitting_count =
    static_cast<std::uint32_t>((UINT32_MAX - big_layout::buffers_offset) / sizeof(big_buffer));
static_assert(big_layout::size(largest_fitting_count) <= UINT32_MAX);
static_assert(big_layout::size(largest_fitting_count + 1) > UINT32_MAX);

struct big_fixture
{
    fake_os os;
    alloc_ledger ledger;
    open_recorder opened;
    big_socket_type::handle socket;

    big_fixture()
    {
        socket = big_socket_type::create(&os, fake_socket(43), {}, fault_alloc{&ledger});
        if (socket)
        {
            (void)socket->open_async(&open_recorder::callback, &opened);
        }
    }
};

// `size` bytes of text, a different letter at each offset, to tell apart which byte landed where.
std::string lettered(std::size_t size)
{
    std::string text(size, '\0');
    for (std::size_t i = 0; i < size; ++i)
    {
        text[i] = static_cast<char>('A' + i % 26);
    }
    return text;
}

// The caller's two buffers for an IO of "helloabc": a send's data, or room for a receive's.
template <class D>
struct hello_abc
{
    static constexpr std::string_view payload = "helloabc";
    char first[5];
    char second[3];
    ASYNC_SOCKET_BUFFER buffers[2] = {{first, sizeof(first)}, {second, sizeof(second)}};

    hello_abc()
    {
        D::fill(first, payload.substr(0, sizeof(first)));
        D::fill(second, payload.substr(sizeof(first)));
    }
};

// One IO over three bytes in a fresh OPEN socket, made to fail by `arrange` (run after clear_calls): it returns
// `expected` (non-zero), passes `check`, leaves no block, event or callback behind, and the socket still works.
template <class D, class Arrange, class Check>
void check_start_fails(Arrange arrange, status expected, Check check)
{
    direction_fixture<D> f;
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    const std::int64_t blocks = f.ledger.live_blocks();
    f.os.clear_calls();
    arrange(f);

    const status result = D::start(*f.socket, &buffer, 1, f.record);

    CHECK(result == expected);
    CHECK(static_cast<int>(result) != 0);
    check(f);
    CHECK(f.os.live_events() == 0);
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(f.ledger.misuse() == 0);
    CHECK(f.record.seen().empty());
    CHECK(f.os.violations().empty());
    check_still_works<D>(f);
}

} // namespace

// ---- the context ----------------------------------------------------------------------------------------

// Tests_SRS_ASYNC_SOCKET_WIN32_01_028: [ Otherwise async_socket_send_async shall create a context for the send where
// the payload, on_send_complete and on_send_complete_context shall be stored. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_077: [ Otherwise async_socket_receive_async shall create a context for the send
// where the payload, on_receive_complete and on_receive_complete_context shall be stored. ]
TEST_CASE_TEMPLATE("an IO stores the payload, the callback and its context in one context per IO", D, send_direction,
                   receive_direction)
{
    direction_fixture<D> f;
    hello_abc<D> caller;
    const std::int64_t blocks = f.ledger.live_blocks();

    REQUIRE(D::start(*f.socket, caller.buffers, 2, f.record) == status::ok);

    CHECK(f.ledger.live_blocks() == blocks + 1);
    const std::vector<call_record> started = calls_of(f.os, D::os_call);
    REQUIRE(started.size() == 1);
    const header_type* context = context_of(started[0].overlapped);
    CHECK(context->kind == D::kind);
    CHECK((D::stored_callback(*context) == &D::recorder::callback));
    CHECK(context->callback_context == static_cast<void*>(&f.record));
    CHECK(context->total_length == caller.payload.size());
    CHECK(context->buffer_count == 2u);

    // The stored callback and context are the ones called.
    REQUIRE(D::complete(f.os, started[0].overlapped, caller.payload));
    D::check_seen(f.record, {D::ok}, 8);
    CHECK(std::memcmp(caller.first, "hello", 5) == 0);
    CHECK(std::memcmp(caller.second, "abc", 3) == 0);
    CHECK(f.ledger.live_blocks() == blocks);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_050: [ The context shall also allocate enough memory to keep an array of buffer_count
// WSABUF items. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_078: [ The context shall also allocate enough memory to keep an array of buffer_count
// WSABUF items. ]
TEST_CASE_TEMPLATE("an IO allocates one block of header plus buffer_count WSABUFs for its context", D, send_direction,
                   receive_direction)
{
    direction_fixture<D> f;
    std::vector<char> data(64, 'z');

    for (std::uint32_t count : {1u, 2u, 7u, 64u})
    {
        CAPTURE(count);
        std::vector<ASYNC_SOCKET_BUFFER> buffers;
        for (std::uint32_t i = 0; i < count; ++i)
        {
            buffers.push_back({&data[i], 1});
        }
        const std::int64_t blocks = f.ledger.live_blocks();
        const std::int64_t bytes = f.ledger.live_bytes();
        const std::uint64_t allocations = f.ledger.allocations();

        REQUIRE(D::start(*f.socket, buffers.data(), count, f.record) == status::ok);

        CHECK(f.ledger.allocations() == allocations + 1);
        CHECK(f.ledger.live_blocks() == blocks + 1);
        CHECK(f.ledger.live_bytes() - bytes == static_cast<std::int64_t>(fake_layout::size(count)));
        CHECK(fake_layout::size(count) >= sizeof(header_type) + count * sizeof(fake_wsabuf));
        REQUIRE(f.os.complete_oldest(win32_no_error, count));
        CHECK(f.ledger.live_blocks() == blocks);
    }
    CHECK(f.ledger.misuse() == 0);
    CHECK(f.record.seen().size() == 4);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_103: [ If the amount of memory needed to allocate the context and the WSABUF items is
// exceeding UINT32_MAX, async_socket_send_async shall fail and return a non-zero value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_104: [ If the amount of memory needed to allocate the context and the WSABUF items is
// exceeding UINT32_MAX, async_socket_receive_async shall fail and return a non-zero value. ]
TEST_CASE_TEMPLATE("an IO fails with size_overflow when the context would exceed UINT32_MAX bytes, and does nothing", D,
                   send_direction, receive_direction)
{
    typename D::recorder record;
    big_fixture f;
    REQUIRE(f.socket);
    CHECK(big_layout::size(largest_fitting_count + 1) > UINT32_MAX);

    char byte = 'q'; // every buffer points here with length 1: the sum of lengths stays small
    std::vector<ASYNC_SOCKET_BUFFER> buffers(std::size_t{largest_fitting_count} + 1, ASYNC_SOCKET_BUFFER{&byte, 1});
    f.os.clear_calls();
    const std::int64_t blocks = f.ledger.live_blocks();
    const std::uint64_t allocations = f.ledger.allocations();

    const status result = D::start(*f.socket, buffers.data(), largest_fitting_count + 1, record);

    CHECK(result == status::size_overflow);
    CHECK(f.os.calls().empty());
    CHECK(f.ledger.allocations() == allocations);
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(record.seen().empty());

    // Still usable: a small IO through the same large WSABUF type goes out and completes with its data.
    char three[3];
    D::fill(three, "xyz");
    ASYNC_SOCKET_BUFFER small[3] = {{three, 1}, {three + 1, 1}, {three + 2, 1}};
    REQUIRE(D::start(*f.socket, small, 3, record) == status::ok);
    REQUIRE(D::complete(f.os, f.os.pending().back().overlapped, "xyz"));
    D::check_seen(record, {D::ok}, 3);
    CHECK(std::memcmp(three, "xyz", 3) == 0);
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_103: [ If the amount of memory needed to allocate the context and the WSABUF items is
// exceeding UINT32_MAX, async_socket_send_async shall fail and return a non-zero value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_104: [ If the amount of memory needed to allocate the context and the WSABUF items is
// exceeding UINT32_MAX, async_socket_receive_async shall fail and return a non-zero value. ]
TEST_CASE_TEMPLATE("an IO passes the size check with the largest buffer_count whose context fits in UINT32_MAX bytes",
                   D, send_direction, receive_direction)
{
    // Allocating (and zeroing) a 4 GiB context is not reasonable in a unit test: the allocation is made to fail
    // instead, which shows the size check let the count through and the allocation was asked for.
    typename D::recorder record;
    big_fixture f;
    REQUIRE(f.socket);
    CHECK(big_layout::size(largest_fitting_count) <= UINT32_MAX);
    CHECK(big_layout::size(largest_fitting_count) > UINT32_MAX - sizeof(big_buffer));

    char byte = 'q';
    std::vector<ASYNC_SOCKET_BUFFER> buffers(largest_fitting_count, ASYNC_SOCKET_BUFFER{&byte, 1});
    f.os.clear_calls();
    const std::int64_t blocks = f.ledger.live_blocks();
    const std::uint64_t failed = f.ledger.failed_allocations();
    f.ledger.fail_nth(1);

    const status result = D::start(*f.socket, buffers.data(), largest_fitting_count, record);

    CHECK(result == status::out_of_memory);
    CHECK(f.ledger.failed_allocations() == failed + 1);
    CHECK(f.os.calls().empty());
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(record.seen().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_056: [ async_socket_send_async shall set the WSABUF items to point to the
// memory/length of the buffers in payload. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_079: [ async_socket_receive_async shall set the WSABUF items to point to the
// memory/length of the buffers in payload. ]
TEST_CASE_TEMPLATE("an IO passes the OS WSABUFs that point at the caller's memory and lengths, in order", D,
                   send_direction, receive_direction)
{
    direction_fixture<D> f;
    char a[1];
    char b[7];
    char c[3];
    char d[300];
    const ASYNC_SOCKET_BUFFER expected[4] = {{a, sizeof(a)}, {b, sizeof(b)}, {c, sizeof(c)}, {d, sizeof(d)}};
    // The payload, one letter an offset: a send's data, or what a receive gets.
    const std::string payload = lettered(sizeof(a) + sizeof(b) + sizeof(c) + sizeof(d));
    // The caller's array lives on the heap and is freed as soon as the IO call returns.
    auto buffers = std::make_unique<ASYNC_SOCKET_BUFFER[]>(4);
    std::size_t offsets[4] = {};
    for (std::size_t i = 0, offset = 0; i < 4; offset += expected[i].length, ++i)
    {
        buffers[i] = expected[i];
        offsets[i] = offset;
        D::fill(static_cast<char*>(expected[i].buffer), std::string_view(payload).substr(offset, expected[i].length));
    }

    REQUIRE(D::start(*f.socket, buffers.get(), 4, f.record) == status::ok);
    buffers.reset();

    const std::vector<call_record> started = calls_of(f.os, D::os_call);
    REQUIRE(started.size() == 1);
    CHECK(started[0].buffer_count == 4u);
    REQUIRE(started[0].buffers.size() == 4);
    // The context's own WSABUF array, still right after the caller's array is gone.
    const fake_wsabuf* in_context = wsabufs_in_context(started[0].overlapped);
    for (std::size_t i = 0; i < 4; ++i)
    {
        CAPTURE(i);
        CHECK(static_cast<const void*>(started[0].buffers[i].buf) == expected[i].buffer);
        CHECK(started[0].buffers[i].len == expected[i].length);
        CHECK(static_cast<const void*>(in_context[i].buf) == expected[i].buffer);
        CHECK(in_context[i].len == expected[i].length);
    }

    // The completion needs nothing from the caller's (freed) array: ASan would catch a read of it. The caller's
    // memory holds the payload in order, across the buffers (a receive's data landed there; a send's is untouched).
    REQUIRE(D::complete(f.os, started[0].overlapped, payload));
    D::check_seen(f.record, {D::ok}, static_cast<std::uint32_t>(payload.size()));
    for (std::size_t i = 0; i < 4; ++i)
    {
        CAPTURE(i);
        CHECK(std::memcmp(expected[i].buffer, payload.data() + offsets[i], expected[i].length) == 0);
    }
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_056: [ async_socket_send_async shall set the WSABUF items to point to the
// memory/length of the buffers in payload. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_079: [ async_socket_receive_async shall set the WSABUF items to point to the
// memory/length of the buffers in payload. ]
TEST_CASE_TEMPLATE("an IO keeps its WSABUF copy when the caller reuses the ASYNC_SOCKET_BUFFER array at once", D,
                   send_direction, receive_direction)
{
    typename D::recorder first_record;
    typename D::recorder second_record;
    fixture f;
    REQUIRE(f.socket);
    hello_abc<D> caller;
    ASYNC_SOCKET_BUFFER* const buffers = caller.buffers;

    void* const first_overlapped = start_io<D>(f, buffers, 2, first_record);
    // Reuse the same array for a second IO of other memory.
    char third[9] = {};
    buffers[0] = {third, sizeof(third)};
    buffers[1] = {third + 1, 3};
    REQUIRE(D::start(*f.socket, buffers, 2, second_record) == status::ok);

    const fake_wsabuf* in_context = wsabufs_in_context(first_overlapped);
    CHECK(static_cast<const void*>(in_context[0].buf) == static_cast<const void*>(caller.first));
    CHECK(in_context[0].len == sizeof(caller.first));
    CHECK(static_cast<const void*>(in_context[1].buf) == static_cast<const void*>(caller.second));
    CHECK(in_context[1].len == sizeof(caller.second));

    // The first IO completes against its own total (8) and memory, the second against its own total (12).
    REQUIRE(D::complete(f.os, first_overlapped, caller.payload));
    REQUIRE(f.os.complete_oldest(win32_no_error, sizeof(third) + 3));
    D::check_seen(first_record, {D::ok}, 8);
    D::check_seen(second_record, {D::ok}, 12);
    CHECK(std::memcmp(caller.first, "hello", 5) == 0);
    CHECK(std::memcmp(caller.second, "abc", 3) == 0);
}

// ---- the Win32 calls ------------------------------------------------------------------------------------

// Tests_SRS_ASYNC_SOCKET_WIN32_01_057: [ An event to be used for the OVERLAPPED structure passed to WSASend shall be
// created and stored in the context. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_080: [ An event to be used for the OVERLAPPED structure passed to WSARecv shall be
// created and stored in the context. ]
TEST_CASE_TEMPLATE("an IO creates one event per IO and puts it in the OVERLAPPED given to the OS", D, send_direction,
                   receive_direction)
{
    direction_fixture<D> f;
    char data[2] = {'a', 'b'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    f.os.clear_calls();

    REQUIRE(D::start(*f.socket, &buffer, 1, f.record) == status::ok);
    REQUIRE(D::start(*f.socket, &buffer, 1, f.record) == status::ok);

    const std::vector<call_record> events = calls_of(f.os, fake_call::create_event);
    const std::vector<call_record> started = calls_of(f.os, D::os_call);
    REQUIRE(events.size() == 2);
    REQUIRE(started.size() == 2);
    CHECK(f.os.live_events() == 2);
    for (std::size_t i = 0; i < 2; ++i)
    {
        CAPTURE(i);
        CHECK(events[i].event != fake_event{0});
        CHECK(started[i].event == events[i].event);
        CHECK(static_cast<const fake_overlapped*>(started[i].overlapped)->event == events[i].event);
        CHECK(context_of(started[i].overlapped)->io.event == events[i].event);
    }
    CHECK(events[0].event != events[1].event);
    CHECK(started[0].overlapped != started[1].overlapped);

    REQUIRE(f.os.complete_oldest(win32_no_error, sizeof(data)));
    REQUIRE(f.os.complete_oldest(win32_no_error, sizeof(data)));
    CHECK(f.os.live_events() == 0);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_060: [ An asynchronous IO shall be started by calling StartThreadpoolIo. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_081: [ An asynchronous IO shall be started by calling StartThreadpoolIo. ]
TEST_CASE_TEMPLATE("an IO calls StartThreadpoolIo on the socket's threadpool IO before WSASend or WSARecv", D,
                   send_direction, receive_direction)
{
    direction_fixture<D> f;
    const std::vector<call_record> created = calls_of(f.os, fake_call::create_io);
    REQUIRE(created.size() == 1);
    char data[2] = {'a', 'b'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    f.os.clear_calls();

    REQUIRE(D::start(*f.socket, &buffer, 1, f.record) == status::ok);

    CHECK(f.os.call_names() == std::vector<std::string>{"CreateEvent", "StartThreadpoolIo", D::os_call_name});
    const std::vector<call_record> calls = f.os.calls();
    REQUIRE(calls.size() == 3);
    CHECK(calls[1].io_id == created[0].io_id);
    CHECK(calls[2].io_id == created[0].io_id);
    CHECK(f.os.violations().empty());
    REQUIRE(f.os.complete_oldest(win32_no_error, sizeof(data)));
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_061: [ The WSABUF array associated with the context shall be sent by calling WSASend
// and passing to it the OVERLAPPED structure with the event that was just created, dwFlags set to 0,
// lpNumberOfBytesSent set to NULL and lpCompletionRoutine set to NULL. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_082: [ A receive shall be started for the WSABUF array associated with the context
// calling WSARecv and passing to it the OVERLAPPED structure with the event that was just created, dwFlags set to 0,
// lpNumberOfBytesSent set to NULL and lpCompletionRoutine set to NULL.. ]
TEST_CASE_TEMPLATE(
    "an IO calls WSASend or WSARecv on the socket with the context's OVERLAPPED and event, no flags, no byte count", D,
    send_direction, receive_direction)
{
    // lpCompletionRoutine is not part of the ThreadpoolPolicy's send and receive (the policy passes NULL itself).
    direction_fixture<D> f;
    char data[5] = {'a', 'b', 'c', 'd', 'e'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    f.os.clear_calls();

    REQUIRE(D::start(*f.socket, &buffer, 1, f.record) == status::ok);

    const std::vector<call_record> events = calls_of(f.os, fake_call::create_event);
    const std::vector<call_record> started = calls_of(f.os, D::os_call);
    REQUIRE(events.size() == 1);
    REQUIRE(started.size() == 1);
    CHECK(started[0].socket == fake_socket(42));
    CHECK(started[0].flags == 0u);
    CHECK(started[0].bytes_pointer_is_null);
    CHECK(started[0].event == events[0].event);
    REQUIRE(started[0].overlapped != nullptr);
    const auto* overlapped = static_cast<const fake_overlapped*>(started[0].overlapped);
    CHECK(overlapped->event == events[0].event);
    CHECK(overlapped->internal == 0u);
    CHECK(overlapped->internal_high == 0u);
    CHECK(overlapped->offset == 0u);
    REQUIRE(started[0].buffers.size() == 1);
    CHECK(static_cast<const void*>(started[0].buffers[0].buf) == static_cast<const void*>(data));
    CHECK(started[0].buffers[0].len == sizeof(data));

    const std::vector<pending_io> pending = f.os.pending();
    REQUIRE(pending.size() == 1);
    CHECK(pending[0].overlapped == started[0].overlapped);
    CHECK(pending[0].kind == D::os_call);
    REQUIRE(f.os.complete_oldest(win32_no_error, sizeof(data)));
}

// ---- failures ---------------------------------------------------------------------------------------------

// Tests_SRS_ASYNC_SOCKET_WIN32_01_062: [ If net_comm_send_async fails, async_socket_send_async shall call
// CancelThreadpoolIo and return MU_FAILURE. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_054: [ If WSARecv fails, async_socket_receive_async shall call CancelThreadpoolIo. ]
TEST_CASE_TEMPLATE(
    "an IO cancels the threadpool IO, closes the event and frees the context when WSASend or WSARecv fails", D,
    send_direction, receive_direction)
{
    direction_fixture<D> f;
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};

    for (const async_socket::win32_error error : {wsaenobufs, wsaeconnreset})
    {
        CAPTURE(error);
        const std::int64_t blocks = f.ledger.live_blocks();
        const std::uint64_t allocations = f.ledger.allocations();
        f.os.clear_calls();
        f.os.fail(D::os_call, 0, error);

        const status result = D::start(*f.socket, &buffer, 1, f.record);

        CHECK(result == status::os_error);
        CHECK(static_cast<int>(result) != 0);
        CHECK(f.os.call_names() == std::vector<std::string>{"CreateEvent", "StartThreadpoolIo", D::os_call_name,
                                                            "CancelThreadpoolIo", "CloseHandle"});
        const std::vector<call_record> calls = f.os.calls();
        REQUIRE(calls.size() == 5);
        CHECK(calls[2].failed);
        CHECK(calls[4].event == calls[0].event);
        CHECK(f.os.live_events() == 0);
        CHECK(f.os.pending_count() == 0);
        CHECK(f.ledger.allocations() == allocations + 1);
        CHECK(f.ledger.live_blocks() == blocks);
        CHECK(f.ledger.misuse() == 0);
        CHECK(f.record.seen().empty());
        CHECK(f.os.violations().empty());

        check_still_works<D>(f);
    }
    // No late callback for the failed IOs, even after close.
    REQUIRE(f.socket->close() == status::ok);
    CHECK(f.record.seen().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_045: [ On success, async_socket_send_async shall return 0. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_083: [ On success, async_socket_receive_async shall return 0. ]
TEST_CASE_TEMPLATE("an IO returns 0 on success", D, send_direction, receive_direction)
{
    direction_fixture<D> f;
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};

    const status result = D::start(*f.socket, &buffer, 1, f.record);

    CHECK(result == status::ok);
    CHECK(static_cast<int>(result) == 0);
    CHECK(f.os.pending_count() == 1);
    CHECK(f.record.seen().empty()); // the callback comes with the completion, not before
    REQUIRE(f.os.complete_oldest(win32_no_error, sizeof(data)));
    CHECK(f.record.seen().size() == 1);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_045: [ On success, async_socket_send_async shall return 0. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_083: [ On success, async_socket_receive_async shall return 0. ]
TEST_CASE_TEMPLATE("an IO returns 0 when it completes before WSASend or WSARecv returns", D, send_direction,
                   receive_direction)
{
    constexpr std::string_view payload = "hi!";
    direction_fixture<D> f;
    char data[3];
    D::fill(data, payload);
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    const std::int64_t blocks = f.ledger.live_blocks();
    f.os.on_issue([&f, payload](const pending_io& io) { (void)D::complete(f.os, io.overlapped, payload); });

    const status result = D::start(*f.socket, &buffer, 1, f.record);
    f.os.on_issue(nullptr);

    CHECK(result == status::ok);
    D::check_seen(f.record, {D::ok}, 3);
    CHECK(std::memcmp(data, payload.data(), payload.size()) == 0);
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(f.os.live_events() == 0);
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_029: [ If any error occurs, async_socket_send_async shall fail and return a non-zero
// value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_084: [ If any error occurs, async_socket_receive_async shall fail and return a
// non-zero value. ]
TEST_CASE_TEMPLATE("an IO fails with os_error when CreateEvent fails, without starting an IO or leaking", D,
                   send_direction, receive_direction)
{
    check_start_fails<D>([](fixture& f) { f.os.fail(fake_call::create_event); }, status::os_error,
                         [](fixture& f)
                         {
                             CHECK(f.os.call_names() == std::vector<std::string>{"CreateEvent"});
                             CHECK(f.os.count(fake_call::start_io) == 0);
                         });
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_029: [ If any error occurs, async_socket_send_async shall fail and return a non-zero
// value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_084: [ If any error occurs, async_socket_receive_async shall fail and return a
// non-zero value. ]
TEST_CASE_TEMPLATE("an IO fails with out_of_memory when the context cannot be allocated, without any OS call", D,
                   send_direction, receive_direction)
{
    check_start_fails<D>([](fixture& f) { f.ledger.fail_nth(1); }, status::out_of_memory,
                         [](fixture& f)
                         {
                             CHECK(f.ledger.failed_allocations() == 1);
                             CHECK(f.os.calls().empty());
                         });
}

// send_async: argument checks, the IO context it builds, the Win32 calls it makes and its failure paths.
#include <async_socket/basic_async_socket.hpp>

#include "../support/fixtures.hpp"

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
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

// What a rejected call must leave as it was. Construct it after clear_calls().
struct untouched
{
    fixture& f;
    std::int64_t live_blocks = f.ledger.live_blocks();
    std::uint64_t allocations = f.ledger.allocations();
    std::size_t live_events = f.os.live_events();
    std::size_t pending = f.os.pending_count();

    void check(send_recorder& sent) const
    {
        CHECK(f.os.calls().empty());
        CHECK(f.ledger.allocations() == allocations);
        CHECK(f.ledger.live_blocks() == live_blocks);
        CHECK(f.os.live_events() == live_events);
        CHECK(f.os.pending_count() == pending);
        CHECK(sent.seen().empty());
        CHECK(f.os.violations().empty());
    }
};

// A valid send goes out and completes OK: the socket is still usable.
void check_send_still_works(fixture& f)
{
    char data[4] = {'p', 'i', 'n', 'g'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    send_recorder sent;
    const std::int64_t blocks = f.ledger.live_blocks();
    REQUIRE(f.socket->send_async(&buffer, 1, &send_recorder::callback, &sent) == status::ok);
    const std::vector<pending_io> pending = f.os.pending();
    REQUIRE(!pending.empty());
    REQUIRE(f.os.complete(pending.back().overlapped, win32_no_error, sizeof(data)));
    CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(f.os.violations().empty());
}

// Records the context pointer it is called with, for callbacks whose context is NULL.
struct context_probe
{
    static inline int calls = 0;
    static inline void* last_context = nullptr;
    static inline ASYNC_SOCKET_SEND_RESULT last_result = ASYNC_SOCKET_SEND_RESULT_INVALID;

    static void callback(void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        ++calls;
        last_context = context;
        last_result = result;
    }
    static void reset()
    {
        calls = 0;
        last_context = reinterpret_cast<void*>(std::uintptr_t{0xBAD});
        last_result = ASYNC_SOCKET_SEND_RESULT_INVALID;
    }
};

// A WSABUF stand-in large enough that about 2^20 of them exceed UINT32_MAX bytes (SRS 01_103).
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

// Fake Win32 calls that run a test's function inside CreateThreadpoolIo, that is while the socket is OPENING.
class opening_probe_calls : public async_socket::testing::fake_threadpool_calls
{
public:
    opening_probe_calls() noexcept = default;
    opening_probe_calls(opening_probe_calls&&) noexcept = default;

    template <async_socket::win32_completion_routine Completion>
    bool create_io(SOCKET_HANDLE socket, void* callback_context) noexcept
    {
        if (while_opening != nullptr)
        {
            while_opening(while_opening_context);
        }
        return fake_threadpool_calls::create_io<Completion>(socket, callback_context);
    }

    void (*while_opening)(void*) = nullptr;
    void* while_opening_context = nullptr;
};
using opening_probe_socket_type =
    async_socket::basic_async_socket<async_socket::win32_threadpool_backend<opening_probe_calls>, fault_alloc,
                                     async_socket::std_sync>;

// Tries a send while the socket opens.
struct send_while_opening
{
    opening_probe_socket_type* socket = nullptr;
    fake_os* os = nullptr;
    int calls = 0;
    async_socket::socket_state state_seen = async_socket::socket_state::closed;
    status attempted = status::ok;
    std::size_t os_calls_before = 0;
    std::size_t os_calls_after = 0;
    char data[2] = {'o', 'k'};
    send_recorder completions;

    static void run(void* context)
    {
        auto* self = static_cast<send_while_opening*>(context);
        ++self->calls;
        self->state_seen = self->socket->state();
        self->os_calls_before = self->os->calls().size();
        ASYNC_SOCKET_BUFFER buffer{self->data, sizeof(self->data)};
        self->attempted = self->socket->send_async(&buffer, 1, &send_recorder::callback, &self->completions);
        self->os_calls_after = self->os->calls().size();
    }
};

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

// Tries a send from inside a completion callback (the socket is CLOSING when the callback runs in close).
struct send_from_callback
{
    fake_socket_type* socket = nullptr;
    int calls = 0;
    ASYNC_SOCKET_SEND_RESULT result = ASYNC_SOCKET_SEND_RESULT_INVALID;
    async_socket::socket_state state_seen = async_socket::socket_state::closed;
    status attempted = status::ok;
    char byte = 'x';
    send_recorder nested;

    static void callback(void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        auto* self = static_cast<send_from_callback*>(context);
        ++self->calls;
        self->result = result;
        self->state_seen = self->socket->state();
        ASYNC_SOCKET_BUFFER buffer{&self->byte, 1};
        self->attempted = self->socket->send_async(&buffer, 1, &send_recorder::callback, &self->nested);
    }
};

} // namespace

// ---- argument checks ----------------------------------------------------------------------------------

// Tests_SRS_ASYNC_SOCKET_WIN32_01_025: [ If buffers is NULL, async_socket_send_async shall fail and return a non-zero
// value. ]
TEST_CASE("send_async fails with invalid_argument when buffers is NULL, and does nothing")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    f.os.clear_calls();
    const untouched before{f};

    const status result = f.socket->send_async(nullptr, 1, &send_recorder::callback, &sent);

    CHECK(result == status::invalid_argument);
    CHECK(static_cast<int>(result) != 0);
    before.check(sent);
    check_send_still_works(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_085: [ If buffer_count is 0, async_socket_send_async shall fail and return a
// non-zero value. ]
TEST_CASE("send_async fails with invalid_argument when buffer_count is 0, and does nothing")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    f.os.clear_calls();
    const untouched before{f};

    const status result = f.socket->send_async(&buffer, 0, &send_recorder::callback, &sent);

    CHECK(result == status::invalid_argument);
    CHECK(static_cast<int>(result) != 0);
    before.check(sent);
    check_send_still_works(f);
}

// Spoils one of four buffers, at each index in turn: every send_async is refused with invalid_argument and does
// nothing; the socket still works afterwards.
template <class Spoil>
void check_each_index_refused(Spoil spoil)
{
    send_recorder sent;
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

        const status result = f.socket->send_async(buffers, 4, &send_recorder::callback, &sent);

        CHECK(result == status::invalid_argument);
        before.check(sent);
    }
    check_send_still_works(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_089: [ If any of the buffers in payload has buffer set to NULL,
// async_socket_send_async shall fail and return a non-zero value. ]
TEST_CASE("send_async fails with invalid_argument when the buffer pointer at any index is NULL, and does nothing")
{
    check_each_index_refused([](ASYNC_SOCKET_BUFFER& buffer) { buffer.buffer = nullptr; });
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_090: [ If any of the buffers in payload has length set to 0, async_socket_send_async
// shall fail and return a non-zero value. ]
TEST_CASE("send_async fails with invalid_argument when the length at any index is 0, and does nothing")
{
    check_each_index_refused([](ASYNC_SOCKET_BUFFER& buffer) { buffer.length = 0; });
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_101: [ If the sum of buffer lengths for all the buffers in payload is greater than
// UINT32_MAX, async_socket_send_async shall fail and return a non-zero value. ]
TEST_CASE("send_async fails with size_overflow when the sum of buffer lengths exceeds UINT32_MAX, and does nothing")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    // The lengths are lies: the memory behind them is never touched.
    char small[2] = {'a', 'b'};

    SUBCASE("two buffers of UINT32_MAX")
    {
        ASYNC_SOCKET_BUFFER buffers[2] = {{small, 0xFFFFFFFFu}, {small + 1, 0xFFFFFFFFu}};
        f.os.clear_calls();
        const untouched before{f};
        CHECK(f.socket->send_async(buffers, 2, &send_recorder::callback, &sent) == status::size_overflow);
        before.check(sent);
    }
    SUBCASE("UINT32_MAX plus one byte")
    {
        ASYNC_SOCKET_BUFFER buffers[2] = {{small, 0xFFFFFFFFu}, {small + 1, 1}};
        f.os.clear_calls();
        const untouched before{f};
        CHECK(f.socket->send_async(buffers, 2, &send_recorder::callback, &sent) == status::size_overflow);
        before.check(sent);
    }
    SUBCASE("three buffers whose sum is exactly 2^32")
    {
        ASYNC_SOCKET_BUFFER buffers[3] = {{small, 0x80000000u}, {small, 0x7FFFFFFFu}, {small + 1, 1}};
        f.os.clear_calls();
        const untouched before{f};
        CHECK(f.socket->send_async(buffers, 3, &send_recorder::callback, &sent) == status::size_overflow);
        before.check(sent);
    }
    check_send_still_works(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_101: [ If the sum of buffer lengths for all the buffers in payload is greater than
// UINT32_MAX, async_socket_send_async shall fail and return a non-zero value. ]
TEST_CASE("send_async accepts buffer lengths that sum to exactly UINT32_MAX")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    char small[2] = {'a', 'b'}; // never touched: the fake does not read send buffers
    ASYNC_SOCKET_BUFFER buffers[2] = {{small, 0xFFFFFFFEu}, {small + 1, 1}};

    REQUIRE(f.socket->send_async(buffers, 2, &send_recorder::callback, &sent) == status::ok);
    const std::vector<call_record> sends = calls_of(f.os, fake_call::wsa_send);
    REQUIRE(sends.size() == 1);
    REQUIRE(sends[0].buffers.size() == 2);
    CHECK(sends[0].buffers[0].len == 0xFFFFFFFEu);
    CHECK(sends[0].buffers[1].len == 1u);

    REQUIRE(f.os.complete(sends[0].overlapped, win32_no_error, std::size_t{UINT32_MAX}));
    CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_026: [ If on_send_complete is NULL, async_socket_send_async shall fail and return a
// non-zero value. ]
TEST_CASE("send_async fails with invalid_argument when on_send_complete is NULL, and does nothing")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    f.os.clear_calls();
    const untouched before{f};

    const status result = f.socket->send_async(&buffer, 1, nullptr, &sent);

    CHECK(result == status::invalid_argument);
    CHECK(static_cast<int>(result) != 0);
    before.check(sent);
    check_send_still_works(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_027: [ on_send_complete_context shall be allowed to be NULL. ]
TEST_CASE("send_async accepts a NULL callback context and passes it to the callback unchanged")
{
    fixture f;
    REQUIRE(f.socket);
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    context_probe::reset();

    REQUIRE(f.socket->send_async(&buffer, 1, &context_probe::callback, nullptr) == status::ok);
    CHECK(f.os.count(fake_call::wsa_send) == 1);
    REQUIRE(f.os.complete_oldest(win32_no_error, sizeof(data)));

    CHECK(context_probe::calls == 1);
    CHECK(context_probe::last_context == nullptr);
    CHECK(context_probe::last_result == ASYNC_SOCKET_SEND_OK);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_027: [ on_send_complete_context shall be allowed to be NULL. ]
TEST_CASE("send_async passes a non-NULL callback context through unchanged")
{
    fixture f;
    REQUIRE(f.socket);
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    int marker = 0;
    context_probe::reset();

    REQUIRE(f.socket->send_async(&buffer, 1, &context_probe::callback, &marker) == status::ok);
    REQUIRE(f.os.complete_oldest(win32_no_error, sizeof(data)));

    CHECK(context_probe::calls == 1);
    CHECK(context_probe::last_context == static_cast<void*>(&marker));
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_097: [ If async_socket is not OPEN, async_socket_send_async shall fail and return a
// non-zero value. ]
TEST_CASE("send_async fails with invalid_state before the socket is opened, and does nothing")
{
    send_recorder sent;
    fixture f(false);
    REQUIRE(f.socket);
    REQUIRE(f.socket->state() == async_socket::socket_state::closed);
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    f.os.clear_calls();
    const untouched before{f};

    const status result = f.socket->send_async(&buffer, 1, &send_recorder::callback, &sent);

    CHECK(result == status::invalid_state);
    CHECK(static_cast<int>(result) != 0);
    before.check(sent);

    REQUIRE(f.socket->open_async(&open_recorder::callback, &f.opened) == status::ok);
    check_send_still_works(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_097: [ If async_socket is not OPEN, async_socket_send_async shall fail and return a
// non-zero value. ]
TEST_CASE("send_async fails with invalid_state after close, and works again after a reopen")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    REQUIRE(f.socket->close() == status::ok);
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    f.os.clear_calls();
    const untouched before{f};

    const status result = f.socket->send_async(&buffer, 1, &send_recorder::callback, &sent);

    CHECK(result == status::invalid_state);
    before.check(sent);

    REQUIRE(f.socket->open_async(&open_recorder::callback, &f.opened) == status::ok);
    check_send_still_works(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_097: [ If async_socket is not OPEN, async_socket_send_async shall fail and return a
// non-zero value. ]
TEST_CASE("send_async fails with invalid_state while the socket is OPENING")
{
    send_while_opening probe;
    fake_os os;
    alloc_ledger ledger;
    open_recorder opened;
    auto socket = opening_probe_socket_type::create(&os, fake_socket(44), {}, fault_alloc{&ledger});
    REQUIRE(socket);
    probe.socket = socket.get();
    probe.os = &os;
    socket->backend().calls().while_opening = &send_while_opening::run;
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
TEST_CASE("send_async fails with invalid_state while the socket is CLOSING")
{
    send_from_callback probe;
    fixture f;
    REQUIRE(f.socket);
    probe.socket = f.socket.get();
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    REQUIRE(f.socket->send_async(&buffer, 1, &send_from_callback::callback, &probe) == status::ok);
    const std::int64_t blocks = f.ledger.live_blocks() - 1; // once the pending send's context is gone

    // close cancels the pending send; its callback runs inline, while the socket is CLOSING, and tries to send.
    f.os.set_cancel_behavior(cancel_behavior::abort_inline);
    REQUIRE(f.socket->close() == status::ok);

    REQUIRE(probe.calls == 1);
    CHECK(probe.state_seen == async_socket::socket_state::closing);
    CHECK(probe.result == ASYNC_SOCKET_SEND_BECAUSE_CLOSE);
    CHECK(probe.attempted == status::invalid_state);
    CHECK(probe.nested.seen().empty());
    CHECK(f.os.count(fake_call::wsa_send) == 1);
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(f.os.live_events() == 0);
    CHECK(f.os.violations().empty());
}

// ---- the context ----------------------------------------------------------------------------------------

// Tests_SRS_ASYNC_SOCKET_WIN32_01_028: [ Otherwise async_socket_send_async shall create a context for the send where
// the payload, on_send_complete and on_send_complete_context shall be stored. ]
TEST_CASE("send_async stores the payload, the callback and its context in one context per send")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    char first[5] = {'h', 'e', 'l', 'l', 'o'};
    char second[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffers[2] = {{first, sizeof(first)}, {second, sizeof(second)}};
    const std::int64_t blocks = f.ledger.live_blocks();

    REQUIRE(f.socket->send_async(buffers, 2, &send_recorder::callback, &sent) == status::ok);

    CHECK(f.ledger.live_blocks() == blocks + 1);
    const std::vector<call_record> sends = calls_of(f.os, fake_call::wsa_send);
    REQUIRE(sends.size() == 1);
    const header_type* context = context_of(sends[0].overlapped);
    CHECK(context->kind == async_socket::detail::io_kind::send);
    CHECK((context->on_send_complete == &send_recorder::callback));
    CHECK(context->callback_context == static_cast<void*>(&sent));
    CHECK(context->total_length == sizeof(first) + sizeof(second));
    CHECK(context->buffer_count == 2u);

    // The stored callback and context are the ones called.
    REQUIRE(f.os.complete(sends[0].overlapped, win32_no_error, sizeof(first) + sizeof(second)));
    CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
    CHECK(f.ledger.live_blocks() == blocks);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_050: [ The context shall also allocate enough memory to keep an array of buffer_count
// WSABUF items. ]
TEST_CASE("send_async allocates one block of header plus buffer_count WSABUFs for its context")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
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

        REQUIRE(f.socket->send_async(buffers.data(), count, &send_recorder::callback, &sent) == status::ok);

        CHECK(f.ledger.allocations() == allocations + 1);
        CHECK(f.ledger.live_blocks() == blocks + 1);
        CHECK(f.ledger.live_bytes() - bytes == static_cast<std::int64_t>(fake_layout::size(count)));
        CHECK(fake_layout::size(count) >= sizeof(header_type) + count * sizeof(fake_wsabuf));
        REQUIRE(f.os.complete_oldest(win32_no_error, count));
        CHECK(f.ledger.live_blocks() == blocks);
    }
    CHECK(f.ledger.misuse() == 0);
    CHECK(sent.seen().size() == 4);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_103: [ If the amount of memory needed to allocate the context and the WSABUF items is
// exceeding UINT32_MAX, async_socket_send_async shall fail and return a non-zero value. ]
TEST_CASE("send_async fails with size_overflow when the context would exceed UINT32_MAX bytes, and does nothing")
{
    send_recorder sent;
    big_fixture f;
    REQUIRE(f.socket);
    CHECK(big_layout::size(largest_fitting_count + 1) > UINT32_MAX);

    char byte = 'q'; // every buffer points here with length 1: the sum of lengths stays small
    std::vector<ASYNC_SOCKET_BUFFER> buffers(std::size_t{largest_fitting_count} + 1, ASYNC_SOCKET_BUFFER{&byte, 1});
    f.os.clear_calls();
    const std::int64_t blocks = f.ledger.live_blocks();
    const std::uint64_t allocations = f.ledger.allocations();

    const status result =
        f.socket->send_async(buffers.data(), largest_fitting_count + 1, &send_recorder::callback, &sent);

    CHECK(result == status::size_overflow);
    CHECK(f.os.calls().empty());
    CHECK(f.ledger.allocations() == allocations);
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(sent.seen().empty());

    // Still usable: a small send through the same large WSABUF type goes out and completes.
    ASYNC_SOCKET_BUFFER three[3] = {{&byte, 1}, {&byte, 1}, {&byte, 1}};
    REQUIRE(f.socket->send_async(three, 3, &send_recorder::callback, &sent) == status::ok);
    REQUIRE(f.os.complete_oldest(win32_no_error, 3));
    CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_103: [ If the amount of memory needed to allocate the context and the WSABUF items is
// exceeding UINT32_MAX, async_socket_send_async shall fail and return a non-zero value. ]
TEST_CASE("send_async passes the size check with the largest buffer_count whose context fits in UINT32_MAX bytes")
{
    // Allocating (and zeroing) a 4 GiB context is not reasonable in a unit test: the allocation is made to fail
    // instead, which shows the size check let the count through and the allocation was asked for.
    send_recorder sent;
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

    const status result = f.socket->send_async(buffers.data(), largest_fitting_count, &send_recorder::callback, &sent);

    CHECK(result == status::out_of_memory);
    CHECK(f.ledger.failed_allocations() == failed + 1);
    CHECK(f.os.calls().empty());
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(sent.seen().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_056: [ async_socket_send_async shall set the WSABUF items to point to the
// memory/length of the buffers in payload. ]
TEST_CASE("send_async passes WSASend WSABUFs that point at the caller's memory and lengths, in order")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    char a[1] = {'a'};
    char b[7] = {'b', 'b', 'b', 'b', 'b', 'b', 'b'};
    char c[3] = {'c', 'c', 'c'};
    char d[300] = {};
    const ASYNC_SOCKET_BUFFER expected[4] = {{a, sizeof(a)}, {b, sizeof(b)}, {c, sizeof(c)}, {d, sizeof(d)}};
    // The caller's array lives on the heap and is freed as soon as send_async returns.
    auto buffers = std::make_unique<ASYNC_SOCKET_BUFFER[]>(4);
    for (std::size_t i = 0; i < 4; ++i)
    {
        buffers[i] = expected[i];
    }

    REQUIRE(f.socket->send_async(buffers.get(), 4, &send_recorder::callback, &sent) == status::ok);
    buffers.reset();

    const std::vector<call_record> sends = calls_of(f.os, fake_call::wsa_send);
    REQUIRE(sends.size() == 1);
    CHECK(sends[0].buffer_count == 4u);
    REQUIRE(sends[0].buffers.size() == 4);
    // The context's own WSABUF array, still right after the caller's array is gone.
    const auto* in_context = fake_layout::buffers(const_cast<header_type*>(context_of(sends[0].overlapped)));
    for (std::size_t i = 0; i < 4; ++i)
    {
        CAPTURE(i);
        CHECK(static_cast<const void*>(sends[0].buffers[i].buf) == expected[i].buffer);
        CHECK(sends[0].buffers[i].len == expected[i].length);
        CHECK(static_cast<const void*>(in_context[i].buf) == expected[i].buffer);
        CHECK(in_context[i].len == expected[i].length);
    }

    // The completion needs nothing from the caller's (freed) array: ASan would catch a read of it.
    REQUIRE(f.os.complete(sends[0].overlapped, win32_no_error, 1 + 7 + 3 + 300));
    CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_056: [ async_socket_send_async shall set the WSABUF items to point to the
// memory/length of the buffers in payload. ]
TEST_CASE("send_async keeps its WSABUF copy when the caller reuses the ASYNC_SOCKET_BUFFER array at once")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    char first[4] = {'1', '2', '3', '4'};
    char second[2] = {'5', '6'};
    ASYNC_SOCKET_BUFFER buffers[2] = {{first, sizeof(first)}, {second, sizeof(second)}};

    REQUIRE(f.socket->send_async(buffers, 2, &send_recorder::callback, &sent) == status::ok);
    void* const first_overlapped = f.os.pending().back().overlapped;
    // Reuse the same array for a second send of other memory.
    char third[9] = {};
    buffers[0] = {third, sizeof(third)};
    buffers[1] = {third + 1, 3};
    REQUIRE(f.socket->send_async(buffers, 2, &send_recorder::callback, &sent) == status::ok);

    const auto* in_context = fake_layout::buffers(const_cast<header_type*>(context_of(first_overlapped)));
    CHECK(static_cast<const void*>(in_context[0].buf) == static_cast<const void*>(first));
    CHECK(in_context[0].len == sizeof(first));
    CHECK(static_cast<const void*>(in_context[1].buf) == static_cast<const void*>(second));
    CHECK(in_context[1].len == sizeof(second));

    // The first send completes against its own total (6), the second against its own (12).
    REQUIRE(f.os.complete(first_overlapped, win32_no_error, sizeof(first) + sizeof(second)));
    REQUIRE(f.os.complete_oldest(win32_no_error, sizeof(third) + 3));
    CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK, ASYNC_SOCKET_SEND_OK});
}

// ---- the Win32 calls ------------------------------------------------------------------------------------

// Tests_SRS_ASYNC_SOCKET_WIN32_01_057: [ An event to be used for the OVERLAPPED structure passed to WSASend shall be
// created and stored in the context. ]
TEST_CASE("send_async creates one event per send and puts it in the OVERLAPPED given to WSASend")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    char data[2] = {'a', 'b'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    f.os.clear_calls();

    REQUIRE(f.socket->send_async(&buffer, 1, &send_recorder::callback, &sent) == status::ok);
    REQUIRE(f.socket->send_async(&buffer, 1, &send_recorder::callback, &sent) == status::ok);

    const std::vector<call_record> events = calls_of(f.os, fake_call::create_event);
    const std::vector<call_record> sends = calls_of(f.os, fake_call::wsa_send);
    REQUIRE(events.size() == 2);
    REQUIRE(sends.size() == 2);
    CHECK(f.os.live_events() == 2);
    for (std::size_t i = 0; i < 2; ++i)
    {
        CAPTURE(i);
        CHECK(events[i].event != fake_event{0});
        CHECK(sends[i].event == events[i].event);
        CHECK(static_cast<const fake_overlapped*>(sends[i].overlapped)->event == events[i].event);
        CHECK(context_of(sends[i].overlapped)->io.event == events[i].event);
    }
    CHECK(events[0].event != events[1].event);
    CHECK(sends[0].overlapped != sends[1].overlapped);

    REQUIRE(f.os.complete_oldest(win32_no_error, sizeof(data)));
    REQUIRE(f.os.complete_oldest(win32_no_error, sizeof(data)));
    CHECK(f.os.live_events() == 0);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_060: [ An asynchronous IO shall be started by calling StartThreadpoolIo. ]
TEST_CASE("send_async calls StartThreadpoolIo on the socket's threadpool IO before WSASend")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    const std::vector<call_record> created = calls_of(f.os, fake_call::create_io);
    REQUIRE(created.size() == 1);
    char data[2] = {'a', 'b'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    f.os.clear_calls();

    REQUIRE(f.socket->send_async(&buffer, 1, &send_recorder::callback, &sent) == status::ok);

    CHECK(f.os.call_names() == std::vector<std::string>{"CreateEvent", "StartThreadpoolIo", "WSASend"});
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
TEST_CASE("send_async calls WSASend on the socket with the context's OVERLAPPED and event, no flags, no byte count")
{
    // lpCompletionRoutine is not part of the ThreadpoolPolicy's send (the policy passes NULL itself).
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    char data[5] = {'a', 'b', 'c', 'd', 'e'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    f.os.clear_calls();

    REQUIRE(f.socket->send_async(&buffer, 1, &send_recorder::callback, &sent) == status::ok);

    const std::vector<call_record> events = calls_of(f.os, fake_call::create_event);
    const std::vector<call_record> sends = calls_of(f.os, fake_call::wsa_send);
    REQUIRE(events.size() == 1);
    REQUIRE(sends.size() == 1);
    CHECK(sends[0].socket == fake_socket(42));
    CHECK(sends[0].flags == 0u);
    CHECK(sends[0].bytes_pointer_is_null);
    CHECK(sends[0].event == events[0].event);
    REQUIRE(sends[0].overlapped != nullptr);
    const auto* overlapped = static_cast<const fake_overlapped*>(sends[0].overlapped);
    CHECK(overlapped->event == events[0].event);
    CHECK(overlapped->internal == 0u);
    CHECK(overlapped->internal_high == 0u);
    CHECK(overlapped->offset == 0u);
    REQUIRE(sends[0].buffers.size() == 1);
    CHECK(static_cast<const void*>(sends[0].buffers[0].buf) == static_cast<const void*>(data));
    CHECK(sends[0].buffers[0].len == sizeof(data));

    const std::vector<pending_io> pending = f.os.pending();
    REQUIRE(pending.size() == 1);
    CHECK(pending[0].overlapped == sends[0].overlapped);
    CHECK(pending[0].kind == fake_call::wsa_send);
    REQUIRE(f.os.complete_oldest(win32_no_error, sizeof(data)));
}

// ---- failures ---------------------------------------------------------------------------------------------

// Tests_SRS_ASYNC_SOCKET_WIN32_01_062: [ If net_comm_send_async fails, async_socket_send_async shall call
// CancelThreadpoolIo and return MU_FAILURE. ]
TEST_CASE("send_async cancels the threadpool IO, closes the event and frees the context when WSASend fails")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};

    for (const async_socket::win32_error error : {wsaenobufs, wsaeconnreset})
    {
        CAPTURE(error);
        const std::int64_t blocks = f.ledger.live_blocks();
        const std::uint64_t allocations = f.ledger.allocations();
        f.os.clear_calls();
        f.os.fail(fake_call::wsa_send, 0, error);

        const status result = f.socket->send_async(&buffer, 1, &send_recorder::callback, &sent);

        CHECK(result == status::os_error);
        CHECK(static_cast<int>(result) != 0);
        CHECK(f.os.call_names() == std::vector<std::string>{"CreateEvent", "StartThreadpoolIo", "WSASend",
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
        CHECK(sent.seen().empty());
        CHECK(f.os.violations().empty());

        check_send_still_works(f);
    }
    // No late callback for the failed sends, even after close.
    REQUIRE(f.socket->close() == status::ok);
    CHECK(sent.seen().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_045: [ On success, async_socket_send_async shall return 0. ]
TEST_CASE("send_async returns 0 on success")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};

    const status result = f.socket->send_async(&buffer, 1, &send_recorder::callback, &sent);

    CHECK(result == status::ok);
    CHECK(static_cast<int>(result) == 0);
    CHECK(f.os.pending_count() == 1);
    CHECK(sent.seen().empty()); // the callback comes with the completion, not before
    REQUIRE(f.os.complete_oldest(win32_no_error, sizeof(data)));
    CHECK(sent.seen().size() == 1);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_045: [ On success, async_socket_send_async shall return 0. ]
TEST_CASE("send_async returns 0 when the send completes before WSASend returns")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    const std::int64_t blocks = f.ledger.live_blocks();
    f.os.on_issue([&f](const pending_io& io) { (void)f.os.complete(io.overlapped, win32_no_error, io.total_length); });

    const status result = f.socket->send_async(&buffer, 1, &send_recorder::callback, &sent);
    f.os.on_issue(nullptr);

    CHECK(result == status::ok);
    CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(f.os.live_events() == 0);
    CHECK(f.os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_029: [ If any error occurs, async_socket_send_async shall fail and return a non-zero
// value. ]
TEST_CASE("send_async fails with os_error when CreateEvent fails, without starting an IO or leaking")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    const std::int64_t blocks = f.ledger.live_blocks();
    f.os.clear_calls();
    f.os.fail(fake_call::create_event);

    const status result = f.socket->send_async(&buffer, 1, &send_recorder::callback, &sent);

    CHECK(result == status::os_error);
    CHECK(static_cast<int>(result) != 0);
    CHECK(f.os.call_names() == std::vector<std::string>{"CreateEvent"});
    CHECK(f.os.count(fake_call::start_io) == 0);
    CHECK(f.os.live_events() == 0);
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(f.ledger.misuse() == 0);
    CHECK(sent.seen().empty());
    CHECK(f.os.violations().empty());
    check_send_still_works(f);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_029: [ If any error occurs, async_socket_send_async shall fail and return a non-zero
// value. ]
TEST_CASE("send_async fails with out_of_memory when the context cannot be allocated, without any OS call")
{
    send_recorder sent;
    fixture f;
    REQUIRE(f.socket);
    char data[3] = {'a', 'b', 'c'};
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    const std::int64_t blocks = f.ledger.live_blocks();
    f.os.clear_calls();
    f.ledger.fail_nth(1);

    const status result = f.socket->send_async(&buffer, 1, &send_recorder::callback, &sent);

    CHECK(result == status::out_of_memory);
    CHECK(static_cast<int>(result) != 0);
    CHECK(f.ledger.failed_allocations() == 1);
    CHECK(f.os.calls().empty());
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(sent.seen().empty());
    check_send_still_works(f);
}

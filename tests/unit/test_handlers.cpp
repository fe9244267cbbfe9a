// C++ handlers: send_async/receive_async/open_async with a callable instead of the spec's C callback and context.
// Over the fakes: the handler runs exactly once with a result that carries the spec's outcome and the OS's own
// error; it lives in the IO's context (one allocation, sized for it) and is destroyed exactly once: after it ran,
// or without running when the call fails; move-only and large captures work; a capture that throws while it is
// copied in fails the call cleanly; an IO that finished at once (skip mode) runs its handler on the calling thread.
#include <async_socket/basic_async_socket.hpp>
#include <async_socket/results.hpp>

#include "../support/fixtures.hpp"

#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <vector>

using namespace test_support;
using async_socket::io_completion;
using async_socket::receive_result;
using async_socket::send_result;
using async_socket::win32_no_error;
using async_socket::win32_operation_aborted;

namespace
{

constexpr async_socket::win32_error wsa_connection_reset = 10054; // WSAECONNRESET
constexpr async_socket::win32_error wsa_no_buffers = 10055;       // WSAENOBUFS

// Counts the lives of the copies of a handler: every one made is destroyed once.
struct lives
{
    int made = 0;
    int destroyed = 0;
    int calls = 0;
};

// A handler that records its result and its lives; the copy the socket keeps is the one that runs.
template <class Result>
struct counted_handler
{
    lives* life;
    std::optional<Result>* seen;

    counted_handler(lives* l, std::optional<Result>* s) noexcept : life(l), seen(s)
    {
        ++life->made;
    }
    counted_handler(const counted_handler& other) noexcept : life(other.life), seen(other.seen)
    {
        ++life->made;
    }
    counted_handler(counted_handler&& other) noexcept : life(other.life), seen(other.seen)
    {
        ++life->made;
    }
    counted_handler& operator=(const counted_handler&) = delete;
    ~counted_handler()
    {
        ++life->destroyed;
    }
    void operator()(Result result) noexcept
    {
        ++life->calls;
        *seen = result;
    }
};

struct handler_fixture : fixture
{
    char data[8] = "payload";
    std::array<ASYNC_SOCKET_BUFFER, 2> buffers{{{data, 3}, {data + 3, 4}}};

    std::int64_t base_blocks = 0; // the socket's own block
    std::uint64_t base_allocations = 0;

    handler_fixture()
    {
        REQUIRE(socket);
        REQUIRE(socket->state() == async_socket::socket_state::open);
        os.clear_calls();
        base_blocks = ledger.live_blocks();
        base_allocations = ledger.allocations();
    }

    // The blocks and allocations of the IO contexts alone.
    [[nodiscard]] std::int64_t context_blocks() const noexcept
    {
        return ledger.live_blocks() - base_blocks;
    }
    [[nodiscard]] std::uint64_t context_allocations() const noexcept
    {
        return ledger.allocations() - base_allocations;
    }
};

} // namespace

TEST_CASE_FIXTURE(handler_fixture, "a lambda send handler runs once with ok and no error, then is destroyed")
{
    lives life;
    std::optional<send_result> seen;
    REQUIRE(socket->send_async(buffers, counted_handler<send_result>(&life, &seen)) == status::ok);
    CHECK(life.calls == 0);
    CHECK(context_blocks() == 1); // the context, which holds the handler
    CHECK(life.made - life.destroyed == 1);

    REQUIRE(os.complete_oldest(win32_no_error, 7));
    REQUIRE(seen.has_value());
    CHECK(life.calls == 1);
    CHECK(seen->completion == io_completion::ok);
    CHECK(seen->ok());
    CHECK(static_cast<bool>(*seen));
    CHECK_FALSE(seen->error);
    CHECK(seen->c_result() == ASYNC_SOCKET_SEND_OK);
    CHECK(life.made == life.destroyed);
    CHECK(context_blocks() == 0);
    CHECK(os.violations().empty());
}

TEST_CASE_FIXTURE(handler_fixture, "a receive handler gets the byte count, and end_of_stream on 0 bytes")
{
    std::optional<receive_result> first;
    std::optional<receive_result> second;
    REQUIRE(socket->receive_async(buffers, [&](receive_result r) noexcept { first = r; }) == status::ok);
    REQUIRE(os.complete_oldest(win32_no_error, 5));
    REQUIRE(first.has_value());
    CHECK(first->ok());
    CHECK(first->bytes == 5);
    CHECK_FALSE(first->end_of_stream());
    CHECK_FALSE(first->error);
    CHECK(first->c_result() == ASYNC_SOCKET_RECEIVE_OK);

    REQUIRE(socket->receive_async(buffers, [&](receive_result r) noexcept { second = r; }) == status::ok);
    REQUIRE(os.complete_oldest(win32_no_error, 0));
    REQUIRE(second.has_value());
    CHECK(second->ok());
    CHECK(second->end_of_stream());
    CHECK(context_blocks() == 0);
}

TEST_CASE_FIXTURE(handler_fixture, "a failed IO gives error and the OS's own code in the system category")
{
    std::optional<send_result> sent;
    std::optional<receive_result> received;
    REQUIRE(socket->send_async(buffers, [&](send_result r) noexcept { sent = r; }) == status::ok);
    REQUIRE(socket->receive_async(buffers, [&](receive_result r) noexcept { received = r; }) == status::ok);
    REQUIRE(os.complete_oldest(wsa_connection_reset, 0));
    REQUIRE(os.complete_oldest(wsa_connection_reset, 0));
    REQUIRE(sent.has_value());
    REQUIRE(received.has_value());
    CHECK(sent->completion == io_completion::error);
    CHECK_FALSE(sent->ok());
    CHECK(sent->error.value() == static_cast<int>(wsa_connection_reset));
    CHECK(sent->error.category() == std::system_category());
    CHECK(sent->c_result() == ASYNC_SOCKET_SEND_ERROR);
    CHECK(received->completion == io_completion::error);
    CHECK(received->bytes == 0);
    CHECK(received->error.value() == static_cast<int>(wsa_connection_reset));
    CHECK(received->c_result() == ASYNC_SOCKET_RECEIVE_ERROR);
    CHECK(context_blocks() == 0);
}

TEST_CASE_FIXTURE(handler_fixture, "a send that moved fewer bytes than asked is an error with no OS code")
{
    std::optional<send_result> sent;
    REQUIRE(socket->send_async(buffers, [&](send_result r) noexcept { sent = r; }) == status::ok);
    REQUIRE(os.complete_oldest(win32_no_error, 6)); // 7 asked
    REQUIRE(sent.has_value());
    CHECK(sent->completion == io_completion::error);
    CHECK_FALSE(sent->error);
}

TEST_CASE_FIXTURE(handler_fixture, "close with a handler's IO pending runs it once with because_close, then frees it")
{
    lives life;
    std::optional<receive_result> seen;
    REQUIRE(socket->receive_async(buffers, counted_handler<receive_result>(&life, &seen)) == status::ok);
    CHECK(socket->close() == status::ok);
    REQUIRE(seen.has_value());
    CHECK(life.calls == 1);
    CHECK(seen->completion == io_completion::because_close);
    CHECK(seen->c_result() == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
    CHECK(seen->error.value() == static_cast<int>(win32_operation_aborted));
    CHECK(life.made == life.destroyed);
    CHECK(context_blocks() == 0);
    CHECK(os.violations().empty());
}

TEST_CASE_FIXTURE(handler_fixture, "a refused call destroys the handler without running it and leaks nothing")
{
    SUBCASE("the OS refuses the send")
    {
        os.fail(fake_call::wsa_send, 0, wsa_no_buffers);
        lives life;
        std::optional<send_result> seen;
        CHECK(socket->send_async(buffers, counted_handler<send_result>(&life, &seen)) == status::os_error);
        CHECK(life.calls == 0);
        CHECK(life.made == life.destroyed);
    }
    SUBCASE("the context cannot be allocated")
    {
        ledger.fail_all(true);
        lives life;
        std::optional<receive_result> seen;
        CHECK(socket->receive_async(buffers, counted_handler<receive_result>(&life, &seen)) == status::out_of_memory);
        ledger.fail_all(false);
        CHECK(life.calls == 0);
        CHECK(life.made == life.destroyed);
    }
    SUBCASE("bad buffers")
    {
        lives life;
        std::optional<send_result> seen;
        CHECK(socket->send_async(std::span<const ASYNC_SOCKET_BUFFER>{}, counted_handler<send_result>(&life, &seen)) ==
              status::invalid_argument);
        ASYNC_SOCKET_BUFFER empty{data, 0};
        CHECK(socket->send_async(std::span<const ASYNC_SOCKET_BUFFER>(&empty, 1),
                                 counted_handler<send_result>(&life, &seen)) == status::invalid_argument);
        CHECK(life.calls == 0);
        CHECK(life.made == life.destroyed);
        CHECK(context_allocations() == 0);
    }
    SUBCASE("a null function pointer")
    {
        void (*none)(send_result) noexcept = nullptr;
        CHECK(socket->send_async(buffers, none) == status::invalid_argument);
    }
    SUBCASE("the socket is closed")
    {
        REQUIRE(socket->close() == status::ok);
        lives life;
        std::optional<send_result> seen;
        CHECK(socket->send_async(buffers, counted_handler<send_result>(&life, &seen)) == status::invalid_state);
        CHECK(life.calls == 0);
        CHECK(life.made == life.destroyed);
    }
    CHECK(context_blocks() == 0);
    CHECK(os.pending_count() == 0);
    CHECK(os.live_events() == 0);
}

namespace
{
// A capture whose copy throws.
struct throws_when_copied
{
    throws_when_copied() = default;
    throws_when_copied(const throws_when_copied&)
    {
        throw std::runtime_error("copy refused");
    }
    throws_when_copied(throws_when_copied&&) noexcept = default;
};

// A capture whose copy runs out of memory.
struct bad_alloc_when_copied
{
    bad_alloc_when_copied() = default;
    bad_alloc_when_copied(const bad_alloc_when_copied&)
    {
        throw std::bad_alloc();
    }
    bad_alloc_when_copied(bad_alloc_when_copied&&) noexcept = default;
};
} // namespace

TEST_CASE_FIXTURE(handler_fixture, "a handler that throws while it is copied in fails the call with no IO and no leak")
{
    int calls = 0;
    auto handler = [&calls, refuses = throws_when_copied{}](send_result) noexcept { ++calls; };
    CHECK(socket->send_async(buffers, handler) == status::handler_threw); // an lvalue: copied in
    auto other = [&calls, runs_dry = bad_alloc_when_copied{}](receive_result) noexcept { ++calls; };
    CHECK(socket->receive_async(buffers, other) == status::out_of_memory);
    CHECK(calls == 0);
    CHECK(os.count(fake_call::wsa_send) == 0);
    CHECK(os.count(fake_call::wsa_recv) == 0);
    CHECK(context_blocks() == 0);
    CHECK(os.live_events() == 0);

    // Moved in instead, the same handler works.
    CHECK(socket->send_async(buffers, std::move(handler)) == status::ok);
    REQUIRE(os.complete_oldest(win32_no_error, 7));
    CHECK(calls == 1);
    CHECK(context_blocks() == 0);
}

TEST_CASE_FIXTURE(handler_fixture, "move-only and large captures live in the one context allocation")
{
    auto owned = std::make_unique<int>(41);
    std::optional<int> seen_value;
    REQUIRE(socket->send_async(buffers, [p = std::move(owned), &seen_value](send_result r) noexcept
                               { seen_value = r.ok() ? *p + 1 : -1; }) == status::ok);
    CHECK(context_allocations() == 1);
    REQUIRE(os.complete_oldest(win32_no_error, 7));
    CHECK(seen_value == 42);

    std::array<std::uint8_t, 1000> big{};
    big[999] = 7;
    int seen_byte = 0;
    const std::uint64_t before = context_allocations();
    REQUIRE(socket->receive_async(buffers, [big, &seen_byte](receive_result) noexcept { seen_byte = big[999]; }) ==
            status::ok);
    CHECK(context_allocations() == before + 1);
    REQUIRE(os.complete_oldest(win32_no_error, 1));
    CHECK(seen_byte == 7);
    CHECK(context_blocks() == 0);
}

namespace
{
// A handler whose move may throw: it runs where it is, in the context, which is freed after it.
struct may_throw_on_move
{
    int* calls;
    std::int64_t* live_blocks_seen;
    const alloc_ledger* ledger;
    may_throw_on_move(int* c, std::int64_t* l, const alloc_ledger* g) : calls(c), live_blocks_seen(l), ledger(g) {}
    may_throw_on_move(const may_throw_on_move&) = default;
    may_throw_on_move(may_throw_on_move&& other) noexcept(false)
        : calls(other.calls), live_blocks_seen(other.live_blocks_seen), ledger(other.ledger)
    {
    }
    void operator()(send_result) noexcept
    {
        ++*calls;
        *live_blocks_seen = ledger->live_blocks();
    }
};
static_assert(!std::is_nothrow_move_constructible_v<may_throw_on_move>);
} // namespace

TEST_CASE_FIXTURE(handler_fixture, "context freed before a nothrow-movable handler runs, after one that may throw")
{
    std::int64_t live_during = -1;
    REQUIRE(socket->send_async(buffers, [&](send_result) noexcept { live_during = context_blocks(); }) == status::ok);
    REQUIRE(os.complete_oldest(win32_no_error, 7));
    CHECK(live_during == 0); // already freed: the handler may start the next IO in the same memory

    int calls = 0;
    live_during = -1;
    REQUIRE(socket->send_async(buffers, may_throw_on_move(&calls, &live_during, &ledger)) == status::ok);
    REQUIRE(os.complete_oldest(win32_no_error, 7));
    CHECK(calls == 1);
    CHECK(live_during == base_blocks + 1); // ran in the context
    CHECK(context_blocks() == 0);
}

TEST_CASE_FIXTURE(handler_fixture, "buffers from a std::vector, a C array and a span; a function as the handler")
{
    static int function_calls = 0;
    function_calls = 0;
    struct plain
    {
        static void on_sent(send_result r) noexcept
        {
            function_calls += r.ok() ? 1 : 100;
        }
    };
    std::vector<ASYNC_SOCKET_BUFFER> from_vector(buffers.begin(), buffers.end());
    ASYNC_SOCKET_BUFFER from_array[2] = {buffers[0], buffers[1]};
    REQUIRE(socket->send_async(from_vector, &plain::on_sent) == status::ok);
    REQUIRE(socket->send_async(from_array, plain::on_sent) == status::ok);
    REQUIRE(socket->send_async(std::span<const ASYNC_SOCKET_BUFFER>(buffers), &plain::on_sent) == status::ok);
    const std::vector<call_record> calls = os.calls();
    REQUIRE(os.count(fake_call::wsa_send) == 3);
    for (int i = 0; i < 3; ++i)
    {
        REQUIRE(os.complete_oldest(win32_no_error, 7));
    }
    CHECK(function_calls == 3);
    CHECK(context_blocks() == 0);
}

TEST_CASE_FIXTURE(handler_fixture, "a handler may start the next IO; a handler's close of its own socket is refused")
{
    int rounds = 0;
    status close_from_handler = status::ok;
    struct chain
    {
        handler_fixture* f;
        int* rounds;
        status* close_status;
        void operator()(send_result r) noexcept
        {
            if (!r.ok())
            {
                return;
            }
            if (++*rounds < 3)
            {
                (void)f->socket->send_async(f->buffers, chain{*this});
            }
            else
            {
                *close_status = f->socket->close();
            }
        }
    };
    REQUIRE(socket->send_async(buffers, chain{this, &rounds, &close_from_handler}) == status::ok);
    for (int i = 0; i < 3; ++i)
    {
        REQUIRE(os.complete_oldest(win32_no_error, 7));
    }
    CHECK(rounds == 3);
    CHECK(close_from_handler == status::called_from_callback);
    CHECK(os.pending_count() == 0);
    CHECK(context_blocks() == 0);
}

TEST_CASE("open_async with a handler runs it with ASYNC_SOCKET_OPEN_OK before returning ok; refusals do not run it")
{
    fixture f(false);
    REQUIRE(f.socket);
    int calls = 0;
    ASYNC_SOCKET_OPEN_RESULT seen = ASYNC_SOCKET_OPEN_RESULT_INVALID;
    auto on_open = [&](ASYNC_SOCKET_OPEN_RESULT r) noexcept
    {
        ++calls;
        seen = r;
    };
    CHECK(f.socket->open_async(on_open) == status::ok);
    CHECK(calls == 1);
    CHECK(seen == ASYNC_SOCKET_OPEN_OK);
    CHECK(f.socket->open_async(on_open) == status::invalid_state); // already open
    CHECK(calls == 1);
}

namespace
{
using skip_threadpool = basic_fake_threadpool<fake_wsabuf, fake_features{.skip_completion_on_success = true}>;
using skip_socket = async_socket::basic_async_socket<skip_threadpool, fault_alloc, async_socket::std_sync>;
} // namespace

TEST_CASE("skip mode: a handler's IO that finished at once runs it on the calling thread, before the call returns")
{
    fake_os os;
    alloc_ledger ledger;
    os.at_once([](const pending_io& io)
               { return std::optional<std::uint32_t>(static_cast<std::uint32_t>(io.total_length)); });
    {
        auto socket = skip_socket::create(&os, fake_socket(9), {}, fault_alloc{&ledger});
        REQUIRE(socket);
        REQUIRE(socket->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
        char data[4] = "abc";
        ASYNC_SOCKET_BUFFER buffer{data, 3};
        lives life;
        std::optional<send_result> seen;
        REQUIRE(socket->send_async(std::span<const ASYNC_SOCKET_BUFFER>(&buffer, 1),
                                   counted_handler<send_result>(&life, &seen)) == status::ok);
        REQUIRE(seen.has_value()); // already ran
        CHECK(seen->ok());
        CHECK(life.calls == 1);
        CHECK(life.made == life.destroyed);
        CHECK(os.pending_count() == 0);
    }
    CHECK(ledger.live_blocks() == 0); // the socket is gone too
    CHECK(os.violations().empty());
}

// Coroutines: co_await socket->async_send(buffers) / async_receive(buffers), with the examples' minimal task
// type (examples/task.hpp) to show that no particular coroutine library is needed. Over the fakes: the result
// carries the outcome, bytes and OS error; the coroutine resumes on the thread that completes the IO; close
// resumes it with because_close; a refused call resumes at once with the status as its error_code; an IO that
// finished during the call goes on without suspending, so a loop of 1,000,000 of them does not grow the stack
// (over inline_threadpool, the benchmarks' backend whose every IO completes inside the call).
#include <async_socket/alloc/recycling_pool_alloc.hpp>
#include <async_socket/basic_async_socket.hpp>

#include "../support/fixtures.hpp"
#include "inline_threadpool.hpp"
#include "task.hpp"

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <thread>

using namespace test_support;
using async_socket::io_completion;
using async_socket::receive_result;
using async_socket::send_result;
using async_socket::win32_no_error;

namespace
{

constexpr double deadline_seconds = 60.0;

example::task send_then_receive(fake_socket_type& socket, std::span<const ASYNC_SOCKET_BUFFER> buffers,
                                std::optional<send_result>& sent, std::optional<receive_result>& received,
                                std::thread::id& resumed_on)
{
    sent = co_await socket.async_send(buffers);
    received = co_await socket.async_receive(buffers);
    resumed_on = std::this_thread::get_id();
}

// The frame address of a function called from the coroutine: how deep the stack is there. Not a local's address:
// clang rejects returning one (-Wreturn-stack-address), and ASan may move locals to a fake stack on the heap.
[[gnu::noinline]] std::uintptr_t stack_depth_marker()
{
    return reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
}

} // namespace

TEST_CASE_FIXTURE(fixture, "co_await of a send and a receive gives their results, resumed where each completes")
{
    char data[6] = "hello";
    std::array<ASYNC_SOCKET_BUFFER, 1> buffers{{{data, 5}}};
    std::optional<send_result> sent;
    std::optional<receive_result> received;
    std::thread::id resumed_on;
    example::task running = send_then_receive(*socket, buffers, sent, received, resumed_on);
    running.start();
    CHECK_FALSE(sent.has_value()); // suspended on the send
    REQUIRE(os.complete_oldest(win32_no_error, 5));
    REQUIRE(sent.has_value());
    CHECK(sent->ok());
    CHECK_FALSE(received.has_value()); // suspended on the receive

    // The receive completes on another thread: the coroutine resumes there.
    std::thread completer([&] { (void)os.complete_oldest(win32_no_error, 3); });
    const std::thread::id completer_id = completer.get_id();
    REQUIRE(running.wait_for(deadline_seconds));
    completer.join();
    REQUIRE(received.has_value());
    CHECK(received->ok());
    CHECK(received->bytes == 3);
    CHECK(resumed_on == completer_id);
    CHECK(ledger.live_blocks() == 1); // the socket alone: every context freed
    CHECK(os.violations().empty());
}

namespace
{
example::task receive_once(fake_socket_type& socket, std::span<const ASYNC_SOCKET_BUFFER> buffers,
                           std::optional<receive_result>& received)
{
    received = co_await socket.async_receive(buffers);
}
} // namespace

TEST_CASE_FIXTURE(fixture, "close resumes a coroutine waiting on a receive with because_close")
{
    char data[8] = {};
    std::array<ASYNC_SOCKET_BUFFER, 1> buffers{{{data, sizeof data}}};
    std::optional<receive_result> received;
    example::task running = receive_once(*socket, buffers, received);
    running.start();
    CHECK_FALSE(received.has_value());
    CHECK(socket->close() == status::ok);
    REQUIRE(running.wait_for(deadline_seconds));
    REQUIRE(received.has_value());
    CHECK(received->completion == io_completion::because_close);
    CHECK(static_cast<bool>(received->error));
}

TEST_CASE_FIXTURE(fixture, "a refused co_await resumes at once with error and the status as its error_code")
{
    std::optional<receive_result> received;
    SUBCASE("no buffers")
    {
        example::task running = receive_once(*socket, {}, received);
        running.start();
        REQUIRE(running.wait_for(deadline_seconds));
        REQUIRE(received.has_value());
        CHECK(received->completion == io_completion::error);
        CHECK(received->error == async_socket::make_error_code(status::invalid_argument));
        CHECK(received->error.category() == async_socket::status_category());
        CHECK(received->error.message() == "invalid_argument");
    }
    SUBCASE("the OS refuses")
    {
        os.fail(fake_call::wsa_recv);
        char data[8] = {};
        std::array<ASYNC_SOCKET_BUFFER, 1> buffers{{{data, sizeof data}}};
        example::task running = receive_once(*socket, buffers, received);
        running.start();
        REQUIRE(running.wait_for(deadline_seconds));
        REQUIRE(received.has_value());
        CHECK(received->error == status::os_error); // status is an error_code enum
    }
    CHECK(os.pending_count() == 0);
    CHECK(ledger.live_blocks() == 1);
}

namespace
{
using inline_socket = async_socket::basic_async_socket<async_socket::testing::inline_threadpool,
                                                       async_socket::recycling_pool_alloc, async_socket::std_sync>;

struct loop_figures
{
    std::uint64_t ok = 0;
    std::uint64_t suspended_or_failed = 0;
    std::uintptr_t first_depth = 0;
    std::uintptr_t deepest = 0;
    std::uintptr_t shallowest = 0;
};

example::task send_loop(inline_socket& socket, std::span<const ASYNC_SOCKET_BUFFER> buffers, std::uint64_t rounds,
                        loop_figures& figures)
{
    figures.first_depth = stack_depth_marker();
    figures.deepest = figures.first_depth;
    figures.shallowest = figures.first_depth;
    for (std::uint64_t i = 0; i < rounds; ++i)
    {
        const send_result r = co_await socket.async_send(buffers);
        (r.ok() ? figures.ok : figures.suspended_or_failed) += 1;
        const std::uintptr_t depth = stack_depth_marker();
        figures.deepest = depth < figures.deepest ? depth : figures.deepest;
        figures.shallowest = depth > figures.shallowest ? depth : figures.shallowest;
    }
}
} // namespace

TEST_CASE("a coroutine loop of 1,000,000 sends that finish during the call does not grow the stack")
{
    async_socket::testing::inline_engine engine;
    auto socket = inline_socket::create(&engine, async_socket::testing::fake_socket(3));
    REQUIRE(socket);
    REQUIRE(socket->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
    char data[64] = {};
    std::array<ASYNC_SOCKET_BUFFER, 1> buffers{{{data, sizeof data}}};
    constexpr std::uint64_t rounds = 1'000'000;
    loop_figures figures;
    example::task running = send_loop(*socket, buffers, rounds, figures);
    running.start(); // every send finishes during its call: the whole loop runs here, before start returns
    REQUIRE(running.wait_for(0.0));
    CHECK(figures.ok == rounds);
    CHECK(figures.suspended_or_failed == 0);
    // The same depth in every round: no frame was left on the stack by a resume from inside a send.
    CHECK(figures.deepest == figures.first_depth);
    CHECK(figures.shallowest == figures.first_depth);
}

namespace
{
example::task receive_recording(fake_socket_type& socket, std::span<const ASYNC_SOCKET_BUFFER> buffers,
                                std::optional<receive_result>& received, std::thread::id& resumed_on)
{
    received = co_await socket.async_receive(buffers);
    resumed_on = std::this_thread::get_id();
}
} // namespace

TEST_CASE_FIXTURE(fixture, "an IO completed during the call goes on without suspending, on this thread or another")
{
    char data[8] = {};
    std::array<ASYNC_SOCKET_BUFFER, 1> buffers{{{data, sizeof data}}};
    std::optional<receive_result> received;
    std::thread::id resumed_on;
    SUBCASE("completed on the calling thread, inside the call")
    {
        os.on_issue([&](const pending_io& io) { (void)os.complete(io.overlapped, win32_no_error, 3); });
    }
    SUBCASE("completed on another thread, before the call returns")
    {
        // The handler sees no awaiter of its own thread's: it takes the word first, so await_suspend must not
        // suspend (no thread would resume it).
        os.on_issue([&](const pending_io& io)
                    { std::thread([&] { (void)os.complete(io.overlapped, win32_no_error, 3); }).join(); });
    }
    example::task running = receive_recording(*socket, buffers, received, resumed_on);
    running.start();
    REQUIRE(running.wait_for(0.0)); // ended inside start(): never suspended
    REQUIRE(received.has_value());
    CHECK(received->ok());
    CHECK(received->bytes == 3);
    CHECK(resumed_on == std::this_thread::get_id());
    CHECK(os.pending_count() == 0);
    CHECK(ledger.live_blocks() == 1);
    CHECK(os.violations().empty());
}

TEST_CASE("completions on another thread racing the suspension: every co_await resumes once, 3000 rounds")
{
    fake_os os;
    alloc_ledger ledger;
    int went_on_here = 0;
    int resumed_there = 0;
    int wrong = 0;
    {
        auto socket = fake_socket_type::create(&os, fake_socket(9), {}, fault_alloc{&ledger});
        REQUIRE(socket);
        REQUIRE(socket->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
        char data[8] = {};
        std::array<ASYNC_SOCKET_BUFFER, 1> buffers{{{data, sizeof data}}};
        for (int round = 0; round < 3000; ++round)
        {
            std::atomic<void*> issued{nullptr};
            // The issuing thread lingers a little longer in the call each round, so that the completion lands
            // anywhere from inside the call to after the suspension.
            const int linger = (round % 100) * 400;
            os.on_issue(
                [&](const pending_io& io)
                {
                    issued.store(io.overlapped);
                    for (int spin = 0; spin < linger; ++spin)
                    {
                        (void)issued.load();
                    }
                });
            // Completes the receive as soon as it is issued: while its call returns, or after the suspension.
            std::thread completer(
                [&]
                {
                    void* overlapped = nullptr;
                    for (int spin = 0; overlapped == nullptr && spin < 10'000'000; ++spin)
                    {
                        overlapped = issued.load();
                    }
                    if (overlapped != nullptr)
                    {
                        (void)os.complete(overlapped, win32_no_error, 5);
                    }
                });
            const std::thread::id completer_id = completer.get_id();
            std::optional<receive_result> received;
            std::thread::id resumed_on;
            example::task running = receive_recording(*socket, buffers, received, resumed_on);
            running.start();
            const bool ended = running.wait_for(deadline_seconds);
            completer.join();
            REQUIRE(ended);
            if (!received || !received->ok() || received->bytes != 5)
            {
                ++wrong;
            }
            (resumed_on == completer_id ? resumed_there : went_on_here) += 1;
        }
        CHECK(os.pending_count() == 0);
    }
    MESSAGE("3000 completions racing the suspension: " << went_on_here << " went on without suspending, "
                                                       << resumed_there << " resumed on the completing thread");
    CHECK(went_on_here + resumed_there == 3000);
    CHECK(resumed_there > 0); // the other way is checked for certain by the test case above
    CHECK(wrong == 0);
    CHECK(ledger.live_blocks() == 0);
    CHECK(os.violations().empty());
}

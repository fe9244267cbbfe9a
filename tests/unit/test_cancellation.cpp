// Per-IO cancellation over the fakes: send_async/receive_async/async_* with a std::stop_token. A stop asks the
// backend to cancel that one IO (CancelIoEx with its OVERLAPPED); the IO completes once, as cancelled, and the
// socket stays open. A stop after the IO ended does nothing; a token stopped already refuses the call; close
// wins over a stop; a completion that comes before the stop_callback is registered is finished by the submitting
// thread; and a stop racing the completion gives exactly one of the two outcomes (also under TSan).
#include <async_socket/basic_async_socket.hpp>
#include <async_socket/results.hpp>

#include "../support/fixtures.hpp"

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <stop_token>
#include <thread>
#include <vector>

using namespace test_support;
using async_socket::io_completion;
using async_socket::receive_result;
using async_socket::send_result;
using async_socket::win32_no_error;
using async_socket::win32_operation_aborted;

namespace
{

// A handler that counts its calls and lives and keeps its last result.
struct tracked
{
    std::atomic<int> calls{0};
    std::atomic<int> lives{0};
    std::optional<receive_result> last;
    std::thread::id ran_on;
};

struct tracked_handler
{
    tracked* t;
    explicit tracked_handler(tracked* seen) noexcept : t(seen)
    {
        ++t->lives;
    }
    tracked_handler(const tracked_handler& other) noexcept : t(other.t)
    {
        ++t->lives;
    }
    tracked_handler(tracked_handler&& other) noexcept : t(other.t)
    {
        ++t->lives;
    }
    tracked_handler& operator=(const tracked_handler&) = delete;
    ~tracked_handler()
    {
        --t->lives;
    }
    void operator()(receive_result r) noexcept
    {
        t->last = r;
        t->ran_on = std::this_thread::get_id();
        ++t->calls;
    }
};

struct cancel_fixture : fixture
{
    char data[8] = "payload";
    ASYNC_SOCKET_BUFFER buffer{data, 7};
    std::span<const ASYNC_SOCKET_BUFFER> buffers{&buffer, 1};
    std::int64_t base_blocks = 0;

    cancel_fixture()
    {
        REQUIRE(socket);
        os.clear_calls();
        base_blocks = ledger.live_blocks();
    }
    [[nodiscard]] std::int64_t context_blocks() const noexcept
    {
        return ledger.live_blocks() - base_blocks;
    }
    [[nodiscard]] int calls_of(fake_call call)
    {
        int n = 0;
        for (const auto& record : os.calls())
        {
            n += record.call == call ? 1 : 0;
        }
        return n;
    }
    // Waits (bounded) for the fake's worker to run a queued completion and destroy its handler.
    static bool wait_for(const tracked& t, int calls)
    {
        // The handler is destroyed after it ran: wait for both.
        for (int i = 0; i < 20000 && (t.calls.load() < calls || t.lives.load() != 0); ++i)
        {
            std::this_thread::yield();
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
        return t.calls.load() == calls;
    }
};

} // namespace

TEST_CASE_FIXTURE(cancel_fixture, "a stop cancels that one pending IO: cancelled once, OS code 995, socket still open")
{
    std::stop_source stop;
    tracked t;
    REQUIRE(socket->receive_async(buffers, tracked_handler(&t), stop.get_token()) == status::ok);
    void* overlapped = os.calls().back().overlapped;
    CHECK(context_blocks() == 1);
    CHECK(t.lives == 1);

    CHECK(stop.request_stop());
    REQUIRE(wait_for(t, 1)); // the fake aborts it on its worker, as Windows does
    CHECK(calls_of(fake_call::cancel_overlapped_io) == 1);
    CHECK(calls_of(fake_call::cancel_socket_io) == 0); // not the whole socket
    for (const auto& record : os.calls())
    {
        if (record.call == fake_call::cancel_overlapped_io)
        {
            CHECK(record.overlapped == overlapped); // that IO's OVERLAPPED
        }
    }
    CHECK(t.last->completion == io_completion::cancelled);
    CHECK(t.last->c_result() == ASYNC_SOCKET_RECEIVE_ERROR);
    CHECK(t.last->error == std::error_code(static_cast<int>(win32_operation_aborted), std::system_category()));
    CHECK_FALSE(t.last->ok());
    CHECK(t.lives == 0);
    CHECK(context_blocks() == 0);
    CHECK(socket->state() == async_socket::socket_state::open);

    // The socket goes on: the next receive completes normally.
    tracked next;
    REQUIRE(socket->receive_async(buffers, tracked_handler(&next)) == status::ok);
    REQUIRE(os.complete_oldest(win32_no_error, 3));
    CHECK(next.last->ok());
    CHECK(next.last->bytes == 3);
    CHECK(os.violations().empty());
}

TEST_CASE_FIXTURE(cancel_fixture, "a stop after the IO completed does nothing; a send can be cancelled too")
{
    std::stop_source stop;
    tracked t;
    REQUIRE(socket->receive_async(buffers, tracked_handler(&t), stop.get_token()) == status::ok);
    REQUIRE(os.complete_oldest(win32_no_error, 7));
    CHECK(t.calls == 1);
    CHECK(t.last->ok());
    CHECK(stop.request_stop());
    CHECK(calls_of(fake_call::cancel_overlapped_io) == 0); // the stop_callback was unregistered with the IO
    CHECK(t.calls == 1);

    std::stop_source send_stop;
    std::optional<send_result> sent;
    std::atomic<bool> send_done{false};
    REQUIRE(socket->send_async(
                buffers,
                [&](send_result r) noexcept
                {
                    sent = r;
                    send_done = true;
                },
                send_stop.get_token()) == status::ok);
    send_stop.request_stop();
    for (int i = 0; i < 20000 && !send_done; ++i)
    {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    REQUIRE(send_done);
    CHECK(sent->completion == io_completion::cancelled);
    CHECK(sent->c_result() == ASYNC_SOCKET_SEND_ERROR);
    CHECK(context_blocks() == 0);
}

TEST_CASE_FIXTURE(cancel_fixture, "a token stopped already refuses the call: nothing started, handler destroyed unrun")
{
    std::stop_source stop;
    stop.request_stop();
    tracked t;
    CHECK(socket->receive_async(buffers, tracked_handler(&t), stop.get_token()) == status::cancelled);
    CHECK(t.calls == 0);
    CHECK(t.lives == 0);
    CHECK(context_blocks() == 0);
    CHECK(calls_of(fake_call::wsa_recv) == 0);
    CHECK(calls_of(fake_call::start_io) == 0);
    // Bad input still says so first.
    CHECK(socket->receive_async(std::span<const ASYNC_SOCKET_BUFFER>{}, tracked_handler(&t), stop.get_token()) ==
          status::invalid_argument);
    CHECK(async_socket::make_error_code(status::cancelled).message() == "cancelled");
}

TEST_CASE_FIXTURE(cancel_fixture, "a token that can never stop works as no token; close wins over a stop")
{
    tracked plain;
    REQUIRE(socket->receive_async(buffers, tracked_handler(&plain), std::stop_token{}) == status::ok);
    std::stop_source stop;
    tracked t;
    REQUIRE(socket->receive_async(buffers, tracked_handler(&t), stop.get_token()) == status::ok);
    os.set_cancel_behavior(cancel_behavior::ignore);
    stop.request_stop(); // recorded, but the fake leaves the IO pending
    CHECK(calls_of(fake_call::cancel_overlapped_io) == 1);
    os.set_cancel_behavior(cancel_behavior::abort_on_worker);
    CHECK(socket->close() == status::ok);
    CHECK(plain.last->completion == io_completion::because_close);
    CHECK(t.last->completion == io_completion::because_close); // closing: because_close, not cancelled
    CHECK(t.calls == 1);
    CHECK(t.lives == 0);
    CHECK(context_blocks() == 0);
}

TEST_CASE_FIXTURE(cancel_fixture, "a stop that finds the IO failing for another reason reports that error")
{
    std::stop_source stop;
    tracked t;
    REQUIRE(socket->receive_async(buffers, tracked_handler(&t), stop.get_token()) == status::ok);
    os.set_cancel_behavior(cancel_behavior::ignore);
    stop.request_stop();
    REQUIRE(os.complete_oldest(10054, 0)); // WSAECONNRESET
    CHECK(t.last->completion == io_completion::error);
    CHECK(t.last->error.value() == 10054);
}

TEST_CASE_FIXTURE(cancel_fixture, "a backend that completes the cancel on the stopping thread runs the handler there")
{
    os.set_cancel_behavior(cancel_behavior::abort_inline);
    std::stop_source stop;
    tracked t;
    REQUIRE(socket->receive_async(buffers, tracked_handler(&t), stop.get_token()) == status::ok);
    std::thread stopper([&] { stop.request_stop(); });
    const std::thread::id stopper_id = stopper.get_id();
    stopper.join();
    CHECK(t.calls == 1); // before request_stop returned
    CHECK(t.ran_on == stopper_id);
    CHECK(t.last->completion == io_completion::cancelled);
    CHECK(t.lives == 0);
    CHECK(context_blocks() == 0);
}

TEST_CASE_FIXTURE(cancel_fixture, "a completion before the stop_callback is registered is finished by the submitter")
{
    // The fake completes the IO inside WSARecv, on this thread, before the call returns: the completion comes
    // before the stop_callback exists, so the submitting thread finishes the IO once it has registered it.
    os.on_issue([this](const pending_io& io) { (void)os.complete(io.overlapped, win32_no_error, 5); });
    std::stop_source stop;
    tracked t;
    REQUIRE(socket->receive_async(buffers, tracked_handler(&t), stop.get_token()) == status::ok);
    CHECK(t.calls == 1);
    CHECK(t.last->ok());
    CHECK(t.last->bytes == 5);
    CHECK(t.lives == 0);
    CHECK(context_blocks() == 0);
    stop.request_stop();
    CHECK(calls_of(fake_call::cancel_overlapped_io) == 0);
    CHECK(t.calls == 1);

    // A stop that comes during the call (after the IO was accepted, before the registration) cancels it.
    std::stop_source stop_during;
    os.on_issue([&](const pending_io&) { stop_during.request_stop(); });
    tracked u;
    REQUIRE(socket->receive_async(buffers, tracked_handler(&u), stop_during.get_token()) == status::ok);
    REQUIRE(wait_for(u, 1));
    CHECK(u.last->completion == io_completion::cancelled);
    CHECK(context_blocks() == 0);
}

TEST_CASE("a stop racing the completion on other threads: exactly one outcome per IO in 3000 rounds, nothing leaked")
{
    fake_os os;
    alloc_ledger ledger;
    os.set_worker_count(2);
    int ok = 0;
    int cancelled = 0;
    int other = 0;
    {
        auto socket = fake_socket_type::create(&os, fake_socket(7), {}, fault_alloc{&ledger});
        REQUIRE(socket);
        REQUIRE(socket->open_async([](ASYNC_SOCKET_OPEN_RESULT) noexcept {}) == status::ok);
        char data[4] = "abc";
        ASYNC_SOCKET_BUFFER buffer{data, 3};
        for (int round = 0; round < 3000; ++round)
        {
            std::stop_source stop;
            tracked t;
            void* overlapped = nullptr;
            os.on_issue([&](const pending_io& io) { overlapped = io.overlapped; });
            REQUIRE(socket->receive_async(std::span<const ASYNC_SOCKET_BUFFER>(&buffer, 1), tracked_handler(&t),
                                          stop.get_token()) == status::ok);
            std::atomic<bool> stopping{false};
            std::thread stopper(
                [&]
                {
                    stopping = true;
                    stop.request_stop();
                });
            for (int spin = 0; round % 2 == 0 && !stopping && spin < 1000000; ++spin)
            {
                std::this_thread::yield(); // every other round the stop gets a head start
            }
            (void)os.complete(overlapped, win32_no_error, 2); // false when the abort was queued first
            stopper.join();
            REQUIRE(cancel_fixture::wait_for(t, 1));
            REQUIRE(t.lives == 0);
            if (t.last->completion == io_completion::ok)
            {
                ++ok;
            }
            else if (t.last->completion == io_completion::cancelled)
            {
                ++cancelled;
            }
            else
            {
                ++other;
            }
        }
        CHECK(os.pending_count() == 0);
    }
    MESSAGE("3000 stops racing completions: " << ok << " completed, " << cancelled << " cancelled");
    CHECK(ok + cancelled == 3000);
    CHECK(other == 0);
    CHECK(ok > 0);
    CHECK(cancelled > 0);
    CHECK(ledger.live_blocks() == 0);
    CHECK(os.violations().empty());
}

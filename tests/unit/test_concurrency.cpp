// Concurrency: sends and receives from several threads, completions on the fake's worker threads, and close,
// reopen and destroy racing with them. Every accepted IO must complete exactly once, no failed call may complete,
// nothing may hang, and nothing may be left behind (events, blocks, OS rule violations).
//
// The fake completes IO through io_driver below (every send and most receives at once, on a worker; the other
// receives stay outstanding until close cancels them) and cancels with its own CancelIoEx, which aborts each
// outstanding IO on a worker and leaves alone an IO whose completion is already queued, as Windows does.
#include <async_socket/basic_async_socket.hpp>

#include "../support/fixtures.hpp"
#include "../support/lifecycle.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

using namespace test_support;
using async_socket::socket_state;
using async_socket::win32_no_error;
using async_socket::win32_operation_aborted;

namespace
{

constexpr auto fake_watchdog = std::chrono::milliseconds(10000);

// ---------------------------------------------------------------------------------------------------
// io_driver: completes IO the way a busy peer would.
// ---------------------------------------------------------------------------------------------------
class io_driver
{
public:
    // Every send, and every receive but each `keep_every`-th one (0: none kept), is completed successfully, with
    // all its bytes, on a worker. The receives kept stay outstanding until close cancels them.
    io_driver(fake_os& os, unsigned keep_every) : os_(os), keep_every_(keep_every) {}

    // The on_issue hook.
    void issued(const pending_io& io)
    {
        const bool keep = io.kind == fake_call::wsa_recv && keep_every_ != 0 &&
                          receives_.fetch_add(1) % keep_every_ == keep_every_ - 1;
        if (keep)
        {
            ++kept_;
            return;
        }
        if (!os_.complete_on_worker(io.overlapped, win32_no_error, io.total_length))
        {
            ++refused_;
        }
    }

    std::uint64_t kept() const
    {
        return kept_.load();
    }

    // Completions the fake refused to queue (it also lists them in violations()).
    std::uint64_t refused() const
    {
        return refused_.load();
    }

private:
    fake_os& os_;
    const unsigned keep_every_;
    std::atomic<std::uint64_t> receives_{0};
    std::atomic<std::uint64_t> kept_{0};
    std::atomic<std::uint64_t> refused_{0};
};

using driven_socket = fake_socket_type;

// A socket over fake socket `n` of `os`, created and opened, each step required.
template <class Socket = fake_socket_type>
typename Socket::handle open_socket(fake_os& os, alloc_ledger& ledger, std::uintptr_t n)
{
    auto socket = Socket::create(&os, fake_socket(n), {}, fault_alloc{&ledger});
    REQUIRE(socket);
    open_recorder opened;
    REQUIRE(socket->open_async(&open_recorder::callback, &opened) == status::ok);
    return socket;
}

// A fake world whose IO is completed by an io_driver on `workers` threads.
struct driven_world
{
    fake_os os;
    io_driver driver;
    alloc_ledger ledger;

    driven_world(unsigned workers, unsigned keep_every) : driver(os, keep_every)
    {
        os.set_worker_count(workers);
        os.set_watchdog(fake_watchdog);
        os.on_issue([this](const pending_io& io) { driver.issued(io); });
    }

    driven_socket::handle make_socket(std::uintptr_t n)
    {
        return driven_socket::create(&os, fake_socket(n), {}, fault_alloc{&ledger});
    }

    driven_socket::handle open_socket(std::uintptr_t n)
    {
        return ::open_socket(os, ledger, n);
    }
};

// ---------------------------------------------------------------------------------------------------
// call_book: one entry per send_async/receive_async call, with its own buffers and an id; the callback context
// is the entry, so each callback is counted against the call that asked for it.
// ---------------------------------------------------------------------------------------------------
class call_book
{
public:
    struct entry
    {
        call_book* book = nullptr;
        std::uint32_t id = 0;
        bool is_send = false;
        std::atomic<bool> accepted{false}; // the call returned status::ok
        std::atomic<int> callbacks{0};
        std::array<char, 24> memory{};
        std::array<ASYNC_SOCKET_BUFFER, 3> buffers{};
        std::uint32_t buffer_count = 0;
    };

    explicit call_book(std::uint32_t capacity) : capacity_(capacity), entries_(new entry[capacity])
    {
        for (std::uint32_t i = 0; i < capacity; ++i)
        {
            entries_[i].book = this;
            entries_[i].id = i;
        }
    }

    // The next unused entry, set up for a send or a receive of 1 to 3 buffers; nullptr when all are used.
    entry* take(bool is_send)
    {
        const std::uint32_t id = next_.fetch_add(1);
        if (id >= capacity_)
        {
            return nullptr;
        }
        entry& e = entries_[id];
        e.is_send = is_send;
        e.buffer_count = 1 + id % 3;
        for (std::uint32_t i = 0; i < e.buffer_count; ++i)
        {
            e.buffers[i] = ASYNC_SOCKET_BUFFER{e.memory.data() + 8 * i, 8};
        }
        return &e;
    }

    // Issues the entry's IO on `socket` and records whether it was accepted.
    template <class Socket>
    status issue(Socket& socket, entry& e)
    {
        const status result = e.is_send
                                  ? socket.send_async(e.buffers.data(), e.buffer_count, &call_book::on_send, &e)
                                  : socket.receive_async(e.buffers.data(), e.buffer_count, &call_book::on_receive, &e);
        if (result == status::ok)
        {
            e.accepted.store(true);
            accepted_add();
        }
        else if (result != status::invalid_state)
        {
            ++unexpected_status_;
        }
        return result;
    }

    // Close is under way from now until close_ended(): the only time a BECAUSE_CLOSE may arrive.
    void close_begins()
    {
        closing_.store(true);
    }
    void close_ended()
    {
        closing_.store(false);
    }

    std::uint64_t accepted() const
    {
        return accepted_.load();
    }
    // Entries taken so far (calls made, accepted or not).
    std::uint64_t used() const
    {
        return next_.load();
    }
    std::uint64_t callbacks() const
    {
        return callbacks_.load();
    }
    std::uint64_t because_close() const
    {
        return because_close_.load();
    }

    // Waits until at least `n` calls have been accepted in total.
    bool wait_accepted(std::uint64_t n)
    {
        std::unique_lock lock(mutex_);
        target_.store(n);
        const bool reached = changed_.wait_for(lock, deadline, [&] { return accepted_.load() >= n; });
        target_.store(UINT64_MAX);
        return reached;
    }

    // Checks every entry: accepted ones completed exactly once, the others never; and the results made sense.
    void check_exactly_once() const
    {
        const std::uint32_t used = std::min(next_.load(), capacity_);
        std::uint32_t twice = 0;
        std::uint32_t never = 0;
        std::uint32_t unasked = 0;
        std::uint32_t first_bad = UINT32_MAX;
        for (std::uint32_t i = 0; i < used; ++i)
        {
            const int callbacks = entries_[i].callbacks.load();
            const bool accepted = entries_[i].accepted.load();
            const bool bad = accepted ? callbacks != 1 : callbacks != 0;
            twice += accepted && callbacks > 1 ? 1 : 0;
            never += accepted && callbacks == 0 ? 1 : 0;
            unasked += !accepted && callbacks != 0 ? 1 : 0;
            if (bad && first_bad == UINT32_MAX)
            {
                first_bad = i;
            }
        }
        INFO("calls made: ", used, ", accepted: ", accepted_.load(), ", first bad id: ", first_bad);
        CHECK_MESSAGE(twice == 0, "accepted calls completed more than once");
        CHECK_MESSAGE(never == 0, "accepted calls never completed");
        CHECK_MESSAGE(unasked == 0, "failed calls completed anyway");
        CHECK(callbacks_.load() == accepted_.load());
        CHECK_MESSAGE(errors_.load() == 0, "a completion reported ERROR though no IO failed");
        CHECK_MESSAGE(because_close_outside_close_.load() == 0, "BECAUSE_CLOSE arrived while no close was under way");
        CHECK_MESSAGE(bad_bytes_.load() == 0, "a receive reported a byte count it cannot have");
        CHECK_MESSAGE(unexpected_status_.load() == 0, "a call failed with something else than invalid_state");
    }

private:
    static void on_send(void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        auto* e = static_cast<entry*>(context);
        e->book->completed(*e, result == ASYNC_SOCKET_SEND_OK, result == ASYNC_SOCKET_SEND_BECAUSE_CLOSE, true);
    }

    static void on_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
    {
        auto* e = static_cast<entry*>(context);
        const bool ok = result == ASYNC_SOCKET_RECEIVE_OK;
        const bool because_close = result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE;
        // The driver completes receives with all their bytes; aborted ones carry none.
        const bool bytes_fit = ok ? bytes == 8 * e->buffer_count : bytes == 0;
        e->book->completed(*e, ok, because_close, bytes_fit);
    }

    void completed(entry& e, bool ok, bool because_close, bool bytes_fit)
    {
        e.callbacks.fetch_add(1);
        if (!ok && !because_close)
        {
            ++errors_;
        }
        if (because_close)
        {
            ++because_close_;
            if (!closing_.load())
            {
                ++because_close_outside_close_;
            }
        }
        if (!bytes_fit)
        {
            ++bad_bytes_;
        }
        callbacks_.fetch_add(1);
    }

    void accepted_add()
    {
        const std::uint64_t now = accepted_.fetch_add(1) + 1;
        if (now >= target_.load())
        {
            std::lock_guard lock(mutex_);
            changed_.notify_all();
        }
    }

    const std::uint32_t capacity_;
    std::unique_ptr<entry[]> entries_;
    std::atomic<std::uint32_t> next_{0};
    std::atomic<std::uint64_t> accepted_{0};
    std::atomic<std::uint64_t> callbacks_{0};
    std::atomic<std::uint64_t> because_close_{0};
    std::atomic<std::uint64_t> because_close_outside_close_{0};
    std::atomic<std::uint64_t> errors_{0};
    std::atomic<std::uint64_t> bad_bytes_{0};
    std::atomic<std::uint64_t> unexpected_status_{0};
    std::atomic<bool> closing_{false};
    std::atomic<std::uint64_t> target_{UINT64_MAX};
    std::mutex mutex_;
    std::condition_variable changed_;
};

// ---------------------------------------------------------------------------------------------------
// traffic: threads that send and receive in a loop on one socket.
// ---------------------------------------------------------------------------------------------------
template <class Socket>
class traffic
{
public:
    enum class on_closed
    {
        stop,            // a thread ends at its first call refused because the socket is not OPEN
        wait_for_reopen, // ... waits for reopened() and goes on
    };

    traffic(Socket& socket, call_book& book, int threads, on_closed mode, int calls_per_thread)
        : socket_(socket), book_(book), mode_(mode), calls_per_thread_(calls_per_thread)
    {
        for (int t = 0; t < threads; ++t)
        {
            threads_.emplace_back([this, t] { run(t); });
        }
    }

    ~traffic()
    {
        stop();
    }

    traffic(const traffic&) = delete;
    traffic& operator=(const traffic&) = delete;

    // Tells waiting threads that the socket is OPEN again.
    void reopened()
    {
        epoch_.fetch_add(1);
        epoch_.notify_all();
    }

    void stop()
    {
        stop_.store(true);
        reopened();
        for (auto& thread : threads_)
        {
            if (thread.joinable())
            {
                thread.join();
            }
        }
    }

private:
    void run(int index)
    {
        for (int i = 0; i < calls_per_thread_ && !stop_.load(); ++i)
        {
            const std::uint32_t epoch = epoch_.load();
            call_book::entry* e = book_.take((i + index) % 2 == 0);
            if (e == nullptr)
            {
                return;
            }
            if (book_.issue(socket_, *e) == status::invalid_state)
            {
                if (mode_ == on_closed::stop)
                {
                    return;
                }
                epoch_.wait(epoch); // returns at once if the socket was reopened meanwhile
            }
        }
    }

    Socket& socket_;
    call_book& book_;
    const on_closed mode_;
    const int calls_per_thread_;
    std::atomic<bool> stop_{false};
    std::atomic<std::uint32_t> epoch_{0};
    std::vector<std::thread> threads_;
};

// What must hold once a socket is gone: every IO completed once, nothing left behind.
void check_world_is_clean(fake_os& os, const alloc_ledger& ledger, const call_book& book)
{
    book.check_exactly_once();
    CHECK_MESSAGE(os.violations().empty(), joined(os.violations()));
    CHECK(os.pending_count() == 0);
    CHECK(os.live_events() == 0);
    CHECK(os.live_ios() == 0);
    CHECK(ledger.live_blocks() == 0);
    CHECK(ledger.misuse() == 0);
}

} // namespace

// Tests_SRS_ASYNC_SOCKET_WIN32_01_019: [ Otherwise, async_socket_close shall switch the state to CLOSING. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_020: [ async_socket_close shall wait for all executing async_socket_send_async and
// async_socket_receive_async APIs. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_040: [ async_socket_close shall wait for any executing callbacks by calling
// WaitForThreadpoolIoCallbacks, passing FALSE as fCancelPendingCallbacks. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_097: [ If async_socket is not OPEN, async_socket_send_async shall fail and return a
// non-zero value. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_098: [ If async_socket is not OPEN, async_socket_receive_async shall fail and return
// a non-zero value. ]
TEST_CASE("every accepted send and receive completes exactly once while another thread closes the socket")
{
    // Rounds differ in worker and traffic thread counts and in how far the traffic has gone when close starts.
    for (unsigned round = 0; round < 12; ++round)
    {
        const unsigned workers = 2 + round % 3;
        const int threads = 3 + static_cast<int>(round % 2);
        const std::uint64_t close_after = 100 + 150 * round;
        CAPTURE(round);
        driven_world world(workers, 4);
        call_book book(24000);
        std::uint64_t callbacks_when_closed = 0;
        {
            auto socket = world.open_socket(11);

            traffic<driven_socket> load(*socket, book, threads, traffic<driven_socket>::on_closed::stop, 6000);
            status closed = status::invalid_argument;
            std::size_t pending_when_closed = 99;
            std::size_t events_when_closed = 99;
            std::int64_t blocks_when_closed = 99;
            bool traffic_ran = false;
            std::thread closer(
                [&]
                {
                    traffic_ran = book.wait_accepted(close_after);
                    book.close_begins();
                    closed = socket->close();
                    book.close_ended();
                    // Close has returned: no IO may be outstanding, no callback may be running or still to come.
                    callbacks_when_closed = book.callbacks();
                    pending_when_closed = world.os.pending_count();
                    events_when_closed = world.os.live_events();
                    blocks_when_closed = world.ledger.live_blocks();
                });
            closer.join();
            load.stop();

            CHECK_MESSAGE(traffic_ran, "the traffic threads did not get ", close_after, " calls accepted");
            CHECK(closed == status::ok);
            CHECK(socket->state() == socket_state::closed);
            CHECK(pending_when_closed == 0);
            CHECK(events_when_closed == 0);
            CHECK(blocks_when_closed == 1); // the socket itself
            CHECK(book.callbacks() == callbacks_when_closed);
            CHECK(world.driver.kept() > 0);
            CHECK(book.because_close() == world.driver.kept()); // each receive left pending was cancelled by close
        }
        check_world_is_clean(world.os, world.ledger, book);
    }
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_021: [ Then async_socket_close shall close the async socket, leaving it in a state
// where an async_socket_open_async can be performed. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_015: [ If async_socket is already OPEN or OPENING, async_socket_open_async shall
// fail and return a non-zero value. ]
TEST_CASE("a socket closed and reopened 80 times while three threads keep sending and receiving stays consistent")
{
    constexpr int cycles = 80;
    driven_world world(2, 3);
    call_book book(60000);
    open_recorder opened;
    int opens_ok = 0;
    int closes_ok = 0;
    int progress_stalls = 0;
    int left_behind = 0;
    {
        auto socket = world.make_socket(12);
        REQUIRE(socket);
        traffic<driven_socket> load(*socket, book, 3, traffic<driven_socket>::on_closed::wait_for_reopen, 1000000);
        for (int cycle = 0; cycle < cycles; ++cycle)
        {
            const std::uint64_t target = book.accepted() + 100;
            opens_ok += socket->open_async(&open_recorder::callback, &opened) == status::ok ? 1 : 0;
            load.reopened();
            progress_stalls += book.wait_accepted(target) ? 0 : 1;
            // Opening an OPEN socket fails and changes nothing.
            CHECK(socket->open_async(&open_recorder::callback, &opened) == status::invalid_state);

            book.close_begins();
            closes_ok += socket->close() == status::ok ? 1 : 0;
            book.close_ended();
            left_behind += world.os.pending_count() != 0 || world.os.live_events() != 0 ? 1 : 0;
            if (book.used() > 50000)
            {
                break; // running out of call entries (about 250 are used per cycle): enough load
            }
        }
        load.stop();
        const int cycles_run = opens_ok;
        CHECK(cycles_run >= 50);
        CHECK(closes_ok == cycles_run);
        CHECK(opened.calls.load() == cycles_run);
        CHECK(progress_stalls == 0);
        CHECK(left_behind == 0);
        CHECK(book.because_close() == world.driver.kept());
        // The threadpool IO is made once and kept across reopens (see basic_async_socket.hpp).
        CHECK(world.os.count(fake_call::create_io) == 1);
        CHECK(world.os.count(fake_call::wait_for_io_callbacks) == static_cast<std::size_t>(cycles_run));
    }
    CHECK(world.os.count(fake_call::close_io) == 1);
    check_world_is_clean(world.os, world.ledger, book);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_006: [ async_socket_destroy shall perform an implicit close if async_socket is
// OPEN. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_005: [ Otherwise, async_socket_destroy shall free all resources associated with
// async_socket. ]
TEST_CASE("destroying an OPEN socket after the traffic threads stopped cancels and completes what is outstanding")
{
    driven_world world(4, 2);
    call_book book(8000);
    std::uint64_t kept = 0;
    {
        auto socket = world.open_socket(13);
        {
            traffic<driven_socket> load(*socket, book, 3, traffic<driven_socket>::on_closed::stop, 2000);
            CHECK(book.wait_accepted(600));
        }
        // All traffic threads have returned. Every IO but the kept receives completes on the workers.
        kept = world.driver.kept();
        REQUIRE(kept > 0);
        CHECK(eventually([&] { return book.callbacks() + kept == book.accepted(); }));
        CHECK(world.os.pending_count() == kept);
        CHECK(book.because_close() == 0);
        CHECK(socket->state() == socket_state::open);

        book.close_begins();
        socket.reset();
        book.close_ended();

        CHECK(book.because_close() == kept);
    }
    CHECK(world.os.count(fake_call::cancel_socket_io) == 1);
    CHECK(world.os.count(fake_call::close_io) == 1);
    check_world_is_clean(world.os, world.ledger, book);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_019: [ Otherwise, async_socket_close shall switch the state to CLOSING. ]
// Tests_SRS_ASYNC_SOCKET_WIN32_01_022: [ If async_socket is not OPEN, async_socket_close shall return. ]
TEST_CASE("of two threads that close the same socket at once under traffic, exactly one closes it")
{
    driven_world world(2, 3);
    call_book book(20000);
    {
        auto socket = world.make_socket(14);
        REQUIRE(socket);
        open_recorder opened;
        for (int round = 0; round < 20; ++round)
        {
            REQUIRE(socket->open_async(&open_recorder::callback, &opened) == status::ok);
            const std::uint64_t target = book.accepted() + 20; // read before the traffic can use up its calls
            traffic<driven_socket> load(*socket, book, 2, traffic<driven_socket>::on_closed::stop, 400);
            CHECK(book.wait_accepted(target));
            std::atomic<int> ready{0};
            std::array<status, 2> results{status::invalid_argument, status::invalid_argument};
            book.close_begins();
            std::vector<std::thread> closers;
            for (int c = 0; c < 2; ++c)
            {
                closers.emplace_back(
                    [&, c]
                    {
                        ++ready;
                        while (ready.load() < 2)
                        {
                            std::this_thread::yield();
                        }
                        results[c] = socket->close();
                    });
            }
            for (auto& closer : closers)
            {
                closer.join();
            }
            book.close_ended();
            load.stop();
            const int oks = (results[0] == status::ok ? 1 : 0) + (results[1] == status::ok ? 1 : 0);
            CHECK(oks == 1);
            CHECK((results[0] == status::invalid_state || results[1] == status::invalid_state));
            CHECK(socket->state() == socket_state::closed);
        }
    }
    check_world_is_clean(world.os, world.ledger, book);
}

namespace
{
// What the chains of the re-arming tests count, together.
struct chain_tally
{
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> callbacks{0};
    std::atomic<int> because_close{0};
    std::atomic<int> errors{0};
    std::atomic<int> ends{0};
    std::atomic<int> refused_other_than_state{0};
    std::atomic<int> busy{0}; // callbacks of chains running now
};

// Per-chain state for the re-arming tests: each callback counts its call, then starts the next receive of the
// chain from the threadpool thread.
struct chain
{
    driven_socket* socket = nullptr;
    chain_tally* tally = nullptr;
    std::array<char, 16> memory{};
    ASYNC_SOCKET_BUFFER buffer{};

    // Starts the next receive; returns whether it was accepted.
    bool arm()
    {
        buffer = ASYNC_SOCKET_BUFFER{memory.data(), static_cast<std::uint32_t>(memory.size())};
        const status result = socket->receive_async(&buffer, 1, &chain::on_receive, this);
        if (result == status::ok)
        {
            ++tally->accepted;
            return true;
        }
        if (result != status::invalid_state)
        {
            ++tally->refused_other_than_state;
        }
        return false;
    }

    static void on_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t)
    {
        auto* self = static_cast<chain*>(context);
        chain_tally& tally = *self->tally;
        ++tally.busy;
        ++tally.callbacks;
        if (result == ASYNC_SOCKET_RECEIVE_OK)
        {
            if (!self->arm())
            {
                ++tally.ends; // the socket is closing: the chain stops here
            }
        }
        else
        {
            if (result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE)
            {
                ++tally.because_close;
            }
            else
            {
                ++tally.errors;
            }
            ++tally.ends;
        }
        --tally.busy;
    }
};

constexpr int chain_count = 4;

// Opens `socket` and starts every chain on it.
void start_chains(driven_socket& socket, std::array<chain, chain_count>& chains, chain_tally& tally)
{
    open_recorder opened;
    REQUIRE(socket.open_async(&open_recorder::callback, &opened) == status::ok);
    for (chain& c : chains)
    {
        c = {};
        c.socket = &socket;
        c.tally = &tally;
        REQUIRE(c.arm());
    }
}

// After the socket is gone: one callback per accepted receive, no error, nothing left behind.
void check_chains_ended_cleanly(driven_world& world, const chain_tally& tally)
{
    CHECK(tally.callbacks.load() == tally.accepted.load());
    CHECK(tally.errors.load() == 0);
    CHECK(tally.refused_other_than_state.load() == 0);
    CHECK_MESSAGE(world.os.violations().empty(), joined(world.os.violations()));
    CHECK(world.os.live_events() == 0);
    CHECK(world.ledger.live_blocks() == 0);
}
} // namespace

TEST_CASE("receive loops that start each next receive from the callback all end, once, when the socket closes")
{
    driven_world world(3, 5);
    chain_tally tally;
    std::array<chain, chain_count> chains{};
    {
        auto socket = world.make_socket(15);
        REQUIRE(socket);
        start_chains(*socket, chains, tally);
        // Each chain runs until its receive is one the driver keeps; every fifth receive is kept, so the chains
        // come to rest with one receive outstanding each. Close cancels those.
        CHECK(eventually(
            [&] {
                return world.driver.kept() == chain_count && world.os.pending_count() == chain_count &&
                       tally.busy.load() == 0;
            }));
        const std::uint64_t before_close = tally.accepted.load();
        CHECK(before_close >= 2 * chain_count);

        CHECK(socket->close() == status::ok);
        CHECK(tally.busy.load() == 0); // no callback runs after close returned
        CHECK(tally.ends.load() == chain_count);
        CHECK(tally.because_close.load() == chain_count);
        CHECK(tally.accepted.load() == before_close); // a chain cannot start a receive once close began
    }
    check_chains_ended_cleanly(world, tally);
}

TEST_CASE("receive loops re-armed from callbacks on several workers end when a close races with them")
{
    driven_world world(3, 0); // every receive completes at once: the chains spin until close stops them
    chain_tally tally;
    std::array<chain, chain_count> chains{};
    {
        auto socket = world.make_socket(16);
        REQUIRE(socket);
        start_chains(*socket, chains, tally);
        CHECK(eventually([&] { return tally.accepted.load() >= 2000; }));
        CHECK(socket->close() == status::ok);
        CHECK(tally.busy.load() == 0);
        CHECK(tally.ends.load() == chain_count); // each chain ended once: BECAUSE_CLOSE, or its next receive refused
        CHECK(world.os.pending_count() == 0);
    }
    check_chains_ended_cleanly(world, tally);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_040: [ async_socket_close shall wait for any executing callbacks by calling
// WaitForThreadpoolIoCallbacks, passing FALSE as fCancelPendingCallbacks. ]
TEST_CASE("close does not return while a completion callback is still running on a worker")
{
    struct gate
    {
        std::mutex mutex;
        std::condition_variable changed;
        bool entered = false;
        bool close_called = false;
        std::atomic<bool> finished{false};

        static void on_send(void* context, ASYNC_SOCKET_SEND_RESULT)
        {
            auto* self = static_cast<gate*>(context);
            std::unique_lock lock(self->mutex);
            self->entered = true;
            self->changed.notify_all();
            self->changed.wait_for(lock, deadline, [self] { return self->close_called; });
            lock.unlock();
            self->finished.store(true);
        }
    };

    driven_world world(2, 0);
    gate g;
    {
        auto socket = world.open_socket(17);
        char payload[4] = {};
        ASYNC_SOCKET_BUFFER buffer{payload, sizeof(payload)};
        REQUIRE(socket->send_async(&buffer, 1, &gate::on_send, &g) == status::ok);
        {
            std::unique_lock lock(g.mutex);
            REQUIRE(g.changed.wait_for(lock, deadline, [&] { return g.entered; }));
        }
        status closed = status::invalid_argument;
        bool finished_when_closed = false;
        std::thread closer(
            [&]
            {
                {
                    std::lock_guard lock(g.mutex);
                    g.close_called = true;
                }
                g.changed.notify_all();
                closed = socket->close();
                finished_when_closed = g.finished.load();
            });
        closer.join();
        CHECK(closed == status::ok);
        CHECK(finished_when_closed); // the callback had ended before close returned
    }
    CHECK(g.finished.load());
    CHECK_MESSAGE(world.os.violations().empty(), joined(world.os.violations()));
    CHECK(world.ledger.live_blocks() == 0);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_093: [ While async_socket is OPENING or CLOSING, async_socket_destroy shall wait
// for the open to complete either successfully or with error. ]
TEST_CASE("destroy called while another thread is closing waits for that close to finish")
{
    fake_os os;
    os.set_worker_count(2);
    os.set_watchdog(fake_watchdog);
    os.set_cancel_behavior(cancel_behavior::ignore); // the receive stays outstanding until this test completes it
    alloc_ledger ledger;
    receive_recorder received;
    auto socket = open_socket(os, ledger, 18);
    char payload[8] = {};
    ASYNC_SOCKET_BUFFER buffer{payload, sizeof(payload)};
    REQUIRE(socket->receive_async(&buffer, 1, &receive_recorder::callback, &received) == status::ok);
    void* const outstanding = os.pending()[0].overlapped;

    fake_socket_type* const raw = socket.get();
    status closed = status::invalid_argument;
    std::thread closer([&] { closed = raw->close(); });
    // The closer is now blocked in WaitForThreadpoolIoCallbacks: the receive is outstanding.
    REQUIRE(eventually([&] { return raw->state() == socket_state::closing; }));

    std::atomic<bool> destroying{false};
    std::atomic<bool> destroyed{false};
    std::thread destroyer(
        [&]
        {
            destroying.store(true);
            socket.reset();
            destroyed.store(true);
        });
    REQUIRE(eventually([&] { return destroying.load(); }));
    CHECK_FALSE(destroyed.load()); // it cannot finish: the socket is CLOSING until the receive completes
    os.complete_on_worker(outstanding, win32_operation_aborted, 0);
    closer.join();
    destroyer.join();

    CHECK(closed == status::ok);
    CHECK(destroyed.load());
    REQUIRE(received.seen().size() == 1);
    CHECK(received.seen()[0].result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
    CHECK(os.count(fake_call::wait_for_io_callbacks) == 1); // destroy did not close a second time
    CHECK(os.count(fake_call::close_io) == 1);
    CHECK_MESSAGE(os.violations().empty(), joined(os.violations()));
    CHECK(os.live_events() == 0);
    CHECK(ledger.live_blocks() == 0);
}

TEST_CASE("receives outstanding from several threads are all cancelled by close, each completing once on a worker")
{
    // The fake's own CancelIoEx (abort_on_worker) is exact when no completion is queued before the cancel.
    fake_os os;
    os.set_worker_count(3);
    os.set_watchdog(fake_watchdog);
    alloc_ledger ledger;
    call_book book(1200);
    {
        auto socket = open_socket(os, ledger, 19);
        std::vector<std::thread> receivers;
        for (int t = 0; t < 3; ++t)
        {
            receivers.emplace_back(
                [&]
                {
                    for (int i = 0; i < 300; ++i)
                    {
                        call_book::entry* e = book.take(false);
                        if (e != nullptr)
                        {
                            (void)book.issue(*socket, *e);
                        }
                    }
                });
        }
        for (auto& receiver : receivers)
        {
            receiver.join();
        }
        CHECK(book.accepted() == 900);
        CHECK(os.pending_count() == 900);
        book.close_begins();
        CHECK(socket->close() == status::ok);
        book.close_ended();
        CHECK(book.because_close() == 900);
    }
    check_world_is_clean(os, ledger, book);
}

// ---------------------------------------------------------------------------------------------------
// Regression: CancelIoEx against completions a lagging worker has queued
//
// The fake's CancelIoEx used to abort also an IO whose completion complete_on_worker had already queued, giving it
// a second completion (or completing a newer IO in the same OVERLAPPED). One worker behind three senders, with
// every IO completed at once and a close every few hundred calls, showed it as hundreds of violations a run.
// ---------------------------------------------------------------------------------------------------
TEST_CASE("close while a lagging worker still holds queued completions completes every IO exactly once")
{
    fake_os os;
    os.set_worker_count(1); // one worker falls behind three senders: completions are queued when close cancels
    os.set_watchdog(fake_watchdog);
    os.on_issue([&os](const pending_io& io) { os.complete_on_worker(io.overlapped, win32_no_error, io.total_length); });
    alloc_ledger ledger;
    call_book book(40000);
    {
        auto socket = fake_socket_type::create(&os, fake_socket(20), {}, fault_alloc{&ledger});
        REQUIRE(socket);
        open_recorder opened;
        traffic<fake_socket_type> load(*socket, book, 3, traffic<fake_socket_type>::on_closed::wait_for_reopen,
                                       1000000);
        for (int cycle = 0; cycle < 40 && book.accepted() < 35000; ++cycle)
        {
            const std::uint64_t target = book.accepted() + 50;
            REQUIRE(socket->open_async(&open_recorder::callback, &opened) == status::ok);
            load.reopened();
            CHECK(book.wait_accepted(target));
            book.close_begins();
            CHECK(socket->close() == status::ok);
            book.close_ended();
        }
        load.stop();
        CHECK(os.wait_until_idle(std::chrono::duration_cast<std::chrono::milliseconds>(deadline)));
    }
    check_world_is_clean(os, ledger, book);
}

// ---------------------------------------------------------------------------------------------------
// Nothing of a socket is touched once close has let a destroy free it
//
// The SyncPolicy contract (concepts.hpp): a wake may run on a word that is already freed, by address only; nothing
// else may. These tests stop one thread right after a chosen SyncPolicy step, destroy the socket from another, mark
// its words freed, and let the first thread go on: probe_sync counts what it then does to the freed words.
// ---------------------------------------------------------------------------------------------------

namespace
{

// A SyncPolicy that behaves as std_sync (its wait returns at once, which the contract allows: waits may return
// spuriously) and lets a test stop one thread right after a chosen step. An operation on a word marked freed does
// not touch the word: it is counted, as a touch or, for wake_one/wake_all, as a wake.
struct probe_sync
{
    using word_type = std::atomic<std::int32_t>;

    enum class pause_after : std::uint8_t
    {
        nothing,
        store_closed, // set_state(closed): the store, before its wake_all
        decrement,    // ~api_call_guard: the decrement, before anything that follows it
    };

    struct control
    {
        std::mutex mutex;
        std::condition_variable changed;
        pause_after point = pause_after::nothing;
        bool paused = false;
        bool resume = false;
        bool someone_waits = false; // a thread called wait (close waiting for calls, destroy for the state)
        const void* state_word = nullptr;
        const void* calls_word = nullptr;
        std::vector<const void*> freed;
        std::atomic<int> touched_after_free{0};
        std::atomic<int> woken_after_free{0};
    };

    static control& probe()
    {
        static control instance;
        return instance;
    }

    static inline thread_local bool armed_here = false; // this thread is the one to stop

    static bool is_freed(const void* word)
    {
        std::lock_guard lock(probe().mutex);
        return std::find(probe().freed.begin(), probe().freed.end(), word) != probe().freed.end();
    }

    static bool touched_freed(const word_type& word)
    {
        if (!is_freed(&word))
        {
            return false;
        }
        ++probe().touched_after_free;
        return true;
    }

    static bool woken_freed(const word_type& word)
    {
        if (!is_freed(&word))
        {
            return false;
        }
        ++probe().woken_after_free;
        return true;
    }

    static void pause_here(pause_after point)
    {
        if (!armed_here)
        {
            return;
        }
        std::unique_lock lock(probe().mutex);
        if (probe().point != point || probe().paused)
        {
            return;
        }
        probe().paused = true;
        probe().changed.notify_all();
        probe().changed.wait_for(lock, deadline, [] { return probe().resume; });
    }

    static std::int32_t load(const word_type& word) noexcept
    {
        return touched_freed(word) ? 0 : word.load();
    }
    static void store(word_type& word, std::int32_t value) noexcept
    {
        if (touched_freed(word))
        {
            return;
        }
        if (value == static_cast<std::int32_t>(socket_state::open))
        {
            std::lock_guard lock(probe().mutex);
            probe().state_word = &word;
        }
        word.store(value);
        if (value == static_cast<std::int32_t>(socket_state::closed))
        {
            pause_here(pause_after::store_closed);
        }
    }
    static std::int32_t compare_exchange(word_type& word, std::int32_t desired, std::int32_t expected) noexcept
    {
        if (touched_freed(word))
        {
            return expected + 1;
        }
        word.compare_exchange_strong(expected, desired);
        return expected;
    }
    static std::int32_t increment(word_type& word) noexcept
    {
        if (touched_freed(word))
        {
            return 0;
        }
        {
            std::lock_guard lock(probe().mutex);
            probe().calls_word = &word;
        }
        return word.fetch_add(1) + 1;
    }
    static std::int32_t decrement(word_type& word) noexcept
    {
        if (touched_freed(word))
        {
            return 0;
        }
        const std::int32_t now = word.fetch_sub(1) - 1;
        pause_here(pause_after::decrement);
        return now;
    }
    static void wait(const word_type& word, std::int32_t) noexcept
    {
        if (touched_freed(word))
        {
            return;
        }
        {
            std::lock_guard lock(probe().mutex);
            probe().someone_waits = true;
        }
        probe().changed.notify_all();
        std::this_thread::yield(); // then return: the caller checks the word again
    }
    static void wake_one(word_type& word) noexcept
    {
        if (!woken_freed(word))
        {
            word.notify_one();
        }
    }
    static void wake_all(word_type& word) noexcept
    {
        if (!woken_freed(word))
        {
            word.notify_all();
        }
    }

    static void reset(pause_after point)
    {
        std::lock_guard lock(probe().mutex);
        probe().point = point;
        probe().paused = false;
        probe().resume = false;
        probe().someone_waits = false;
        probe().state_word = nullptr;
        probe().calls_word = nullptr;
        probe().freed.clear();
        probe().touched_after_free.store(0);
        probe().woken_after_free.store(0);
    }

    // Waits until the armed thread has stopped at its pause point.
    static bool wait_paused()
    {
        std::unique_lock lock(probe().mutex);
        return probe().changed.wait_for(lock, deadline, [] { return probe().paused; });
    }

    // Waits until some thread has called wait.
    static bool wait_for_a_waiter()
    {
        std::unique_lock lock(probe().mutex);
        return probe().changed.wait_for(lock, deadline, [] { return probe().someone_waits; });
    }

    // Call once the socket is destroyed: its words count as freed from now on, and the stopped thread goes on.
    static void mark_freed_and_resume()
    {
        {
            std::lock_guard lock(probe().mutex);
            probe().freed.push_back(probe().state_word);
            probe().freed.push_back(probe().calls_word);
            probe().resume = true;
        }
        probe().changed.notify_all();
    }

    // Restores the probe for the next test, whatever happened in this one.
    struct scope
    {
        explicit scope(pause_after point)
        {
            reset(point);
        }
        ~scope()
        {
            {
                std::lock_guard lock(probe().mutex);
                probe().resume = true; // never leave a thread stopped
            }
            probe().changed.notify_all();
        }
        scope(const scope&) = delete;
        scope& operator=(const scope&) = delete;
    };
};

static_assert(async_socket::sync_policy<probe_sync>);

using probed_socket = async_socket::basic_async_socket<fake_threadpool, fault_alloc, probe_sync>;

// An open probed socket, and one call on it from a thread of its own that the probe pauses (armed_here), for the
// tests of what a call does after the step that lets the socket be destroyed.
struct armed_call
{
    alloc_ledger ledger;
    probed_socket::handle socket;
    probed_socket* raw = nullptr;
    std::thread thread;

    armed_call(fake_os& os, std::uintptr_t n) : socket(open_socket<probed_socket>(os, ledger, n)), raw(socket.get()) {}
    armed_call(const armed_call&) = delete;
    armed_call& operator=(const armed_call&) = delete;
    ~armed_call()
    {
        if (thread.joinable())
        {
            thread.join();
        }
    }

    template <class Call>
    void start(Call call)
    {
        thread = std::thread(
            [this, call]
            {
                probe_sync::armed_here = true;
                call(*raw);
            });
    }

    // Destroys the socket while the call is paused, then lets the call go on and waits for it.
    void destroy_and_resume()
    {
        socket.reset();
        probe_sync::mark_freed_and_resume();
        thread.join();
    }
};

// An armed_call that is a send_async of 4 bytes, with its callback recorded.
struct armed_send
{
    send_recorder sent;
    char payload[4] = {};
    ASYNC_SOCKET_BUFFER buffer{payload, sizeof(payload)};
    status result = status::invalid_argument;
    armed_call call;

    armed_send(fake_os& os, std::uintptr_t n) : call(os, n) {}

    void start()
    {
        call.start([this](probed_socket& socket)
                   { result = socket.send_async(&buffer, 1, &send_recorder::callback, &sent); });
    }

    // After destroy_and_resume, with close having run first: the send was issued, completed once because of the
    // close, and send_async used nothing of the socket once the close had let it be destroyed.
    void check_completed_by_close_untouched()
    {
        CHECK(result == status::ok);
        CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_BECAUSE_CLOSE});
        CHECK(call.ledger.live_blocks() == 0);
        CHECK_MESSAGE(probe_sync::probe().touched_after_free.load() == 0,
                      "send_async used the words of a socket that close had let be destroyed");
    }
};

} // namespace

// Tests_SRS_ASYNC_SOCKET_WIN32_01_093: [ While async_socket is OPENING or CLOSING, async_socket_destroy shall wait
// for the open to complete either successfully or with error. ]
TEST_CASE("once it has stored CLOSED, close uses nothing of the socket but the state word's address to wake")
{
    // A destroy waiting for the close can see CLOSED, finish and free the socket before the closer's wake_all runs.
    probe_sync::scope probe(probe_sync::pause_after::store_closed);
    fake_os os;
    armed_call closer(os, 21);
    alloc_ledger& ledger = closer.ledger;
    status closed = status::invalid_argument;
    closer.start([&](probed_socket& socket) { closed = socket.close(); });
    REQUIRE(probe_sync::wait_paused()); // the closer has stored CLOSED and not yet woken anyone
    closer.destroy_and_resume();        // destroy sees CLOSED, closes nothing more and frees the socket

    CHECK(closed == status::ok);
    CHECK(ledger.live_blocks() == 0);
    CHECK_MESSAGE(probe_sync::probe().touched_after_free.load() == 0,
                  "close used the words of a socket that destroy had freed (other than waking by address)");
    CHECK(os.violations().empty());
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_020: [ async_socket_close shall wait for all executing async_socket_send_async and
// async_socket_receive_async APIs. ]
TEST_CASE("a send_async that lowers its count before close starts touches nothing of the socket afterwards")
{
    probe_sync::scope probe(probe_sync::pause_after::decrement);
    fake_os os;
    os.set_cancel_behavior(cancel_behavior::abort_inline);
    armed_send sender(os, 22);
    sender.start();
    REQUIRE(probe_sync::wait_paused());            // the send is issued and counted out; send_async has not returned
    CHECK(sender.call.raw->close() == status::ok); // nothing to wait for: the count is back to zero
    sender.call.destroy_and_resume();

    sender.check_completed_by_close_untouched();
    CHECK(probe_sync::probe().woken_after_free.load() == 0); // nobody was waiting: no wake either
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_020: [ async_socket_close shall wait for all executing async_socket_send_async and
// async_socket_receive_async APIs. ]
TEST_CASE("close waits for a send_async under way, which then wakes it by address only and touches nothing else")
{
    probe_sync::scope probe(probe_sync::pause_after::decrement);
    fake_os os;
    os.set_cancel_behavior(cancel_behavior::abort_inline);
    // The send stays inside WSASend until close is waiting for it.
    std::mutex issue_mutex;
    std::condition_variable issue_changed;
    bool in_issue = false;
    os.on_issue(
        [&](const pending_io&)
        {
            {
                std::lock_guard lock(issue_mutex);
                in_issue = true;
            }
            issue_changed.notify_all();
            (void)probe_sync::wait_for_a_waiter();
        });
    armed_send sender(os, 23);
    sender.start();
    {
        std::unique_lock lock(issue_mutex);
        REQUIRE(issue_changed.wait_for(lock, deadline, [&] { return in_issue; }));
    }
    // close waits for the send_async; the send leaves WSASend, lowers the count and stops before its wake.
    CHECK(sender.call.raw->close() == status::ok);
    CHECK(probe_sync::wait_paused()); // close returned only after the send_async's decrement
    sender.call.destroy_and_resume();

    sender.check_completed_by_close_untouched();
    CHECK(os.violations().empty());
}

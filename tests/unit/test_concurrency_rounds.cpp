// Rounds of races: in every round several threads send and receive while another thread closes and reopens
// the socket, completions arrive from the fake's worker threads, and the round ends with a close (every
// 50th round with a destroy and a new socket). After every round: each accepted send/receive completed
// exactly once with a result that fits, each refused one never, no callback ran after its socket was
// destroyed, the socket is CLOSED, and the fake reports no broken OS rule, no open event, no outstanding
// IO and no leaked block.
//
// ASYNC_SOCKET_ROUNDS sets the number of rounds (5000 by default).
#include <async_socket/basic_async_socket.hpp>
#include <async_socket/testing/waiter.hpp>

#include "../support/fixtures.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace test_support;
using async_socket::socket_state;
using async_socket::win32_no_error;
using async_socket::win32_operation_aborted;

namespace
{

constexpr auto deadline = std::chrono::seconds(30);
constexpr double deadline_seconds = std::chrono::duration<double>(deadline).count();

unsigned rounds_from_environment()
{
    const char* text = std::getenv("ASYNC_SOCKET_ROUNDS");
    const long value = text != nullptr ? std::strtol(text, nullptr, 10) : 0;
    return value > 0 ? static_cast<unsigned>(value) : 5000u;
}

// The receives the OS holds because nothing arrives for them: only close's CancelIoEx completes them.
class held_receives
{
public:
    void add(void* overlapped)
    {
        std::lock_guard lock(mutex_);
        held_.push_back(overlapped);
    }

    bool take(void* overlapped)
    {
        std::lock_guard lock(mutex_);
        auto it = std::find(held_.begin(), held_.end(), overlapped);
        if (it == held_.end())
        {
            return false;
        }
        held_.erase(it);
        return true;
    }

    std::size_t size()
    {
        std::lock_guard lock(mutex_);
        return held_.size();
    }

private:
    std::mutex mutex_;
    std::vector<void*> held_;
};

// Fake Win32 calls whose CancelIoEx aborts exactly the receives the test holds back (held_receives), so that
// the test's own bookkeeping decides which IO a close finds outstanding. An IO whose completion is already
// queued to a worker has completed and is left alone, as Windows (and the fake's own CancelIoEx) does.
class rounds_calls : public async_socket::testing::fake_threadpool_calls
{
public:
    rounds_calls() noexcept = default;
    explicit rounds_calls(held_receives* held) noexcept : held_(held) {}
    rounds_calls(rounds_calls&& other) noexcept : fake_threadpool_calls(std::move(other)), held_(other.held_) {}

    void cancel_socket_io(SOCKET_HANDLE socket) noexcept
    {
        fake_threadpool_calls::cancel_socket_io(socket); // recorded; cancel_behavior::ignore makes it complete nothing
        for (const pending_io& io : os()->pending())
        {
            if (io.socket == socket && held_->take(io.overlapped))
            {
                os()->complete_on_worker(io.overlapped, win32_operation_aborted, 0);
            }
        }
    }

private:
    held_receives* held_ = nullptr;
};

using rounds_backend = async_socket::win32_threadpool_backend<rounds_calls>;
using rounds_socket = async_socket::basic_async_socket<rounds_backend, fault_alloc, async_socket::std_sync>;

constexpr unsigned io_threads = 3;
constexpr unsigned ops_per_thread = 6;
constexpr unsigned ops_per_round = io_threads * ops_per_thread;
constexpr std::uint32_t buffer_size = 16;
constexpr std::uint32_t received_bytes = 5; // what a receive that gets data reports

// Callbacks check that their socket has not been destroyed: generation g is destroyed when
// destroyed_generations > g.
std::atomic<std::uint64_t> destroyed_generations{0};
std::atomic<std::uint64_t> late_callbacks{0};

// One send or receive of a round; the callback context.
struct op_slot
{
    std::atomic<int> completions{0};
    std::atomic<int> result{-1};
    std::atomic<std::uint32_t> bytes{0};
    std::uint64_t generation = 0;
    bool is_send = false;
    status returned = status::ok; // written by the IO thread, read by the main thread after the round
    char buffer[buffer_size] = {};

    void reset(std::uint64_t socket_generation)
    {
        completions.store(0);
        result.store(-1);
        bytes.store(0);
        generation = socket_generation;
        returned = status::ok;
    }

    static void on_send(void* context, ASYNC_SOCKET_SEND_RESULT send_result)
    {
        auto* self = static_cast<op_slot*>(context);
        if (destroyed_generations.load() > self->generation)
        {
            late_callbacks.fetch_add(1);
        }
        self->result.store(static_cast<int>(send_result));
        self->completions.fetch_add(1);
    }

    static void on_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT receive_result, std::uint32_t bytes_received)
    {
        auto* self = static_cast<op_slot*>(context);
        if (destroyed_generations.load() > self->generation)
        {
            late_callbacks.fetch_add(1);
        }
        self->bytes.store(bytes_received);
        self->result.store(static_cast<int>(receive_result));
        self->completions.fetch_add(1);
    }
};

// Starts the participants of a round together and tells the main thread when all are done.
class round_gate
{
public:
    void start()
    {
        std::lock_guard lock(mutex_);
        done_ = 0;
        ++round_;
        changed_.notify_all();
    }

    // For a participant: waits for the next round; false when the test is over.
    bool wait_for_round(unsigned& seen)
    {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [&] { return stopping_ || round_ != seen; });
        seen = round_;
        return !stopping_;
    }

    void finished()
    {
        std::lock_guard lock(mutex_);
        ++done_;
        changed_.notify_all();
    }

    bool wait_all_finished(unsigned participants)
    {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, deadline, [&] { return done_ == participants; });
    }

    void stop()
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        changed_.notify_all();
    }

private:
    std::mutex mutex_;
    std::condition_variable changed_;
    unsigned round_ = 0;
    unsigned done_ = 0;
    bool stopping_ = false;
};

// Joins the participants however the test ends.
struct participants
{
    round_gate& gate;
    std::vector<std::thread> threads;

    ~participants()
    {
        gate.stop();
        for (auto& thread : threads)
        {
            thread.join();
        }
    }
};

struct totals
{
    std::uint64_t accepted = 0;
    std::uint64_t refused = 0;
    std::uint64_t send_ok = 0;
    std::uint64_t receive_ok = 0;
    std::uint64_t receive_because_close = 0;
    std::uint64_t destroys = 0;
};

void noop_open(void*, ASYNC_SOCKET_OPEN_RESULT) {}

} // namespace

TEST_CASE("thousands of rounds of send and receive racing close and reopen: every accepted IO completes once")
{
    const unsigned rounds = rounds_from_environment();
    const auto started = std::chrono::steady_clock::now();

    fake_os os;
    alloc_ledger ledger;
    held_receives held;
    os.set_worker_count(3);
    os.set_cancel_behavior(cancel_behavior::ignore); // rounds_calls::cancel_socket_io does the aborting
    std::atomic<std::uint64_t> issued_receives{0};
    os.on_issue(
        [&](const pending_io& io)
        {
            if (io.kind == fake_call::wsa_send)
            {
                os.complete_on_worker(io.overlapped, win32_no_error, io.total_length);
            }
            else if (issued_receives.fetch_add(1) % 2 == 0)
            {
                os.complete_on_worker(io.overlapped, win32_no_error, received_bytes);
            }
            else
            {
                held.add(io.overlapped);
            }
        });

    std::uint64_t generation = destroyed_generations.load();
    rounds_socket::handle socket;
    const auto make_socket = [&]
    {
        socket = rounds_socket::create(&os, fake_socket(1000 + generation), rounds_backend{rounds_calls{&held}},
                                       fault_alloc{&ledger});
        REQUIRE(socket);
        REQUIRE(socket->open_async(&noop_open, nullptr) == status::ok);
    };
    make_socket();

    std::vector<op_slot> slots(ops_per_round);
    std::atomic<unsigned> current_round{0};
    std::atomic<std::uint64_t> unexpected{0}; // statuses no call may return here
    round_gate gate;
    participants threads{gate, {}};

    for (unsigned t = 0; t < io_threads; ++t)
    {
        threads.threads.emplace_back(
            [&, t]
            {
                unsigned seen = 0;
                while (gate.wait_for_round(seen))
                {
                    const unsigned round = current_round.load();
                    for (unsigned j = 0; j < ops_per_thread; ++j)
                    {
                        op_slot& slot = slots[t * ops_per_thread + j];
                        ASYNC_SOCKET_BUFFER buffer{slot.buffer, buffer_size};
                        slot.is_send = (t + j + round) % 2 == 0;
                        slot.returned = slot.is_send ? socket->send_async(&buffer, 1, &op_slot::on_send, &slot)
                                                     : socket->receive_async(&buffer, 1, &op_slot::on_receive, &slot);
                        if (slot.returned != status::ok && slot.returned != status::invalid_state)
                        {
                            unexpected.fetch_add(1);
                        }
                    }
                    gate.finished();
                }
            });
    }
    // The closer: close and reopen while the IO threads run; every 4th round it closes once more.
    threads.threads.emplace_back(
        [&]
        {
            unsigned seen = 0;
            while (gate.wait_for_round(seen))
            {
                const unsigned round = current_round.load();
                if (socket->close() != status::ok || socket->open_async(&noop_open, nullptr) != status::ok ||
                    (round % 4 == 3 && socket->close() != status::ok))
                {
                    unexpected.fetch_add(1);
                }
                gate.finished();
            }
        });

    totals tally;
    for (unsigned round = 0; round < rounds; ++round)
    {
        for (op_slot& slot : slots)
        {
            slot.reset(generation);
        }
        current_round.store(round);
        gate.start();
        REQUIRE_MESSAGE(gate.wait_all_finished(io_threads + 1), "round " << round << ": a participant hangs");

        // End the round: every 50th with a destroy (an implicit close), else with a close.
        const bool destroy = round % 50 == 49;
        if (destroy)
        {
            socket.reset();
            destroyed_generations.fetch_add(1);
            ++tally.destroys;
        }
        else
        {
            const status closed = socket->close();
            CHECK_MESSAGE(closed == (round % 4 == 3 ? status::invalid_state : status::ok), "round " << round);
        }

        std::ostringstream problems;
        if (!destroy && socket->state() != socket_state::closed)
        {
            problems << "the socket is not CLOSED; ";
        }
        for (std::size_t i = 0; i < slots.size(); ++i)
        {
            const op_slot& slot = slots[i];
            const int completions = slot.completions.load();
            const int result = slot.result.load();
            if (slot.returned != status::ok)
            {
                ++tally.refused;
                if (completions != 0)
                {
                    problems << "op " << i << " was refused but completed " << completions << " times; ";
                }
                continue;
            }
            ++tally.accepted;
            if (completions != 1)
            {
                problems << "op " << i << " was accepted but completed " << completions << " times; ";
            }
            else if (slot.is_send)
            {
                tally.send_ok += result == ASYNC_SOCKET_SEND_OK ? 1 : 0;
                if (result != ASYNC_SOCKET_SEND_OK)
                {
                    problems << "send " << i << " completed with " << result << "; ";
                }
            }
            else if (result == ASYNC_SOCKET_RECEIVE_OK && slot.bytes.load() == received_bytes)
            {
                ++tally.receive_ok;
            }
            else if (result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE && slot.bytes.load() == 0)
            {
                ++tally.receive_because_close;
            }
            else
            {
                problems << "receive " << i << " completed with " << result << ", " << slot.bytes.load() << " bytes; ";
            }
        }
        if (unexpected.load() != 0)
        {
            problems << unexpected.load() << " calls returned an unexpected status; ";
        }
        if (late_callbacks.load() != 0)
        {
            problems << late_callbacks.load() << " callbacks ran after their socket was destroyed; ";
        }
        for (const std::string& violation : os.violations())
        {
            problems << "violation: " << violation << "; ";
        }
        if (os.live_events() != 0)
        {
            problems << os.live_events() << " events open; ";
        }
        if (os.pending_count() != 0 || held.size() != 0)
        {
            problems << os.pending_count() << " IO outstanding (" << held.size() << " held receives); ";
        }
        const std::int64_t expected_blocks = destroy ? 0 : 1; // the socket
        if (ledger.live_blocks() != expected_blocks || ledger.misuse() != 0)
        {
            problems << ledger.live_blocks() << " live blocks, " << ledger.misuse() << " misused; ";
        }
        const std::string found = problems.str();
        REQUIRE_MESSAGE(found.empty(), "round " << round << ": " << found);

        os.clear_calls(); // keeps the fake's record small
        if (destroy)
        {
            ++generation;
            make_socket();
        }
        else
        {
            REQUIRE(socket->open_async(&noop_open, nullptr) == status::ok);
        }
    }

    socket.reset();
    destroyed_generations.fetch_add(1);
    REQUIRE_MESSAGE(os.wait_until_idle(deadline), "the fake still has completions queued after the last destroy");
    CHECK(late_callbacks.load() == 0);
    CHECK(os.violations().empty());
    CHECK(os.live_events() == 0);
    CHECK(os.live_ios() == 0);
    CHECK(ledger.live_blocks() == 0);
    CHECK(ledger.misuse() == 0);

    // The races did happen: calls landed while the socket was closed, receives were cut by close, and
    // sends and receives completed normally.
    CHECK(tally.refused > 0);
    CHECK(tally.receive_because_close > 0);
    CHECK(tally.receive_ok > 0);
    CHECK(tally.send_ok > 0);

    const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    MESSAGE(rounds << " rounds in " << seconds << " s: " << tally.accepted << " IO accepted (" << tally.send_ok
                   << " sends ok, " << tally.receive_ok << " receives ok, " << tally.receive_because_close
                   << " receives ended by close), " << tally.refused << " refused while closed, " << tally.destroys
                   << " destroys");
}

namespace
{

// Holds the fake's only worker inside a receive callback until released.
struct worker_blocker
{
    async_socket::testing::waiter wake; // its mutex guards the flags below
    bool entered = false;
    bool released = false;
    bool timed_out = false;

    static void on_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT, std::uint32_t)
    {
        auto* self = static_cast<worker_blocker*>(context);
        self->wake.update([self] { self->entered = true; });
        const bool let_go = self->wake.wait_for([self] { return self->released; }, deadline_seconds);
        self->wake.update([self, let_go] { self->timed_out = !let_go; });
    }
};

} // namespace

// Regression (fake_threadpool): on Windows an IO whose completion packet is queued has completed, and
// CancelIoEx cannot cancel it any more. The fake's cancel_socket_io once aborted such an IO a second time
// (a double completion, or the abort of a newer IO that reused the context's memory).
TEST_CASE("CancelIoEx leaves alone an IO whose completion is already queued to a worker")
{
    fake_os os;
    alloc_ledger ledger;
    os.set_worker_count(1);
    auto socket = fake_socket_type::create(&os, fake_socket(7), {}, fault_alloc{&ledger});
    REQUIRE(socket);
    REQUIRE(socket->open_async(&noop_open, nullptr) == status::ok);

    // Keep the only worker busy in a receive callback, so that the send's completion stays queued.
    worker_blocker blocker;
    char inbox[4] = {};
    ASYNC_SOCKET_BUFFER in{inbox, sizeof(inbox)};
    REQUIRE(socket->receive_async(&in, 1, &worker_blocker::on_receive, &blocker) == status::ok);
    REQUIRE(os.pending_count() == 1);
    os.complete_on_worker(os.pending()[0].overlapped, win32_no_error, 1);
    REQUIRE_MESSAGE(blocker.wake.wait_for([&] { return blocker.entered; }, deadline_seconds),
                    "the worker never ran the receive callback");

    // The OS completes the send at once: its completion is queued behind the receive callback.
    os.on_issue([&](const pending_io& io) { os.complete_on_worker(io.overlapped, win32_no_error, io.total_length); });
    char payload[4] = {'d', 'a', 't', 'a'};
    ASYNC_SOCKET_BUFFER out{payload, sizeof(payload)};
    send_recorder sent;
    REQUIRE(socket->send_async(&out, 1, &send_recorder::callback, &sent) == status::ok);

    // Close on another thread; once it waits for callbacks (its CancelIoEx is done), release the worker.
    std::thread closer([&] { CHECK(socket->close() == status::ok); });
    const auto give_up = std::chrono::steady_clock::now() + deadline;
    bool waiting = false;
    while (!waiting && std::chrono::steady_clock::now() < give_up)
    {
        const std::vector<std::string> names = os.call_names();
        waiting = std::find(names.begin(), names.end(), "WaitForThreadpoolIoCallbacks") != names.end();
        std::this_thread::yield();
    }
    blocker.wake.update([&] { blocker.released = true; });
    closer.join();
    REQUIRE_MESSAGE(waiting, "close never reached WaitForThreadpoolIoCallbacks");
    REQUIRE(os.wait_until_idle(deadline));

    CHECK_FALSE(blocker.timed_out);
    // The send had completed before the cancel: it reports its real result, once.
    CHECK(sent.seen() == std::vector<ASYNC_SOCKET_SEND_RESULT>{ASYNC_SOCKET_SEND_OK});
    std::string violations;
    for (const std::string& violation : os.violations())
    {
        violations += violation + "; ";
    }
    CHECK_MESSAGE(os.violations().empty(), violations);
    socket.reset();
    CHECK(ledger.live_blocks() == 0);
}

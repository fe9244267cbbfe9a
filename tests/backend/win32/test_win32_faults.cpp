// Faults injected into the real Win32 backend (testing/win32_fault_calls.hpp) on real loopback TCP sockets, under
// Wine when cross compiling:
// - the plan and the allocator's rate mode draw the same faults for the same seed, at about their rate;
// - each fault kind, one at a time at rate 1: the backend gets the error the real layer would report (WSAENOBUFS or
//   WSAECONNRESET from WSASend/WSARecv, CreateEvent's error), the socket's call fails with the right status and runs
//   no callback, the OS is not called (a CreateThreadpoolIo that had been made would make the next open fail), nothing
//   leaks (ledger, events, bindings, cleanup groups, IO outstanding), and the next call works with the stream intact;
//   over threadpool IO and over a completion port;
// - WSASocketW, AcceptEx and ConnectEx faults: accept_async and connect_async refused (os_error), no handler, no
//   AcceptEx or ConnectEx reaching Winsock, nothing live; the next accept and connect meet and carry a byte;
// - a soak: 4 pairs stream checked data both ways, every fault kind on at a few percent, refused calls retried by the
//   test from the first unsent byte, each end closed and reopened in the middle; at the end every accepted IO has
//   completed exactly once, every byte sent arrived and was checked, and nothing is left live.
//
// ASYNC_SOCKET_SOAK_SCALE (default 1) multiplies the soak's bytes per stream (its close/reopen cycles stay).
#include <async_socket/async_socket.hpp>
#include <async_socket/backend/win32/iocp.hpp>
#include <async_socket/testing/fault_alloc.hpp>
#include <async_socket/testing/win32_fault_calls.hpp>

#include "support/engine_ref.hpp"
#include "support/loopback.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace faults_test
{

using async_socket::basic_async_socket;
using async_socket::status;
using async_socket::win32_error;
using async_socket::win32_event_mode;
using async_socket::win32_options;
using async_socket::win32_sync;
using async_socket::win32_threadpool_backend;
using async_socket::testing::alloc_ledger;
using async_socket::testing::fault_alloc;
using async_socket::testing::splitmix64;
using async_socket::testing::win32_fault_calls;
using async_socket::testing::win32_fault_plan;
using async_socket::testing::win32_fault_point;
using point = win32_fault_point;

// Wine is slow; a deadline only ends a wait that would otherwise hang.
constexpr double deadline_seconds = 60.0;

template <win32_options Options>
using threadpool_calls = win32_fault_calls<async_socket::detail::win32_threadpool_calls<Options>>;
template <win32_options Options>
using iocp_calls = win32_fault_calls<async_socket::detail::win32_iocp_calls<Options>>;

template <class Calls>
using socket_over = basic_async_socket<win32_threadpool_backend<Calls>, fault_alloc, win32_sync>;

static_assert(async_socket::check_backend<win32_threadpool_backend<threadpool_calls<win32_options{}>>>());
static_assert(async_socket::check_backend<win32_threadpool_backend<iocp_calls<win32_options{}>>>());
static_assert(
    async_socket::check_backend<win32_threadpool_backend<
        threadpool_calls<win32_options{.events = win32_event_mode::none, .skip_completion_on_success = true}>>>());

// An engine of a completion port with one dispatcher thread, held for the test.
struct iocp_engine_ref
{
    async_socket::win32_iocp_engine::handle engine = async_socket::win32_iocp_engine::create();
    [[nodiscard]] async_socket::win32_iocp_engine* get() const noexcept
    {
        return engine.get();
    }
};

// The two configurations the checks run on: the spec's threadpool IO (an event per IO), and a completion port.
struct threadpool_config
{
    using socket = socket_over<threadpool_calls<win32_options{}>>;
    using engine = win32_test::engine_ref;
};
struct iocp_config
{
    using socket = socket_over<iocp_calls<win32_options{}>>;
    using engine = iocp_engine_ref;
};

template <class Socket>
typename Socket::handle make_socket(typename Socket::engine_type engine, SOCKET socket, win32_fault_plan& plan,
                                    alloc_ledger& ledger)
{
    using backend = typename Socket::backend_type;
    return Socket::create(engine, win32_test::as_handle(socket), backend(typename backend::calls_type(&plan)),
                          fault_alloc(&ledger));
}

void ignore_open(void*, ASYNC_SOCKET_OPEN_RESULT) {}

// The callbacks of the IO of a unit check.
struct tally
{
    async_socket::testing::waiter waiter;
    int calls = 0; // under waiter.mutex(), as are the members below
    int last_result = -1;
    std::uint32_t last_bytes = 0;

    static void on_send(void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        auto* self = static_cast<tally*>(context);
        self->waiter.update(
            [&]
            {
                ++self->calls;
                self->last_result = static_cast<int>(result);
            });
    }
    static void on_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
    {
        auto* self = static_cast<tally*>(context);
        self->waiter.update(
            [&]
            {
                ++self->calls;
                self->last_result = static_cast<int>(result);
                self->last_bytes = bytes;
            });
    }
    bool wait_for(int calls_wanted)
    {
        return waiter.wait_for([&] { return calls >= calls_wanted; }, deadline_seconds);
    }
    int seen_calls()
    {
        std::lock_guard lock(waiter.mutex());
        return calls;
    }
};

// What every leak check reads: nothing of the plan's or the ledger's is left.
void check_nothing_live(const win32_fault_plan& plan, const alloc_ledger& ledger)
{
    CHECK(ledger.live_blocks() == 0);
    CHECK(ledger.misuse() == 0);
    CHECK(plan.live_events() == 0);
    CHECK(plan.live_bindings() == 0);
    CHECK(plan.live_cleanup_groups() == 0);
    CHECK(plan.outstanding_io() == 0);
}

// ---------------------------------------------------------------------------------------------------------------
// The backend alone over the fault layer: the exact error it gets.

void record_completion(void* owner, void*, async_socket::io_result result) noexcept
{
    auto* record = static_cast<tally*>(owner);
    record->waiter.update(
        [&]
        {
            ++record->calls;
            record->last_result = static_cast<int>(result.os_code);
            record->last_bytes = static_cast<std::uint32_t>(result.bytes);
        });
}

// A backend over the threadpool fault layer, attached and bound to one end of a loopback pair.
struct bound_backend
{
    using calls_type = threadpool_calls<win32_options{}>;
    using backend_type = win32_threadpool_backend<calls_type>;

    win32_test::wsa_session wsa;
    win32_test::engine_ref engine;
    win32_test::socket_pair pair = win32_test::make_loopback_pair();
    win32_fault_plan plan{7};
    tally record;
    backend_type backend{calls_type(&plan)};
    typename backend_type::io_state io{};
    std::array<char, 64> bytes{};
    WSABUF buffer{};

    bound_backend()
    {
        REQUIRE(wsa.ok());
        REQUIRE(engine.engine != nullptr);
        REQUIRE(pair.valid());
        REQUIRE(backend.attach(engine.engine));
        REQUIRE(backend.bind<&record_completion>(win32_test::as_handle(pair.server), &record));
        CHECK(plan.live_bindings() == 1);
        CHECK(plan.live_cleanup_groups() == 1);
        backend_type::set_buffer(buffer, bytes.data(), static_cast<std::uint32_t>(bytes.size()));
    }
    ~bound_backend()
    {
        backend.cancel_all();
        backend.drain();
        backend.unbind();
    }
    bound_backend(const bound_backend&) = delete;
    bound_backend& operator=(const bound_backend&) = delete;
};

// ---------------------------------------------------------------------------------------------------------------
// The soak.

double soak_scale()
{
    const char* text = std::getenv("ASYNC_SOCKET_SOAK_SCALE");
    if (text == nullptr || *text == '\0')
    {
        return 1.0;
    }
    const double value = std::strtod(text, nullptr);
    return std::isfinite(value) && value > 0.0 ? value : 1.0;
}

// The byte at `offset` of the stream seeded `seed`: a byte lost, doubled or moved shows.
inline std::uint8_t stream_byte(std::uint64_t seed, std::uint64_t offset) noexcept
{
    return static_cast<std::uint8_t>(splitmix64(seed + (offset >> 3)) >> (8 * (offset & 7)));
}

void fill_stream(std::uint64_t seed, std::uint64_t offset, std::uint8_t* out, std::size_t size) noexcept
{
    for (std::size_t i = 0; i < size; ++i)
    {
        out[i] = stream_byte(seed, offset + i);
    }
}

// Splits `length` bytes at `data` into 1 to 3 buffers of at least one byte, chosen by r.
std::uint32_t split(std::uint8_t* data, std::uint32_t length, std::uint64_t r, ASYNC_SOCKET_BUFFER* parts)
{
    std::uint32_t count = std::min<std::uint32_t>(1 + static_cast<std::uint32_t>(r % 3), length);
    std::uint32_t offset = 0;
    for (std::uint32_t i = 0; i + 1 < count; ++i)
    {
        const std::uint32_t room = length - offset - (count - 1 - i);
        r = splitmix64(r);
        const std::uint32_t size = 1 + static_cast<std::uint32_t>(r % room);
        parts[i] = {data + offset, size};
        offset += size;
    }
    parts[count - 1] = {data + offset, length - offset};
    return count;
}

// What a soak run shares. Helper threads and callbacks only record; the test's thread asserts.
struct soak_world
{
    async_socket::testing::waiter waiter;
    std::atomic<bool> stop{false}; // a failure: the chains stop posting

    std::mutex failures_mutex;
    std::vector<std::string> failures; // the first few
    std::atomic<std::uint64_t> failure_count{0};

    std::atomic<std::uint64_t> sends_accepted{0};
    std::atomic<std::uint64_t> receives_accepted{0};
    std::atomic<std::uint64_t> sends_completed{0};
    std::atomic<std::uint64_t> receives_completed{0};
    std::atomic<std::uint64_t> sends_refused_os{0};
    std::atomic<std::uint64_t> receives_refused_os{0};
    std::atomic<std::uint64_t> sends_refused_memory{0};
    std::atomic<std::uint64_t> receives_refused_memory{0};
    std::atomic<std::uint64_t> refused_while_closing{0};
    std::atomic<std::uint64_t> receives_cut_by_close{0};
    std::atomic<std::uint64_t> receives_ok_during_close{0};
    std::atomic<std::uint64_t> creates_failed{0};
    std::atomic<std::uint64_t> opens_failed{0};
    std::atomic<std::uint64_t> reopens{0};
    std::atomic<std::uint64_t> quiet_closes{0};

    void fail(std::string what)
    {
        ++failure_count;
        stop = true;
        {
            std::lock_guard lock(failures_mutex);
            if (failures.size() < 20)
            {
                failures.push_back(std::move(what));
            }
        }
        waiter.notify();
    }
    [[nodiscard]] bool failed() const noexcept
    {
        return failure_count.load() != 0;
    }
};

// One direction of a pair: a pattern stream of `total` bytes, one send and one receive in flight at a time.
struct stream
{
    static constexpr std::uint32_t max_chunk = 8 * 1024;
    static constexpr std::uint32_t max_receive = 16 * 1024;

    std::string name;
    std::uint64_t seed = 0;
    std::uint64_t total = 0;

    // The sender's, touched only by the thread that holds the chain (the one IO in flight, or the poster).
    std::vector<std::uint8_t> out = std::vector<std::uint8_t>(max_chunk);
    std::array<ASYNC_SOCKET_BUFFER, 3> out_parts{};
    std::uint32_t chunk = 0;
    std::atomic<std::uint64_t> sent{0};   // bytes of sends completed with OK: the first unsent byte
    std::atomic<std::uint64_t> chunks{0}; // sends completed with OK
    std::atomic<bool> pause{false};       // the sender stops before its next send
    bool sender_idle = true;              // under the world's waiter mutex

    // The receiver's, likewise.
    std::vector<std::uint8_t> in = std::vector<std::uint8_t>(max_receive);
    std::array<ASYNC_SOCKET_BUFFER, 3> in_parts{};
    std::uint64_t receives_posted = 0;
    std::atomic<std::uint64_t> received{0}; // bytes received and checked
    bool receiver_idle = true;              // under the world's waiter mutex
};

template <class Socket>
struct soak_end
{
    soak_world* world = nullptr;
    std::string name;
    typename Socket::handle socket;
    std::atomic<bool> closing{false};
    stream* out = nullptr; // what this end sends
    stream* in = nullptr;  // what it receives
};

template <class Socket>
void set_sender_idle(soak_end<Socket>& end)
{
    end.world->waiter.update([&] { end.out->sender_idle = true; });
}

template <class Socket>
void set_receiver_idle(soak_end<Socket>& end)
{
    end.world->waiter.update([&] { end.in->receiver_idle = true; });
}

template <class Socket>
void on_soak_send(void* context, ASYNC_SOCKET_SEND_RESULT result);
template <class Socket>
void on_soak_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes);

// Posts the next send of the end's stream, from its first unsent byte; a call refused by an injected fault
// (os_error, out_of_memory) is made again. Stops (idle) when paused, done, or the run failed.
template <class Socket>
void send_next(soak_end<Socket>& end)
{
    soak_world& world = *end.world;
    stream& s = *end.out;
    for (std::uint32_t attempt = 0;; ++attempt)
    {
        const std::uint64_t from = s.sent.load();
        if (world.stop || s.pause || from >= s.total)
        {
            set_sender_idle(end);
            return;
        }
        if (attempt > 10000)
        {
            world.fail(s.name + ": send_async refused 10000 times in a row");
            set_sender_idle(end);
            return;
        }
        const std::uint64_t r = splitmix64(s.seed ^ (s.chunks.load() * 0x9E3779B97F4A7C15ull));
        s.chunk = static_cast<std::uint32_t>(std::min<std::uint64_t>(1 + r % stream::max_chunk, s.total - from));
        fill_stream(s.seed, from, s.out.data(), s.chunk);
        const std::uint32_t count = split(s.out.data(), s.chunk, splitmix64(r), s.out_parts.data());
        ++world.sends_accepted; // before the call: the callback may run before it returns
        const status posted = end.socket->send_async(s.out_parts.data(), count, &on_soak_send<Socket>, &end);
        if (posted == status::ok)
        {
            return;
        }
        --world.sends_accepted;
        if (posted == status::os_error)
        {
            ++world.sends_refused_os;
        }
        else if (posted == status::out_of_memory)
        {
            ++world.sends_refused_memory;
        }
        else
        {
            world.fail(s.name + ": send_async refused with " + async_socket::to_string(posted));
            set_sender_idle(end);
            return;
        }
    }
}

template <class Socket>
void on_soak_send(void* context, ASYNC_SOCKET_SEND_RESULT result)
{
    auto& end = *static_cast<soak_end<Socket>*>(context);
    soak_world& world = *end.world;
    stream& s = *end.out;
    ++world.sends_completed;
    if (result != ASYNC_SOCKET_SEND_OK)
    {
        // Each end's sender is stopped before the end closes: no send may be cut, or fail.
        world.fail(s.name + ": a send completed with " + std::to_string(static_cast<int>(result)));
        set_sender_idle(end);
        return;
    }
    s.sent += s.chunk;
    ++s.chunks;
    send_next(end);
}

// Posts the next receive of the end's incoming stream (scattered over 1 to 3 buffers); refused calls as send_next.
// Stops (idle) when the stream is all in, the run failed, or the end closes.
template <class Socket>
void receive_next(soak_end<Socket>& end)
{
    soak_world& world = *end.world;
    stream& s = *end.in;
    for (std::uint32_t attempt = 0;; ++attempt)
    {
        if (world.stop || s.received.load() >= s.total)
        {
            set_receiver_idle(end);
            return;
        }
        if (attempt > 10000)
        {
            world.fail(s.name + ": receive_async refused 10000 times in a row");
            set_receiver_idle(end);
            return;
        }
        const std::uint64_t r = splitmix64(~s.seed ^ (s.receives_posted * 0x9E3779B97F4A7C15ull));
        const auto size = static_cast<std::uint32_t>(1 + r % stream::max_receive);
        const std::uint32_t count = split(s.in.data(), size, splitmix64(r), s.in_parts.data());
        ++world.receives_accepted;
        const status posted = end.socket->receive_async(s.in_parts.data(), count, &on_soak_receive<Socket>, &end);
        if (posted == status::ok)
        {
            ++s.receives_posted;
            return;
        }
        --world.receives_accepted;
        if (posted == status::os_error)
        {
            ++world.receives_refused_os;
        }
        else if (posted == status::out_of_memory)
        {
            ++world.receives_refused_memory;
        }
        else if (posted == status::invalid_state && end.closing)
        {
            ++world.refused_while_closing;
            set_receiver_idle(end);
            return;
        }
        else
        {
            world.fail(s.name + ": receive_async refused with " + async_socket::to_string(posted));
            set_receiver_idle(end);
            return;
        }
    }
}

template <class Socket>
void on_soak_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
{
    auto& end = *static_cast<soak_end<Socket>*>(context);
    soak_world& world = *end.world;
    stream& s = *end.in;
    ++world.receives_completed;
    if (result == ASYNC_SOCKET_RECEIVE_OK && bytes > 0)
    {
        if (end.closing)
        {
            ++world.receives_ok_during_close; // its bytes arrived before the cancel: kept
        }
        // The bytes sit in the parts in order: the parts tile the front of the buffer.
        const std::uint64_t from = s.received.load();
        if (from + bytes > s.total)
        {
            world.fail(s.name + ": " + std::to_string(from + bytes - s.total) + " bytes more than were sent");
            set_receiver_idle(end);
            return;
        }
        for (std::uint32_t i = 0; i < bytes; ++i)
        {
            if (s.in[i] != stream_byte(s.seed, from + i))
            {
                world.fail(s.name + ": byte " + std::to_string(from + i) + " differs from the pattern");
                set_receiver_idle(end);
                return;
            }
        }
        s.received += bytes;
        world.waiter.notify();
        receive_next(end);
        return;
    }
    if (result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE && end.closing)
    {
        ++world.receives_cut_by_close;
        set_receiver_idle(end);
        return;
    }
    world.fail(s.name + ": a receive completed with " + std::to_string(static_cast<int>(result)) + " and " +
               std::to_string(bytes) + " bytes");
    set_receiver_idle(end);
}

// Starts both chains of an end (its sender and its receiver are idle).
template <class Socket>
void start_end(soak_end<Socket>& end)
{
    end.world->waiter.update(
        [&]
        {
            end.out->sender_idle = false;
            end.in->receiver_idle = false;
        });
    end.out->pause = false;
    receive_next(end);
    send_next(end);
}

// Starts the sender of an end again (it is idle).
template <class Socket>
void resume_sender(soak_end<Socket>& end)
{
    end.world->waiter.update([&] { end.out->sender_idle = false; });
    end.out->pause = false;
    send_next(end);
}

// Waits until done() holds (under the waiter's mutex); on a timeout records `what` and returns false.
template <class Done>
bool soak_wait(soak_world& world, Done done, const std::string& what)
{
    if (world.waiter.wait_for([&] { return world.failed() || done(); }, deadline_seconds))
    {
        return !world.failed();
    }
    world.fail(what + ": not within " + std::to_string(static_cast<int>(deadline_seconds)) + " s");
    return false;
}

// create, retried while an injected fault (the allocation, acquire_pool) makes it fail.
template <class Socket>
bool create_end(soak_end<Socket>& end, typename Socket::engine_type engine, SOCKET socket, win32_fault_plan& plan,
                alloc_ledger& ledger)
{
    for (int attempt = 0; attempt < 1000; ++attempt)
    {
        end.socket = make_socket<Socket>(engine, socket, plan, ledger);
        if (end.socket)
        {
            return true;
        }
        ++end.world->creates_failed;
    }
    end.world->fail(end.name + ": create failed 1000 times");
    return false;
}

// open_async, retried while an injected fault (CreateThreadpoolCleanupGroup, CreateThreadpoolIo) makes it fail.
template <class Socket>
bool open_end(soak_end<Socket>& end)
{
    for (int attempt = 0; attempt < 1000; ++attempt)
    {
        const status opened = end.socket->open_async(&ignore_open, nullptr);
        if (opened == status::ok)
        {
            return true;
        }
        if (opened != status::os_error)
        {
            end.world->fail(end.name + ": open_async failed with " + async_socket::to_string(opened));
            return false;
        }
        ++end.world->opens_failed;
    }
    end.world->fail(end.name + ": open_async failed 1000 times");
    return false;
}

template <class Socket>
struct soak_pair
{
    win32_test::socket_pair sockets = win32_test::make_loopback_pair(); // outlives the ends' sockets
    std::array<stream, 2> streams;                                      // 0: client to server, 1: server to client
    std::array<soak_end<Socket>, 2> ends;                               // 0: client, 1: server
    std::uint64_t cycles_done = 0;
};

// Closes and reopens the pair's ends in turn, `cycles` times, while both streams flow: before each close both streams
// must have moved on by `step` bytes (or be done); the closing end's sender is stopped first and its send in flight
// completed (so no send is cut), then close cuts its receive, open_async reopens it on the same SOCKET and both
// chains start again. Every third close is quiet (see below).
template <class Socket>
void run_cycles(soak_world& world, soak_pair<Socket>& pair, std::size_t index, std::uint64_t cycles, std::uint64_t step)
{
    std::array<std::uint64_t, 2> marks{pair.streams[0].received.load(), pair.streams[1].received.load()};
    for (std::uint64_t cycle = 0; cycle < cycles && !world.failed(); ++cycle)
    {
        const std::string where = "pair " + std::to_string(index) + ", close " + std::to_string(cycle);
        if (!soak_wait(
                world,
                [&]
                {
                    for (std::size_t d = 0; d < 2; ++d)
                    {
                        const stream& s = pair.streams[d];
                        if (s.received.load() < std::min(s.total, marks[d] + step))
                        {
                            return false;
                        }
                    }
                    return true;
                },
                where + ": the streams did not move on"))
        {
            return;
        }
        soak_end<Socket>& end = pair.ends[cycle % 2];
        soak_end<Socket>& peer = pair.ends[1 - cycle % 2];
        end.out->pause = true;
        if (!soak_wait(
                world, [&] { return end.out->sender_idle; }, where + ": the send in flight did not complete"))
        {
            return;
        }
        // Every third close is quiet: the peer's sender stops too and all it sent arrives first, so that the close
        // finds the end's receive pending with no byte to come, and cuts it (BECAUSE_CLOSE).
        const bool quiet = cycle % 3 == 2;
        if (quiet)
        {
            ++world.quiet_closes;
            peer.out->pause = true;
            if (!soak_wait(
                    world, [&] { return peer.out->sender_idle && end.in->received.load() == end.in->sent.load(); },
                    where + ": the peer's stream did not all arrive before a quiet close"))
            {
                return;
            }
        }
        end.closing = true;
        const status closed = end.socket->close();
        if (closed != status::ok)
        {
            world.fail(where + ": close failed with " + async_socket::to_string(closed));
            return;
        }
        bool receiver_idle = false;
        world.waiter.update([&] { receiver_idle = end.in->receiver_idle; });
        if (!receiver_idle)
        {
            world.fail(where + ": close returned with the receive's callback not run");
            return;
        }
        if (!open_end(end))
        {
            return;
        }
        end.closing = false;
        ++world.reopens;
        ++pair.cycles_done;
        start_end(end);
        if (quiet)
        {
            resume_sender(peer);
        }
        marks = {pair.streams[0].received.load(), pair.streams[1].received.load()};
    }
}

template <class Config>
void run_soak(const char* label)
{
    using Socket = typename Config::socket;
    constexpr std::size_t pair_count = 4;
    const double scale = soak_scale();
    const auto bytes_per_stream = static_cast<std::uint64_t>(std::llround(4.0 * 1024 * 1024 * scale));
    constexpr std::uint64_t cycles = 24; // closes and reopens per pair
    const std::uint64_t step = bytes_per_stream / (cycles + 4);
    const std::uint64_t seed = 0x5EED0000ull + 13;
    constexpr double io_rate = 0.03;   // WSASend, WSARecv, CreateEvent
    constexpr double open_rate = 0.25; // get_threadpool, CreateThreadpoolCleanupGroup, CreateThreadpoolIo: few calls
    constexpr double alloc_rate = 0.02;

    win32_test::wsa_session wsa;
    REQUIRE(wsa.ok());
    typename Config::engine engine;
    REQUIRE(engine.get() != nullptr);
    win32_fault_plan plan(seed);
    plan.set_rate(point::acquire_pool, open_rate);
    plan.set_rate(point::create_cleanup_group, open_rate);
    plan.set_rate(point::create_io, open_rate);
    plan.set_rate(point::create_event, io_rate);
    plan.set_rate(point::send, io_rate);
    plan.set_rate(point::receive, io_rate);
    alloc_ledger ledger;
    ledger.fail_at_rate(alloc_rate, seed);

    soak_world world;
    const auto start = std::chrono::steady_clock::now();
    {
        std::vector<std::unique_ptr<soak_pair<Socket>>> pairs;
        for (std::size_t i = 0; i < pair_count; ++i)
        {
            auto pair = std::make_unique<soak_pair<Socket>>();
            REQUIRE(pair->sockets.valid());
            for (std::size_t d = 0; d < 2; ++d)
            {
                stream& s = pair->streams[d];
                s.name = "pair " + std::to_string(i) + (d == 0 ? " client->server" : " server->client");
                s.seed = splitmix64(seed ^ (i * 2 + d + 1));
                s.total = bytes_per_stream;
                soak_end<Socket>& end = pair->ends[d];
                end.world = &world;
                end.name = "pair " + std::to_string(i) + (d == 0 ? " client" : " server");
                end.out = &pair->streams[d];
                end.in = &pair->streams[1 - d];
            }
            REQUIRE(create_end(pair->ends[0], engine.get(), pair->sockets.client, plan, ledger));
            REQUIRE(create_end(pair->ends[1], engine.get(), pair->sockets.server, plan, ledger));
            REQUIRE(open_end(pair->ends[0]));
            REQUIRE(open_end(pair->ends[1]));
            pairs.push_back(std::move(pair));
        }

        for (auto& pair : pairs)
        {
            start_end(pair->ends[0]);
            start_end(pair->ends[1]);
        }
        std::vector<std::thread> closers;
        for (std::size_t i = 0; i < pair_count; ++i)
        {
            closers.emplace_back([&, i] { run_cycles(world, *pairs[i], i, cycles, step); });
        }
        for (auto& closer : closers)
        {
            closer.join();
        }
        (void)soak_wait(
            world,
            [&]
            {
                return std::all_of(pairs.begin(), pairs.end(),
                                   [](const auto& pair)
                                   {
                                       return std::all_of(pair->streams.begin(), pair->streams.end(),
                                                          [](const stream& s) {
                                                              return s.received.load() >= s.total && s.sender_idle &&
                                                                     s.receiver_idle;
                                                          });
                                   });
            },
            "the streams did not all arrive");
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

        // The final close: nothing should be posted any more (unless the run failed: then it cuts what is).
        for (auto& pair : pairs)
        {
            for (auto& end : pair->ends)
            {
                end.closing = true;
                end.out->pause = true;
                CHECK(end.socket->close() == status::ok);
            }
        }

        std::uint64_t bytes_sent = 0;
        std::uint64_t bytes_checked = 0;
        std::uint64_t sends_ok = 0;
        std::uint64_t reopens = 0;
        for (auto& pair : pairs)
        {
            reopens += pair->cycles_done;
            for (const stream& s : pair->streams)
            {
                CAPTURE(s.name);
                CHECK(s.sent.load() == s.total);
                CHECK(s.received.load() == s.sent.load());
                bytes_sent += s.sent.load();
                bytes_checked += s.received.load();
                sends_ok += s.chunks.load();
            }
        }
        for (auto& pair : pairs)
        {
            for (auto& end : pair->ends)
            {
                end.socket.reset();
            }
        }
        const std::uint64_t accepted = world.sends_accepted.load() + world.receives_accepted.load();
        const std::uint64_t completed = world.sends_completed.load() + world.receives_completed.load();

        std::ostringstream faults;
        for (std::size_t p = 0; p < async_socket::testing::win32_fault_point_count; ++p)
        {
            const auto at = static_cast<point>(p);
            if (plan.calls(at) == 0 && plan.injected(at) == 0)
            {
                continue;
            }
            faults << (p == 0 ? "" : ", ") << to_string(at) << " " << plan.injected(at) << "/" << plan.calls(at);
        }
        faults << "; WSASend WSAENOBUFS " << plan.injected(point::send, async_socket::testing::wsa_no_buffers)
               << ", WSAECONNRESET " << plan.injected(point::send, async_socket::wsa_connection_reset)
               << "; WSARecv WSAENOBUFS " << plan.injected(point::receive, async_socket::testing::wsa_no_buffers)
               << ", WSAECONNRESET " << plan.injected(point::receive, async_socket::wsa_connection_reset)
               << "; allocations failed " << ledger.failed_allocations() << "/" << ledger.allocations();
        MESSAGE(std::string(label)
                << " soak (seed " << seed << ", scale " << scale << "): " << pair_count
                << " pairs streaming both ways, " << reopens << " closes and reopens, in " << seconds
                << " s. IO accepted " << accepted << " (sends " << world.sends_accepted.load() << ", receives "
                << world.receives_accepted.load() << "), completed " << completed << " (sends "
                << world.sends_completed.load() << ", receives " << world.receives_completed.load() << "); OS accepted "
                << plan.accepted_by_os() << ", OS completions " << plan.completions() << ". Sends OK " << sends_ok
                << "; bytes sent " << bytes_sent << ", received and checked " << bytes_checked
                << ". Refused and retried: sends os_error " << world.sends_refused_os.load() << ", out_of_memory "
                << world.sends_refused_memory.load() << "; receives os_error " << world.receives_refused_os.load()
                << ", out_of_memory " << world.receives_refused_memory.load() << "; creates "
                << world.creates_failed.load() << ", opens " << world.opens_failed.load() << ". Receives cut by close "
                << world.receives_cut_by_close.load() << ", OK during close " << world.receives_ok_during_close.load()
                << ", refused while closing " << world.refused_while_closing.load() << " (" << world.quiet_closes.load()
                << " quiet closes)"
                << ". Faults injected/calls: " << faults.str() << ". Live at the end: blocks " << ledger.live_blocks()
                << ", events " << plan.live_events() << ", bindings " << plan.live_bindings() << ", cleanup groups "
                << plan.live_cleanup_groups() << ", IO outstanding " << plan.outstanding_io());

        {
            std::lock_guard lock(world.failures_mutex);
            for (const std::string& failure : world.failures)
            {
                FAIL_CHECK(failure);
            }
        }
        CHECK(world.failure_count.load() == 0);
        CHECK(accepted == completed);
        CHECK(plan.accepted_by_os() == plan.completions());
        CHECK(bytes_sent == bytes_checked);
        CHECK(bytes_sent == 2 * pair_count * bytes_per_stream);
        CHECK(reopens == cycles * pair_count);
        CHECK(world.receives_cut_by_close.load() > 0);
        // Every kind of fault happened, and was survived.
        CHECK(plan.injected(point::send) > 0);
        CHECK(plan.injected(point::receive) > 0);
        CHECK(plan.injected(point::create_event) > 0);
        CHECK(ledger.failed_allocations() > 0);
        CHECK(world.sends_refused_os.load() + world.receives_refused_os.load() ==
              plan.injected(point::send) + plan.injected(point::receive) + plan.injected(point::create_event));
        check_nothing_live(plan, ledger);
    }
}

} // namespace faults_test

using namespace faults_test;

TEST_CASE("a fault plan draws the same faults for the same seed, at about its rate, and never at rate 0")
{
    win32_fault_plan first(42);
    win32_fault_plan second(42);
    win32_fault_plan other(43);
    first.set_rate(point::send, 0.05);
    second.set_rate(point::send, 0.05);
    other.set_rate(point::send, 0.05);
    constexpr int draws = 20000;
    int faults = 0;
    int differences = 0;
    for (int i = 0; i < draws; ++i)
    {
        const win32_error a = first.draw(point::send);
        CHECK(a == second.draw(point::send));
        // Draws at another point do not move this point's sequence.
        (void)second.draw(point::receive);
        differences += a != other.draw(point::send) ? 1 : 0;
        faults += a != 0 ? 1 : 0;
        CHECK((a == 0 || a == async_socket::testing::wsa_no_buffers || a == async_socket::wsa_connection_reset));
    }
    MESSAGE("rate 0.05: " << faults << " faults in " << draws << " draws; seed 43 differs in " << differences);
    CHECK(faults > draws * 4 / 100);
    CHECK(faults < draws * 6 / 100);
    CHECK(differences > 0);
    CHECK(first.calls(point::send) == static_cast<std::uint64_t>(draws));
    CHECK(first.injected(point::send) == static_cast<std::uint64_t>(faults));
    CHECK(first.injected(point::send, async_socket::testing::wsa_no_buffers) > 0);
    CHECK(first.injected(point::send, async_socket::wsa_connection_reset) > 0);
    CHECK(first.injected(point::send, async_socket::testing::wsa_no_buffers) +
              first.injected(point::send, async_socket::wsa_connection_reset) ==
          first.injected(point::send));
    CHECK(second.injected(point::receive) == 0); // rate 0

    first.set_rate(point::send, 1.0);
    first.set_errors(point::send, {async_socket::testing::wsa_no_buffers});
    for (int i = 0; i < 100; ++i)
    {
        CHECK(first.draw(point::send) == async_socket::testing::wsa_no_buffers);
    }
    first.set_rate(point::send, 0.0);
    for (int i = 0; i < 100; ++i)
    {
        CHECK(first.draw(point::send) == async_socket::win32_no_error);
    }
}

TEST_CASE("the allocator's rate mode fails the same allocations for the same seed, at about its rate")
{
    constexpr int allocations = 20000;
    std::vector<bool> failed_first;
    for (int run = 0; run < 2; ++run)
    {
        alloc_ledger ledger;
        ledger.fail_at_rate(0.02, 99);
        fault_alloc alloc(&ledger);
        for (int i = 0; i < allocations; ++i)
        {
            void* block = alloc.allocate(16);
            if (run == 0)
            {
                failed_first.push_back(block == nullptr);
            }
            else
            {
                CHECK(failed_first[static_cast<std::size_t>(i)] == (block == nullptr));
            }
            alloc.deallocate(block, 16);
        }
        CHECK(ledger.live_blocks() == 0);
        CHECK(ledger.failed_allocations() > static_cast<std::uint64_t>(allocations) * 1 / 100);
        CHECK(ledger.failed_allocations() < static_cast<std::uint64_t>(allocations) * 3 / 100);
        if (run == 1)
        {
            MESSAGE("rate 0.02: " << ledger.failed_allocations() << " of " << allocations << " allocations failed");
        }
        ledger.fail_at_rate(0.0);
        const std::uint64_t before = ledger.failed_allocations();
        for (int i = 0; i < 1000; ++i)
        {
            void* block = alloc.allocate(8);
            CHECK(block != nullptr);
            alloc.deallocate(block, 8);
        }
        CHECK(ledger.failed_allocations() == before);
        ledger.fail_at_rate(1.0);
        CHECK(alloc.allocate(8) == nullptr);
    }
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_062: [ If net_comm_send_async fails, async_socket_send_async shall call
// CancelThreadpoolIo and return MU_FAILURE. ]
// (On the real threadpool: no IO stays started, the event is closed, nothing is sent.)
TEST_CASE("an injected WSASend fault gives the backend WSAENOBUFS or WSAECONNRESET and sends nothing")
{
    bound_backend world;
    world.plan.set_rate(point::send, 1.0);
    const std::uint64_t events_before = world.plan.calls(point::create_event);
    for (const win32_error error : {async_socket::testing::wsa_no_buffers, async_socket::wsa_connection_reset})
    {
        CAPTURE(error);
        world.plan.set_errors(point::send, {error});
        std::memcpy(world.bytes.data(), "bad", 3);
        world.buffer.len = 3;
        const async_socket::submit_result result = world.backend.submit_send(world.io, &world.buffer, 1);
        CHECK(result.status == async_socket::submit_status::refused);
        CHECK(result.value == error);
        // The IO's event was made and closed again, StartThreadpoolIo undone by CancelThreadpoolIo.
        CHECK(world.plan.live_events() == 0);
        CHECK(world.plan.outstanding_io() == 0);
    }
    CHECK(world.plan.calls(point::create_event) == events_before + 2);
    CHECK(world.plan.accepted_by_os() == 0);

    // With the fault off the same backend sends; the peer gets only these bytes: nothing went out before.
    world.plan.set_rate(point::send, 0.0);
    std::memcpy(world.bytes.data(), "good", 4);
    world.buffer.len = 4;
    const async_socket::submit_result sent = world.backend.submit_send(world.io, &world.buffer, 1);
    REQUIRE(sent.status == async_socket::submit_status::pending);
    REQUIRE(world.record.wait_for(1));
    CHECK(world.record.last_result == 0);
    CHECK(world.record.last_bytes == 4);
    char got[8] = {};
    CHECK(recv(world.pair.client, got, 4, MSG_WAITALL) == 4);
    CHECK(std::string(got, 4) == "good");
    CHECK(world.plan.accepted_by_os() == 1);
    CHECK(world.plan.completions() == 1);
    CHECK(world.plan.live_events() == 0);
    CHECK(world.plan.outstanding_io() == 0);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_054: [ If WSARecv fails, async_socket_receive_async shall call
// CancelThreadpoolIo. ]
TEST_CASE("an injected WSARecv fault gives the backend WSAECONNRESET or WSAENOBUFS and takes no byte")
{
    bound_backend world;
    world.plan.set_rate(point::receive, 1.0);
    REQUIRE(send(world.pair.client, "abc", 3, 0) == 3); // waiting in the socket's buffer
    for (const win32_error error : {async_socket::wsa_connection_reset, async_socket::testing::wsa_no_buffers})
    {
        CAPTURE(error);
        world.plan.set_errors(point::receive, {error});
        const async_socket::submit_result result = world.backend.submit_receive(world.io, &world.buffer, 1);
        CHECK(result.status == async_socket::submit_status::refused);
        CHECK(result.value == error);
        CHECK(world.plan.live_events() == 0);
        CHECK(world.plan.outstanding_io() == 0);
    }
    world.plan.set_rate(point::receive, 0.0);
    const async_socket::submit_result posted = world.backend.submit_receive(world.io, &world.buffer, 1);
    REQUIRE(posted.status == async_socket::submit_status::pending);
    REQUIRE(world.record.wait_for(1));
    CHECK(world.record.last_result == 0);
    CHECK(world.record.last_bytes == 3);
    CHECK(std::string(world.bytes.data(), 3) == "abc");
    CHECK(world.plan.outstanding_io() == 0);
}

TEST_CASE("an injected CreateEvent fault refuses the IO with the plan's error before any WSASend")
{
    bound_backend world;
    world.plan.set_rate(point::create_event, 1.0);
    world.plan.set_errors(point::create_event, {async_socket::testing::win32_no_system_resources});
    const async_socket::submit_result result = world.backend.submit_send(world.io, &world.buffer, 1);
    CHECK(result.status == async_socket::submit_status::refused);
    CHECK(result.value == async_socket::testing::win32_no_system_resources);
    CHECK(world.plan.calls(point::send) == 0);
    CHECK(world.plan.live_events() == 0);
    CHECK(world.plan.outstanding_io() == 0); // StartThreadpoolIo was not called either
    world.plan.set_errors(point::create_event, {async_socket::testing::win32_not_enough_memory});
    CHECK(world.backend.submit_receive(world.io, &world.buffer, 1).value ==
          async_socket::testing::win32_not_enough_memory);
    CHECK(world.plan.calls(point::receive) == 0);
}

// Tests_SRS_ASYNC_SOCKET_WIN32_01_039: [ If any error occurs, async_socket_open_async shall fail and return a non-zero
// value. ]
TEST_CASE_TEMPLATE("each injected fault fails the socket's call cleanly, and the next call works", Config,
                   threadpool_config, iocp_config)
{
    using Socket = typename Config::socket;
    win32_test::wsa_session wsa;
    REQUIRE(wsa.ok());
    typename Config::engine engine;
    REQUIRE(engine.get() != nullptr);
    win32_test::socket_pair pair = win32_test::make_loopback_pair();
    REQUIRE(pair.valid());
    win32_fault_plan plan(11);
    alloc_ledger ledger;
    tally sends;
    tally receives;
    {
        // create: the allocation, then get_threadpool.
        ledger.fail_at_rate(1.0);
        CHECK_FALSE(make_socket<Socket>(engine.get(), pair.client, plan, ledger));
        ledger.fail_at_rate(0.0);
        plan.set_rate(point::acquire_pool, 1.0);
        CHECK_FALSE(make_socket<Socket>(engine.get(), pair.client, plan, ledger));
        CHECK(plan.injected(point::acquire_pool) == 1);
        CHECK(ledger.live_blocks() == 0);
        plan.set_rate(point::acquire_pool, 0.0);
        auto client = make_socket<Socket>(engine.get(), pair.client, plan, ledger);
        auto server = make_socket<Socket>(engine.get(), pair.server, plan, ledger);
        REQUIRE(client);
        REQUIRE(server);

        // The first open: CreateThreadpoolCleanupGroup, then CreateThreadpoolIo. Had a CreateThreadpoolIo been made
        // on the SOCKET, the open after the fault would fail (a SOCKET binds once): it succeeds.
        for (const point at : {point::create_cleanup_group, point::create_io})
        {
            CAPTURE(to_string(at));
            plan.set_rate(at, 1.0);
            CHECK(client->open_async(&ignore_open, nullptr) == status::os_error);
            CHECK(client->state() == async_socket::socket_state::closed);
            CHECK(plan.live_bindings() == 0);
            CHECK(plan.live_cleanup_groups() == 0);
            plan.set_rate(at, 0.0);
        }
        CHECK(plan.injected(point::create_cleanup_group) == 1);
        CHECK(plan.injected(point::create_io) == 1);
        REQUIRE(client->open_async(&ignore_open, nullptr) == status::ok);
        REQUIRE(server->open_async(&ignore_open, nullptr) == status::ok);
        CHECK(plan.live_bindings() == 2);
        const std::int64_t blocks_open = ledger.live_blocks(); // the two sockets

        std::array<std::uint8_t, 5> out = {'h', 'e', 'l', 'l', 'o'};
        std::array<std::uint8_t, 16> in{};
        ASYNC_SOCKET_BUFFER out_buffer{out.data(), static_cast<std::uint32_t>(out.size())};
        ASYNC_SOCKET_BUFFER in_buffer{in.data(), static_cast<std::uint32_t>(in.size())};

        // Per IO: CreateEvent, WSASend, WSARecv, the allocation of the IO's context.
        for (const point at : {point::create_event, point::send})
        {
            CAPTURE(to_string(at));
            plan.set_rate(at, 1.0);
            CHECK(client->send_async(&out_buffer, 1, &tally::on_send, &sends) == status::os_error);
            plan.set_rate(at, 0.0);
        }
        plan.set_rate(point::receive, 1.0);
        CHECK(server->receive_async(&in_buffer, 1, &tally::on_receive, &receives) == status::os_error);
        plan.set_rate(point::receive, 0.0);
        ledger.fail_at_rate(1.0);
        CHECK(client->send_async(&out_buffer, 1, &tally::on_send, &sends) == status::out_of_memory);
        CHECK(server->receive_async(&in_buffer, 1, &tally::on_receive, &receives) == status::out_of_memory);
        ledger.fail_at_rate(0.0);
        CHECK(ledger.live_blocks() == blocks_open);
        CHECK(plan.live_events() == 0);
        CHECK(plan.outstanding_io() == 0);
        CHECK(plan.accepted_by_os() == 0);
        CHECK(sends.seen_calls() == 0);
        CHECK(receives.seen_calls() == 0);

        // Then the same calls work, and the stream holds exactly the bytes of the one send that went out.
        REQUIRE(server->receive_async(&in_buffer, 1, &tally::on_receive, &receives) == status::ok);
        REQUIRE(client->send_async(&out_buffer, 1, &tally::on_send, &sends) == status::ok);
        REQUIRE(sends.wait_for(1));
        REQUIRE(receives.wait_for(1));
        {
            std::lock_guard lock(receives.waiter.mutex());
            CHECK(receives.last_result == ASYNC_SOCKET_RECEIVE_OK);
            CHECK(receives.last_bytes == out.size());
            CHECK(std::memcmp(in.data(), out.data(), out.size()) == 0);
        }
        CHECK(sends.seen_calls() == 1);
        CHECK(receives.seen_calls() == 1);
        CHECK(plan.completions() == 2);

        // A receive pending at close: cut once, and its event and context go back.
        REQUIRE(server->receive_async(&in_buffer, 1, &tally::on_receive, &receives) == status::ok);
        CHECK(server->close() == status::ok);
        CHECK(receives.seen_calls() == 2);
        {
            std::lock_guard lock(receives.waiter.mutex());
            CHECK(receives.last_result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
        }
        CHECK(plan.live_events() == 0);
        CHECK(plan.outstanding_io() == 0);
    }
    // Destroyed: the bindings, cleanup groups, contexts and sockets are all released.
    check_nothing_live(plan, ledger);
    CHECK(plan.accepted_by_os() == plan.completions());
}

TEST_CASE("an injected SetFileCompletionNotificationModes fault fails the open and releases what the open made")
{
    using Socket = socket_over<
        threadpool_calls<win32_options{.events = win32_event_mode::none, .skip_completion_on_success = true}>>;
    win32_test::wsa_session wsa;
    REQUIRE(wsa.ok());
    win32_test::engine_ref engine;
    REQUIRE(engine.engine != nullptr);
    win32_test::socket_pair pair = win32_test::make_loopback_pair();
    REQUIRE(pair.valid());
    win32_fault_plan plan(5);
    alloc_ledger ledger;
    {
        auto client = make_socket<Socket>(engine.engine, pair.client, plan, ledger);
        REQUIRE(client);
        plan.set_rate(point::set_skip_completion_on_success, 1.0);
        CHECK(client->open_async(&ignore_open, nullptr) == status::os_error);
        CHECK(plan.injected(point::set_skip_completion_on_success) == 1);
        // The backend undid CreateThreadpoolIo (CloseThreadpoolIo) and the rest.
        CHECK(plan.live_bindings() == 0);
        CHECK(plan.live_cleanup_groups() == 0);
        plan.set_rate(point::set_skip_completion_on_success, 0.0);
        // The SOCKET stays bound to the first binding's completion port for life (docs/design.md), so this open's
        // CreateThreadpoolIo fails under Wine: the fault's undo cannot unbind a SOCKET. Either answer is clean.
        const status reopened = client->open_async(&ignore_open, nullptr);
        MESSAGE("open after a SetFileCompletionNotificationModes fault: "
                << std::string(async_socket::to_string(reopened)));
        CHECK((reopened == status::ok || reopened == status::os_error));
    }
    check_nothing_live(plan, ledger);
}

TEST_CASE_TEMPLATE("soak: every fault kind on at a few percent, 4 pairs streaming both ways with close and reopen",
                   Config, threadpool_config, iocp_config)
{
    run_soak<Config>(std::is_same_v<Config, threadpool_config> ? "threadpool IO" : "completion port");
}

namespace faults_test
{
// The outcome of one accept or connect: the handler only records it; the test thread checks.
template <class Result>
struct outcome
{
    win32_test::waiter wake;
    int calls = 0;   // guarded by wake
    Result result{}; // guarded by wake
    auto handler() noexcept
    {
        return [this](Result r) noexcept
        {
            wake.update(
                [&]
                {
                    result = std::move(r);
                    ++calls;
                });
        };
    }
    bool arrived()
    {
        return wake.wait_for([&] { return calls != 0; }, deadline_seconds);
    }
};
} // namespace faults_test

TEST_CASE_TEMPLATE("an injected WSASocketW, AcceptEx or ConnectEx fault refuses the accept or connect before the OS "
                   "sees it, runs no handler and leaves nothing; the next accept and connect meet",
                   Config, threadpool_config, iocp_config)
{
    using Socket = typename Config::socket;
    win32_test::wsa_session wsa;
    REQUIRE(wsa.ok());
    typename Config::engine engine;
    REQUIRE(engine.get() != nullptr);
    // A listener on 127.0.0.1 and a client that is not bound (connect_async binds it).
    const SOCKET listener = win32_test::make_overlapped_tcp_socket(AF_INET);
    const SOCKET client = win32_test::make_overlapped_tcp_socket(AF_INET);
    REQUIRE(listener != INVALID_SOCKET);
    REQUIRE(client != INVALID_SOCKET);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int length = sizeof address;
    REQUIRE(bind(listener, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(listen(listener, 16) == 0);
    REQUIRE(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    const async_socket::socket_address target(reinterpret_cast<const sockaddr*>(&address),
                                              static_cast<std::uint32_t>(length));
    win32_fault_plan plan(13);
    alloc_ledger ledger;
    {
        auto acceptor = make_socket<Socket>(engine.get(), listener, plan, ledger);
        auto connector = make_socket<Socket>(engine.get(), client, plan, ledger);
        REQUIRE(acceptor);
        REQUIRE(connector);
        REQUIRE(acceptor->open_async(&ignore_open, nullptr) == status::ok);
        REQUIRE(connector->open_async(&ignore_open, nullptr) == status::ok);

        outcome<async_socket::accept_result> refused_accept;
        outcome<async_socket::connect_result> refused_connect;
        for (const point at : {point::open_socket, point::accept})
        {
            CAPTURE(to_string(at));
            plan.set_rate(at, 1.0);
            CHECK(acceptor->accept_async(refused_accept.handler()) == status::os_error);
            plan.set_rate(at, 0.0);
            CHECK(plan.injected(at) == 1);
            CHECK(plan.outstanding_io() == 0);
            CHECK(plan.live_events() == 0);
        }
        plan.set_rate(point::connect, 1.0);
        CHECK(connector->connect_async(target, refused_connect.handler()) == status::os_error);
        plan.set_rate(point::connect, 0.0);
        CHECK(plan.injected(point::connect, async_socket::testing::wsa_no_buffers) == 1);
        CHECK(plan.outstanding_io() == 0);
        CHECK(plan.accepted_by_os() == 0); // no AcceptEx or ConnectEx reached Winsock

        // The refused calls started nothing: the next accept and connect meet, and the stream works.
        outcome<async_socket::accept_result> accepted;
        outcome<async_socket::connect_result> connected;
        REQUIRE(acceptor->accept_async(accepted.handler()) == status::ok);
        REQUIRE(connector->connect_async(target, connected.handler()) == status::ok);
        REQUIRE(connected.arrived());
        REQUIRE(accepted.arrived());
        CHECK(connected.result.completion == async_socket::io_completion::ok);
        REQUIRE(accepted.result.completion == async_socket::io_completion::ok);
        const SOCKET served = reinterpret_cast<SOCKET>(accepted.result.socket);
        REQUIRE(send(client, "f", 1, 0) == 1);
        char byte = 0;
        CHECK(recv(served, &byte, 1, 0) == 1); // blocking: the byte is on its way
        CHECK(byte == 'f');
        (void)closesocket(served);
        {
            const std::lock_guard<std::mutex> held(refused_accept.wake.mutex());
            CHECK(refused_accept.calls == 0);
        }
        {
            const std::lock_guard<std::mutex> held(refused_connect.wake.mutex());
            CHECK(refused_connect.calls == 0);
        }
        acceptor.reset();
        connector.reset();
    }
    (void)closesocket(listener);
    (void)closesocket(client);
    CHECK(plan.outstanding_io() == 0);
    CHECK(plan.live_events() == 0);
    CHECK(plan.live_bindings() == 0);
    CHECK(ledger.live_blocks() == 0);
    MESSAGE("WSASocketW, AcceptEx, ConnectEx faults: each refused (os_error), no handler, nothing live; then accepted "
            "and connected");
}

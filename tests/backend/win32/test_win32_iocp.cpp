// Integration tests of the completion-port policy (basic_win32_iocp_threadpool over a win32_iocp_engine) on real
// loopback TCP sockets, under Wine when cross compiling. Every configuration (events, skip mode, 1 or 2
// dispatcher threads) runs the same suite; each IO must complete exactly once whichever way it finishes: through
// the port on a dispatcher thread, or at once on the calling thread (skip mode).
#include <async_socket/async_socket.hpp>
#include <async_socket/backend/win32/iocp.hpp>

#include "support/callback_io.hpp"
#include "support/counted_io.hpp"
#include "support/loopback.hpp"
#include "support/suite_checks.hpp"

#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <set>
#include <span>
#include <vector>

namespace iocp_test
{

using async_socket::basic_async_socket;
using async_socket::basic_win32_iocp_threadpool;
using async_socket::heap_alloc;
using async_socket::status;
using async_socket::win32_error;
using async_socket::win32_event_mode;
using async_socket::win32_iocp_engine;
using async_socket::win32_options;
using async_socket::win32_sync;
using namespace win32_test; // the support shared with test_win32_options (tests/backend/win32/support)

// A socket type, and the dispatcher threads of the engine it runs on and how many completions each takes from
// the port per call (1: GetQueuedCompletionStatus; more: GetQueuedCompletionStatusEx).
template <class SocketType, std::uint32_t Threads, std::uint32_t Entries = 16>
struct configuration
{
    using socket = SocketType;
    static constexpr std::uint32_t threads = Threads;
    static constexpr std::uint32_t entries = Entries;
    static constexpr bool skip_mode = win32_test::skip_mode<SocketType>;
};

template <win32_options Options>
using heap_socket = basic_async_socket<basic_win32_iocp_threadpool<Options>, heap_alloc, win32_sync>;
using none_socket = heap_socket<win32_options{.events = win32_event_mode::none}>;
using per_io_socket = heap_socket<win32_options{}>;
using skip_recycled_socket =
    heap_socket<win32_options{.events = win32_event_mode::recycled, .skip_completion_on_success = true}>;
using fast_socket = async_socket::win32_iocp_async_socket;

using fast_1 = configuration<fast_socket, 1>;
using fast_2 = configuration<fast_socket, 2>;
using none_1 = configuration<none_socket, 1>;
using none_2 = configuration<none_socket, 2>;
using per_io_1 = configuration<per_io_socket, 1>;
using skip_recycled_1 = configuration<skip_recycled_socket, 1>;
using fast_1_single = configuration<fast_socket, 1, 1>;
using none_2_single = configuration<none_socket, 2, 1>;

win32_iocp_engine::handle make_engine(std::uint32_t threads, std::uint32_t entries = 16)
{
    return win32_iocp_engine::create(
        async_socket::win32_iocp_engine_parameters{.thread_count = threads, .entries_per_dequeue = entries});
}

// The engine of a configuration, made by the default constructor: its dispatcher threads and entries per dequeue.
template <class Config>
struct config_engine : win32_iocp_engine::handle
{
    config_engine() : win32_iocp_engine::handle(make_engine(Config::threads, Config::entries)) {}
};

// Winsock, the configuration's engine, a connected pair of SOCKETs and an async socket over each end (opened
// unless asked not to). Members are destroyed in reverse order: the async sockets, then the SOCKETs, then the
// engine.
template <class Config>
using loopback_sockets = win32_test::basic_loopback_sockets<typename Config::socket, config_engine<Config>>;

// What a completion routine given directly to a policy saw (for the tests of the policy on its own).
struct raw_completion
{
    win32_test::waiter waiter;
    int calls = 0; // guarded by waiter.mutex(), as are the members below
    win32_error result = 0;
    std::size_t bytes = 0;
    DWORD thread = 0;

    static void record(void* context, void* /*overlapped*/, win32_error io_result,
                       std::size_t bytes_transferred) noexcept
    {
        auto* self = static_cast<raw_completion*>(context);
        self->waiter.update(
            [&]
            {
                ++self->calls;
                self->result = io_result;
                self->bytes = bytes_transferred;
                self->thread = GetCurrentThreadId();
            });
    }
};

enum class receive_ending
{
    cancelled, // CancelIoEx on the socket
    reset,     // the peer closes with SO_LINGER {1, 0}
};

// Drives a layer of Win32 calls by hand: binds the server end of a fresh loopback pair, posts one receive, ends it
// as asked, and returns the win32_error its completion routine got.
template <class Policy, class Engine>
win32_error receive_error_of(Engine engine, receive_ending ending)
{
    win32_test::socket_pair pair = win32_test::make_loopback_pair();
    REQUIRE(pair.valid());
    raw_completion seen;
    win32_error result = 0;
    {
        Policy policy;
        REQUIRE(policy.acquire_pool(engine));
        policy.initialize_environment();
        policy.set_callback_pool();
        REQUIRE(policy.create_cleanup_group());
        REQUIRE(policy.template create_io<&raw_completion::record>(win32_test::as_handle(pair.server), &seen));

        std::array<char, 16> buffer{};
        WSABUF wsabuf{};
        Policy::set_buffer(wsabuf, buffer.data(), static_cast<std::uint32_t>(buffer.size()));
        OVERLAPPED overlapped{};
        Policy::set_overlapped_event(overlapped, nullptr);
        std::uint32_t flags = 0;
        policy.start_io();
        REQUIRE(policy.receive(win32_test::as_handle(pair.server), &wsabuf, 1, nullptr, &flags, &overlapped) ==
                async_socket::win32_no_error);
        if (ending == receive_ending::cancelled)
        {
            policy.cancel_socket_io(win32_test::as_handle(pair.server));
        }
        else
        {
            const linger abort_on_close{1, 0};
            REQUIRE(setsockopt(pair.client, SOL_SOCKET, SO_LINGER, reinterpret_cast<const char*>(&abort_on_close),
                               sizeof(abort_on_close)) == 0);
            pair.close_client();
        }
        REQUIRE(seen.waiter.wait_for([&] { return seen.calls >= 1; }, deadline_seconds));
        policy.wait_for_io_callbacks(false);
        policy.close_io();
        policy.close_cleanup_group();
        policy.destroy_environment();
        std::lock_guard lock(seen.waiter.mutex());
        CHECK(seen.calls == 1);
        CHECK(seen.bytes == 0);
        result = seen.result;
    }
    return result;
}

} // namespace iocp_test

TYPE_TO_STRING_AS("iocp_fast, 1 thread", iocp_test::fast_1);
TYPE_TO_STRING_AS("iocp_fast, 2 threads", iocp_test::fast_2);
TYPE_TO_STRING_AS("iocp none, 1 thread", iocp_test::none_1);
TYPE_TO_STRING_AS("iocp none, 2 threads", iocp_test::none_2);
TYPE_TO_STRING_AS("iocp per_io, 1 thread", iocp_test::per_io_1);
TYPE_TO_STRING_AS("iocp skip+recycled, 1 thread", iocp_test::skip_recycled_1);
TYPE_TO_STRING_AS("iocp_fast, 1 thread, 1 entry per dequeue", iocp_test::fast_1_single);
TYPE_TO_STRING_AS("iocp none, 2 threads, 1 entry per dequeue", iocp_test::none_2_single);

#define IOCP_CONFIGURATIONS                                                                                            \
    iocp_test::fast_1, iocp_test::fast_2, iocp_test::none_1, iocp_test::none_2, iocp_test::per_io_1,                   \
        iocp_test::skip_recycled_1, iocp_test::fast_1_single, iocp_test::none_2_single

using namespace iocp_test;

TEST_CASE("win32_iocp_engine::create refuses parameters out of range with ERROR_INVALID_PARAMETER")
{
    using parameters = async_socket::win32_iocp_engine_parameters;
    const std::array<parameters, 4> refused{
        parameters{.thread_count = 0},
        parameters{.thread_count = win32_iocp_engine::max_thread_count + 1},
        parameters{.thread_count = 1, .entries_per_dequeue = 0},
        parameters{.thread_count = 1, .entries_per_dequeue = win32_iocp_engine::max_entries_per_dequeue + 1},
    };
    for (const parameters& bad : refused)
    {
        CAPTURE(bad.thread_count);
        CAPTURE(bad.entries_per_dequeue);
        SetLastError(0);
        const win32_iocp_engine::handle engine = win32_iocp_engine::create(bad);
        CHECK_FALSE(engine);
        CHECK(GetLastError() == ERROR_INVALID_PARAMETER);
    }

    const win32_iocp_engine::handle by_default = win32_iocp_engine::create();
    REQUIRE(by_default);
    CHECK(by_default->thread_count() == 1);
    CHECK(by_default->port() != nullptr);
    CHECK_FALSE(by_default->runs_this_thread());
    const win32_iocp_engine::handle widest = win32_iocp_engine::create(
        {.thread_count = 4, .entries_per_dequeue = win32_iocp_engine::max_entries_per_dequeue});
    REQUIRE(widest);
    CHECK(widest->thread_count() == 4);
}

TEST_CASE("a socket is not made without an engine, and a SOCKET is bound to one port for life")
{
    win32_test::wsa_session wsa;
    REQUIRE(wsa.ok());
    win32_test::socket_pair pair = win32_test::make_loopback_pair();
    REQUIRE(pair.valid());
    CHECK_FALSE(fast_socket::create(nullptr, win32_test::as_handle(pair.client)));

    const win32_iocp_engine::handle engine = make_engine(1);
    REQUIRE(engine);
    auto first = fast_socket::create(engine.get(), win32_test::as_handle(pair.client));
    auto second = fast_socket::create(engine.get(), win32_test::as_handle(pair.client));
    REQUIRE(first);
    REQUIRE(second);
    CHECK(first->open_async(&ignore_open, nullptr) == status::ok);
    // CreateIoCompletionPort on a SOCKET already bound fails: the second object cannot open.
    CHECK(second->open_async(&ignore_open, nullptr) == status::os_error);
    CHECK(second->state() == async_socket::socket_state::closed);
}

TEST_CASE("a cancelled and a reset receive report the same Win32 codes as threadpool IO")
{
    win32_test::wsa_session wsa;
    REQUIRE(wsa.ok());
    constexpr win32_options no_events{.events = win32_event_mode::none};
    using iocp_policy = async_socket::detail::win32_iocp_calls<no_events>;
    using pool_policy = async_socket::detail::win32_threadpool_calls<no_events>;

    const win32_iocp_engine::handle iocp_engine = make_engine(1);
    REQUIRE(iocp_engine);
    EXECUTION_ENGINE_HANDLE pool_engine = execution_engine_create(nullptr);
    REQUIRE(pool_engine != nullptr);

    const win32_error iocp_cancelled = receive_error_of<iocp_policy>(iocp_engine.get(), receive_ending::cancelled);
    const win32_error pool_cancelled = receive_error_of<pool_policy>(pool_engine, receive_ending::cancelled);
    const win32_error iocp_reset = receive_error_of<iocp_policy>(iocp_engine.get(), receive_ending::reset);
    const win32_error pool_reset = receive_error_of<pool_policy>(pool_engine, receive_ending::reset);
    execution_engine_dec_ref(pool_engine);

    CHECK(iocp_cancelled == ERROR_OPERATION_ABORTED);
    CHECK(pool_cancelled == ERROR_OPERATION_ABORTED);
    CHECK(iocp_reset != async_socket::win32_no_error);
    CHECK(iocp_reset == pool_reset);
    MESSAGE("cancelled: iocp " << iocp_cancelled << ", threadpool " << pool_cancelled << "; reset: iocp " << iocp_reset
                               << ", threadpool " << pool_reset);
}

TEST_CASE_TEMPLATE("one buffer and several buffers each way arrive byte for byte", Config, IOCP_CONFIGURATIONS)
{
    loopback_sockets<Config> sockets;
    win32_test::check_exchanges_each_way(sockets);
}

TEST_CASE_TEMPLATE("many sends and receives in flight at once each complete once, in stream order", Config,
                   IOCP_CONFIGURATIONS)
{
    loopback_sockets<Config> sockets;
    constexpr std::size_t sends_in_flight = 128;
    constexpr std::size_t send_size = 1024;
    constexpr std::size_t receives_in_flight = 32;
    constexpr std::size_t receive_size = 4096;
    constexpr std::size_t total = sends_in_flight * send_size;
    static_assert(receives_in_flight * receive_size == total);
    const std::vector<std::uint8_t> sent = make_bytes(total);
    std::vector<std::uint8_t> received(total);

    // Every receive is posted before any data is sent, so all of them are pending together.
    struct receive_slot
    {
        iocp_test::io_tally tally;
    };
    std::vector<receive_slot> receives(receives_in_flight);
    for (std::size_t i = 0; i < receives_in_flight; ++i)
    {
        ASYNC_SOCKET_BUFFER in{received.data() + i * receive_size, static_cast<std::uint32_t>(receive_size)};
        ++receives[i].tally.posted;
        REQUIRE(
            post([&] { return sockets.server->receive_async(&in, 1, &io_tally::on_receive, &receives[i].tally); }) ==
            status::ok);
    }
    io_tally sends;
    for (std::size_t i = 0; i < sends_in_flight; ++i)
    {
        ASYNC_SOCKET_BUFFER out{const_cast<std::uint8_t*>(sent.data()) + i * send_size,
                                static_cast<std::uint32_t>(send_size)};
        ++sends.posted;
        REQUIRE(post([&] { return sockets.client->send_async(&out, 1, &io_tally::on_send, &sends); }) == status::ok);
    }
    REQUIRE(sends.wait_all());
    {
        std::lock_guard lock(sends.waiter.mutex());
        CHECK(sends.calls == sends_in_flight);
        CHECK(sends.last_result == ASYNC_SOCKET_SEND_OK);
    }

    // The receives were filled in the order they were posted; one may have brought fewer bytes than its
    // buffer holds, so the stream is their prefixes, in order.
    std::vector<std::uint8_t> stream;
    for (receive_slot& slot : receives)
    {
        REQUIRE(slot.tally.wait_all());
        std::lock_guard lock(slot.tally.waiter.mutex());
        CHECK(slot.tally.calls == 1);
        REQUIRE(slot.tally.last_result == ASYNC_SOCKET_RECEIVE_OK);
        REQUIRE(slot.tally.last_bytes > 0);
        const std::size_t index = static_cast<std::size_t>(&slot - receives.data());
        const auto* start = received.data() + index * receive_size;
        stream.insert(stream.end(), start, start + slot.tally.last_bytes);
    }
    REQUIRE(stream.size() <= total);
    const std::size_t rest = total - stream.size();
    if (rest > 0)
    {
        std::vector<std::uint8_t> tail(rest);
        const ASYNC_SOCKET_BUFFER in{tail.data(), static_cast<std::uint32_t>(rest)};
        io_tally more;
        CHECK(receive_into(*sockets.server, std::span(&in, 1), more));
        stream.insert(stream.end(), tail.begin(), tail.end());
    }
    CHECK(stream == sent);
    CHECK(sockets.client->close() == status::ok);
    CHECK(sockets.server->close() == status::ok);
    CHECK(sends.seen_calls() == sends_in_flight);
}

TEST_CASE_TEMPLATE("a ping-pong run from completion callbacks completes each IO once on the dispatcher threads", Config,
                   IOCP_CONFIGURATIONS)
{
    using socket_type = typename Config::socket;
    callback_ping_pong<socket_type> game; // outlives the sockets below
    loopback_sockets<Config> sockets;
    const std::chrono::duration<double> elapsed =
        win32_test::play_ping_pong(game, *sockets.client, *sockets.server, 2000);
    // Every completion that did not finish at once ran on a dispatcher thread: never this one, and with one
    // dispatcher always the same one (both ends of the connection, as with Asio's single io_context thread).
    const std::set<DWORD> threads = completion_threads.seen();
    CHECK(threads.count(GetCurrentThreadId()) == 0);
    CHECK(threads.size() >= 1);
    CHECK(threads.size() <= Config::threads);
    MESSAGE(doctest::toString<Config>() << ": " << game.rounds << " round trips from callbacks at about "
                                        << static_cast<long>(game.rounds / elapsed.count()) << "/s; "
                                        << game.at_once.load() << "/" << game.posted.load() << " IOs finished at once; "
                                        << threads.size() << " completion threads");
}

TEST_CASE_TEMPLATE("a chain of 10,000 receives started from callbacks stays shallow", Config, IOCP_CONFIGURATIONS)
{
    static constexpr std::size_t piece = 16;
    static constexpr std::size_t pieces = 10000;
    static constexpr std::size_t total = piece * pieces;
    const std::vector<std::uint8_t> sent = make_bytes(total);
    std::vector<std::uint8_t> received(total);

    win32_test::receive_chain<typename Config::socket, total, piece> chain; // outlives the sockets below

    loopback_sockets<Config> sockets;
    chain.attach(*sockets.server, received.data());

    // The data is sent first; the chain starts once some has arrived, so that many receives find their data.
    io_tally sends;
    ASYNC_SOCKET_BUFFER out{const_cast<std::uint8_t*>(sent.data()), static_cast<std::uint32_t>(total)};
    ++sends.posted;
    REQUIRE(post([&] { return sockets.client->send_async(&out, 1, &io_tally::on_send, &sends); }) == status::ok);
    REQUIRE(wait_readable(sockets.pair.server));

    REQUIRE(chain.post_next());
    REQUIRE(chain.waiter.wait_for([&] { return chain.done; }, deadline_seconds));
    REQUIRE(sends.wait_all());
    CHECK(sockets.server->close() == status::ok);
    {
        std::lock_guard lock(chain.waiter.mutex());
        CHECK_FALSE(chain.failed);
    }
    CHECK(chain.posted >= pieces);
    CHECK(chain.calls == chain.posted);
    CHECK(received == sent);
    // A receive that finds its data completes at once in skip mode; without the core's frames, a chain of them
    // would recurse once per receive (10,000 deep) and overflow the stack.
    CHECK(deepest_callback <= 2);
    if constexpr (Config::skip_mode)
    {
        CHECK(chain.at_once > 0);
    }
    else
    {
        CHECK(chain.at_once == 0);
    }
    MESSAGE(doctest::toString<Config>() << ": " << chain.posted.load() << " receives, " << chain.at_once.load()
                                        << " finished at once; deepest callback nesting " << deepest_callback.load());
}

TEST_CASE_TEMPLATE("close with a receive pending completes it once with BECAUSE_CLOSE, and the socket reopens", Config,
                   IOCP_CONFIGURATIONS)
{
    loopback_sockets<Config> sockets;
    win32_test::check_close_with_receive_pending_reopens(sockets);
}

TEST_CASE_TEMPLATE("destroy while open completes a pending receive once with BECAUSE_CLOSE", Config,
                   IOCP_CONFIGURATIONS)
{
    io_tally pending; // outlives the sockets
    loopback_sockets<Config> sockets;
    win32_test::check_destroy_with_receive_pending(sockets, pending);
}

TEST_CASE_TEMPLATE("a peer's reset completes a pending receive with ERROR and the socket still closes", Config,
                   IOCP_CONFIGURATIONS)
{
    loopback_sockets<Config> sockets;
    sockets.client.reset(); // the peer is the raw SOCKET from here on

    std::vector<std::uint8_t> buffer(16);
    ASYNC_SOCKET_BUFFER in{buffer.data(), static_cast<std::uint32_t>(buffer.size())};
    io_tally pending;
    ++pending.posted;
    REQUIRE(sockets.server->receive_async(&in, 1, &io_tally::on_receive, &pending) == status::ok);

    const linger abort_on_close{1, 0};
    REQUIRE(setsockopt(sockets.pair.client, SOL_SOCKET, SO_LINGER, reinterpret_cast<const char*>(&abort_on_close),
                       sizeof(abort_on_close)) == 0);
    sockets.pair.close_client();

    REQUIRE(pending.wait_all());
    {
        std::lock_guard lock(pending.waiter.mutex());
        CHECK(pending.calls == 1);
        CHECK(pending.last_result == ASYNC_SOCKET_RECEIVE_ERROR);
        CHECK(pending.last_bytes == 0);
    }

    // A send on the reset connection either fails at once or completes with ERROR; nothing crashes.
    std::vector<std::uint8_t> data = make_bytes(16);
    const ASYNC_SOCKET_BUFFER out{data.data(), static_cast<std::uint32_t>(data.size())};
    io_tally sends;
    ++sends.posted;
    const status sent = sockets.server->send_async(&out, 1, &io_tally::on_send, &sends);
    if (sent == status::ok)
    {
        REQUIRE(sends.wait_all());
        std::lock_guard lock(sends.waiter.mutex());
        CHECK(sends.last_result != ASYNC_SOCKET_SEND_OK);
    }
    else
    {
        CHECK(sent == status::os_error);
    }
    CHECK(sockets.server->close() == status::ok);
    CHECK(pending.seen_calls() == 1);
}

TEST_CASE_TEMPLATE("a peer's orderly shutdown completes a receive with OK and 0 bytes", Config, IOCP_CONFIGURATIONS)
{
    loopback_sockets<Config> sockets;
    std::vector<std::uint8_t> buffer(16);
    ASYNC_SOCKET_BUFFER in{buffer.data(), static_cast<std::uint32_t>(buffer.size())};
    io_tally pending;
    ++pending.posted;
    REQUIRE(sockets.server->receive_async(&in, 1, &io_tally::on_receive, &pending) == status::ok);

    REQUIRE(shutdown(sockets.pair.client, SD_SEND) == 0);

    REQUIRE(pending.wait_all());
    std::lock_guard lock(pending.waiter.mutex());
    CHECK(pending.calls == 1);
    CHECK(pending.last_result == ASYNC_SOCKET_RECEIVE_OK);
    CHECK(pending.last_bytes == 0);
}

TEST_CASE("several connections run ping-pongs at once on one engine of one and of two threads")
{
    for (const std::uint32_t threads : {1u, 2u})
    {
        CAPTURE(threads);
        constexpr std::size_t connections = 4;
        win32_test::wsa_session wsa;
        REQUIRE(wsa.ok());
        const win32_iocp_engine::handle engine = make_engine(threads);
        REQUIRE(engine);
        std::array<callback_ping_pong<fast_socket>, connections> games; // outlive the sockets
        std::array<win32_test::socket_pair, connections> pairs;
        std::array<fast_socket::handle, connections> clients;
        std::array<fast_socket::handle, connections> servers;
        for (std::size_t i = 0; i < connections; ++i)
        {
            pairs[i] = win32_test::make_loopback_pair();
            REQUIRE(pairs[i].valid());
            clients[i] = fast_socket::create(engine.get(), win32_test::as_handle(pairs[i].client));
            servers[i] = fast_socket::create(engine.get(), win32_test::as_handle(pairs[i].server));
            REQUIRE(clients[i]);
            REQUIRE(servers[i]);
            REQUIRE(clients[i]->open_async(&ignore_open, nullptr) == status::ok);
            REQUIRE(servers[i]->open_async(&ignore_open, nullptr) == status::ok);
            games[i].client = clients[i].get();
            games[i].server = servers[i].get();
            games[i].rounds = 500;
        }
        for (auto& game : games)
        {
            REQUIRE(game.start());
        }
        for (auto& game : games)
        {
            REQUIRE(game.waiter.wait_for([&] { return game.done; }, deadline_seconds));
            CHECK_FALSE(game.failed);
            CHECK(game.round == game.rounds);
        }
        for (std::size_t i = 0; i < connections; ++i)
        {
            CHECK(clients[i]->close() == status::ok);
            CHECK(servers[i]->close() == status::ok);
            CHECK(games[i].calls == games[i].posted);
        }
        for (std::size_t i = 0; i < connections; ++i)
        {
            clients[i].reset();
            servers[i].reset();
        }
    }
}

TEST_CASE("sockets keep their engine alive; the last one to go stops its dispatcher thread")
{
    using config = none_1; // no skip mode: every completion runs on the dispatcher
    loopback_sockets<config> sockets;

    // Find the dispatcher thread: the receive of an exchange completes there.
    std::vector<std::uint8_t> buffer(8);
    ASYNC_SOCKET_BUFFER in{buffer.data(), static_cast<std::uint32_t>(buffer.size())};
    raw_completion where;
    struct thread_of
    {
        static void on_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
        {
            raw_completion::record(context, nullptr, result == ASYNC_SOCKET_RECEIVE_OK ? 0u : 1u, bytes);
        }
    };
    REQUIRE(sockets.server->receive_async(&in, 1, &thread_of::on_receive, &where) == status::ok);
    REQUIRE(send(sockets.pair.client, "ping", 4, 0) == 4);
    REQUIRE(where.waiter.wait_for([&] { return where.calls == 1; }, deadline_seconds));
    DWORD dispatcher_id = 0;
    {
        std::lock_guard lock(where.waiter.mutex());
        CHECK(where.result == 0);
        CHECK(where.bytes == 4);
        dispatcher_id = where.thread;
    }
    CHECK(dispatcher_id != GetCurrentThreadId());
    HANDLE dispatcher = OpenThread(SYNCHRONIZE, FALSE, dispatcher_id);
    REQUIRE(dispatcher != nullptr);

    // The user's reference goes first: the sockets still work.
    sockets.engine.reset();
    const std::array<std::size_t, 1> sizes{300};
    exchange(*sockets.client, *sockets.server, std::span<const std::size_t>(sizes),
             std::span<const std::size_t>(sizes));
    CHECK(WaitForSingleObject(dispatcher, 0) == WAIT_TIMEOUT);
    sockets.client.reset();
    CHECK(WaitForSingleObject(dispatcher, 0) == WAIT_TIMEOUT);
    // The last socket drops the last reference: its release stops and joins the thread before it returns.
    sockets.server.reset();
    CHECK(WaitForSingleObject(dispatcher, 0) == WAIT_OBJECT_0);
    CloseHandle(dispatcher);
}

TEST_CASE("sockets destroyed before the engine: releasing the engine then ends its threads")
{
    win32_test::wsa_session wsa;
    REQUIRE(wsa.ok());
    win32_iocp_engine::handle engine = make_engine(2);
    REQUIRE(engine);
    std::vector<HANDLE> dispatchers;
    {
        win32_test::socket_pair pair = win32_test::make_loopback_pair();
        REQUIRE(pair.valid());
        auto client = none_socket::create(engine.get(), win32_test::as_handle(pair.client));
        auto server = none_socket::create(engine.get(), win32_test::as_handle(pair.server));
        REQUIRE(client);
        REQUIRE(server);
        REQUIRE(client->open_async(&ignore_open, nullptr) == status::ok);
        REQUIRE(server->open_async(&ignore_open, nullptr) == status::ok);
        completion_threads.clear();
        const std::array<std::size_t, 1> sizes{64};
        for (int i = 0; i < 20; ++i)
        {
            exchange(*client, *server, std::span<const std::size_t>(sizes), std::span<const std::size_t>(sizes));
        }
        for (const DWORD id : completion_threads.seen())
        {
            CHECK(id != GetCurrentThreadId());
            HANDLE thread = OpenThread(SYNCHRONIZE, FALSE, id);
            REQUIRE(thread != nullptr);
            dispatchers.push_back(thread);
        }
        // The sockets go here, before the engine.
    }
    REQUIRE_FALSE(dispatchers.empty());
    for (HANDLE thread : dispatchers)
    {
        CHECK(WaitForSingleObject(thread, 0) == WAIT_TIMEOUT);
    }
    engine.reset();
    for (HANDLE thread : dispatchers)
    {
        CHECK(WaitForSingleObject(thread, 0) == WAIT_OBJECT_0);
        CloseHandle(thread);
    }
}

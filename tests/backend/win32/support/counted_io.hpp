// Test support for the Win32 policy suites (test_win32_options, test_win32_iocp), which run the same checks on
// several socket types: IO whose completion callbacks are counted, so that an IO completed twice or never shows,
// along with whether each callback ran inside the call that posted its IO (finished at once, as in skip mode),
// how deeply callbacks nested, and on which threads they ran.
//
// Header-only; Win32, the async_socket types, doctest (the helpers REQUIRE and CHECK) and the standard library.
#pragma once

#include "buffers.hpp"
#include "loopback.hpp"

#include <async_socket/status.hpp>
#include <async_socket/types.h>

#include <doctest/doctest.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <set>
#include <span>
#include <vector>

namespace win32_test
{

// Wine is slow; a deadline only ends a test that would otherwise hang.
constexpr double deadline_seconds = 60.0;

// The win32_options of a socket type's threadpool policy, and whether it is in skip mode (an IO that finishes
// at once has its callback run on the calling thread, inside the call).
template <class Socket>
constexpr auto options_of = Socket::backend_type::calls_type::options;

template <class Socket>
constexpr bool skip_mode = options_of<Socket>.skip_completion_on_success;

// How deep this thread is in send_async/receive_async calls of the test: a callback that sees it above 0
// runs on the posting thread, inside the call that posted its IO (the IO finished at once).
inline thread_local int posting_depth = 0;

// How deep this thread is in completion callbacks of the test, and the deepest any thread has been.
inline thread_local int callback_depth = 0;
inline std::atomic<int> deepest_callback{0};

// The threads that ran callbacks outside any posting call (dispatcher or pool threads, if all is well).
struct thread_record
{
    std::mutex mutex;
    std::set<DWORD> ids;

    void note() noexcept
    {
        if (posting_depth == 0)
        {
            std::lock_guard lock(mutex);
            ids.insert(GetCurrentThreadId());
        }
    }
    std::set<DWORD> seen()
    {
        std::lock_guard lock(mutex);
        return ids;
    }
    void clear()
    {
        std::lock_guard lock(mutex);
        ids.clear();
    }
};
inline thread_record completion_threads;

// Made first thing in every completion callback of the test: counts its depth and notes its thread.
struct callback_scope
{
    callback_scope() noexcept
    {
        const int depth = ++callback_depth;
        int seen = deepest_callback.load();
        while (depth > seen && !deepest_callback.compare_exchange_weak(seen, depth))
        {
        }
        completion_threads.note();
    }
    ~callback_scope()
    {
        --callback_depth;
    }
    callback_scope(const callback_scope&) = delete;
    callback_scope& operator=(const callback_scope&) = delete;
};

// Runs start_io (a send_async or receive_async) with posting_depth raised, and returns what it returned.
template <class F>
async_socket::status post(F&& start_io)
{
    ++posting_depth;
    const async_socket::status started = start_io();
    --posting_depth;
    return started;
}

inline void ignore_open(void*, ASYNC_SOCKET_OPEN_RESULT) {}

// Winsock, an engine, a connected pair of SOCKETs and an async socket over each end (opened unless asked not
// to). Engine, default constructed, makes the engine; its get() is what Socket::create takes. Members are
// destroyed in reverse order: the async sockets, then the SOCKETs they use, then the engine.
template <class Socket, class Engine>
struct basic_loopback_sockets
{
    wsa_session wsa;
    Engine engine;
    socket_pair pair = make_loopback_pair();
    typename Socket::handle client;
    typename Socket::handle server;

    explicit basic_loopback_sockets(bool open = true)
    {
        REQUIRE(wsa.ok());
        REQUIRE(engine.get() != nullptr);
        REQUIRE(pair.valid());
        client = Socket::create(engine.get(), as_handle(pair.client));
        server = Socket::create(engine.get(), as_handle(pair.server));
        REQUIRE(client);
        REQUIRE(server);
        if (open)
        {
            REQUIRE(client->open_async(&ignore_open, nullptr) == async_socket::status::ok);
            REQUIRE(server->open_async(&ignore_open, nullptr) == async_socket::status::ok);
        }
    }
};

// The callbacks of IOs posted through it: how many ran, how many at once, and the last result. Tests compare
// `calls` with the number posted, so an IO completed twice or never shows.
struct io_tally
{
    win32_test::waiter waiter;
    std::uint64_t posted = 0;  // touched by the posting thread only
    std::uint64_t calls = 0;   // guarded by waiter.mutex(), as are the members below
    std::uint64_t at_once = 0; // callbacks that ran inside the send_async/receive_async that posted the IO
    int last_result = -1;
    std::uint32_t last_bytes = 0;

    static void on_send(void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        callback_scope scope;
        static_cast<io_tally*>(context)->record(static_cast<int>(result), nullptr);
    }

    static void on_receive(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
    {
        callback_scope scope;
        static_cast<io_tally*>(context)->record(static_cast<int>(result), &bytes);
    }

    // Counts one callback and keeps its result (and, for a receive, its byte count).
    void record(int result, const std::uint32_t* bytes)
    {
        const bool inside_post = posting_depth > 0;
        waiter.update(
            [&]
            {
                ++calls;
                at_once += inside_post ? 1 : 0;
                last_result = result;
                if (bytes != nullptr)
                {
                    last_bytes = *bytes;
                }
            });
    }

    // Waits until every IO posted so far has had its callback.
    bool wait_all()
    {
        return waiter.wait_for([&] { return calls >= posted; }, deadline_seconds);
    }

    std::uint64_t seen_calls()
    {
        std::lock_guard lock(waiter.mutex());
        return calls;
    }
    std::uint64_t seen_at_once()
    {
        std::lock_guard lock(waiter.mutex());
        return at_once;
    }
};

// Sends the buffers as one IO and waits for its callback; returns the result.
template <class Socket>
ASYNC_SOCKET_SEND_RESULT send_and_wait(Socket& socket, std::span<const ASYNC_SOCKET_BUFFER> buffers, io_tally& tally)
{
    ++tally.posted;
    const async_socket::status sent = post(
        [&] {
            return socket.send_async(buffers.data(), static_cast<std::uint32_t>(buffers.size()), &io_tally::on_send,
                                     &tally);
        });
    REQUIRE(sent == async_socket::status::ok);
    REQUIRE(tally.wait_all());
    std::lock_guard lock(tally.waiter.mutex());
    CHECK(tally.calls == tally.posted);
    return static_cast<ASYNC_SOCKET_SEND_RESULT>(tally.last_result);
}

// Receives into the buffers as one IO and waits for its callback; returns the byte count (0 on a failed
// receive).
template <class Socket>
std::uint32_t receive_and_wait(Socket& socket, std::span<ASYNC_SOCKET_BUFFER> buffers, io_tally& tally)
{
    ++tally.posted;
    const async_socket::status posted = post(
        [&]
        {
            return socket.receive_async(buffers.data(), static_cast<std::uint32_t>(buffers.size()),
                                        &io_tally::on_receive, &tally);
        });
    REQUIRE(posted == async_socket::status::ok);
    REQUIRE(tally.wait_all());
    std::lock_guard lock(tally.waiter.mutex());
    CHECK(tally.calls == tally.posted);
    return tally.last_result == ASYNC_SOCKET_RECEIVE_OK ? tally.last_bytes : 0;
}

// Receives until the regions are full (the first receive scatters over all of them, later ones over what is
// left). False on a receive that fails or brings 0 bytes.
template <class Socket>
bool receive_into(Socket& socket, std::span<const ASYNC_SOCKET_BUFFER> regions, io_tally& tally)
{
    const std::size_t total = total_length(regions);
    std::size_t filled = 0;
    while (filled < total)
    {
        std::vector<ASYNC_SOCKET_BUFFER> rest = regions_from(regions, filled);
        const std::uint32_t bytes = receive_and_wait(socket, std::span(rest), tally);
        if (bytes == 0)
        {
            return false;
        }
        filled += bytes;
    }
    return filled == total;
}

// Sends pattern bytes gathered from buffers of `send_sizes` as one IO and receives them scattered over regions
// of `receive_sizes` (the same total); checks that they arrive byte for byte and that each IO completes once.
template <class Socket>
void exchange(Socket& from, Socket& to, std::span<const std::size_t> send_sizes,
              std::span<const std::size_t> receive_sizes)
{
    std::size_t total = 0;
    for (std::size_t size : send_sizes)
    {
        total += size;
    }
    const std::vector<std::uint8_t> sent = make_bytes(total);
    std::vector<std::uint8_t> received(total);

    std::vector<ASYNC_SOCKET_BUFFER> out;
    std::size_t offset = 0;
    for (std::size_t size : send_sizes)
    {
        out.push_back({const_cast<std::uint8_t*>(sent.data()) + offset, static_cast<std::uint32_t>(size)});
        offset += size;
    }
    std::vector<ASYNC_SOCKET_BUFFER> in;
    offset = 0;
    for (std::size_t size : receive_sizes)
    {
        in.push_back({received.data() + offset, static_cast<std::uint32_t>(size)});
        offset += size;
    }
    REQUIRE(offset == total);

    // The send is posted first and waited for last, so that this thread can receive while it is under way: one
    // thread does both ends even when the data does not fit the socket buffers at once.
    io_tally receives;
    io_tally sends;
    ++sends.posted;
    REQUIRE(post(
                [&] {
                    return from.send_async(out.data(), static_cast<std::uint32_t>(out.size()), &io_tally::on_send,
                                           &sends);
                }) == async_socket::status::ok);
    CHECK(receive_into(to, std::span<const ASYNC_SOCKET_BUFFER>(in), receives));
    REQUIRE(sends.wait_all());
    {
        std::lock_guard lock(sends.waiter.mutex());
        CHECK(sends.calls == 1);
        CHECK(sends.last_result == ASYNC_SOCKET_SEND_OK);
    }
    CHECK(receives.seen_calls() == receives.posted);
    CHECK(received == sent);
}

// select() on the raw SOCKET until it has data to read (or the deadline passes).
inline bool wait_readable(SOCKET socket)
{
    fd_set readable;
    FD_ZERO(&readable);
    FD_SET(socket, &readable);
    timeval deadline{static_cast<long>(deadline_seconds), 0};
    return select(0, &readable, nullptr, nullptr, &deadline) == 1;
}

} // namespace win32_test

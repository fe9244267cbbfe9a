// Test support for the Win32 policy suites: IO run entirely from completion callbacks, where each callback posts
// the next IO (a ping-pong between two sockets, and a chain of receives on one), and the run of a ping-pong with
// the checks both suites make on it.
//
// Header-only; Win32, the async_socket types, doctest and the standard library.
#pragma once

#include "buffers.hpp"
#include "counted_io.hpp"
#include "loopback.hpp"

#include <async_socket/status.hpp>
#include <async_socket/types.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace win32_test
{

// A 16-byte message that carries its round number.
struct message
{
    std::array<std::uint8_t, 16> bytes{};

    static message for_round(std::uint32_t round)
    {
        message made;
        for (std::size_t i = 0; i < made.bytes.size(); ++i)
        {
            made.bytes[i] = pattern(round * 16 + i);
        }
        return made;
    }
};

// A ping-pong run entirely from completion callbacks: the client sends a message, the server echoes it from
// its receive callback, the client sends the next one from its own receive callback. Each side sends before
// it posts its next receive, so the data often arrives before the WSARecv (which then finishes at once in
// skip mode).
template <class Socket>
struct callback_ping_pong
{
    Socket* client = nullptr;
    Socket* server = nullptr;
    std::uint32_t rounds = 0;

    message to_server; // the client's message in flight
    message at_server; // what the server has received of it
    std::size_t server_filled = 0;
    message echo;             // the server's echo in flight
    std::uint32_t echoed = 0; // touched by the server's callbacks only (one at a time)
    message at_client;        // what the client has received of it
    std::size_t client_filled = 0;
    std::uint32_t round = 0; // touched by the client's callbacks only (one at a time)

    std::atomic<std::uint64_t> posted{0};
    std::atomic<std::uint64_t> calls{0};
    std::atomic<std::uint64_t> at_once{0};
    std::atomic<bool> failed{false};

    win32_test::waiter waiter;
    bool done = false; // guarded by waiter.mutex()

    void finish(bool ok)
    {
        if (!ok)
        {
            failed = true;
        }
        waiter.update([&] { done = true; });
    }

    void counted_callback()
    {
        ++calls;
        at_once += posting_depth > 0 ? 1 : 0;
    }

    // What the receive callbacks of both ends share: counts the callback, adds its bytes to `filled` and, while
    // `into` is not full, posts a receive for the rest of it with `callback`. True once `into` is full (`filled`
    // is back to 0); false otherwise, with the game finished as failed when the receive failed or brought nothing
    // or the next one could not be posted.
    bool message_received(ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes, Socket& socket, message& into,
                          std::size_t& filled, ON_ASYNC_SOCKET_RECEIVE_COMPLETE callback)
    {
        counted_callback();
        if (result != ASYNC_SOCKET_RECEIVE_OK || bytes == 0)
        {
            finish(false);
            return false;
        }
        filled += bytes;
        if (filled < into.bytes.size())
        {
            if (!receive(socket, into, filled, callback))
            {
                finish(false);
            }
            return false;
        }
        filled = 0;
        return true;
    }

    bool send(Socket& socket, message& what)
    {
        ASYNC_SOCKET_BUFFER out{what.bytes.data(), static_cast<std::uint32_t>(what.bytes.size())};
        ++posted;
        return post([&] { return socket.send_async(&out, 1, &on_sent, this); }) == async_socket::status::ok;
    }

    bool receive(Socket& socket, message& into, std::size_t filled, ON_ASYNC_SOCKET_RECEIVE_COMPLETE callback)
    {
        ASYNC_SOCKET_BUFFER in{into.bytes.data() + filled, static_cast<std::uint32_t>(into.bytes.size() - filled)};
        ++posted;
        return post([&] { return socket.receive_async(&in, 1, callback, this); }) == async_socket::status::ok;
    }

    static void on_sent(void* context, ASYNC_SOCKET_SEND_RESULT result)
    {
        callback_scope scope;
        auto* self = static_cast<callback_ping_pong*>(context);
        self->counted_callback();
        if (result != ASYNC_SOCKET_SEND_OK)
        {
            self->finish(false);
        }
    }

    static void on_server_received(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
    {
        callback_scope scope;
        auto* self = static_cast<callback_ping_pong*>(context);
        if (!self->message_received(result, bytes, *self->server, self->at_server, self->server_filled,
                                    &on_server_received))
        {
            return;
        }
        self->echo = self->at_server;
        if (!self->send(*self->server, self->echo))
        {
            self->finish(false);
            return;
        }
        if (++self->echoed == self->rounds)
        {
            return; // the last message: nothing more comes, and the test may close the socket from now on
        }
        if (!self->receive(*self->server, self->at_server, 0, &on_server_received))
        {
            self->finish(false);
        }
    }

    static void on_client_received(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
    {
        callback_scope scope;
        auto* self = static_cast<callback_ping_pong*>(context);
        if (!self->message_received(result, bytes, *self->client, self->at_client, self->client_filled,
                                    &on_client_received))
        {
            return;
        }
        if (self->at_client.bytes != message::for_round(self->round).bytes)
        {
            self->finish(false);
            return;
        }
        if (++self->round == self->rounds)
        {
            self->finish(true);
            return;
        }
        self->to_server = message::for_round(self->round);
        if (!self->send(*self->client, self->to_server) ||
            !self->receive(*self->client, self->at_client, 0, &on_client_received))
        {
            self->finish(false);
        }
    }

    // Posts the first receives and the first message; the rest runs from callbacks.
    bool start()
    {
        to_server = message::for_round(0);
        return receive(*server, at_server, 0, &on_server_received) &&
               receive(*client, at_client, 0, &on_client_received) && send(*client, to_server);
    }
};

// Plays `rounds` round trips of `game` (which outlives the sockets) between two open sockets, from a clean
// deepest_callback and completion_threads, then closes both sockets. Checks that the game ran to its end, that
// each IO completed once, that callbacks never nested more than two deep and, out of skip mode, that none ran
// inside the call that posted its IO. Returns how long the round trips took.
template <class Socket>
std::chrono::duration<double> play_ping_pong(callback_ping_pong<Socket>& game, Socket& client, Socket& server,
                                             std::uint32_t rounds)
{
    game.client = &client;
    game.server = &server;
    game.rounds = rounds;
    deepest_callback = 0;
    completion_threads.clear();

    const auto started = std::chrono::steady_clock::now();
    REQUIRE(game.start());
    REQUIRE(game.waiter.wait_for([&] { return game.done; }, deadline_seconds));
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - started;

    CHECK(client.close() == async_socket::status::ok);
    CHECK(server.close() == async_socket::status::ok);
    CHECK_FALSE(game.failed);
    CHECK(game.round == game.rounds);
    CHECK(game.calls == game.posted);
    CHECK(deepest_callback <= 2);
    if constexpr (!skip_mode<Socket>)
    {
        CHECK(game.at_once == 0);
    }
    return elapsed;
}

// A chain of receives run from completion callbacks on one socket: each receive, of at most Piece bytes, is
// posted from the callback of the one before, until Total bytes have arrived at `into`.
template <class Socket, std::size_t Total, std::size_t Piece = 16>
struct receive_chain
{
    Socket* socket = nullptr;
    std::uint8_t* into = nullptr;
    std::size_t filled = 0;
    std::atomic<std::uint64_t> posted{0};
    std::atomic<std::uint64_t> calls{0};
    std::atomic<std::uint64_t> at_once{0};
    win32_test::waiter waiter;
    bool done = false;   // guarded by waiter.mutex()
    bool failed = false; // guarded by waiter.mutex()

    // Sets the chain to receive on `on` into `buffer` (Total bytes), from a clean deepest_callback.
    void attach(Socket& on, std::uint8_t* buffer)
    {
        socket = &on;
        into = buffer;
        deepest_callback = 0;
    }

    bool post_next()
    {
        ASYNC_SOCKET_BUFFER in{into + filled, static_cast<std::uint32_t>(std::min(Piece, Total - filled))};
        ++posted;
        return post([&] { return socket->receive_async(&in, 1, &on_received, this); }) == async_socket::status::ok;
    }

    void finish(bool failure)
    {
        waiter.update(
            [&]
            {
                failed = failed || failure;
                done = true;
            });
    }

    static void on_received(void* context, ASYNC_SOCKET_RECEIVE_RESULT result, std::uint32_t bytes)
    {
        callback_scope scope;
        auto* self = static_cast<receive_chain*>(context);
        ++self->calls;
        self->at_once += posting_depth > 0 ? 1 : 0;
        if (result != ASYNC_SOCKET_RECEIVE_OK || bytes == 0)
        {
            self->finish(true);
            return;
        }
        self->filled += bytes;
        if (self->filled == Total)
        {
            self->finish(false);
        }
        else if (!self->post_next())
        {
            self->finish(true);
        }
    }
};

} // namespace win32_test

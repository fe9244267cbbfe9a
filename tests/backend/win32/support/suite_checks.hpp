// Test support for the Win32 policy suites (test_win32_options, test_win32_iocp): the checks both make, in the
// same words, on every socket type they run. Each takes a basic_loopback_sockets (counted_io.hpp) whose sockets are
// open; the test case that calls it says what it checks.
//
// Header-only; Win32, the async_socket types, doctest and the standard library.
#pragma once

#include "counted_io.hpp"

#include <async_socket/basic_async_socket.hpp>
#include <async_socket/status.hpp>
#include <async_socket/types.h>

#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <vector>

namespace win32_test
{

// One buffer and several buffers each way arrive byte for byte (one SUBCASE each, up to 4 MiB in one send).
template <class Sockets>
void check_exchanges_each_way(Sockets& sockets)
{
    SUBCASE("one buffer, client to server")
    {
        const std::array<std::size_t, 1> sizes{1000};
        exchange(*sockets.client, *sockets.server, std::span<const std::size_t>(sizes),
                 std::span<const std::size_t>(sizes));
    }
    SUBCASE("one buffer, server to client")
    {
        const std::array<std::size_t, 1> sizes{1000};
        exchange(*sockets.server, *sockets.client, std::span<const std::size_t>(sizes),
                 std::span<const std::size_t>(sizes));
    }
    SUBCASE("several buffers, client to server")
    {
        const std::array<std::size_t, 4> send_sizes{1, 700, 4096, 3};
        const std::array<std::size_t, 4> receive_sizes{5, 1000, 3000, 795};
        exchange(*sockets.client, *sockets.server, std::span<const std::size_t>(send_sizes),
                 std::span<const std::size_t>(receive_sizes));
    }
    SUBCASE("several buffers, server to client")
    {
        const std::array<std::size_t, 3> send_sizes{4096, 1, 4096};
        const std::array<std::size_t, 5> receive_sizes{1, 1, 4000, 4000, 191};
        exchange(*sockets.server, *sockets.client, std::span<const std::size_t>(send_sizes),
                 std::span<const std::size_t>(receive_sizes));
    }
    SUBCASE("4 MiB in one send, received 64 KiB at a time")
    {
        const std::array<std::size_t, 1> send_sizes{4u * 1024 * 1024};
        std::vector<std::size_t> receive_sizes(64, 64u * 1024);
        exchange(*sockets.client, *sockets.server, std::span<const std::size_t>(send_sizes),
                 std::span<const std::size_t>(receive_sizes));
    }
}

// Three times: close with a receive pending completes it once with BECAUSE_CLOSE before close returns, and the
// server reopens and exchanges data both ways.
template <class Sockets>
void check_close_with_receive_pending_reopens(Sockets& sockets)
{
    for (int cycle = 0; cycle < 3; ++cycle)
    {
        CAPTURE(cycle);
        std::vector<std::uint8_t> buffer(64);
        ASYNC_SOCKET_BUFFER in{buffer.data(), static_cast<std::uint32_t>(buffer.size())};
        io_tally pending;
        ++pending.posted;
        REQUIRE(sockets.server->receive_async(&in, 1, &io_tally::on_receive, &pending) == async_socket::status::ok);

        CHECK(sockets.server->close() == async_socket::status::ok);
        // close returned: the callback already ran, once.
        {
            std::lock_guard lock(pending.waiter.mutex());
            CHECK(pending.calls == 1);
            CHECK(pending.last_result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
            CHECK(pending.last_bytes == 0);
        }
        CHECK(sockets.server->state() == async_socket::socket_state::closed);

        REQUIRE(sockets.server->open_async(&ignore_open, nullptr) == async_socket::status::ok);
        const std::array<std::size_t, 2> sizes{100, 28};
        exchange(*sockets.client, *sockets.server, std::span<const std::size_t>(sizes),
                 std::span<const std::size_t>(sizes));
        exchange(*sockets.server, *sockets.client, std::span<const std::size_t>(sizes),
                 std::span<const std::size_t>(sizes));
        CHECK(pending.seen_calls() == 1);
    }
}

// After an exchange, destroying the server while open completes its pending receive once with BECAUSE_CLOSE
// before the destruction returns; `pending` outlives the sockets.
template <class Sockets>
void check_destroy_with_receive_pending(Sockets& sockets, io_tally& pending)
{
    const std::array<std::size_t, 1> sizes{512};
    exchange(*sockets.client, *sockets.server, std::span<const std::size_t>(sizes),
             std::span<const std::size_t>(sizes));

    std::vector<std::uint8_t> buffer(64);
    ASYNC_SOCKET_BUFFER in{buffer.data(), static_cast<std::uint32_t>(buffer.size())};
    ++pending.posted;
    REQUIRE(sockets.server->receive_async(&in, 1, &io_tally::on_receive, &pending) == async_socket::status::ok);

    sockets.server.reset();
    {
        std::lock_guard lock(pending.waiter.mutex());
        CHECK(pending.calls == 1);
        CHECK(pending.last_result == ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE);
    }

    // The client, open and idle, is destroyed too.
    sockets.client.reset();
    CHECK(pending.seen_calls() == 1);
}

} // namespace win32_test

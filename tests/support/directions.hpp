// The two directions of an IO, send and receive, as types, so that one TEST_CASE_TEMPLATE checks a rule that
// send_async and receive_async share (the socket runs both through one path, the direction a template parameter).
// Each direction says how to start its IO, which Win32 call starts it, what its callback looks like and where the
// context keeps it, how the OS completes it and how to check what its recorder got. Used by test_send.cpp (the
// argument checks and socket states) and test_receive.cpp (the IO started: its context, Win32 calls, failures).
#pragma once

#include "fixtures.hpp"

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

namespace test_support
{

using async_socket::win32_no_error;

// The fake's records of one kind of call, in the order they were made.
inline std::vector<call_record> calls_of(const fake_os& os, fake_call call)
{
    std::vector<call_record> found;
    for (const call_record& record : os.calls())
    {
        if (record.call == call)
        {
            found.push_back(record);
        }
    }
    return found;
}

inline std::span<const std::byte> bytes_of(const char* text, std::size_t size)
{
    return {reinterpret_cast<const std::byte*>(text), size};
}

inline std::span<const std::byte> bytes_of(std::string_view text)
{
    return bytes_of(text.data(), text.size());
}

// What the two directions share: starting an IO with a recorder's callback, the recorder as its context.
template <class Direction, class Recorder>
struct direction_base
{
    using recorder = Recorder;

    template <class Socket>
    static status start(Socket& socket, ASYNC_SOCKET_BUFFER* buffers, std::uint32_t count, Recorder& record) noexcept
    {
        return Direction::start(socket, buffers, count, &Recorder::callback, &record);
    }
};

struct send_direction : direction_base<send_direction, send_recorder>
{
    using result = ASYNC_SOCKET_SEND_RESULT;
    using callback = ON_ASYNC_SOCKET_SEND_COMPLETE;

    static constexpr fake_call os_call = fake_call::wsa_send;
    static constexpr const char* os_call_name = "WSASend";
    static constexpr async_socket::detail::io_kind kind = async_socket::detail::io_kind::send;
    static constexpr result ok = ASYNC_SOCKET_SEND_OK;
    static constexpr result because_close = ASYNC_SOCKET_SEND_BECAUSE_CLOSE;
    static constexpr result invalid = ASYNC_SOCKET_SEND_RESULT_INVALID;

    template <class Socket>
    static status start(Socket& socket, ASYNC_SOCKET_BUFFER* buffers, std::uint32_t count, callback on_complete,
                        void* context) noexcept
    {
        return socket.send_async(buffers, count, on_complete, context);
    }
    using direction_base::start;

    // A send callback that hands each completion to Handler(context, result, bytes), bytes 0.
    template <void (*Handler)(void*, result, std::uint32_t)>
    static void callback_to(void* context, result completed)
    {
        Handler(context, completed, 0);
    }

    // The callback a context keeps for this direction.
    template <class Header>
    static callback stored_callback(const Header& context)
    {
        return context.on_send_complete;
    }

    // Sets up the caller's memory for an IO of `payload`: here the data to send.
    static void fill(char* memory, std::string_view payload)
    {
        std::memcpy(memory, payload.data(), payload.size());
    }

    // Completes the IO as the OS does when all of `payload` went out: NO_ERROR with its byte count.
    static bool complete(fake_os& os, void* overlapped, std::string_view payload)
    {
        return os.complete(overlapped, win32_no_error, payload.size());
    }

    static void check_bytes(std::uint32_t, std::uint32_t)
    {
        // A send's callback has no byte count to check.
    }

    // The recorder got exactly `expected`, in order (`bytes` is for a receive's byte counts).
    static void check_seen(recorder& record, const std::vector<result>& expected, std::uint32_t)
    {
        CHECK(record.seen() == expected);
    }
};

struct receive_direction : direction_base<receive_direction, receive_recorder>
{
    using result = ASYNC_SOCKET_RECEIVE_RESULT;
    using callback = ON_ASYNC_SOCKET_RECEIVE_COMPLETE;

    static constexpr fake_call os_call = fake_call::wsa_recv;
    static constexpr const char* os_call_name = "WSARecv";
    static constexpr async_socket::detail::io_kind kind = async_socket::detail::io_kind::receive;
    static constexpr result ok = ASYNC_SOCKET_RECEIVE_OK;
    static constexpr result because_close = ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE;
    static constexpr result invalid = ASYNC_SOCKET_RECEIVE_RESULT_INVALID;

    template <class Socket>
    static status start(Socket& socket, ASYNC_SOCKET_BUFFER* buffers, std::uint32_t count, callback on_complete,
                        void* context) noexcept
    {
        return socket.receive_async(buffers, count, on_complete, context);
    }
    using direction_base::start;

    template <void (*Handler)(void*, result, std::uint32_t)>
    static void callback_to(void* context, result completed, std::uint32_t bytes)
    {
        Handler(context, completed, bytes);
    }

    template <class Header>
    static callback stored_callback(const Header& context)
    {
        return context.on_receive_complete;
    }

    // Sets up the caller's memory for an IO of `payload`: here room for it, zeroed.
    static void fill(char* memory, std::string_view payload)
    {
        std::memset(memory, 0, payload.size());
    }

    // Completes the IO as the OS does on arrival of `payload`: copied into its buffers, NO_ERROR with its size.
    static bool complete(fake_os& os, void* overlapped, std::string_view payload)
    {
        return os.complete_receive(overlapped, bytes_of(payload));
    }

    static void check_bytes(std::uint32_t seen, std::uint32_t expected)
    {
        CHECK(seen == expected);
    }

    // The recorder got exactly `expected`, in order, each with `bytes` bytes.
    static void check_seen(recorder& record, const std::vector<result>& expected, std::uint32_t bytes)
    {
        const std::vector<receive_recorder::completion> seen = record.seen();
        REQUIRE(seen.size() == expected.size());
        for (std::size_t i = 0; i < seen.size(); ++i)
        {
            CAPTURE(i);
            CHECK(seen[i].result == expected[i]);
            check_bytes(seen[i].bytes, bytes);
        }
    }
};

// Starts an IO over `count` buffers and returns the OVERLAPPED it gave the OS.
template <class Direction>
void* start_io(fixture& f, ASYNC_SOCKET_BUFFER* buffers, std::uint32_t count, typename Direction::recorder& record)
{
    REQUIRE(Direction::start(*f.socket, buffers, count, record) == status::ok);
    const std::vector<call_record> started = calls_of(f.os, Direction::os_call);
    REQUIRE(!started.empty());
    return started.back().overlapped;
}

// A valid IO goes out and completes OK with its data: the socket is still usable.
template <class Direction>
void check_still_works(fixture& f)
{
    constexpr std::string_view payload = "pong";
    char data[4];
    Direction::fill(data, payload);
    typename Direction::recorder record;
    const std::int64_t blocks = f.ledger.live_blocks();
    ASYNC_SOCKET_BUFFER buffer{data, sizeof(data)};
    REQUIRE(Direction::start(*f.socket, &buffer, 1, record) == status::ok);
    const std::vector<pending_io> pending = f.os.pending();
    REQUIRE(!pending.empty());
    REQUIRE(Direction::complete(f.os, pending.back().overlapped, payload));
    Direction::check_seen(record, {Direction::ok}, 4);
    CHECK(std::memcmp(data, payload.data(), payload.size()) == 0);
    CHECK(f.ledger.live_blocks() == blocks);
    CHECK(f.os.violations().empty());
}

} // namespace test_support

TYPE_TO_STRING_AS("send", test_support::send_direction);
TYPE_TO_STRING_AS("receive", test_support::receive_direction);

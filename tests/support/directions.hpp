// The two directions of an IO, send and receive, as types, so that one TEST_CASE_TEMPLATE checks a rule that
// send_async and receive_async share (the socket runs both through one path, the direction a template parameter).
// Each direction says how to start its IO, which Win32 call starts it, what its callback looks like and where the
// context keeps it, how the OS completes it and how to check what its recorder got. Used by test_send.cpp (the
// argument checks and socket states), test_receive.cpp (the IO started: its context, Win32 calls, failures) and
// test_completion.cpp (how a completion maps to the callback's result).
#pragma once

#include "fixtures.hpp"

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>
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

// One direction, send or receive, by its io_kind: its recorder, result and callback types and results as template
// arguments; starting its IO (with a recorder's callback, the recorder as its context) and checking what a recorder
// got are written once here, the few calls that differ chosen by the kind.
template <async_socket::detail::io_kind Kind, class Recorder, class Result, class Callback, Result Ok, Result Error,
          Result BecauseClose, Result Invalid>
struct io_direction
{
    using recorder = Recorder;
    using result = Result;
    using callback = Callback;

    static constexpr bool is_send = Kind == async_socket::detail::io_kind::send;
    static constexpr fake_call os_call = is_send ? fake_call::wsa_send : fake_call::wsa_recv;
    static constexpr const char* os_call_name = is_send ? "WSASend" : "WSARecv";
    static constexpr async_socket::detail::io_kind kind = Kind;
    static constexpr result ok = Ok;
    static constexpr result error = Error;
    static constexpr result because_close = BecauseClose;
    static constexpr result invalid = Invalid;

    template <class Socket>
    static status start(Socket& socket, ASYNC_SOCKET_BUFFER* buffers, std::uint32_t count, callback on_complete,
                        void* context) noexcept
    {
        if constexpr (is_send)
        {
            return socket.send_async(buffers, count, on_complete, context);
        }
        else
        {
            return socket.receive_async(buffers, count, on_complete, context);
        }
    }

    template <class Socket>
    static status start(Socket& socket, ASYNC_SOCKET_BUFFER* buffers, std::uint32_t count, Recorder& record) noexcept
    {
        return start(socket, buffers, count, &Recorder::callback, &record);
    }

    // The callback a context keeps for this direction.
    template <class Header>
    static callback stored_callback(const Header& context)
    {
        if constexpr (is_send)
        {
            return context.on_send_complete;
        }
        else
        {
            return context.on_receive_complete;
        }
    }

    // Sets up the caller's memory for an IO of `payload`: a send's data, or a receive's room for it, zeroed.
    static void fill(char* memory, std::string_view payload)
    {
        if constexpr (is_send)
        {
            std::memcpy(memory, payload.data(), payload.size());
        }
        else
        {
            std::memset(memory, 0, payload.size());
        }
    }

    // Completes the IO as the OS does when all of `payload` went out (NO_ERROR with its byte count), or on arrival of
    // `payload` (copied into its buffers, NO_ERROR with its size).
    static bool complete(fake_os& os, void* overlapped, std::string_view payload)
    {
        if constexpr (is_send)
        {
            return os.complete(overlapped, win32_no_error, payload.size());
        }
        else
        {
            return os.complete_receive(overlapped, bytes_of(payload));
        }
    }

    // A receive's byte count is `expected`; a send's callback has none to check.
    static void check_bytes(std::uint32_t seen, std::uint32_t expected)
    {
        if constexpr (!is_send)
        {
            CHECK(seen == expected);
        }
        else
        {
            (void)seen;
            (void)expected;
        }
    }

    // One completion as a recorder of either direction got it (a send's bytes are 0).
    struct completion
    {
        Result result;
        std::uint32_t bytes;
    };

    static std::vector<completion> completions(recorder& record)
    {
        std::vector<completion> all;
        for (const auto& seen : record.seen())
        {
            if constexpr (is_send)
            {
                all.push_back({seen, 0});
            }
            else
            {
                all.push_back({seen.result, seen.bytes});
            }
        }
        return all;
    }

    // The recorder got exactly `expected`, in order (a receive's each with `bytes` bytes).
    static void check_seen(recorder& record, const std::vector<result>& expected, std::uint32_t bytes)
    {
        const std::vector<completion> seen = completions(record);
        REQUIRE(seen.size() == expected.size());
        for (std::size_t i = 0; i < seen.size(); ++i)
        {
            CAPTURE(i);
            CHECK(seen[i].result == expected[i]);
            check_bytes(seen[i].bytes, bytes);
        }
    }

    // The recorder's last completion is `expected` (a receive's with `bytes` bytes).
    static void check_last(recorder& record, result expected, std::uint32_t bytes)
    {
        const std::vector<completion> seen = completions(record);
        REQUIRE(!seen.empty());
        CHECK(seen.back().result == expected);
        check_bytes(seen.back().bytes, bytes);
    }
};

struct send_direction : io_direction<async_socket::detail::io_kind::send, send_recorder, ASYNC_SOCKET_SEND_RESULT,
                                     ON_ASYNC_SOCKET_SEND_COMPLETE, ASYNC_SOCKET_SEND_OK, ASYNC_SOCKET_SEND_ERROR,
                                     ASYNC_SOCKET_SEND_BECAUSE_CLOSE, ASYNC_SOCKET_SEND_RESULT_INVALID>
{
    // A send callback that hands each completion to Handler(context, result, bytes), bytes 0.
    template <void (*Handler)(void*, result, std::uint32_t)>
    static void callback_to(void* context, result completed)
    {
        Handler(context, completed, 0);
    }
};

struct receive_direction
    : io_direction<async_socket::detail::io_kind::receive, receive_recorder, ASYNC_SOCKET_RECEIVE_RESULT,
                   ON_ASYNC_SOCKET_RECEIVE_COMPLETE, ASYNC_SOCKET_RECEIVE_OK, ASYNC_SOCKET_RECEIVE_ERROR,
                   ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE, ASYNC_SOCKET_RECEIVE_RESULT_INVALID>
{
    // A receive callback that hands each completion to Handler(context, result, bytes).
    template <void (*Handler)(void*, result, std::uint32_t)>
    static void callback_to(void* context, result completed, std::uint32_t bytes)
    {
        Handler(context, completed, bytes);
    }
};

// The direction that is not `Direction`.
template <class Direction>
using other_direction =
    std::conditional_t<std::is_same_v<Direction, send_direction>, receive_direction, send_direction>;

// A recorder for Direction's callbacks, as a base that outlives the socket of the fixture beside it.
template <class Direction>
struct recorder_of
{
    typename Direction::recorder record;
};

// A fixture whose socket the test requires to have been made (and opened), with `record` for Direction's callbacks.
template <class Direction>
struct direction_fixture : recorder_of<Direction>, fixture
{
    direction_fixture()
    {
        REQUIRE(socket);
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

// Starts an IO over one buffer, `length` bytes at `data`, and returns the OVERLAPPED it gave the OS.
template <class Direction>
void* start_one(fixture& f, char* data, std::uint32_t length, typename Direction::recorder& record)
{
    ASYNC_SOCKET_BUFFER buffer{data, length};
    return start_io<Direction>(f, &buffer, 1, record);
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

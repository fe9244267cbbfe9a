/// @file
/// async_socket: what a C++ handler of an IO is given: the spec's outcome, the byte count of a receive and the OS's
/// own error.
///
///   socket->receive_async(buffers, [&](async_socket::receive_result r) noexcept {
///       if (r.end_of_stream()) { ... } else if (!r) { log(r.error.message()); } else { use(r.bytes); }
///   });
///
/// `error` holds the code of the OS call that failed (std::system_category() on Windows, std::generic_category()
/// errno values on Linux), and is empty when none did: on success, and for a send whose byte count came out wrong
/// (an error of the spec's, not of the OS).
#pragma once

#include <async_socket/socket_address.hpp>
#include <async_socket/types.h>

#include <cstdint>
#include <system_error>

namespace async_socket
{

/// The spec's three outcomes of an IO.
enum class io_completion : std::uint8_t
{
    ok,            ///< every byte of a send went out; a receive got `bytes` (0: the peer ended the stream)
    error,         ///< the IO failed; `error` says why when an OS call did
    because_close, ///< the socket was closed while the IO was pending
    cancelled,     ///< cancelled by its std::stop_token (the socket stays open); the C callbacks have no such
                   ///< outcome: c_result() says error
};

/// What a C++ send handler is given.
struct send_result
{
    io_completion completion; ///< how the send ended
    std::error_code error;    ///< the failed OS call's code; empty when no OS call failed

    /// Whether every byte was sent (completion is ok).
    [[nodiscard]] constexpr bool ok() const noexcept
    {
        return completion == io_completion::ok;
    }
    /// ok().
    explicit constexpr operator bool() const noexcept
    {
        return ok();
    }
    /// The same outcome as the C callback gets it.
    [[nodiscard]] constexpr ASYNC_SOCKET_SEND_RESULT c_result() const noexcept
    {
        return completion == io_completion::ok              ? ASYNC_SOCKET_SEND_OK
               : completion == io_completion::because_close ? ASYNC_SOCKET_SEND_BECAUSE_CLOSE
                                                            : ASYNC_SOCKET_SEND_ERROR;
    }
};

/// What a C++ receive handler is given.
struct receive_result
{
    io_completion completion; ///< how the receive ended
    std::uint32_t bytes;      ///< received; on an error, what the OS reported (0 unless the count was impossible)
    std::error_code error;    ///< the failed OS call's code; empty when no OS call failed

    /// Whether the receive succeeded (completion is ok), end of stream included.
    [[nodiscard]] constexpr bool ok() const noexcept
    {
        return completion == io_completion::ok;
    }
    /// ok().
    explicit constexpr operator bool() const noexcept
    {
        return ok();
    }
    /// The peer shut its side down: a receive that succeeded with 0 bytes.
    [[nodiscard]] constexpr bool end_of_stream() const noexcept
    {
        return completion == io_completion::ok && bytes == 0;
    }
    /// The same outcome as the C callback gets it.
    [[nodiscard]] constexpr ASYNC_SOCKET_RECEIVE_RESULT c_result() const noexcept
    {
        return completion == io_completion::ok              ? ASYNC_SOCKET_RECEIVE_OK
               : completion == io_completion::because_close ? ASYNC_SOCKET_RECEIVE_BECAUSE_CLOSE
                                                            : ASYNC_SOCKET_RECEIVE_ERROR;
    }
};

/// What a C++ accept handler is given (accept_async on a listening socket).
///
/// On ok, `socket` is a new connected socket and it is the handler's: hand it to create (then close it after the
/// async socket is destroyed) or close it (closesocket, close). On any other outcome no socket was made
/// (`socket` is null) and nothing is to be closed.
struct accept_result
{
    io_completion completion; ///< how the accept ended
    SOCKET_HANDLE socket;     ///< ok: the accepted socket (async_socket_fd_from_handle on Linux); else null
    socket_address peer;      ///< ok: the address of the peer; else empty
    std::error_code error;    ///< the failed OS call's code; empty when no OS call failed

    /// Whether a connection was accepted (completion is ok).
    [[nodiscard]] constexpr bool ok() const noexcept
    {
        return completion == io_completion::ok;
    }
    /// ok().
    explicit constexpr operator bool() const noexcept
    {
        return ok();
    }
};

/// What a C++ connect handler is given (connect_async).
struct connect_result
{
    io_completion completion; ///< how the connect ended (ok: connected; send and receive may follow)
    std::error_code error;    ///< the failed OS call's code (a refused connection: ECONNREFUSED, WSAECONNREFUSED)

    /// Whether the socket is connected (completion is ok).
    [[nodiscard]] constexpr bool ok() const noexcept
    {
        return completion == io_completion::ok;
    }
    /// ok().
    explicit constexpr operator bool() const noexcept
    {
        return ok();
    }
};

} // namespace async_socket

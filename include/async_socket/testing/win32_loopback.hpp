/// @file
/// async_socket testing, Win32: Winsock start-up, a connected pair of real overlapped TCP sockets over
/// 127.0.0.1 (or ::1); and the waiter (testing/waiter.hpp).
///
/// Header-only; only Win32 and the standard library.
#pragma once

#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>

#include <async_socket/testing/waiter.hpp>
#include <async_socket/types.h>

#include <utility>

namespace async_socket::testing
{

/// WSAStartup in the constructor, WSACleanup in the destructor. ok() says whether WSAStartup succeeded.
struct wsa_session
{
    wsa_session() noexcept
    {
        WSADATA data{};
        result = WSAStartup(MAKEWORD(2, 2), &data);
    }
    ~wsa_session()
    {
        if (result == 0)
        {
            WSACleanup();
        }
    }
    wsa_session(const wsa_session&) = delete;
    wsa_session& operator=(const wsa_session&) = delete;

    /// Whether WSAStartup succeeded.
    [[nodiscard]] bool ok() const noexcept
    {
        return result == 0;
    }

    int result = -1; ///< what WSAStartup returned (0: success)
};

/// Two connected TCP sockets, closed (closesocket) by the destructor. Movable, not copyable.
struct socket_pair
{
    SOCKET client = INVALID_SOCKET; ///< the connecting side; INVALID_SOCKET when none
    SOCKET server = INVALID_SOCKET; ///< the accepted side; INVALID_SOCKET when none

    socket_pair() noexcept = default;
    /// Takes other's sockets; other is left with none.
    socket_pair(socket_pair&& other) noexcept
        : client(std::exchange(other.client, INVALID_SOCKET)), server(std::exchange(other.server, INVALID_SOCKET))
    {
    }
    /// Closes its own sockets, then takes other's.
    socket_pair& operator=(socket_pair&& other) noexcept
    {
        if (this != &other)
        {
            close();
            client = std::exchange(other.client, INVALID_SOCKET);
            server = std::exchange(other.server, INVALID_SOCKET);
        }
        return *this;
    }
    socket_pair(const socket_pair&) = delete;
    socket_pair& operator=(const socket_pair&) = delete;
    ~socket_pair()
    {
        close();
    }

    /// Whether both sockets are open.
    [[nodiscard]] bool valid() const noexcept
    {
        return client != INVALID_SOCKET && server != INVALID_SOCKET;
    }

    /// Closes both sockets now (idempotent).
    void close() noexcept
    {
        close_client();
        close_server();
    }
    /// Closes the client socket now (idempotent).
    void close_client() noexcept
    {
        if (client != INVALID_SOCKET)
        {
            closesocket(client);
            client = INVALID_SOCKET;
        }
    }
    /// Closes the server socket now (idempotent).
    void close_server() noexcept
    {
        if (server != INVALID_SOCKET)
        {
            closesocket(server);
            server = INVALID_SOCKET;
        }
    }
};

/// A socket of `family` (AF_INET or AF_INET6) that can be used with overlapped IO (and so with threadpool IO).
inline SOCKET make_overlapped_tcp_socket(int family = AF_INET) noexcept
{
    return WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED);
}

/// Two connected overlapped TCP sockets over the loopback address of `family` (AF_INET: 127.0.0.1, AF_INET6: ::1):
/// listens on an ephemeral port, connects, accepts. TCP_NODELAY is set on both so that small writes are not held
/// back. On any failure both members are INVALID_SOCKET and WSAGetLastError() is the error of the call that failed
/// (WSAStartup must have been called).
inline socket_pair make_loopback_pair(int family = AF_INET) noexcept
{
    socket_pair pair;
    SOCKET listener = make_overlapped_tcp_socket(family);
    if (listener == INVALID_SOCKET)
    {
        return pair;
    }

    sockaddr_storage address{};
    int address_length = 0;
    if (family == AF_INET6)
    {
        auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
        v6->sin6_family = AF_INET6;
        v6->sin6_addr = in6addr_loopback;
        address_length = sizeof(sockaddr_in6);
    }
    else
    {
        auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
        v4->sin_family = AF_INET;
        v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        address_length = sizeof(sockaddr_in);
    }
    auto* name = reinterpret_cast<sockaddr*>(&address);
    bool ok = bind(listener, name, address_length) == 0 && listen(listener, 1) == 0 &&
              getsockname(listener, name, &address_length) == 0;
    if (ok)
    {
        pair.client = make_overlapped_tcp_socket(family);
        ok = pair.client != INVALID_SOCKET && connect(pair.client, name, address_length) == 0;
    }
    if (ok)
    {
        // A socket made by accept has the overlapped attribute, like the listening socket.
        pair.server = accept(listener, nullptr, nullptr);
        ok = pair.server != INVALID_SOCKET;
    }
    const int error = ok ? 0 : WSAGetLastError();
    closesocket(listener);
    if (!ok)
    {
        pair.close();
        WSASetLastError(error); // the failing call's, not the clean-up's
        return pair;
    }
    const BOOL no_delay = TRUE;
    setsockopt(pair.client, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&no_delay), sizeof(no_delay));
    setsockopt(pair.server, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&no_delay), sizeof(no_delay));
    return pair;
}

/// The SOCKET as the opaque SOCKET_HANDLE the async_socket API takes.
inline SOCKET_HANDLE as_handle(SOCKET socket) noexcept
{
    return reinterpret_cast<SOCKET_HANDLE>(socket);
}

} // namespace async_socket::testing
